package kernels

/*
#include "cpu_kernels.h"
*/
import "C"

import (
	"runtime"
	"sync"
)

// The input gradient of layers that share an input, as one GEMM over
// K-segments (mtlcpu_sgemm_sum in cpu_gemm.c).

const (
	// gemmSumMaxSegs is the most terms the kernel takes in one call
	// (MTL_GEMM_SUM_MAX_SEGS).
	gemmSumMaxSegs = C.MTL_GEMM_SUM_MAX_SEGS
	// gemmSumMaxB is the most elements of the stacked W^T (total depth
	// times n) the kernel takes: 1 MiB, so that the block of it a column
	// block of tiles reads (depth times 64 columns) stays in L2 while the
	// tiles sweep the rows. Past it the terms run as chained GEMMs.
	gemmSumMaxB = 1 << 18
)

// gemmSumKernel reports whether the K-segmented kernel takes a sum of
// nseg terms with n columns and total depth k: a function of the shape
// and the CPU's features only, like smallGemm.
func gemmSumKernel(nseg, n, k int) bool {
	return gemmLevel > 0 && nseg >= 1 && nseg <= gemmSumMaxSegs && n >= 16 && n <= 512 && k <= 4096 &&
		int64(n)*int64(k) <= gemmSumMaxB
}

// gemmSumCall is the argument block of mtlcpu_sgemm_sum: the terms'
// addresses as uintptr (as gatesCall: tensors are Go heap memory, which
// does not move, and the caller's slices keep them alive until the call
// returns), and the stacked W^T. Pooled, so that a step allocates nothing.
type gemmSumCall struct {
	a, b     []uintptr
	lda, ldb []C.long
	k        []C.long
	bt       []float32
	n        int // dx's columns, also its row stride
	accum    C.int
	c        []float32
}

var gemmSumCalls = sync.Pool{New: func() any { return new(gemmSumCall) }}

// run computes rows [lo, hi) of C.
func (s *gemmSumCall) run(lo, hi int) {
	if C.mtlcpu_sgemm_sum(C.long(lo), C.long(hi), C.long(s.n), C.int(len(s.a)), pp(s.a), &s.lda[0], &s.k[0],
		fp(s.bt), s.accum, fp(s.c), C.long(s.n)) == 0 {
		panic("kernels: GemmSum: the kernel refused a shape gemmSumKernel accepted")
	}
}

// gemmSumTask is a gemmSumCall cut into blocks of whole rows over the
// pool's workers; every row is computed by one call over the full depth,
// so the cut never shows in the bits.
type gemmSumTask struct{ s *gemmSumCall }

func (t *gemmSumTask) run(lo, hi int) { t.s.run(lo, hi) }

var _ GemmSummer = (*CPU)(nil)

// GemmSum implements GemmSummer: one K-segmented GEMM on the small-GEMM
// kernels where they take the shape (gemmSumKernel), else the chained
// GEMMs of the plain Device ops. One term is one Gemm: the same tiles in
// the same order, so the same bits, with W^T built on the stack instead
// of in the call's scratch.
func (c *CPU) GemmSum(dys, ws []*Tensor, accumulate bool, dx *Tensor) {
	m, n, k := checkGemmSum("GemmSum", dys, ws, dx)
	if m == 0 || n == 0 {
		return
	}
	if k == 0 || len(dys) == 1 || !gemmSumKernel(len(dys), n, k) {
		chainGemmSum(c, dys, ws, accumulate, dx)
		return
	}
	s := gemmSumCalls.Get().(*gemmSumCall)
	s.a, s.b = addresses(s.a, dys), addresses(s.b, ws)
	s.lda, s.ldb, s.k = s.lda[:0], s.ldb[:0], s.k[:0]
	for i, dy := range dys {
		s.lda = append(s.lda, C.long(dy.Cols()))
		s.ldb = append(s.ldb, C.long(ws[i].Cols()))
		s.k = append(s.k, C.long(dy.Cols()))
	}
	if cap(s.bt) < n*k {
		s.bt = make([]float32, n*k)
	}
	s.bt = s.bt[:n*k]
	s.n, s.accum, s.c = n, cbool(accumulate), dx.F32
	if C.mtlcpu_gemm_sum_transpose(C.long(n), C.int(len(ws)), pp(s.b), &s.ldb[0], &s.k[0], fp(s.bt)) == 0 {
		panic("kernels: GemmSum: the transpose refused a shape gemmSumKernel accepted")
	}
	rb, _ := gemmSplit(m, n, k)
	if c.pool == nil || rb < 2 || !runPooled(c.pool, &c.pool.gemmSum, gemmSumTask{s}, m, 1, rb) {
		s.run(0, m)
	}
	runtime.KeepAlive(dys)
	runtime.KeepAlive(ws)
	s.c = nil
	gemmSumCalls.Put(s)
}
