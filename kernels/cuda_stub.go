//go:build !cuda

package kernels

import "errors"

// errNoCUDA is what NewCUDADevice returns in a build without the cuda tag.
var errNoCUDA = errors.New("mtlrank was built without CUDA support; rebuild with -tags cuda after make cuda")

// NewCUDADevice returns an error: this binary was built without the cuda
// build tag. (With the tag it opens GPU index; see cuda.go.)
func NewCUDADevice(index int) (Device, error) { return nil, errNoCUDA }

// The optional fused-op interfaces exist in every build so that layers can
// test for them; without the cuda tag no device implements them. Keep these
// declarations identical to those of cuda_fused.go.

// EmbeddingSource is one feature's gradient for an embedding table:
// columns [Col, Col+dim) of Dout, looked up with IDs, either one id per row
// (Offsets nil) or lists given by Offsets and combined with Comb. Features
// sharing a table pass one source each to the same update.
type EmbeddingSource struct {
	Dout    *Tensor
	Col     int
	IDs     *Tensor
	Offsets *Tensor
	Comb    Combiner
}

// FusedEmbeddingUpdater is implemented by devices that fuse
// EmbeddingBackward with the sparse optimizer step: the gradient of every
// source is accumulated per unique row and the row of the table and its
// optimizer state is updated in the same kernel, with no host round trip.
// The result equals EmbeddingBackward over all sources (summed) followed by
// SparseAdam / SparseAdagrad / SparseSGD.
type FusedEmbeddingUpdater interface {
	EmbeddingUpdateAdam(table, m, v *Tensor, srcs []EmbeddingSource, p AdamParams)
	EmbeddingUpdateAdagrad(table, acc *Tensor, srcs []EmbeddingSource, p AdagradParams)
	EmbeddingUpdateSGD(table *Tensor, srcs []EmbeddingSource, p SGDParams)
}

// GemmBiasActer is implemented by devices with a fused GEMM + bias +
// activation: c = act(op(a)*op(b) + bias), bias [n] broadcast over rows.
type GemmBiasActer interface {
	GemmBiasAct(transA, transB bool, a, b, bias, c *Tensor, act Activation)
}
