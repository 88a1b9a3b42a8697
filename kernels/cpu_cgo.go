package kernels

/*
#cgo CFLAGS: -O3 -std=c11
#cgo LDFLAGS: -lm
#include "cpu_kernels.h"
*/
import "C"

import (
	"fmt"
	"os"
	"unsafe"
)

// Thin wrappers over cpu_kernels.c. Each checks that its slices are long
// enough for what the C loop will touch (O(1) checks), so that a caller bug
// panics in Go instead of corrupting memory.

func fp(s []float32) *C.float {
	if len(s) == 0 {
		return nil
	}
	return (*C.float)(unsafe.Pointer(&s[0]))
}

func ip(s []int32) *C.int32_t {
	if len(s) == 0 {
		return nil
	}
	return (*C.int32_t)(unsafe.Pointer(&s[0]))
}

func need(op string, have, want int) {
	if have < want {
		panic(fmt.Sprintf("kernels: %s: slice of %d elements, need %d", op, have, want))
	}
}

// span is the number of elements rows rows of width w with leading dimension
// ld cover.
func span(rows, ld, w int) int {
	if rows <= 0 || w <= 0 {
		return 0
	}
	return (rows-1)*ld + w
}

func cbool(b bool) C.int {
	if b {
		return 1
	}
	return 0
}

func cFill(x []float32, v float32) {
	C.mtlcpu_fill(fp(x), C.long(len(x)), C.float(v))
}

func cScale(x []float32, a float32) {
	C.mtlcpu_scale(fp(x), C.long(len(x)), C.float(a))
}

func cAxpy(y, x []float32, a float32) {
	need("axpy", len(x), len(y))
	C.mtlcpu_axpy(fp(y), fp(x), C.long(len(y)), C.float(a))
}

func cMul(dst, a, b []float32) {
	need("mul", len(a), len(dst))
	need("mul", len(b), len(dst))
	C.mtlcpu_mul(fp(dst), fp(a), fp(b), C.long(len(dst)))
}

func cEqual(dst, src []float32, v float32) {
	need("equal", len(src), len(dst))
	C.mtlcpu_equal(fp(dst), fp(src), C.long(len(dst)), C.float(v))
}

func cReluBwd(dy, y []float32) {
	need("relu backward", len(y), len(dy))
	C.mtlcpu_relu_bwd(fp(dy), fp(y), C.long(len(dy)))
}

func cActFwd(y, x []float32, act Activation) {
	need("activation", len(x), len(y))
	C.mtlcpu_act_fwd(fp(y), fp(x), C.long(len(y)), C.int(act))
}

func cActBwd(dy, x []float32, act Activation) {
	need("activation backward", len(x), len(dy))
	C.mtlcpu_act_bwd(fp(dy), fp(x), C.long(len(dy)), C.int(act))
}

func cBiasAct(x, bias []float32, rows, n int, relu bool) {
	need("bias", len(x), rows*n)
	need("bias", len(bias), n)
	C.mtlcpu_bias_act(fp(x), fp(bias), C.long(rows), C.int(n), cbool(relu))
}

// cBiasActLd adds bias (nil: none) to rows x n of x (leading dimension
// ld) and applies the activation.
func cBiasActLd(x []float32, ld int, bias []float32, rows, n int, relu bool) {
	need("bias", len(x), span(rows, ld, n))
	if bias != nil {
		need("bias", len(bias), n)
	}
	C.mtlcpu_bias_act_ld(fp(x), C.long(ld), fp(bias), C.long(rows), C.int(n), cbool(relu))
}

// cBiasGrad sums rows x w (w <= 64) of dy, leading dimension ld, into db.
func cBiasGrad(dy []float32, rows, ld, w int, db []float32, accumulate bool) {
	if w > 64 {
		panic("kernels: bias gradient block wider than 64")
	}
	need("bias gradient", len(dy), span(rows, ld, w))
	need("bias gradient", len(db), w)
	C.mtlcpu_bias_grad(fp(dy), C.long(rows), C.long(ld), C.int(w), fp(db), cbool(accumulate))
}

