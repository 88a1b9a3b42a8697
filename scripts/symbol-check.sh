#!/usr/bin/env bash
# Fails when a symbol is defined both by libmtlcuda.so (argument 1; the CUDA
# build or the emulated one) and by the Go side's C objects (the CPU kernels
# of package kernels and every other cgo object) as linked into a -tags cuda
# binary, and (STRICT=1) when the library exports anything but the mtlcuda_
# C API: a
# symbol defined in the executable wins over the library's, so such a
# collision silently sends package cublas's calls to the CPU code.
set -euo pipefail
cd "$(dirname "$0")/.."
lib=${1:?usage: symbol-check.sh path/to/libmtlcuda.so}
dir=$(cd "$(dirname "$lib")" && pwd)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
CGO_LDFLAGS="-L$dir -Wl,-rpath,$dir" go build -tags cuda -o "$tmp/mtlrank" ./cmd/mtlrank
nm -D --defined-only "$lib" | awk '{print $NF}' | sort -u >"$tmp/lib.syms"
nm --defined-only "$tmp/mtlrank" | awk '$2 ~ /^[TtDdBbRrWwVv]$/ {print $NF}' | sort -u >"$tmp/exe.syms"
both=$(comm -12 "$tmp/lib.syms" "$tmp/exe.syms")
if [ -n "$both" ]; then
	echo "symbol-check: defined both in $lib and in the Go binary's C objects:" >&2
	echo "$both" >&2
	exit 1
fi
foreign=$(grep -v '^mtlcuda_' "$tmp/lib.syms" || true)
# The emulated library exports exactly the API (STRICT=1); the CUDA build's
# exports also depend on the toolkit's static libraries.
if [ -n "$foreign" ] && [ "${STRICT:-0}" = 1 ]; then
	echo "symbol-check: $lib exports symbols outside the mtlcuda_ namespace:" >&2
	echo "$foreign" | head -20 >&2
	exit 1
fi
if ! grep -q '^mtlcpu_sigmoid$' "$tmp/exe.syms"; then
	echo "symbol-check: the CPU kernels (mtlcpu_*) are not in the binary: the check looks at the wrong objects" >&2
	exit 1
fi
echo "symbol-check: $(wc -l <"$tmp/lib.syms") library symbols, none defined twice"
