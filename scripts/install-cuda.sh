#!/usr/bin/env bash
# Installs what the CUDA build of mtlrank needs on a Debian 12 (bookworm)
# machine without a GPU: nvcc, the CUDA runtime, cuBLAS and cuBLASLt (Debian's
# nvidia-cuda-toolkit, CUDA 11.8, from the non-free component) and CMake.
# Idempotent: it does nothing when nvcc and cmake are already on PATH.
set -euo pipefail

if command -v nvcc >/dev/null 2>&1 && command -v cmake >/dev/null 2>&1; then
	echo "install-cuda: nvcc and cmake already present ($(command -v nvcc), $(command -v cmake))"
	exit 0
fi

SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO=sudo; fi

# nvidia-cuda-toolkit lives in bookworm's non-free component (with contrib for
# its helpers). Enable both in the deb822 sources file when it exists, else add
# a one-line sources.list entry.
deb822=/etc/apt/sources.list.d/debian.sources
if [ -f "$deb822" ]; then
	# Each sed only touches Components lines that lack the component, so a
	# second run changes nothing.
	$SUDO sed -i -E '/^Components:/{/[[:space:]]contrib([[:space:]]|$)/!s/$/ contrib/}' "$deb822"
	$SUDO sed -i -E '/^Components:/{/[[:space:]]non-free([[:space:]]|$)/!s/$/ non-free/}' "$deb822"
else
	list=/etc/apt/sources.list.d/mtlrank-nonfree.list
	if [ ! -f "$list" ]; then
		echo "install-cuda: adding $list"
		echo "deb http://deb.debian.org/debian bookworm main contrib non-free" | $SUDO tee "$list" >/dev/null
	fi
fi

$SUDO apt-get update -qq
$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
	nvidia-cuda-toolkit nvidia-cuda-dev cmake

nvcc --version | tail -n 2
cmake --version | head -n 1
