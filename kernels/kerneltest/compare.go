package kerneltest

import (
	"errors"
	"math"
	"testing"

	"github.com/mtlrank/mtlrank/kernels"
)

// CompareDevices runs every op of the kernels.Device interface on a table of
// cases with identical inputs on ref and dev and reports, as test failures,
// every output of dev that differs from ref's by more than
// AbsTol + RelTol*|ref| (GEMMs get an argued allowance for float32
// accumulation on top, see gemmSlack). Outputs that are decisions rather
// than arithmetic (dropout keep patterns, embedding gradient rows, equality
// masks, copies, id range errors) must match exactly.
//
// Sizes include 1, odd sizes (3, 17, 1023) and sizes above 128k elements, so
// that a device that splits work across threads is exercised on both paths.
func CompareDevices(t *testing.T, ref, dev kernels.Device) {
	(&comparer{ref: ref, dev: dev, abs: AbsTol, rel: RelTol, slack: 1}).run(t)
}

// CompareDevicesExact runs the same cases as CompareDevices but requires
// every output of dev to equal ref's bit for bit (up to the sign of zero).
// It is for two configurations of one deterministic device, such as CPU
// devices with different thread counts.
func CompareDevicesExact(t *testing.T, ref, dev kernels.Device) {
	(&comparer{ref: ref, dev: dev}).run(t)
}

// comparer holds the two devices and the tolerance of one comparison run.
type comparer struct {
	ref, dev kernels.Device
	abs, rel float64 // |got - want| <= abs + rel*|want| + slack*extra
	slack    float64 // factor on the per-op allowances (GEMM accumulation)
}

func (cm *comparer) run(t *testing.T) {
	t.Run("Memory", cm.compareMemory)
	t.Run("Gemm", cm.compareGemm)
	t.Run("GemmStridedBatched", cm.compareBatched)
	t.Run("BiasAct", cm.compareBiasAct)
	t.Run("ActBackward", cm.compareActBackward)
	t.Run("BiasGrad", cm.compareBiasGrad)
	t.Run("Dropout", cm.compareDropout)
	t.Run("Elementwise", cm.compareElementwise)
	t.Run("Softmax", cm.compareSoftmax)
	t.Run("Gate", cm.compareGate)
	t.Run("CopyCols", cm.compareCopyCols)
	t.Run("EmbeddingGather", cm.compareGather)
	t.Run("EmbeddingGatherErrors", cm.compareGatherErrors)
	t.Run("EmbeddingBackward", cm.compareEmbeddingBackward)
	t.Run("Losses", cm.compareLosses)
	t.Run("DenseOptimizers", cm.compareDenseOptimizers)
	t.Run("SparseOptimizers", cm.compareSparseOptimizers)
}

// Sizes of the element-wise cases: 150001 is above the size at which the CPU
// device splits work across goroutines.
var elementSizes = []int{1, 3, 17, 1023, 150001}

func (cm *comparer) compareMemory(t *testing.T) {
	ref, dev := cm.ref, cm.dev
	h := cm.newHarness(t, 1)
	z := pair{ref.Alloc(kernels.Float32, 3, 17), dev.Alloc(kernels.Float32, 3, 17)}
	h.owned = append(h.owned, z.r, z.d)
	h.checkExact("Alloc zeroed f32", z)
	zi := pair{ref.Alloc(kernels.Int32, 1023), dev.Alloc(kernels.Int32, 1023)}
	h.owned = append(h.owned, zi.r, zi.d)
	h.checkExact("Alloc zeroed i32", zi)

	x := h.randf(5, 7)
	ref.Fill(x.r, 2.5)
	dev.Fill(x.d, 2.5)
	h.checkExact("Fill", x)
	v := h.view(x, 7, 2, 7)
	ref.Zero(v.r)
	dev.Zero(v.d)
	h.checkExact("Zero view", x)

	ids := h.i32([]int32{5, -3, 7, 1 << 30, 0}, 5)
	ids2 := pair{ref.Alloc(kernels.Int32, 5), dev.Alloc(kernels.Int32, 5)}
	h.owned = append(h.owned, ids2.r, ids2.d)
	ref.Copy(ids2.r, ids.r)
	dev.Copy(ids2.d, ids.d)
	h.checkExact("Copy i32", ids2)
	ref.Fill(ids2.r, 9)
	dev.Fill(ids2.d, 9)
	h.checkExact("Fill i32", ids2)

	for _, n := range elementSizes {
		a, b := h.randf(n), h.randf(n)
		ref.Copy(b.r, a.r)
		dev.Copy(b.d, a.d)
		h.checkExact(shapeName("Copy n=%d", n), b)
	}
	// A copy into the middle of a tensor through a view leaves the rest alone.
	big, small := h.randf(4, 9), h.randf(9)
	ref.Copy(big.r.View(18, 9), small.r)
	dev.Copy(big.d.View(18, 9), small.d)
	h.checkExact("Copy into view", big)
}

