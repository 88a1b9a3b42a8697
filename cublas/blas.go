//go:build cuda

package cublas

// GEMMs through cuBLAS and cuBLASLt (row-major operands).

/*
#include "mtlcuda.h"
*/
import "C"

// ---- BLAS (row-major) ----

// Gemm computes C[m,n] = alpha*op(A)*op(B) + beta*C.
func (x *Context) Gemm(transA, transB bool, m, n, k int, alpha float32, a, b uintptr, beta float32, c uintptr) error {
	return x.err("Gemm", C.mtlcuda_gemm(x.c, cbool(transA), cbool(transB), C.int(m), C.int(n), C.int(k), C.float(alpha),
		C.mtlcuda_dptr(a), C.mtlcuda_dptr(b), C.float(beta), C.mtlcuda_dptr(c)))
}

// GemmStridedBatched runs batch GEMMs with element strides.
func (x *Context) GemmStridedBatched(transA, transB bool, m, n, k int, alpha float32, a uintptr, strideA int,
	b uintptr, strideB int, beta float32, c uintptr, strideC int, batch int) error {
	return x.err("GemmStridedBatched", C.mtlcuda_gemm_strided_batched(x.c, cbool(transA), cbool(transB), C.int(m), C.int(n),
		C.int(k), C.float(alpha), C.mtlcuda_dptr(a), C.int64_t(strideA), C.mtlcuda_dptr(b), C.int64_t(strideB), C.float(beta),
		C.mtlcuda_dptr(c), C.int64_t(strideC), C.int(batch)))
}

// GemmBiasAct computes C_i = act(op(A_i)*op(B_i) + bias_i) with a cuBLASLt
// epilogue (SGEMM + bias kernel when cuBLASLt has no algorithm).
func (x *Context) GemmBiasAct(transA, transB bool, m, n, k int, a uintptr, strideA int, b uintptr, strideB int,
	bias uintptr, strideBias int, c uintptr, strideC int, batch int, act int) error {
	return x.err("GemmBiasAct", C.mtlcuda_gemm_bias_act(x.c, cbool(transA), cbool(transB), C.int(m), C.int(n), C.int(k),
		C.mtlcuda_dptr(a), C.int64_t(strideA), C.mtlcuda_dptr(b), C.int64_t(strideB), C.mtlcuda_dptr(bias), C.int64_t(strideBias),
		C.mtlcuda_dptr(c), C.int64_t(strideC), C.int(batch), C.int(act)))
}
