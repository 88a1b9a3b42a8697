//go:build !cgo

package kernels

// The CPU device is C (OpenBLAS and the kernels of cpu_*.c) called through
// cgo, so this package cannot be built without it. Without this file a
// build with CGO_ENABLED=0 (or without a C compiler) stops on the first
// missing C wrapper, which says nothing of the cause; the identifier below
// is the message instead. The packages that are pure Go (schema, loader,
// preprocess, mtl/safetensors, mtl/metrics) build without cgo; see README,
// "Which packages need cgo".
var _ = kernels_needs_cgo_and_OpenBLAS_build_with_CGO_ENABLED_1_and_libopenblas_dev