// GemmErrorBound bounds the rounding error of one element of a float32 GEMM
// C = alpha*op(A)op(B) + beta*C (+ bias) however it is computed: a dot
// product of length k summed in any order, blocked or not, with or without
// FMA, errs by at most gamma_k*sum_p |a_ip*b_pj| with gamma_n = n*u/(1-n*u)
// and u = 2^-24 (Higham, Accuracy and Stability of Numerical Algorithms,
// 3.1); scaling by alpha, adding beta*C and a bias, or an alpha folded into
// a packed operand, each cost at most one more rounding, hence k+4. mag is
// |alpha|*sum_p |a_ip*b_pj| + |beta*C_ij| (+ |bias_j|).
//
// It is a worst-case bound, so it holds whatever kernel OpenBLAS (or a GPU
// library) picks for the machine; a statistical estimate such as sqrt(k)
// times the unit roundoff holds only for kernels that happen to sum in a
// friendly order.
func GemmErrorBound(k int, mag float64) float64 {
	nu := float64(k+4) * 0x1p-24
	return nu / (1 - nu) * mag
}

// gemmSlack is the GEMM allowance beyond the default tolerance between two
// devices: each may be a float32 GEMM within GemmErrorBound of the exact
// result, so they differ by at most twice that.
func gemmSlack(k int, absProd float64) float64 {
	return 2 * GemmErrorBound(k, absProd)
}

// absProduct returns |alpha|*(|op(A)|*|op(B)|)_ij + |beta*C_ij| on the host.
func absProduct(ta, tb bool, m, n, k int, alpha float32, a []float32, lda int, b []float32, ldb int, beta float32, c []float32) []float64 {
	out := make([]float64, m*n)
	for i := 0; i < m; i++ {
		for j := 0; j < n; j++ {
			var s float64
			for p := 0; p < k; p++ {
				s += math.Abs(at(a, lda, ta, i, p) * at(b, ldb, tb, p, j))
			}
			out[i*n+j] = math.Abs(float64(alpha))*s + math.Abs(float64(beta)*float64(c[i*n+j]))
		}
	}
	return out
}

func (cm *comparer) compareGemm(t *testing.T) {
	ref, dev := cm.ref, cm.dev
	shapes := []struct{ m, n, k int }{
		{1, 1, 1}, {3, 17, 5}, {17, 3, 1023}, {1023, 17, 3}, {64, 64, 64}, {129, 65, 257}, {2, 5, 0},
		// a training step's shard: gate logits (forward, data and weight
		// gradients by the transposes)
		{256, 7, 64}, {64, 7, 256},
	}
	scalars := []struct{ alpha, beta float32 }{{1, 0}, {0.5, 1}, {-2, 0.25}}
	for _, s := range shapes {
		for _, ta := range []bool{false, true} {
			for _, tb := range []bool{false, true} {
				for _, sc := range scalars {
					name := shapeName("m%d_n%d_k%d_ta%v_tb%v_a%g_b%g", s.m, s.n, s.k, ta, tb, sc.alpha, sc.beta)
					t.Run(name, func(t *testing.T) {
						h := cm.newHarness(t, uint64(s.m*1000003+s.n*1009+s.k))
						ashape, bshape := []int{s.m, s.k}, []int{s.k, s.n}
						if ta {
							ashape = []int{s.k, s.m}
						}
						if tb {
							bshape = []int{s.n, s.k}
						}
						ah := h.uniform(s.m*s.k, -1, 1)
						bh := h.uniform(s.k*s.n, -1, 1)
						ch := h.uniform(s.m*s.n, -1, 1)
						a, b, c := h.f32(ah, ashape...), h.f32(bh, bshape...), h.f32(ch, s.m, s.n)
						ref.Gemm(ta, tb, sc.alpha, a.r, b.r, sc.beta, c.r)
						dev.Gemm(ta, tb, sc.alpha, a.d, b.d, sc.beta, c.d)
						ap := absProduct(ta, tb, s.m, s.n, s.k, sc.alpha, ah, ashape[1], bh, bshape[1], sc.beta, ch)
						h.checkTol("C", c, func(i int) float64 { return gemmSlack(s.k, ap[i]) })
					})
				}
			}
		}
	}
}

