//go:build cuda

package cublas

// Loss kernels (one task per call; fused.go has the multi-task one).

/*
#include "mtlcuda.h"
*/
import "C"

// ---- losses ----

// BCEWithLogits adds scale*sum w*bce to loss[0] and writes dz (w = 0 means
// no weights).
func (x *Context) BCEWithLogits(loss, dz, z, y, w uintptr, n int, scale float32) error {
	return x.err("BCEWithLogits", C.mtlcuda_bce_with_logits(x.c, C.mtlcuda_dptr(loss), C.mtlcuda_dptr(dz), C.mtlcuda_dptr(z),
		C.mtlcuda_dptr(y), C.mtlcuda_dptr(w), C.int64_t(n), C.float(scale)))
}

// MSE adds scale*sum w*(z-y)^2 to loss[0] and writes dz.
func (x *Context) MSE(loss, dz, z, y, w uintptr, n int, scale float32) error {
	return x.err("MSE", C.mtlcuda_mse(x.c, C.mtlcuda_dptr(loss), C.mtlcuda_dptr(dz), C.mtlcuda_dptr(z), C.mtlcuda_dptr(y), C.mtlcuda_dptr(w),
		C.int64_t(n), C.float(scale)))
}

// SumSquares adds scale*sum x^2 to loss[0].
func (x *Context) SumSquares(loss, xp uintptr, n int, scale float32) error {
	return x.err("SumSquares", C.mtlcuda_sum_squares(x.c, C.mtlcuda_dptr(loss), C.mtlcuda_dptr(xp), C.int64_t(n), C.float(scale)))
}
