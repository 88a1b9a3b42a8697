package kernels

import (
	"fmt"
	"math/bits"
)

// GEMMs on the CPU device.
//
// Two engines: the small-GEMM kernels of cpu_gemm.c (AVX-512 or AVX2 with
// FMA; a tile of C in registers over the whole k loop, operands read in
// place, bias and ReLU fused into the store) for the thin shapes of the
// models, and single-threaded OpenBLAS (blas.go) for everything else. The
// choice depends only on the shape (smallGemm).
//
// Parallelism: a GEMM, or each entry of a strided batch, is cut into blocks
// of whole rows of C (or whole columns when C has few rows), and the blocks
// are spread over the pool's goroutines. The cut depends only on the shape,
// never on the number of threads, and every element of C is computed by one
// call over the full k, so the result is the same bits with one thread or
// many.
const (
	// gemmBlockWork is the least m*n*k of one block: about 40us of a
	// single-threaded sgemm, well above the cost of a hand-off.
	gemmBlockWork = 1 << 22
	// gemmMinRows and gemmMinCols are the smallest row and column blocks:
	// narrower ones lose sgemm efficiency (B or A is packed once per block;
	// at 1024^3, 128-row blocks run 25% slower than 512-row ones).
	gemmMinRows = 512
	gemmMinCols = 256
	// gemmMaxBlocks caps the blocks of one GEMM.
	gemmMaxBlocks = 16
	// gemmParWork is the least total m*n*k worth handing to other
	// goroutines.
	gemmParWork = 1 << 19
	// smallGemmTBuf is the most elements of B the small kernels transpose
	// on their stack (TBUF in cpu_gemm.c).
	smallGemmTBuf = 16384
)

// smallGemm reports whether the small-GEMM kernels take a GEMM of this
// shape: thin shapes whose B (k x n) stays in cache, where they beat
// OpenBLAS's packing (BenchmarkGemmEngines).
func smallGemm(ta, tb bool, m, n, k int) bool {
	if gemmLevel == 0 || (ta && tb) || k > 4096 {
		return false
	}
	if n < 16 {
		// heads and gate logits: the thin kernels, which make the columns
		// of a non-transposed B contiguous on their stack; their weight
		// gradients (A transposed) build C^T there
		if ta {
			return m*n <= smallGemmTBuf
		}
		return tb || n*k <= smallGemmTBuf
	}
	if n > 512 || int64(n)*int64(k) > 1<<16 {
		// past 256 KB of B OpenBLAS's packing pays off
		return false
	}
	return !tb || n*k <= smallGemmTBuf
}

// RowIndependentGemm reports whether the CPU device computes a GEMM
// X[m, k] * W[k, n] (neither transposed: the forward pass of a Dense layer or
// an expert) so that every row of the result has the same bits whatever m
// and whatever the other rows: true when the small-GEMM kernels take the
// shape, which needs AVX2 and FMA and a thin enough W. Other GEMMs go to
// OpenBLAS, whose result for a row may change with m on some of the kernels
// it picks for a CPU. A model whose forward GEMMs all qualify scores a row
// the same in any batch and with any number of threads.
func RowIndependentGemm(n, k int) bool { return smallGemm(false, false, 1, n, k) }

// gemmSplit returns how many row blocks and column blocks a GEMM of this
// shape is cut into (at most one of them is above 1), a power of two so that
// blocks divide evenly among 2, 4, 8... threads.
func gemmSplit(m, n, k int) (rowBlocks, colBlocks int) {
	nb := int64(m) * int64(n) * int64(k) / gemmBlockWork
	if nb < 2 {
		return 1, 1
	}
	nb = min(nb, gemmMaxBlocks)
	switch {
	case m >= 2*gemmMinRows:
		return pow2Floor(min(int(nb), m/gemmMinRows)), 1
	case n >= 2*gemmMinCols:
		return 1, pow2Floor(min(int(nb), n/gemmMinCols))
	}
	return 1, 1
}

func pow2Floor(x int) int {
	if x < 1 {
		return 1
	}
	return 1 << (bits.Len(uint(x)) - 1)
}