func (cm *comparer) compareBatched(t *testing.T) {
	ref, dev := cm.ref, cm.dev
	type bcase struct {
		name           string
		batch, m, n, k int
		ta, tb         bool
		bcastA, bcastB bool
		gap            int // extra elements between consecutive matrices
		alpha, beta    float32
	}
	cases := []bcase{
		{"one", 1, 1, 1, 1, false, false, false, false, 0, 1, 0},
		{"experts_fwd_shared_input", 4, 33, 8, 17, false, false, true, false, 0, 1, 0},
		{"experts_fwd_per_expert_input", 3, 17, 5, 9, false, false, false, false, 0, 1, 0},
		{"experts_dW", 4, 17, 8, 33, true, false, true, false, 0, 1, 1},
		{"experts_dX", 5, 33, 17, 8, false, true, false, false, 0, 1, 0},
		{"broadcast_B", 3, 7, 5, 3, false, false, false, true, 0, 0.5, 0},
		{"gaps_between_entries", 3, 5, 4, 3, true, true, false, false, 7, -1, 2},
		{"transposes_beta", 2, 1023, 3, 17, true, true, false, false, 1, 1, 0.5},
		{"expert_shape", 12, 1024, 64, 96, false, false, true, false, 0, 1, 0},
	}
	for _, cs := range cases {
		t.Run(cs.name, func(t *testing.T) {
			h := cm.newHarness(t, uint64(cs.batch*7+cs.m*13+cs.n*17+cs.k))
			sizeA, sizeB, sizeC := cs.m*cs.k, cs.k*cs.n, cs.m*cs.n
			strideA, strideB, strideC := sizeA+cs.gap, sizeB+cs.gap, sizeC+cs.gap
			if cs.bcastA {
				strideA = 0
			}
			if cs.bcastB {
				strideB = 0
			}
			ah := h.uniform((cs.batch-1)*strideA+sizeA, -1, 1)
			bh := h.uniform((cs.batch-1)*strideB+sizeB, -1, 1)
			ch := h.uniform((cs.batch-1)*strideC+sizeC, -1, 1)
			a, b, c := h.f32(ah, len(ah)), h.f32(bh, len(bh)), h.f32(ch, len(ch))
			ref.GemmStridedBatched(cs.ta, cs.tb, cs.m, cs.n, cs.k, cs.alpha, a.r, strideA, b.r, strideB, cs.beta, c.r, strideC, cs.batch)
			dev.GemmStridedBatched(cs.ta, cs.tb, cs.m, cs.n, cs.k, cs.alpha, a.d, strideA, b.d, strideB, cs.beta, c.d, strideC, cs.batch)
			lda, ldb := cs.k, cs.n
			if cs.ta {
				lda = cs.m
			}
			if cs.tb {
				ldb = cs.k
			}
			slack := make([]float64, len(ch)) // gap elements keep 0: they must not change
			for i := 0; i < cs.batch; i++ {
				ap := absProduct(cs.ta, cs.tb, cs.m, cs.n, cs.k, cs.alpha, ah[i*strideA:], lda, bh[i*strideB:], ldb, cs.beta, ch[i*strideC:])
				for j, v := range ap {
					slack[i*strideC+j] = gemmSlack(cs.k, v)
				}
			}
			h.checkTol("C", c, func(i int) float64 { return slack[i] })
		})
	}
}

func (cm *comparer) compareBiasAct(t *testing.T) {
	ref, dev := cm.ref, cm.dev
	for _, groups := range []int{1, 3} {
		for _, rows := range []int{1, 17, 1023} {
			for _, n := range []int{1, 5, 64} {
				for _, act := range []kernels.Activation{kernels.Linear, kernels.ReLU} {
					t.Run(shapeName("g%d_r%d_n%d_act%d", groups, rows, n, act), func(t *testing.T) {
						h := cm.newHarness(t, uint64(groups*rows*n)+uint64(act))
						x := h.f32(h.normal(groups*rows*n, 1), groups, rows, n)
						b := h.f32(h.normal(groups*n, 1), groups, n)
						ref.BiasAct(x.r, b.r, groups, act)
						dev.BiasAct(x.d, b.d, groups, act)
						h.check("x", x)
					})
				}
			}
		}
	}
}

func (cm *comparer) compareActBackward(t *testing.T) {
	ref, dev := cm.ref, cm.dev
	for _, n := range elementSizes {
		for _, act := range []kernels.Activation{kernels.Linear, kernels.ReLU} {
			t.Run(shapeName("n%d_act%d", n, act), func(t *testing.T) {
				h := cm.newHarness(t, uint64(n)+uint64(act))
				yh := h.normal(n, 1)
				for i := range yh {
					yh[i] = max(yh[i], 0) // a ReLU output, with exact zeros
				}
				y, dy := h.f32(yh, n), h.randf(n)
				ref.ActBackward(dy.r, y.r, act)
				dev.ActBackward(dy.d, y.d, act)
				h.checkExact("dy", dy)
			})
		}
	}
}

