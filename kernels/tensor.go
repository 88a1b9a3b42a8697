// Package kernels defines the numeric Device interface that every layer runs
// on, the Tensor type it operates on, and the CPU device (Go + OpenBLAS).
// The CUDA device (build tag cuda) implements the same interface.
//
// Memory ownership is explicit: a Tensor returned by Device.Alloc owns its
// storage until Release is called; a Tensor returned by View or Wrap borrows
// storage from its parent (or from the caller) and its Release is a no-op.
// Tensors are row-major; a [rows, cols] matrix is stored with cols contiguous.
package kernels

import "fmt"

// DType is the element type of a Tensor.
type DType uint8

const (
	Float32 DType = iota
	Int32
)

func (d DType) String() string {
	switch d {
	case Float32:
		return "float32"
	case Int32:
		return "int32"
	}
	return fmt.Sprintf("DType(%d)", uint8(d))
}

// Tensor is an n-dimensional row-major array living on one Device.
//
// On the CPU device, F32 or I32 holds the elements (depending on DType); on a
// GPU device Ptr holds the device address and F32/I32 are nil. Layers must
// not touch F32/I32 directly: they go through Device ops (CopyToHost /
// CopyFromHost) so that the same code runs on every device.
type Tensor struct {
	Shape []int
	DType DType
	Dev   Device

	F32 []float32 // CPU storage (Float32)
	I32 []int32   // CPU storage (Int32)
	Ptr uintptr   // device storage (GPU devices)

	owner bool // true when Release must free the storage
}

// Len is the number of elements.
func (t *Tensor) Len() int {
	n := 1
	for _, d := range t.Shape {
		n *= d
	}
	return n
}

// Rows is Shape[0] (1 for a scalar).
func (t *Tensor) Rows() int {
	if len(t.Shape) == 0 {
		return 1
	}
	return t.Shape[0]
}

// Cols is the product of all dimensions after the first (1 for a vector).
func (t *Tensor) Cols() int {
	if len(t.Shape) <= 1 {
		return 1
	}
	n := 1
	for _, d := range t.Shape[1:] {
		n *= d
	}
	return n
}

// Owned reports whether Release frees storage.
func (t *Tensor) Owned() bool { return t.owner }

// Release frees the storage of an owned tensor. It is safe to call on a nil
// tensor, on a view, and more than once.
func (t *Tensor) Release() {
	if t == nil || !t.owner {
		return
	}
	t.owner = false
	t.Dev.Free(t)
}

// View returns a tensor that borrows elements [off, off+prod(shape)) of t,
// counted in elements, with the given shape. It panics if the range is out of
// bounds: views are built by layers from shapes they validated.
func (t *Tensor) View(off int, shape ...int) *Tensor {
	return t.ViewInto(new(Tensor), off, append([]int(nil), shape...))
}

// ViewInto is View into a header the caller keeps, so that a pass that
// re-points its views allocates nothing: dst is overwritten to view
// elements [off, off+prod(shape)) of t, and keeps shape itself (callers
// pass a slice of an array they own). Like View's, the header never owns
// the storage.
func (t *Tensor) ViewInto(dst *Tensor, off int, shape []int) *Tensor {
	n := 1
	for _, d := range shape {
		n *= d
	}
	if off < 0 || off+n > t.Len() {
		panic(fmt.Sprintf("kernels: view [%d,%d) out of range of tensor with %d elements", off, off+n, t.Len()))
	}
	*dst = Tensor{Shape: shape, DType: t.DType, Dev: t.Dev}
	switch {
	case t.F32 != nil:
		dst.F32 = t.F32[off : off+n : off+n]
	case t.I32 != nil:
		dst.I32 = t.I32[off : off+n : off+n]
	default:
		dst.Ptr = t.Ptr + uintptr(off*4) // every DType is 4 bytes wide
	}
	return dst
}

// NewTensor is for Device implementations: it builds an owned tensor header.
func NewTensor(dev Device, dt DType, shape []int) *Tensor {
	return &Tensor{Shape: append([]int(nil), shape...), DType: dt, Dev: dev, owner: true}
}

func (t *Tensor) String() string {
	return fmt.Sprintf("Tensor(%s %v on %s)", t.DType, t.Shape, t.Dev.Name())
}