// gemmTask is a strided batch of GEMMs cut into blocks; item i is block
// i%(rb*cb) of entry i/(rb*cb). With bias set (non-transposed GEMMs only)
// entry e's C gets bias[e*sbias:] added and act applied.
type gemmTask struct {
	ta, tb        bool
	m, n, k       int
	alpha, beta   float32
	a, b, c       []float32
	sa, sb, sc    int
	lda, ldb, ldc int
	rb, cb        int
	small         bool
	fused         bool // bias (may be nil) and act applied to C
	bias          []float32
	sbias         int
	act           Activation
	// actGrad (one entry, m not split, no transposed A): C gets the data
	// gradient's epilogue, masked by gy > 0 when act is ReLU and its column
	// sums written to db (GemmActBiasGrad)
	actGrad bool
	gy, db  []float32
}

func (t *gemmTask) run(lo, hi int) {
	per := t.rb * t.cb
	if per == 1 && !t.small && !t.fused && !t.actGrad {
		// whole entries on BLAS: one cgo call for the range
		sgemmBatch(t.ta, t.tb, t.m, t.n, t.k, t.alpha, t.a[lo*t.sa:], t.sa, t.lda, t.b[lo*t.sb:], t.sb, t.ldb,
			t.beta, t.c[lo*t.sc:], t.sc, t.ldc, hi-lo)
		return
	}
	for it := lo; it < hi; it++ {
		e, blk := it/per, it%per
		a, b, c := t.a[e*t.sa:], t.b[e*t.sb:], t.c[e*t.sc:]
		var bias []float32
		if t.bias != nil {
			bias = t.bias[e*t.sbias:]
		}
		m, n := t.m, t.n
		switch {
		case t.rb > 1:
			r0, r1 := blk*t.m/t.rb, (blk+1)*t.m/t.rb
			m = r1 - r0
			if t.ta {
				a = a[r0:]
			} else {
				a = a[r0*t.lda:]
			}
			c = c[r0*t.ldc:]
		case t.cb > 1:
			c0, c1 := blk*t.n/t.cb, (blk+1)*t.n/t.cb
			n = c1 - c0
			if t.tb {
				b = b[c0*t.ldb:]
			} else {
				b = b[c0:]
			}
			c = c[c0:]
			if bias != nil {
				bias = bias[c0:]
			}
		}
		if t.actGrad {
			t.runActGrad(blk, a, b, c, n)
			continue
		}
		if t.small && cSgemm(t.ta, t.tb, m, n, t.k, t.alpha, a, t.lda, b, t.ldb, t.beta, c, t.ldc, bias, t.act == ReLU) {
			continue
		}
		sgemm(t.ta, t.tb, m, n, t.k, t.alpha, a, t.lda, b, t.ldb, t.beta, c, t.ldc)
		if t.fused {
			cBiasActLd(c, t.ldc, bias, m, n, t.act == ReLU)
		}
	}
}

// runActGrad runs column block blk (n columns, a, b and c already at the
// block) of an actGrad task: on the small kernels with the epilogue, or as
// the GEMM and then the activation backward and bias gradient over the
// block's columns (the same sums, so the same bits).
func (t *gemmTask) runActGrad(blk int, a, b, c []float32, n int) {
	c0 := 0
	if t.cb > 1 {
		c0 = blk * t.n / t.cb
	}
	var gy []float32
	if t.act == ReLU {
		gy = t.gy[c0:]
	}
	db := t.db[c0 : c0+n]
	if t.small && cSgemmActGrad(t.tb, t.m, n, t.k, a, t.lda, b, t.ldb, c, t.ldc, gy, t.ldc, db) {
		return
	}
	sgemm(t.ta, t.tb, t.m, n, t.k, t.alpha, a, t.lda, b, t.ldb, t.beta, c, t.ldc)
	for j := 0; j < n; j += biasGradBlock {
		w := min(biasGradBlock, n-j)
		var y []float32
		if gy != nil {
			y = gy[j:]
		}
		cReluBwdBiasGrad(c[j:], y, t.m, t.ldc, w, db[j:j+w], false, gy != nil)
	}
}

// gemm runs batch GEMMs of one shape (batch 1: a plain GEMM), the entries
// starting sa, sb, sc elements apart. m, n, k and batch are positive and
// the slices long enough (checked by the callers).
func (c *CPU) gemm(ta, tb bool, m, n, k int, alpha float32, a []float32, sa, lda int,
	b []float32, sb, ldb int, beta float32, cm []float32, sc, ldc, batch int) {
	c.runGemm(gemmTask{ta: ta, tb: tb, m: m, n: n, k: k, alpha: alpha, beta: beta, a: a, b: b, c: cm,
		sa: sa, sb: sb, sc: sc, lda: lda, ldb: ldb, ldc: ldc}, batch)
}