func (cm *comparer) compareBiasGrad(t *testing.T) {
	ref, dev := cm.ref, cm.dev
	for _, groups := range []int{1, 4} {
		for _, rows := range []int{1, 17, 1023, 4096} {
			for _, n := range []int{1, 17, 64} {
				for _, acc := range []bool{false, true} {
					t.Run(shapeName("g%d_r%d_n%d_acc%v", groups, rows, n, acc), func(t *testing.T) {
						h := cm.newHarness(t, uint64(groups*rows*n))
						dy := h.randf(groups, rows, n)
						db := h.randf(groups, n)
						ref.BiasGrad(dy.r, db.r, groups, acc)
						dev.BiasGrad(dy.d, db.d, groups, acc)
						h.check("db", db)
					})
				}
			}
		}
	}
}

func (cm *comparer) compareDropout(t *testing.T) {
	ref, dev := cm.ref, cm.dev
	for _, n := range elementSizes {
		for _, rate := range []float32{0, 0.1, 0.5, 0.999, 1} {
			for _, seed := range []uint64{0, 42, 1<<63 + 5} {
				t.Run(shapeName("n%d_rate%g_seed%d", n, rate, seed), func(t *testing.T) {
					h := cm.newHarness(t, uint64(n)+seed)
					x := h.f32(h.normal(n, 1), n)
					mask := h.randf(n)
					ref.Dropout(x.r, mask.r, rate, seed)
					dev.Dropout(x.d, mask.d, rate, seed)
					// The keep pattern and the multipliers are the documented
					// hash and float32 1/(1-rate): they must match bit for bit.
					h.checkExact("mask", mask)
					h.checkExact("x", x)
				})
			}
		}
	}
}

func (cm *comparer) compareElementwise(t *testing.T) {
	ref, dev := cm.ref, cm.dev
	for _, n := range elementSizes {
		t.Run(shapeName("n%d", n), func(t *testing.T) {
			h := cm.newHarness(t, uint64(n))
			a, b, dst := h.randf(n), h.randf(n), h.randf(n)
			ref.Mul(dst.r, a.r, b.r)
			dev.Mul(dst.d, a.d, b.d)
			h.check("Mul", dst)
			ref.Mul(a.r, a.r, b.r) // dst aliasing an input is allowed
			dev.Mul(a.d, a.d, b.d)
			h.check("Mul aliased", a)

			y := h.randf(n)
			ref.Axpy(-0.75, b.r, y.r)
			dev.Axpy(-0.75, b.d, y.d)
			h.check("Axpy", y)
			ref.Scale(y.r, 3.5)
			dev.Scale(y.d, 3.5)
			h.check("Scale", y)

			labels := make([]float32, n)
			for i := range labels {
				labels[i] = float32(h.rng.IntN(3))
			}
			src := h.f32(labels, n)
			ref.EqualMask(dst.r, src.r, 1)
			dev.EqualMask(dst.d, src.d, 1)
			h.checkExact("EqualMask", dst)

			zh := h.normal(n, 5)
			extremes := []float32{1e4, -1e4, 88.7, -88.7, 104, -104, 0, 20, -20}
			for i := 0; i < n && i < len(extremes); i++ {
				zh[i] = extremes[i]
			}
			z := h.f32(zh, n)
			ref.Sigmoid(dst.r, z.r)
			dev.Sigmoid(dst.d, z.d)
			h.check("Sigmoid", dst)
			ref.Sigmoid(z.r, z.r) // y may alias x
			dev.Sigmoid(z.d, z.d)
			h.check("Sigmoid aliased", z)
		})
	}
}

func (cm *comparer) compareSoftmax(t *testing.T) {
	ref, dev := cm.ref, cm.dev
	for _, rows := range []int{1, 17, 1023} {
		for _, cols := range []int{1, 2, 5, 12} {
			for _, temp := range []float32{1, 0.5, 2.5} {
				t.Run(shapeName("r%d_c%d_T%g", rows, cols, temp), func(t *testing.T) {
					h := cm.newHarness(t, uint64(rows*cols)+uint64(temp*8))
					xh := h.normal(rows*cols, 3)
					// Extreme and tied logits in the first rows.
					if rows > 2 {
						for j := 0; j < cols; j++ {
							xh[j] = float32(1e4 * float64(1-2*(j%2)))
							xh[cols+j] = 7
						}
					}
					x, y := h.f32(xh, rows, cols), h.randf(rows, cols)
					ref.SoftmaxRows(y.r, x.r, temp)
					dev.SoftmaxRows(y.d, x.d, temp)
					h.check("y", y)

					// Backward from the reference's y on both devices, so that
					// only the backward op itself is compared.
					yh := h.hostF32(ref, y.r)
					yy, dy, dx := h.f32(yh, rows, cols), h.randf(rows, cols), h.randf(rows, cols)
					ref.SoftmaxBackward(dx.r, dy.r, yy.r, temp)
					dev.SoftmaxBackward(dx.d, dy.d, yy.d, temp)
					h.check("dx", dx)
				})
			}
		}
	}
}

