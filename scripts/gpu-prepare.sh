#!/usr/bin/env bash
# Prepares, on a machine with Go (and no GPU), what scripts/gpu-check.sh runs
# on the GPU machine (CUDA + CMake + PyTorch, but no Go and no network):
#   - bin/gpu/mtlrank            the CLI built with -tags cuda
#   - bin/gpu/*.cuda.test        test binaries (go test -c -tags cuda)
#   - bin/gpu/lib/               shared libraries they need that a CUDA
#                                machine lacks (OpenBLAS, gfortran, ...)
#   - bin/gpu/torch_ref.py       the PyTorch reference benchmark
# packed into bin/gpu-bundle.tar.xz (xz keeps it far below transfer limits).
# libmtlcuda.so is not bundled: gpu-check.sh rebuilds it there with the local
# CUDA toolkit. Carry bin/gpu-bundle.tar.xz to the GPU machine and run
# scripts/gpu-check.sh from the repository root.
#
# Environment: REF [bench/torch_ref.py], PKGS [kernels mtl]: the
# packages with cuda-tagged tests (kernels: op and fused-kernel parity;
# mtl: model parity and leak tests, mtl/models_cuda_test.go).
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH=$PATH:/usr/local/go/bin

REF=${REF:-bench/torch_ref.py}
PKGS=${PKGS:-"kernels mtl cublas tests"}

if ! command -v nvcc >/dev/null 2>&1 || ! command -v cmake >/dev/null 2>&1; then
	scripts/install-cuda.sh
fi
make cuda

stage=bin/gpu
rm -rf "$stage" bin/gpu-bundle.tar.xz
mkdir -p "$stage/lib"
flags=(-tags cuda -trimpath -ldflags=-s\ -w)

go build "${flags[@]}" -o "$stage/mtlrank" ./cmd/mtlrank
missing=""
for pkg in $PKGS; do
	if compgen -G "$pkg/*_test.go" >/dev/null; then
		if ! go test -c "${flags[@]}" -o "$stage/$pkg.cuda.test" "./$pkg/"; then
			echo "gpu-prepare: warning: the $pkg test binary did not build; it is left out" >&2
			missing="$missing $pkg"
		fi
	fi
done

# Shared libraries the binaries load, minus those every Linux system has and
# the CUDA ones, which come from the GPU machine's toolkit.
for f in "$stage"/*; do
	[ -f "$f" ] && [ -x "$f" ] && ldd "$f" || true
done | awk '$2 == "=>" && $3 ~ /^\// {print $1, $3}' | sort -u | while read -r name path; do
	case "$name" in
	linux-vdso* | ld-linux* | libc.so* | libm.so* | libpthread.so* | libdl.so* | librt.so* | libgcc_s.so* | \
		libstdc++.so* | libmtlcuda.so* | libcublas* | libcudart* | libcuda.so*) continue ;;
	esac
	cp -L "$path" "$stage/lib/$name"
done

if [ -f "$REF" ]; then
	cp "$REF" "$stage/torch_ref.py"
else
	echo "gpu-prepare: warning: $REF not found; gpu-check.sh will skip the PyTorch comparison" >&2
fi

tar -C bin -cJf bin/gpu-bundle.tar.xz gpu
ls -l "$stage" "$stage/lib"
du -h bin/gpu-bundle.tar.xz
if [ -n "$missing" ]; then
	echo "gpu-prepare: the bundle lacks the test binaries of:$missing (gpu-check.sh reports them missing)" >&2
fi