// cDropout handles elements [lo, lo+len(x)) of a tensor; x and mask start at
// element lo.
func cDropout(x, mask []float32, lo int, seed, thr uint64, scale float32) {
	need("dropout", len(mask), len(x))
	C.mtlcpu_dropout(fp(x), fp(mask), C.long(lo), C.long(len(x)), C.uint64_t(seed), C.uint64_t(thr), C.float(scale))
}

// gateSpan returns the chunk rows [lo, hi) of expert i of experts[e0:], or
// nil past the end, with its length checked.
func gateSpan(experts []*Tensor, e0, i, lo, hi, d int) []float32 {
	if e0+i >= len(experts) {
		return nil
	}
	s := experts[e0+i].F32[lo*d : hi*d]
	return s
}

// cGateFwd combines experts e0..e0+3 (those that exist) into rows [lo, hi)
// of out.
func cGateFwd(out, w []float32, ne int, experts []*Tensor, e0, lo, hi, d int, first bool) {
	rows := hi - lo
	need("gate", len(out), hi*d)
	need("gate", len(w), hi*ne)
	cnt := min(4, len(experts)-e0)
	x0, x1 := gateSpan(experts, e0, 0, lo, hi, d), gateSpan(experts, e0, 1, lo, hi, d)
	x2, x3 := gateSpan(experts, e0, 2, lo, hi, d), gateSpan(experts, e0, 3, lo, hi, d)
	C.mtlcpu_gate_fwd(fp(out[lo*d:]), fp(w[lo*ne:]), C.int(ne), C.int(e0), C.int(cnt),
		fp(x0), fp(x1), fp(x2), fp(x3), C.long(rows), C.int(d), cbool(first))
}

// cGateBwd runs the gate backward for experts e0..e0+3 on rows [lo, hi);
// with first it writes the expert gradients instead of adding into them.
func cGateBwd(dout, w []float32, ne int, experts, dexperts []*Tensor, e0 int, dw []float32, lo, hi, d int, first bool) {
	rows := hi - lo
	need("gate backward", len(dout), hi*d)
	need("gate backward", len(w), hi*ne)
	need("gate backward", len(dw), hi*ne)
	cnt := min(4, len(experts)-e0)
	x0, x1 := gateSpan(experts, e0, 0, lo, hi, d), gateSpan(experts, e0, 1, lo, hi, d)
	x2, x3 := gateSpan(experts, e0, 2, lo, hi, d), gateSpan(experts, e0, 3, lo, hi, d)
	d0, d1 := gateSpan(dexperts, e0, 0, lo, hi, d), gateSpan(dexperts, e0, 1, lo, hi, d)
	d2, d3 := gateSpan(dexperts, e0, 2, lo, hi, d), gateSpan(dexperts, e0, 3, lo, hi, d)
	C.mtlcpu_gate_bwd(fp(dout[lo*d:]), fp(w[lo*ne:]), C.int(ne), C.int(e0), C.int(cnt),
		fp(x0), fp(x1), fp(x2), fp(x3), fp(d0), fp(d1), fp(d2), fp(d3), fp(dw[lo*ne:]), C.long(rows), C.int(d), cbool(first))
}

// cCopyCols copies rows x width; dst and src start at the first element.
func cCopyCols(dst []float32, ldd int, src []float32, lds, rows, width int, accumulate bool) {
	need("copy columns", len(dst), span(rows, ldd, width))
	need("copy columns", len(src), span(rows, lds, width))
	C.mtlcpu_copy_cols(fp(dst), C.long(ldd), fp(src), C.long(lds), C.long(rows), C.int(width), cbool(accumulate))
}

// cGather gathers rows [lo, hi); out starts at column col of row 0. The ids
// (and offsets) have been validated against the table.
func cGather(out []float32, ldo int, table []float32, dim int, ids, offs []int32, lo, hi int, comb Combiner) {
	need("gather", len(out), span(hi, ldo, dim))
	if offs == nil {
		need("gather", len(ids), hi)
	} else {
		need("gather", len(offs), hi+1)
	}
	C.mtlcpu_gather(fp(out), C.long(ldo), fp(table), C.int(dim), ip(ids), ip(offs), C.long(lo), C.long(hi), C.int(comb))
}

