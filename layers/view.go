package layers

import "github.com/mtlrank/mtlrank/kernels"

// hdr is a reusable tensor header. Workspaces keep one per batch-dependent
// view and re-point it when the batch size changes, so that a steady-state
// pass allocates nothing (kernels.Tensor.View allocates a new header).
// The header never owns storage: its Release is a no-op.
type hdr struct {
	t     kernels.Tensor
	shape [4]int
}

// set points h at elements [off, off+prod(dims)) of src with shape dims and
// returns the header, through kernels.Tensor.ViewInto.
func (h *hdr) set(src *kernels.Tensor, off int, dims ...int) *kernels.Tensor {
	if len(dims) > len(h.shape) {
		panic("layers: a workspace view has at most 4 dimensions")
	}
	copy(h.shape[:], dims)
	return src.ViewInto(&h.t, off, h.shape[:len(dims)])
}

// get returns the header as last set.
func (h *hdr) get() *kernels.Tensor { return &h.t }

// batchBuf is a workspace tensor laid out as [groups, rows, cols] (or
// [rows, cols] when not stacked) for up to maxRows rows, packed for the current row count so
// that the current view is a contiguous prefix: group g of the current batch
// starts at g*rows*cols. Per-group views are kept too.
type batchBuf struct {
	full          *kernels.Tensor
	groups, cols  int
	rows, maxRows int
	stacked       bool
	all           hdr
	parts         []hdr
}

func newBatchBuf(dev kernels.Device, groups, maxRows, cols int) *batchBuf {
	return newBuf(dev, groups, maxRows, cols, groups > 1)
}

// newStackedBuf is a batchBuf whose view is always [groups, rows, cols],
// even for one group (experts).
func newStackedBuf(dev kernels.Device, groups, maxRows, cols int) *batchBuf {
	return newBuf(dev, groups, maxRows, cols, true)
}

func newBuf(dev kernels.Device, groups, maxRows, cols int, stacked bool) *batchBuf {
	b := &batchBuf{
		full:   dev.Alloc(kernels.Float32, groups*maxRows*cols),
		groups: groups, cols: cols, maxRows: maxRows, rows: -1, stacked: stacked,
		parts: make([]hdr, groups),
	}
	b.resize(maxRows)
	return b
}

// resize re-points the views at a batch of rows rows.
func (b *batchBuf) resize(rows int) {
	if rows == b.rows {
		return
	}
	if rows > b.maxRows {
		panic("layers: batch larger than the workspace")
	}
	b.rows = rows
	if !b.stacked {
		b.all.set(b.full, 0, rows, b.cols)
	} else {
		b.all.set(b.full, 0, b.groups, rows, b.cols)
	}
	for g := range b.parts {
		b.parts[g].set(b.full, g*rows*b.cols, rows, b.cols)
	}
}

// t is the whole current view: [rows, cols] or [groups, rows, cols].
func (b *batchBuf) t() *kernels.Tensor { return b.all.get() }

// part is group g of the current view, [rows, cols]. The returned pointer is
// stable across resizes, so lists of parts can be built once.
func (b *batchBuf) part(g int) *kernels.Tensor { return b.parts[g].get() }

func (b *batchBuf) release() {
	if b != nil {
		b.full.Release()
	}
}

// Header is a reusable tensor header for callers outside this package that
// need views (or zero-copy wraps of host memory on the CPU device) whose
// shape follows the batch, without allocating per batch. The tensor it
// returns never owns storage and stays at the same address, so it can be
// stored once and re-pointed for every batch.
type Header struct{ h hdr }

// View points the header at elements [off, off+prod(dims)) of src.
func (h *Header) View(src *kernels.Tensor, off int, dims ...int) *kernels.Tensor {
	return h.h.set(src, off, dims...)
}

// Tensor returns the header as last set.
func (h *Header) Tensor() *kernels.Tensor { return h.h.get() }

// WrapI32 points the header at host memory on the CPU device (zero-copy).
func (h *Header) WrapI32(dev *kernels.CPU, data []int32, dims ...int) *kernels.Tensor {
	t := h.wrap(dev, kernels.Int32, len(data), dims)
	t.I32 = data[:t.Len():t.Len()]
	return t
}

// WrapF32 points the header at host memory on the CPU device (zero-copy).
func (h *Header) WrapF32(dev *kernels.CPU, data []float32, dims ...int) *kernels.Tensor {
	t := h.wrap(dev, kernels.Float32, len(data), dims)
	t.F32 = data[:t.Len():t.Len()]
	return t
}

func (h *Header) wrap(dev *kernels.CPU, dt kernels.DType, have int, dims []int) *kernels.Tensor {
	n := 1
	for i, d := range dims {
		n *= d
		h.h.shape[i] = d
	}
	if n > have {
		panic("layers: wrapping fewer host values than the shape needs")
	}
	t := &h.h.t
	t.Shape = h.h.shape[:len(dims)]
	t.DType, t.Dev = dt, dev
	t.F32, t.I32, t.Ptr = nil, nil, 0
	return t
}
