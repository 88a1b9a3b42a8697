//go:build cuda

package cublas

// Dense and sparse optimizer steps.

/*
#include "mtlcuda.h"
*/
import "C"

// ---- optimizers ----

// OptTensor is one dense tensor of a multi-tensor optimizer call: M is the
// first moment (Adam) or the accumulator (Adagrad); V the second moment.
type OptTensor struct {
	Param, Grad, M, V uintptr
	N                 int
}

// optTensors converts ts into buf (reused between calls).
func optTensors(buf *[]C.mtlcuda_opt_tensor, ts []OptTensor) *C.mtlcuda_opt_tensor {
	if len(ts) == 0 {
		return nil
	}
	b := (*buf)[:0]
	for _, t := range ts {
		b = append(b, C.mtlcuda_opt_tensor{param: C.mtlcuda_dptr(t.Param), grad: C.mtlcuda_dptr(t.Grad), m: C.mtlcuda_dptr(t.M),
			v: C.mtlcuda_dptr(t.V), n: C.int64_t(t.N)})
	}
	*buf = b
	return &b[0]
}

// OptBuffer holds the C-side copy of a tensor list between calls, so that
// steady-state optimizer calls do not allocate.
type OptBuffer struct{ b []C.mtlcuda_opt_tensor }

// Adam updates every tensor with the bias-corrected step size lrT.
func (x *Context) Adam(buf *OptBuffer, ts []OptTensor, lrT, beta1, beta2, eps, l2 float32) error {
	p := C.mtlcuda_adam_params{lr_t: C.float(lrT), beta1: C.float(beta1), beta2: C.float(beta2), eps: C.float(eps), l2: C.float(l2)}
	return x.err("Adam", C.mtlcuda_adam(x.c, optTensors(&buf.b, ts), C.int(len(ts)), &p))
}

// Adagrad updates every tensor (accumulator in M).
func (x *Context) Adagrad(buf *OptBuffer, ts []OptTensor, lr, eps, l2 float32) error {
	p := C.mtlcuda_adagrad_params{lr: C.float(lr), eps: C.float(eps), l2: C.float(l2)}
	return x.err("Adagrad", C.mtlcuda_adagrad(x.c, optTensors(&buf.b, ts), C.int(len(ts)), &p))
}

// SGD updates every tensor.
func (x *Context) SGD(buf *OptBuffer, ts []OptTensor, lr, l2 float32) error {
	p := C.mtlcuda_sgd_params{lr: C.float(lr), l2: C.float(l2)}
	return x.err("SGD", C.mtlcuda_sgd(x.c, optTensors(&buf.b, ts), C.int(len(ts)), &p))
}

// SparseAdam updates rows[i] of table, m and v for i < n.
func (x *Context) SparseAdam(table, m, v uintptr, tableRows, dim int, rows, values uintptr, n int, lrT, beta1, beta2, eps, l2 float32) error {
	p := C.mtlcuda_adam_params{lr_t: C.float(lrT), beta1: C.float(beta1), beta2: C.float(beta2), eps: C.float(eps), l2: C.float(l2)}
	return x.err("SparseAdam", C.mtlcuda_sparse_adam(x.c, C.mtlcuda_dptr(table), C.mtlcuda_dptr(m), C.mtlcuda_dptr(v), C.int64_t(tableRows),
		C.int(dim), C.mtlcuda_dptr(rows), C.mtlcuda_dptr(values), C.int64_t(n), &p))
}

// SparseAdagrad updates rows[i] of table and acc for i < n.
func (x *Context) SparseAdagrad(table, acc uintptr, tableRows, dim int, rows, values uintptr, n int, lr, eps, l2 float32) error {
	p := C.mtlcuda_adagrad_params{lr: C.float(lr), eps: C.float(eps), l2: C.float(l2)}
	return x.err("SparseAdagrad", C.mtlcuda_sparse_adagrad(x.c, C.mtlcuda_dptr(table), C.mtlcuda_dptr(acc), C.int64_t(tableRows),
		C.int(dim), C.mtlcuda_dptr(rows), C.mtlcuda_dptr(values), C.int64_t(n), &p))
}

// SparseSGD updates rows[i] of table for i < n.
func (x *Context) SparseSGD(table uintptr, tableRows, dim int, rows, values uintptr, n int, lr, l2 float32) error {
	p := C.mtlcuda_sgd_params{lr: C.float(lr), l2: C.float(l2)}
	return x.err("SparseSGD", C.mtlcuda_sparse_sgd(x.c, C.mtlcuda_dptr(table), C.int64_t(tableRows), C.int(dim), C.mtlcuda_dptr(rows),
		C.mtlcuda_dptr(values), C.int64_t(n), &p))
}
