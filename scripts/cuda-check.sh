#!/usr/bin/env bash
# CI check of the CUDA build path on a machine without a GPU (Debian 12):
# installs the CUDA 11.8 toolkit and CMake when missing, builds
# libmtlcuda.so (make cuda), builds and links everything with -tags cuda,
# vets the CUDA packages, runs the cuda-tagged tests (those needing a GPU skip;
# the constructor's no-device error is checked), and checks that the default
# build does not need CUDA.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH=$PATH:/usr/local/go/bin

scripts/install-cuda.sh
make cuda
scripts/symbol-check.sh build/cuda/libmtlcuda.so

echo "== go build -tags cuda ./..."
go build -tags cuda ./...
echo "== go vet -tags cuda ./..."
go vet -tags cuda ./...
unformatted=$(gofmt -l cublas kernels/cuda*.go mtl/*cuda*_test.go)
if [ -n "$unformatted" ]; then
	echo "gofmt needed: $unformatted" >&2
	exit 1
fi

echo "== link the test binaries (go test -c -tags cuda)"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
go test -c -tags cuda -o "$tmp/kernels.cuda.test" ./kernels/
go test -c -tags cuda -o "$tmp/mtl.cuda.test" ./mtl/
go build -tags cuda -o "$tmp/mtlrank" ./cmd/mtlrank
for b in "$tmp/kernels.cuda.test" "$tmp/mtl.cuda.test" "$tmp/mtlrank"; do
	deps=$(ldd "$b")
	if ! grep -q 'libmtlcuda.so => /' <<<"$deps"; then
		echo "$b does not resolve libmtlcuda.so:" >&2
		echo "$deps" >&2
		exit 1
	fi
done

echo "== cuda-tagged tests (GPU tests skip without a device)"
go test -count=1 -tags cuda ./cublas/
go test -count=1 -tags cuda -run 'CUDA|Fused|Gate|MultiTaskLoss|Metric' ./kernels/
go test -count=1 -tags cuda -run 'CUDA' ./mtl/
# the mtl test binary holds the model parity tests gpu-check.sh runs
list=$("$tmp/mtl.cuda.test" -test.list '^TestCUDAModel')
for want in TestCUDAModelParity TestCUDAModelNoLeak; do
	if ! grep -qx "$want" <<<"$list"; then
		echo "the mtl cuda test binary lacks $want" >&2
		exit 1
	fi
done

echo "== default build (no CUDA needed)"
go build ./...
go vet ./kernels/
if go list -deps ./cmd/mtlrank | grep -q '/cublas$'; then
	echo "the default build of cmd/mtlrank depends on package cublas" >&2
	exit 1
fi
echo "cuda-check: ok"