func (cm *comparer) compareGate(t *testing.T) {
	ref, dev := cm.ref, cm.dev
	for _, rows := range []int{1, 17, 1023} {
		for _, ne := range []int{1, 2, 5, 12} {
			for _, d := range []int{1, 17, 64} {
				t.Run(shapeName("b%d_e%d_d%d", rows, ne, d), func(t *testing.T) {
					h := cm.newHarness(t, uint64(rows*ne*d))
					w := h.f32(h.uniform(rows*ne, 0, 1), rows, ne)
					// Experts as views of one [E, B, d] tensor (as the batched
					// expert GEMM produces them) or, for odd E, separate tensors.
					var ex, dex []pair
					all, dall := h.randf(ne, rows, d), h.randf(ne, rows, d)
					for e := 0; e < ne; e++ {
						if ne%2 == 0 {
							ex = append(ex, h.view(all, e*rows*d, rows, d))
						} else {
							ex = append(ex, h.randf(rows, d))
						}
						dex = append(dex, h.view(dall, e*rows*d, rows, d))
					}
					split := func(ps []pair) (r, d []*kernels.Tensor) {
						for _, p := range ps {
							r, d = append(r, p.r), append(d, p.d)
						}
						return r, d
					}
					exR, exD := split(ex)
					dexR, dexD := split(dex)
					out := h.randf(rows, d)
					ref.GateCombine(out.r, w.r, exR)
					dev.GateCombine(out.d, w.d, exD)
					h.check("out", out)

					dout, dw := h.randf(rows, d), h.randf(rows, ne)
					ref.GateCombineBackward(dout.r, w.r, exR, dw.r, dexR)
					dev.GateCombineBackward(dout.d, w.d, exD, dw.d, dexD)
					h.check("dw", dw)
					h.check("dexperts", dall)
				})
			}
		}
	}
}

func (cm *comparer) compareCopyCols(t *testing.T) {
	ref, dev := cm.ref, cm.dev
	spans := []struct{ dstCol, srcCol, width int }{{0, 0, 7}, {3, 2, 5}, {9, 6, 1}, {4, 0, 0}}
	for _, rows := range []int{1, 17, 1023, 9000} {
		for _, s := range spans {
			for _, acc := range []bool{false, true} {
				t.Run(shapeName("r%d_%d_%d_%d_acc%v", rows, s.dstCol, s.srcCol, s.width, acc), func(t *testing.T) {
					h := cm.newHarness(t, uint64(rows+s.dstCol))
					dst, src := h.randf(rows, 10), h.randf(rows, 7)
					ref.CopyCols(dst.r, s.dstCol, src.r, s.srcCol, s.width, acc)
					dev.CopyCols(dst.d, s.dstCol, src.d, s.srcCol, s.width, acc)
					h.check("dst", dst)
				})
			}
		}
	}
}

// embCase is a batch of ids for one embedding table.
type embCase struct {
	name      string
	rows      int // batch rows
	tableRows int
	dim       int
	list      bool
	maxLen    int // list features: lengths 0..maxLen
	lead      int // list features: values before offsets[0]
}

var embCases = []embCase{
	{"single_b1", 1, 5, 1, false, 0, 0},
	{"single_dup", 17, 4, 8, false, 0, 0},
	{"single_b1023", 1023, 100, 17, false, 0, 0},
	{"single_large", 4096, 50000, 16, false, 0, 0},
	{"list_b1_empty", 1, 5, 8, true, 0, 0},
	{"list_b17", 17, 6, 8, true, 4, 0},
	{"list_b1023", 1023, 300, 5, true, 6, 0},
	{"list_offset_start", 9, 10, 3, true, 3, 2},
	{"list_large", 3000, 20000, 16, true, 8, 0},
	{"few_ids_big_table", 17, 300000, 2, false, 0, 0},
	{"few_lists_big_table", 5, 300000, 3, true, 3, 0},
}

// ids returns the id values and (for lists) offsets of a case, with lists of
// every length from 0 to maxLen, repeated ids within and across rows.
func (h *harness) ids(c embCase) (ids, offsets []int32) {
	if !c.list {
		ids = make([]int32, c.rows)
		for i := range ids {
			ids[i] = int32(h.rng.IntN(c.tableRows))
		}
		return ids, nil
	}
	for i := 0; i < c.lead; i++ {
		ids = append(ids, int32(h.rng.IntN(c.tableRows)))
	}
	offsets = append(offsets, int32(len(ids)))
	for b := 0; b < c.rows; b++ {
		n := (b*7 + 3) % (c.maxLen + 1)
		for j := 0; j < n; j++ {
			id := int32(h.rng.IntN(c.tableRows))
			if j > 0 && j%3 == 0 {
				id = ids[len(ids)-1] // duplicate within a list
			}
			ids = append(ids, id)
		}
		offsets = append(offsets, int32(len(ids)))
	}
	return ids, offsets
}

