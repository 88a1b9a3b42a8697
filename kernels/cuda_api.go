package kernels

// Optional device capabilities beyond the Device interface. The CUDA device
// (build tag cuda) implements all of them; the CPU device none. They are
// declared in every build (this file has no build tag and no CUDA
// dependency) so that layers and the trainer can test for them with a type
// assertion and fall back to the plain Device ops.

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

// AsyncIDChecker is implemented by devices that can leave EmbeddingGather's
// id check to Sync, which saves a host round trip per gather: with
// SetImmediateIDCheck(false), EmbeddingGather returns nil and the
// *IDRangeError of the first failing gather comes from the next Sync.
type AsyncIDChecker interface {
	SetImmediateIDCheck(on bool)
}

// Graph is a captured sequence of device ops that can be replayed.
type Graph interface {
	Launch() error
	Release()
}

// GraphCapturer is implemented by devices that can capture the ops queued
// between BeginCapture and EndCapture as a Graph (one launch per training
// step instead of one per op).
type GraphCapturer interface {
	BeginCapture() error
	EndCapture() (Graph, error)
}