func (c *CPU) runGemm(t gemmTask, batch int) {
	t.small = smallGemm(t.ta, t.tb, t.m, t.n, t.k)
	t.rb, t.cb = gemmSplit(t.m, t.n, t.k)
	items := batch * t.rb * t.cb
	if c.pool != nil && items > 1 && int64(batch)*int64(t.m)*int64(t.n)*int64(t.k) >= gemmParWork && runPooled(c.pool, &c.pool.gemm, t, items, 1, c.threads) {
		return
	}
	t.run(0, items)
}

var _ FusedGemm = (*CPU)(nil)

var _ FusedDataGrad = (*CPU)(nil)

// GemmActBiasGrad implements FusedDataGrad. The epilogue sums every column
// over all rows in one call, so it runs only where the GEMM is not cut into
// row blocks (gemmSplit); other shapes take the GEMM and then ActBiasGrad.
// Both give the same bits, so the choice, a function of the shape, never
// shows in the results.
func (c *CPU) GemmActBiasGrad(dy, w, y *Tensor, act Activation, dx, db *Tensor) {
	m, n, k := gemmShape("GemmActBiasGrad", false, true, dy, w, dx)
	sameLen("GemmActBiasGrad", dx, y)
	if act != Linear && act != ReLU {
		panic(fmt.Sprintf("kernels: GemmActBiasGrad: unknown activation %d", act))
	}
	if db.Len() != n {
		panic(fmt.Sprintf("kernels: GemmActBiasGrad: db %v for %d columns", db, n))
	}
	t := gemmTask{tb: true, m: m, n: n, k: k, alpha: 1, a: dy.F32, b: w.F32, c: dx.F32, lda: k, ldb: k, ldc: n,
		act: act, actGrad: true, gy: y.F32, db: db.F32}
	if n == 0 {
		return
	}
	t.rb, t.cb = gemmSplit(m, n, k)
	if m == 0 || k == 0 || t.rb > 1 {
		c.Gemm(false, true, 1, dy, w, 0, dx)
		c.ActBiasGrad(dx, y, act, db, 1, false)
		return
	}
	c.runGemm(t, 1)
}

// GemmBiasAct implements FusedGemm.
func (c *CPU) GemmBiasAct(x, w, bias *Tensor, act Activation, y *Tensor) {
	m, n, k := gemmShape("GemmBiasAct", false, false, x, w, y)
	if bias != nil && bias.Len() != n {
		panic(fmt.Sprintf("kernels: GemmBiasAct: bias %v for %d columns", bias, n))
	}
	c.gemmBiasAct(m, n, k, x.F32, 0, w.F32, 0, bias, act, y.F32, 1)
}

// GemmStridedBatchedBiasAct implements FusedGemm.
func (c *CPU) GemmStridedBatchedBiasAct(m, n, k int, a *Tensor, strideA int, b *Tensor, strideB int,
	bias *Tensor, act Activation, cm *Tensor, batch int) {
	checkBatched("GemmStridedBatchedBiasAct", m, n, k, a, strideA, b, strideB, cm, m*n, batch)
	if bias != nil && bias.Len() != batch*n {
		panic(fmt.Sprintf("kernels: GemmStridedBatchedBiasAct: bias %v for %d entries of %d", bias, batch, n))
	}
	c.gemmBiasAct(m, n, k, a.F32, strideA, b.F32, strideB, bias, act, cm.F32, batch)
}

func (c *CPU) gemmBiasAct(m, n, k int, a []float32, sa int, b []float32, sb int, bias *Tensor, act Activation, cm []float32, batch int) {
	if act != Linear && act != ReLU {
		panic(fmt.Sprintf("kernels: GemmBiasAct: unknown activation %d", act))
	}
	if m == 0 || n == 0 || batch == 0 {
		return
	}
	var bs []float32
	if bias != nil {
		bs = bias.F32
	}
	if k == 0 {
		clear(cm[:batch*m*n])
		for e := range batch {
			var be []float32
			if bs != nil {
				be = bs[e*n:]
			}
			cBiasActLd(cm[e*m*n:], n, be, m, n, act == ReLU)
		}
		return
	}
	c.runGemm(gemmTask{m: m, n: n, k: k, alpha: 1, a: a, b: b, c: cm, sa: sa, sb: sb, sc: m * n,
		lda: k, ldb: n, ldc: n, fused: true, bias: bs, sbias: n, act: act}, batch)
}