func (h *harness) idTensors(ids, offsets []int32) (idp pair, offp *pair) {
	idp = h.i32(ids, len(ids))
	if offsets != nil {
		o := h.i32(offsets, len(offsets))
		offp = &o
	}
	return idp, offp
}

func offR(p *pair) *kernels.Tensor {
	if p == nil {
		return nil
	}
	return p.r
}

func offD(p *pair) *kernels.Tensor {
	if p == nil {
		return nil
	}
	return p.d
}

var combiners = []kernels.Combiner{kernels.Mean, kernels.Sum, kernels.SqrtN}

func (cm *comparer) compareGather(t *testing.T) {
	ref, dev := cm.ref, cm.dev
	for _, c := range embCases {
		for _, comb := range combiners {
			if !c.list && comb != kernels.Mean {
				continue // the combiner only matters for lists
			}
			t.Run(shapeName("%s_comb%d", c.name, comb), func(t *testing.T) {
				h := cm.newHarness(t, uint64(c.rows*c.dim)+uint64(comb))
				table := h.randf(c.tableRows, c.dim)
				idh, offh := h.ids(c)
				ids, offs := h.idTensors(idh, offh)
				const col = 3
				out := h.randf(c.rows, c.dim+col+2) // other columns must stay
				errR := ref.EmbeddingGather(out.r, col, table.r, ids.r, offR(offs), comb)
				errD := dev.EmbeddingGather(out.d, col, table.d, ids.d, offD(offs), comb)
				if errR != nil || errD != nil {
					t.Fatalf("unexpected errors: %s: %v, %s: %v", ref.Name(), errR, dev.Name(), errD)
				}
				h.check("out", out)
			})
		}
	}
}

func (cm *comparer) compareGatherErrors(t *testing.T) {
	ref, dev := cm.ref, cm.dev
	cases := []struct {
		name    string
		ids     []int32
		offsets []int32
	}{
		{"too_large", []int32{0, 1, 5, 2}, nil},
		{"negative", []int32{0, -1, 2, 9}, nil},
		{"list", []int32{0, 1, 2, 3, 7, 1}, []int32{0, 2, 2, 4, 6}},
		{"list_first_of_two", []int32{0, 1, 2, -4, 3, 7}, []int32{0, 3, 3, 5, 6}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			h := cm.newHarness(t, 3)
			table := h.randf(5, 4)
			ids, offs := h.idTensors(c.ids, c.offsets)
			rows := len(c.ids)
			if c.offsets != nil {
				rows = len(c.offsets) - 1
			}
			out := h.randf(rows, 4)
			errR := ref.EmbeddingGather(out.r, 0, table.r, ids.r, offR(offs), kernels.Mean)
			errD := dev.EmbeddingGather(out.d, 0, table.d, ids.d, offD(offs), kernels.Mean)
			var er, ed *kernels.IDRangeError
			if !errors.As(errR, &er) {
				t.Fatalf("%s: want *IDRangeError, got %v", ref.Name(), errR)
			}
			if !errors.As(errD, &ed) {
				t.Fatalf("%s: want *IDRangeError, got %v", dev.Name(), errD)
			}
			if *er != *ed {
				t.Errorf("%s reports %+v, %s reports %+v", ref.Name(), *er, dev.Name(), *ed)
			}
		})
	}
}

func (cm *comparer) compareEmbeddingBackward(t *testing.T) {
	ref, dev := cm.ref, cm.dev
	for _, c := range embCases {
		for _, comb := range combiners {
			if !c.list && comb != kernels.Mean {
				continue
			}
			t.Run(shapeName("%s_comb%d", c.name, comb), func(t *testing.T) {
				h := cm.newHarness(t, uint64(c.rows*c.dim)+uint64(comb)+11)
				idh, offh := h.ids(c)
				ids, offs := h.idTensors(idh, offh)
				const col = 2
				dout := h.randf(c.rows, c.dim+col+1)
				capacity := len(idh) + 3
				gr := kernels.SparseGrad{Rows: ref.Alloc(kernels.Int32, capacity), Values: ref.Alloc(kernels.Float32, capacity, c.dim)}
				gd := kernels.SparseGrad{Rows: dev.Alloc(kernels.Int32, capacity), Values: dev.Alloc(kernels.Float32, capacity, c.dim)}
				h.owned = append(h.owned, gr.Rows, gr.Values, gd.Rows, gd.Values)
				ref.EmbeddingBackward(&gr, dout.r, col, ids.r, offR(offs), comb, c.tableRows)
				dev.EmbeddingBackward(&gd, dout.d, col, ids.d, offD(offs), comb, c.tableRows)
				h.sync()
				if gr.N != gd.N {
					t.Fatalf("N: %s gives %d, %s gives %d", dev.Name(), gd.N, ref.Name(), gr.N)
				}
				n := gr.N
				h.checkExact("Rows", pair{gr.Rows.View(0, n), gd.Rows.View(0, n)})
				h.check("Values", pair{gr.Values.View(0, n, c.dim), gd.Values.View(0, n, c.dim)})
			})
		}
	}
}

