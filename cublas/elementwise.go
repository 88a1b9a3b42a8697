//go:build cuda

package cublas

// Element-wise, row and gate kernels.

/*
#include "mtlcuda.h"
*/
import "C"

import (
	"fmt"
	"unsafe"
)

// ---- element-wise and row kernels ----

// BiasAct adds bias [groups, n] to x [groups, rows, n] and applies act.
func (x *Context) BiasAct(xp, bias uintptr, groups, rows, n, act int) error {
	return x.err("BiasAct", C.mtlcuda_bias_act(x.c, C.mtlcuda_dptr(xp), C.mtlcuda_dptr(bias), C.int(groups), C.int64_t(rows),
		C.int(n), C.int(act)))
}

// ActBackward masks dy by the activation's derivative at output y.
func (x *Context) ActBackward(dy, y uintptr, n, act int) error {
	return x.err("ActBackward", C.mtlcuda_act_backward(x.c, C.mtlcuda_dptr(dy), C.mtlcuda_dptr(y), C.int64_t(n), C.int(act)))
}

// Activate writes y = act(x) for n elements (y may equal x); act is any
// Act* constant.
func (x *Context) Activate(y, xp uintptr, n, act int) error {
	return x.err("Activate", C.mtlcuda_activate(x.c, C.mtlcuda_dptr(y), C.mtlcuda_dptr(xp), C.int64_t(n), C.int(act)))
}

// ActivateBackward multiplies dy by act'(x) at the pre-activation x.
func (x *Context) ActivateBackward(dy, xp uintptr, n, act int) error {
	return x.err("ActivateBackward", C.mtlcuda_activate_backward(x.c, C.mtlcuda_dptr(dy), C.mtlcuda_dptr(xp), C.int64_t(n),
		C.int(act)))
}

// BiasGrad writes (or adds) the row sums of dy [groups, rows, n] to db.
func (x *Context) BiasGrad(dy, db uintptr, groups, rows, n int, accumulate bool) error {
	return x.err("BiasGrad", C.mtlcuda_bias_grad(x.c, C.mtlcuda_dptr(dy), C.mtlcuda_dptr(db), C.int(groups), C.int64_t(rows),
		C.int(n), cbool(accumulate)))
}

// Dropout applies the counter-based dropout pattern (see mtlcuda.h).
func (x *Context) Dropout(xp, mask uintptr, n int, threshold uint64, scale float32, seed uint64) error {
	return x.err("Dropout", C.mtlcuda_dropout(x.c, C.mtlcuda_dptr(xp), C.mtlcuda_dptr(mask), C.int64_t(n), C.uint64_t(threshold),
		C.float(scale), C.uint64_t(seed)))
}

// Mul is dst = a*b.
func (x *Context) Mul(dst, a, b uintptr, n int) error {
	return x.err("Mul", C.mtlcuda_mul(x.c, C.mtlcuda_dptr(dst), C.mtlcuda_dptr(a), C.mtlcuda_dptr(b), C.int64_t(n)))
}

// Axpy is y += alpha*x.
func (x *Context) Axpy(alpha float32, xp, y uintptr, n int) error {
	return x.err("Axpy", C.mtlcuda_axpy(x.c, C.float(alpha), C.mtlcuda_dptr(xp), C.mtlcuda_dptr(y), C.int64_t(n)))
}

// Scale is x *= alpha.
func (x *Context) Scale(xp uintptr, n int, alpha float32) error {
	return x.err("Scale", C.mtlcuda_scale(x.c, C.mtlcuda_dptr(xp), C.int64_t(n), C.float(alpha)))
}

// EqualMask is dst = (src == value).
func (x *Context) EqualMask(dst, src uintptr, n int, value float32) error {
	return x.err("EqualMask", C.mtlcuda_equal_mask(x.c, C.mtlcuda_dptr(dst), C.mtlcuda_dptr(src), C.int64_t(n), C.float(value)))
}

// Sigmoid is y = 1/(1+exp(-x)).
func (x *Context) Sigmoid(y, xp uintptr, n int) error {
	return x.err("Sigmoid", C.mtlcuda_sigmoid(x.c, C.mtlcuda_dptr(y), C.mtlcuda_dptr(xp), C.int64_t(n)))
}

// CopyCols copies (or adds) width columns between row-major matrices.
func (x *Context) CopyCols(dst uintptr, dstCols, dstCol int, src uintptr, srcCols, srcCol, rows, width int, accumulate bool) error {
	return x.err("CopyCols", C.mtlcuda_copy_cols(x.c, C.mtlcuda_dptr(dst), C.int(dstCols), C.int(dstCol), C.mtlcuda_dptr(src),
		C.int(srcCols), C.int(srcCol), C.int64_t(rows), C.int(width), cbool(accumulate)))
}

// SoftmaxRows is y = softmax(x / temperature) per row.
func (x *Context) SoftmaxRows(y, xp uintptr, rows, cols int, temperature float32) error {
	return x.err("SoftmaxRows", C.mtlcuda_softmax_rows(x.c, C.mtlcuda_dptr(y), C.mtlcuda_dptr(xp), C.int64_t(rows), C.int(cols),
		C.float(temperature)))
}

// SoftmaxBackward computes dx from dy and the softmax output y.
func (x *Context) SoftmaxBackward(dx, dy, y uintptr, rows, cols int, temperature float32) error {
	return x.err("SoftmaxBackward", C.mtlcuda_softmax_backward(x.c, C.mtlcuda_dptr(dx), C.mtlcuda_dptr(dy), C.mtlcuda_dptr(y),
		C.int64_t(rows), C.int(cols), C.float(temperature)))
}

func dptrs(p []uintptr) *C.mtlcuda_dptr {
	if len(p) == 0 {
		return nil
	}
	return (*C.mtlcuda_dptr)(unsafe.Pointer(&p[0]))
}

// GateCombine is out[b,:] = sum_e w[b,e]*experts[e][b,:].
func (x *Context) GateCombine(out, w uintptr, experts []uintptr, rows, d int) error {
	return x.err("GateCombine", C.mtlcuda_gate_combine(x.c, C.mtlcuda_dptr(out), C.mtlcuda_dptr(w), dptrs(experts),
		C.int(len(experts)), C.int64_t(rows), C.int(d)))
}

// GateCombineBackward writes dw and accumulates into dexperts.
func (x *Context) GateCombineBackward(dout, w uintptr, experts []uintptr, dw uintptr, dexperts []uintptr, rows, d int) error {
	if len(dexperts) != len(experts) {
		return &Error{Op: "GateCombineBackward", Code: CodeInvalid,
			Msg: fmt.Sprintf("%d expert gradients for %d experts", len(dexperts), len(experts))}
	}
	return x.err("GateCombineBackward", C.mtlcuda_gate_combine_backward(x.c, C.mtlcuda_dptr(dout), C.mtlcuda_dptr(w), dptrs(experts),
		C.mtlcuda_dptr(dw), dptrs(dexperts), C.int(len(experts)), C.int64_t(rows), C.int(d)))
}