// cEmbBwd accumulates dout rows into the gradient rows slot[k-base] of the
// ids k; dout starts at column col of row 0. Ids, offsets and slots have
// been validated.
func cEmbBwd(gv []float32, dim int, slot []int32, base int, dout []float32, ldo int, offs []int32, rows int, comb Combiner) {
	need("embedding backward", len(dout), span(rows, ldo, dim))
	C.mtlcpu_emb_bwd(fp(gv), C.int(dim), ip(slot), C.long(base), fp(dout), C.long(ldo), ip(offs), C.long(rows), C.int(comb))
}

func cAdam(p, g, m, v []float32, lr, b1, b2, eps, l2x2 float32) {
	n := len(p)
	need("adam", len(g), n)
	need("adam", len(m), n)
	need("adam", len(v), n)
	C.mtlcpu_adam(fp(p), fp(g), fp(m), fp(v), C.long(n), C.float(lr), C.float(b1), C.float(b2), C.float(eps), C.float(l2x2))
}

func cAdagrad(p, g, acc []float32, lr, eps, l2x2 float32) {
	n := len(p)
	need("adagrad", len(g), n)
	need("adagrad", len(acc), n)
	C.mtlcpu_adagrad(fp(p), fp(g), fp(acc), C.long(n), C.float(lr), C.float(eps), C.float(l2x2))
}

func cSGD(p, g []float32, lr, l2x2 float32) {
	need("sgd", len(g), len(p))
	C.mtlcpu_sgd(fp(p), fp(g), C.long(len(p)), C.float(lr), C.float(l2x2))
}

// The sparse updates handle gradient rows [lo, hi); rows were validated
// against the table and the state tensors have the table's size.
func cSparseAdam(table, m, v, g []float32, rows []int32, lo, hi, dim int, lr, b1, b2, eps, l2x2 float32) {
	need("sparse adam", len(g), hi*dim)
	C.mtlcpu_sparse_adam(fp(table), fp(m), fp(v), fp(g), ip(rows), C.long(lo), C.long(hi), C.int(dim),
		C.float(lr), C.float(b1), C.float(b2), C.float(eps), C.float(l2x2))
}

func cSparseAdagrad(table, acc, g []float32, rows []int32, lo, hi, dim int, lr, eps, l2x2 float32) {
	need("sparse adagrad", len(g), hi*dim)
	C.mtlcpu_sparse_adagrad(fp(table), fp(acc), fp(g), ip(rows), C.long(lo), C.long(hi), C.int(dim),
		C.float(lr), C.float(eps), C.float(l2x2))
}

func cSparseSGD(table, g []float32, rows []int32, lo, hi, dim int, lr, l2x2 float32) {
	need("sparse sgd", len(g), hi*dim)
	C.mtlcpu_sparse_sgd(fp(table), fp(g), ip(rows), C.long(lo), C.long(hi), C.int(dim), C.float(lr), C.float(l2x2))
}

// gemmLevel is the small-GEMM kernel level of this machine (see
// cpu_gemm.c): 2 AVX-512, 1 AVX2+FMA, 0 none (BLAS only). MTLRANK_GEMM=blas
// in the environment turns the small kernels off (every GEMM on OpenBLAS),
// for comparisons and diagnosis.
var gemmLevel = func() int {
	if os.Getenv("MTLRANK_GEMM") == "blas" {
		C.mtlcpu_gemm_force_level(0)
	}
	return int(C.mtlcpu_gemm_level())
}()

// setGemmLevel caps the kernel level (tests); it returns the previous cap.
func setGemmLevel(l int) int {
	prev := gemmLevel
	C.mtlcpu_gemm_force_level(C.int(l))
	gemmLevel = int(C.mtlcpu_gemm_level())
	return prev
}

// cSgemm runs the small-GEMM kernel: C = act(alpha*op(A)*op(B) + beta*C +
// bias). It reports false, leaving C untouched, when the kernel does not
// handle the shape. The caller has validated shapes and slice lengths.
func cSgemm(ta, tb bool, m, n, k int, alpha float32, a []float32, lda int, b []float32, ldb int,
	beta float32, c []float32, ldc int, bias []float32, relu bool) bool {
	return C.mtlcpu_sgemm(cbool(ta), cbool(tb), C.long(m), C.long(n), C.long(k), C.float(alpha), fp(a), C.long(lda),
		fp(b), C.long(ldb), C.float(beta), fp(c), C.long(ldc), fp(bias), cbool(relu)) != 0
}