func (cm *comparer) compareLosses(t *testing.T) {
	ref, dev := cm.ref, cm.dev
	for _, n := range elementSizes {
		for _, weighted := range []bool{false, true} {
			for _, scale := range []float32{1, 1 / float32(n), 0.7} {
				t.Run(shapeName("n%d_w%v_s%g", n, weighted, scale), func(t *testing.T) {
					h := cm.newHarness(t, uint64(n)+uint64(scale*1000))
					zh := h.normal(n, 3)
					extremes := []float32{1e4, -1e4, 100, -100, 20, -20, 0, 1e-3}
					for i := 0; i < n && i < len(extremes); i++ {
						zh[i] = extremes[i]
					}
					yh := make([]float32, n)
					for i := range yh {
						switch i % 5 {
						case 0, 1:
							yh[i] = 1
						case 4:
							yh[i] = 0.3 // soft label
						}
					}
					z, y := h.f32(zh, n), h.f32(yh, n)
					var w *pair
					if weighted {
						wh := h.uniform(n, 0, 2)
						for i := 0; i < n; i += 4 {
							wh[i] = 0 // masked out of the sample space
						}
						p := h.f32(wh, n)
						w = &p
					}
					loss, dz := h.f32([]float32{1.5}, 1), h.randf(n)
					ref.BCEWithLogits(loss.r, dz.r, z.r, y.r, offR(w), scale)
					dev.BCEWithLogits(loss.d, dz.d, z.d, y.d, offD(w), scale)
					h.check("BCE loss", loss)
					h.check("BCE dz", dz)

					// MSE on regression-sized values.
					rz, ry := h.f32(h.normal(n, 2), n), h.f32(h.normal(n, 2), n)
					ref.MSE(loss.r, dz.r, rz.r, ry.r, offR(w), scale)
					dev.MSE(loss.d, dz.d, rz.d, ry.d, offD(w), scale)
					h.check("MSE loss", loss)
					h.check("MSE dz", dz)

					ref.SumSquares(loss.r, rz.r, scale*0.01)
					dev.SumSquares(loss.d, rz.d, scale*0.01)
					h.check("SumSquares loss", loss)
				})
			}
		}
	}
}

func (cm *comparer) compareDenseOptimizers(t *testing.T) {
	ref, dev := cm.ref, cm.dev
	for _, n := range elementSizes {
		for _, l2 := range []float32{0, 0.01} {
			t.Run(shapeName("n%d_l2%g", n, l2), func(t *testing.T) {
				h := cm.newHarness(t, uint64(n)+uint64(l2*100))
				param, m, v := h.randf(n), h.f32(make([]float32, n), n), h.f32(make([]float32, n), n)
				pAda, acc := h.randf(n), h.f32(h.uniform(n, 0.1, 0.2), n)
				pSGD := h.randf(n)
				for step := 1; step <= 3; step++ {
					g := h.f32(h.normal(n, 0.1), n)
					ap := kernels.AdamParams{LR: 1e-2, Beta1: 0.9, Beta2: 0.999, Eps: 1e-7, L2: l2, Step: step}
					ref.Adam(param.r, g.r, m.r, v.r, ap)
					dev.Adam(param.d, g.d, m.d, v.d, ap)
					gp := kernels.AdagradParams{LR: 0.05, Eps: 1e-7, L2: l2}
					ref.Adagrad(pAda.r, g.r, acc.r, gp)
					dev.Adagrad(pAda.d, g.d, acc.d, gp)
					sp := kernels.SGDParams{LR: 0.1, L2: l2}
					ref.SGD(pSGD.r, g.r, sp)
					dev.SGD(pSGD.d, g.d, sp)
				}
				h.check("Adam param", param)
				h.check("Adam m", m)
				h.check("Adam v", v)
				h.check("Adagrad param", pAda)
				h.check("Adagrad acc", acc)
				h.check("SGD param", pSGD)
			})
		}
	}
	t.Run("AdamMulti", func(t *testing.T) {
		h := cm.newHarness(t, 99)
		sizes := []int{1, 17, 64 * 96, 150001}
		var ps, gs, ms, vs []pair
		for _, n := range sizes {
			ps = append(ps, h.randf(n))
			gs = append(gs, h.f32(h.normal(n, 0.1), n))
			ms = append(ms, h.f32(h.normal(n, 0.01), n))
			vs = append(vs, h.f32(h.uniform(n, 0, 1e-3), n))
		}
		side := func(ps []pair, dev bool) []*kernels.Tensor {
			var out []*kernels.Tensor
			for _, p := range ps {
				if dev {
					out = append(out, p.d)
				} else {
					out = append(out, p.r)
				}
			}
			return out
		}
		ap := kernels.AdamParams{LR: 1e-3, Beta1: 0.9, Beta2: 0.999, Eps: 1e-7, L2: 1e-3, Step: 10}
		ref.AdamMulti(side(ps, false), side(gs, false), side(ms, false), side(vs, false), ap)
		dev.AdamMulti(side(ps, true), side(gs, true), side(ms, true), side(vs, true), ap)
		for i := range sizes {
			h.check(shapeName("param%d", i), ps[i])
			h.check(shapeName("m%d", i), ms[i])
			h.check(shapeName("v%d", i), vs[i])
		}
	})
}

