#!/usr/bin/env bash
# Installs Open MPI from Debian (openmpi-bin: mpirun; libopenmpi-dev: mpi.h,
# the libraries and pkg-config's ompi-c) when missing, for the `mpi`-tagged
# build of package dist and its mpirun tests. As root it runs apt-get
# directly (CI), otherwise through sudo. Without apt-get (not Debian) it says
# so and succeeds: the default build does not need MPI, and the mpirun tests
# skip when mpirun is absent.
set -euo pipefail

missing=()
for p in openmpi-bin libopenmpi-dev; do
	if ! dpkg -s "$p" >/dev/null 2>&1; then
		missing+=("$p")
	fi
done
if [ ${#missing[@]} -eq 0 ]; then
	exit 0
fi
if ! command -v apt-get >/dev/null 2>&1 || ! command -v dpkg >/dev/null 2>&1; then
	echo "setup-mpi: apt-get is not available: not installing ${missing[*]}; install Open MPI (mpirun, mpi.h, pkg-config ompi-c) yourself to build with -tags mpi (the MPI tests skip without mpirun)" >&2
	exit 0
fi
sudo=()
if [ "$(id -u)" != 0 ]; then
	sudo=(sudo)
fi
echo "installing ${missing[*]}"
"${sudo[@]}" apt-get -o DPkg::Lock::Timeout=600 update -qq
"${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -qq "${missing[@]}"