// cSgemmActGrad runs mtlcpu_sgemm_actgrad: C = A op(B), C masked by y > 0
// (y nil: no mask) and db the column sums of C. It reports false, with C
// and db untouched, for shapes the small kernels do not take.
func cSgemmActGrad(tb bool, m, n, k int, a []float32, lda int, b []float32, ldb int, c []float32, ldc int,
	y []float32, ldy int, db []float32) bool {
	need("gemm data gradient", len(c), span(m, ldc, n))
	if y != nil {
		need("gemm data gradient", len(y), span(m, ldy, n))
	}
	need("gemm data gradient", len(db), n)
	return C.mtlcpu_sgemm_actgrad(cbool(tb), C.long(m), C.long(n), C.long(k), fp(a), C.long(lda), fp(b), C.long(ldb),
		fp(c), C.long(ldc), fp(y), C.long(ldy), fp(db)) != 0
}

// cSigmoid writes y = sigmoid(x) (y may alias x).
func cSigmoid(y, x []float32) {
	need("sigmoid", len(x), len(y))
	C.mtlcpu_sigmoid(fp(y), fp(x), C.long(len(y)))
}

// cSoftmax runs rows [lo, hi) of a softmax over rows of n columns (or its
// backward pass when dy is not nil: dx from dy and y).
func cSoftmax(y, x []float32, lo, hi, n int, invT float32) {
	need("softmax", len(y), hi*n)
	need("softmax", len(x), hi*n)
	C.mtlcpu_softmax(fp(y), fp(x), C.long(lo), C.long(hi), C.int(n), C.float(invT))
}

func cSoftmaxBwd(dx, dy, y []float32, lo, hi, n int, invT float32) {
	need("softmax backward", len(dx), hi*n)
	need("softmax backward", len(dy), hi*n)
	need("softmax backward", len(y), hi*n)
	C.mtlcpu_softmax_bwd(fp(dx), fp(dy), fp(y), C.long(lo), C.long(hi), C.int(n), C.float(invT))
}

// cBCE writes the BCE gradient of z[i] for i < len(z) and returns the
// unscaled weighted loss sum (w nil: weights 1).
func cBCE(dz, z, y, w []float32, scale float32) float64 {
	n := len(z)
	need("bce", len(dz), n)
	need("bce", len(y), n)
	if w != nil {
		need("bce", len(w), n)
	}
	return float64(C.mtlcpu_bce(fp(dz), fp(z), fp(y), fp(w), C.long(n), C.float(scale)))
}

// cReluBwdBiasGrad applies the ReLU backward pass (when relu) to a block of
// w <= 64 columns of rows rows (leading dimension ld; dy and y start at the
// block's first column) and writes or accumulates the column sums into db.
func cReluBwdBiasGrad(dy, y []float32, rows, ld, w int, db []float32, accumulate, relu bool) {
	if w > 64 {
		panic("kernels: bias gradient block wider than 64")
	}
	need("bias gradient", len(dy), span(rows, ld, w))
	if relu {
		need("bias gradient", len(y), span(rows, ld, w))
	}
	need("bias gradient", len(db), w)
	C.mtlcpu_relu_bwd_bias_grad(fp(dy), fp(y), C.long(rows), C.long(ld), C.int(w), fp(db), cbool(accumulate), cbool(relu))
}

// mtlExp is exp in place with the polynomial of cpu_math.c (tests).
func mtlExp(x []float32) { C.mtlcpu_exp_inplace(fp(x), C.long(len(x))) }

// setMathLevel caps the vector width of cpu_math.c (tests): 2 AVX-512,
// 1 AVX2, 0 scalar.
func setMathLevel(l int) { C.mtlcpu_math_force_level(C.int(l)) }

// The C kernels take kernels.Activation values as MTL_ACT_* codes; a
// mismatch makes one of these indexes out of range at compile time.
var _ = [1]struct{}{}[int(C.MTL_ACT_SELU)-int(SELU)]
var _ = [1]struct{}{}[int(C.MTL_ACT_LEAKY_RELU)-int(LeakyReLU)]
var _ = [1]struct{}{}[int(LeakyReLU)-int(C.MTL_ACT_LEAKY_RELU)]
var _ = [1]struct{}{}[int(SELU)-int(C.MTL_ACT_SELU)]