func (cm *comparer) compareSparseOptimizers(t *testing.T) {
	ref, dev := cm.ref, cm.dev
	cases := []struct {
		rows, dim, touched int
	}{{1, 1, 1}, {50, 5, 0}, {50, 5, 17}, {5000, 16, 1023}, {20000, 16, 4000}}
	for _, c := range cases {
		t.Run(shapeName("rows%d_dim%d_n%d", c.rows, c.dim, c.touched), func(t *testing.T) {
			h := cm.newHarness(t, uint64(c.rows*c.dim+c.touched))
			// Unique ascending rows: every (rows/touched)-th row, roughly.
			var rowsh []int32
			for r := 0; r < c.rows && len(rowsh) < c.touched; r += max(1, c.rows/max(c.touched, 1)) {
				rowsh = append(rowsh, int32(r))
			}
			nr := len(rowsh)
			capacity := nr + 4
			rowsCap := append(append([]int32(nil), rowsh...), 0, 1, 2, 3) // junk past N
			valsCap := h.normal(capacity*c.dim, 0.1)
			g := h.i32(rowsCap, capacity)
			gv := h.f32(valsCap, capacity, c.dim)
			gr := kernels.SparseGrad{Rows: g.r, Values: gv.r, N: nr}
			gd := kernels.SparseGrad{Rows: g.d, Values: gv.d, N: nr}

			tableh := h.uniform(c.rows*c.dim, -0.05, 0.05)
			mh, vh := h.normal(c.rows*c.dim, 0.01), h.uniform(c.rows*c.dim, 0, 1e-3)
			accH := h.uniform(c.rows*c.dim, 0.1, 0.2)
			tab, m, v := h.f32(tableh, c.rows, c.dim), h.f32(mh, c.rows, c.dim), h.f32(vh, c.rows, c.dim)
			tabA, acc := h.f32(tableh, c.rows, c.dim), h.f32(accH, c.rows, c.dim)
			tabS := h.f32(tableh, c.rows, c.dim)
			for step := 5; step <= 6; step++ {
				ap := kernels.AdamParams{LR: 1e-2, Beta1: 0.9, Beta2: 0.999, Eps: 1e-7, L2: 1e-4, Step: step}
				ref.SparseAdam(tab.r, m.r, v.r, &gr, ap)
				dev.SparseAdam(tab.d, m.d, v.d, &gd, ap)
				gp := kernels.AdagradParams{LR: 0.05, Eps: 1e-7, L2: 1e-4}
				ref.SparseAdagrad(tabA.r, acc.r, &gr, gp)
				dev.SparseAdagrad(tabA.d, acc.d, &gd, gp)
				sp := kernels.SGDParams{LR: 0.1, L2: 1e-4}
				ref.SparseSGD(tabS.r, &gr, sp)
				dev.SparseSGD(tabS.d, &gd, sp)
			}
			for _, x := range []struct {
				name string
				p    pair
				init []float32
			}{{"SparseAdam table", tab, tableh}, {"SparseAdam m", m, mh}, {"SparseAdam v", v, vh},
				{"SparseAdagrad table", tabA, tableh}, {"SparseAdagrad acc", acc, accH}, {"SparseSGD table", tabS, tableh}} {
				h.check(x.name, x.p)
				// Rows outside the gradient keep their bits (lazy updates).
				touched := make([]bool, c.rows)
				for _, r := range rowsh {
					touched[r] = true
				}
				got := h.hostF32(dev, x.p.d)
				for r := 0; r < c.rows; r++ {
					if touched[r] {
						continue
					}
					for j := 0; j < c.dim; j++ {
						if i := r*c.dim + j; math.Float32bits(got[i]) != math.Float32bits(x.init[i]) {
							t.Fatalf("%s: untouched row %d changed at column %d: %g -> %g", x.name, r, j, x.init[i], got[i])
						}
					}
				}
			}
		})
	}
}
