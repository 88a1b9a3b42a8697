#!/usr/bin/env bash
# Runs every cuda-tagged test against the emulated device of
# build/cuda-emu/libmtlcuda.so (make cuda-emu builds it with g++; no CUDA
# toolkit, no GPU): the Go test binaries link that library first and load it
# through their rpath (checked with ldd). Prints the wall time at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH=$PATH:/usr/local/go/bin
emu="$PWD/build/cuda-emu"
[ -f "$emu/libmtlcuda.so" ] || { echo "emu-check: $emu/libmtlcuda.so is missing: run make cuda-emu" >&2; exit 1; }
export CGO_LDFLAGS="-L$emu -Wl,-rpath,$emu"
export LD_LIBRARY_PATH="$emu${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
start=$SECONDS

echo "== emulated device: symbol namespaces"
STRICT=1 scripts/symbol-check.sh "$emu/libmtlcuda.so"

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
echo "== emulated device: link the cuda-tagged test binaries"
for pkg in cublas kernels mtl tests; do
	go test -c -tags cuda -o "$tmp/$pkg.test" "./$pkg/"
	deps=$(ldd "$tmp/$pkg.test")
	if ! grep -q "libmtlcuda.so => $emu/libmtlcuda.so" <<<"$deps"; then
		echo "emu-check: $pkg.test does not load the emulated libmtlcuda.so:" >&2
		echo "$deps" >&2
		exit 1
	fi
done

echo "== emulated device: runtime self-tests"
"$emu/selftest"

# The cuda-tagged tests of each package (the CPU-only tests of the same
# packages run in the plain go test ./...).
declare -A runs=(
	[cublas]='.'
	[kernels]='CUDA|Fused|Gate|MultiTaskLoss|Metric|LossScratch'
	[mtl]='CUDA'
	[tests]='CUDA'
)
echo "== emulated device: cuda-tagged tests"
for pkg in cublas kernels mtl tests; do
	echo "-- $pkg: -run '${runs[$pkg]}'"
	# 30 minutes, a margin for a loaded machine: mtl's CUDA tests took 190 s
	# at load average 4 on 2 cores (the distributed exactness cases train 20
	# steps on 2 and 3 emulated GPUs, 60 s of it).
	(cd "$pkg" && "$tmp/$pkg.test" -test.count=1 -test.timeout 30m -test.run "${runs[$pkg]}")
done
echo "emu-check: ok in $((SECONDS - start))s"
