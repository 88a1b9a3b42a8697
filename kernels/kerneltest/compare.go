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
	z := Pair{ref.Alloc(kernels.Float32, 3, 17), dev.Alloc(kernels.Float32, 3, 17)}
	h.owned = append(h.owned, z.Ref, z.Dev)
	h.CheckExact("Alloc zeroed f32", z)
	zi := Pair{ref.Alloc(kernels.Int32, 1023), dev.Alloc(kernels.Int32, 1023)}
	h.owned = append(h.owned, zi.Ref, zi.Dev)
	h.CheckExact("Alloc zeroed i32", zi)

	x := h.RandF(5, 7)
	ref.Fill(x.Ref, 2.5)
	dev.Fill(x.Dev, 2.5)
	h.CheckExact("Fill", x)
	v := h.View(x, 7, 2, 7)
	ref.Zero(v.Ref)
	dev.Zero(v.Dev)
	h.CheckExact("Zero view", x)

	ids := h.I32([]int32{5, -3, 7, 1 << 30, 0}, 5)
	ids2 := Pair{ref.Alloc(kernels.Int32, 5), dev.Alloc(kernels.Int32, 5)}
	h.owned = append(h.owned, ids2.Ref, ids2.Dev)
	ref.Copy(ids2.Ref, ids.Ref)
	dev.Copy(ids2.Dev, ids.Dev)
	h.CheckExact("Copy i32", ids2)
	ref.Fill(ids2.Ref, 9)
	dev.Fill(ids2.Dev, 9)
	h.CheckExact("Fill i32", ids2)

	for _, n := range elementSizes {
		a, b := h.RandF(n), h.RandF(n)
		ref.Copy(b.Ref, a.Ref)
		dev.Copy(b.Dev, a.Dev)
		h.CheckExact(shapeName("Copy n=%d", n), b)
	}
	// A copy into the middle of a tensor through a view leaves the rest alone.
	big, small := h.RandF(4, 9), h.RandF(9)
	ref.Copy(big.Ref.View(18, 9), small.Ref)
	dev.Copy(big.Dev.View(18, 9), small.Dev)
	h.CheckExact("Copy into view", big)
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
						ah := h.Uniform(s.m*s.k, -1, 1)
						bh := h.Uniform(s.k*s.n, -1, 1)
						ch := h.Uniform(s.m*s.n, -1, 1)
						a, b, c := h.F32(ah, ashape...), h.F32(bh, bshape...), h.F32(ch, s.m, s.n)
						ref.Gemm(ta, tb, sc.alpha, a.Ref, b.Ref, sc.beta, c.Ref)
						dev.Gemm(ta, tb, sc.alpha, a.Dev, b.Dev, sc.beta, c.Dev)
						ap := absProduct(ta, tb, s.m, s.n, s.k, sc.alpha, ah, ashape[1], bh, bshape[1], sc.beta, ch)
						h.CheckTol("C", c, func(i int) float64 { return gemmSlack(s.k, ap[i]) })
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
			ah := h.Uniform((cs.batch-1)*strideA+sizeA, -1, 1)
			bh := h.Uniform((cs.batch-1)*strideB+sizeB, -1, 1)
			ch := h.Uniform((cs.batch-1)*strideC+sizeC, -1, 1)
			a, b, c := h.F32(ah, len(ah)), h.F32(bh, len(bh)), h.F32(ch, len(ch))
			ref.GemmStridedBatched(cs.ta, cs.tb, cs.m, cs.n, cs.k, cs.alpha, a.Ref, strideA, b.Ref, strideB, cs.beta, c.Ref, strideC, cs.batch)
			dev.GemmStridedBatched(cs.ta, cs.tb, cs.m, cs.n, cs.k, cs.alpha, a.Dev, strideA, b.Dev, strideB, cs.beta, c.Dev, strideC, cs.batch)
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
			h.CheckTol("C", c, func(i int) float64 { return slack[i] })
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
						x := h.F32(h.Normal(groups*rows*n, 1), groups, rows, n)
						b := h.F32(h.Normal(groups*n, 1), groups, n)
						ref.BiasAct(x.Ref, b.Ref, groups, act)
						dev.BiasAct(x.Dev, b.Dev, groups, act)
						h.Check("x", x)
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
				yh := h.Normal(n, 1)
				for i := range yh {
					yh[i] = max(yh[i], 0) // a ReLU output, with exact zeros
				}
				y, dy := h.F32(yh, n), h.RandF(n)
				ref.ActBackward(dy.Ref, y.Ref, act)
				dev.ActBackward(dy.Dev, y.Dev, act)
				h.CheckExact("dy", dy)
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
						dy := h.RandF(groups, rows, n)
						db := h.RandF(groups, n)
						ref.BiasGrad(dy.Ref, db.Ref, groups, acc)
						dev.BiasGrad(dy.Dev, db.Dev, groups, acc)
						h.Check("db", db)
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
					x := h.F32(h.Normal(n, 1), n)
					mask := h.RandF(n)
					ref.Dropout(x.Ref, mask.Ref, rate, seed)
					dev.Dropout(x.Dev, mask.Dev, rate, seed)
					// The keep pattern and the multipliers are the documented
					// hash and float32 1/(1-rate): they must match bit for bit.
					h.CheckExact("mask", mask)
					h.CheckExact("x", x)
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
			a, b, dst := h.RandF(n), h.RandF(n), h.RandF(n)
			ref.Mul(dst.Ref, a.Ref, b.Ref)
			dev.Mul(dst.Dev, a.Dev, b.Dev)
			h.Check("Mul", dst)
			ref.Mul(a.Ref, a.Ref, b.Ref) // dst aliasing an input is allowed
			dev.Mul(a.Dev, a.Dev, b.Dev)
			h.Check("Mul aliased", a)

			y := h.RandF(n)
			ref.Axpy(-0.75, b.Ref, y.Ref)
			dev.Axpy(-0.75, b.Dev, y.Dev)
			h.Check("Axpy", y)
			ref.Scale(y.Ref, 3.5)
			dev.Scale(y.Dev, 3.5)
			h.Check("Scale", y)

			labels := make([]float32, n)
			for i := range labels {
				labels[i] = float32(h.rng.IntN(3))
			}
			src := h.F32(labels, n)
			ref.EqualMask(dst.Ref, src.Ref, 1)
			dev.EqualMask(dst.Dev, src.Dev, 1)
			h.CheckExact("EqualMask", dst)

			zh := h.Normal(n, 5)
			extremes := []float32{1e4, -1e4, 88.7, -88.7, 104, -104, 0, 20, -20}
			for i := 0; i < n && i < len(extremes); i++ {
				zh[i] = extremes[i]
			}
			z := h.F32(zh, n)
			ref.Sigmoid(dst.Ref, z.Ref)
			dev.Sigmoid(dst.Dev, z.Dev)
			h.Check("Sigmoid", dst)
			ref.Sigmoid(z.Ref, z.Ref) // y may alias x
			dev.Sigmoid(z.Dev, z.Dev)
			h.Check("Sigmoid aliased", z)
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
					xh := h.Normal(rows*cols, 3)
					// Extreme and tied logits in the first rows.
					if rows > 2 {
						for j := 0; j < cols; j++ {
							xh[j] = float32(1e4 * float64(1-2*(j%2)))
							xh[cols+j] = 7
						}
					}
					x, y := h.F32(xh, rows, cols), h.RandF(rows, cols)
					ref.SoftmaxRows(y.Ref, x.Ref, temp)
					dev.SoftmaxRows(y.Dev, x.Dev, temp)
					h.Check("y", y)

					// Backward from the reference's y on both devices, so that
					// only the backward op itself is compared.
					yh := Download(ref, y.Ref)
					yy, dy, dx := h.F32(yh, rows, cols), h.RandF(rows, cols), h.RandF(rows, cols)
					ref.SoftmaxBackward(dx.Ref, dy.Ref, yy.Ref, temp)
					dev.SoftmaxBackward(dx.Dev, dy.Dev, yy.Dev, temp)
					h.Check("dx", dx)
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
					w := h.F32(h.Uniform(rows*ne, 0, 1), rows, ne)
					// Experts as views of one [E, B, d] tensor (as the batched
					// expert GEMM produces them) or, for odd E, separate tensors.
					var ex, dex []Pair
					all, dall := h.RandF(ne, rows, d), h.RandF(ne, rows, d)
					for e := 0; e < ne; e++ {
						if ne%2 == 0 {
							ex = append(ex, h.View(all, e*rows*d, rows, d))
						} else {
							ex = append(ex, h.RandF(rows, d))
						}
						dex = append(dex, h.View(dall, e*rows*d, rows, d))
					}
					split := func(ps []Pair) (r, d []*kernels.Tensor) {
						for _, p := range ps {
							r, d = append(r, p.Ref), append(d, p.Dev)
						}
						return r, d
					}
					exR, exD := split(ex)
					dexR, dexD := split(dex)
					out := h.RandF(rows, d)
					ref.GateCombine(out.Ref, w.Ref, exR)
					dev.GateCombine(out.Dev, w.Dev, exD)
					h.Check("out", out)

					dout, dw := h.RandF(rows, d), h.RandF(rows, ne)
					ref.GateCombineBackward(dout.Ref, w.Ref, exR, dw.Ref, dexR)
					dev.GateCombineBackward(dout.Dev, w.Dev, exD, dw.Dev, dexD)
					h.Check("dw", dw)
					h.Check("dexperts", dall)
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
					dst, src := h.RandF(rows, 10), h.RandF(rows, 7)
					ref.CopyCols(dst.Ref, s.dstCol, src.Ref, s.srcCol, s.width, acc)
					dev.CopyCols(dst.Dev, s.dstCol, src.Dev, s.srcCol, s.width, acc)
					h.Check("dst", dst)
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
func (h *Harness) ids(c embCase) (ids, offsets []int32) {
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

func (h *Harness) idTensors(ids, offsets []int32) (idp Pair, offp *Pair) {
	idp = h.I32(ids, len(ids))
	if offsets != nil {
		o := h.I32(offsets, len(offsets))
		offp = &o
	}
	return idp, offp
}

func offR(p *Pair) *kernels.Tensor {
	if p == nil {
		return nil
	}
	return p.Ref
}

func offD(p *Pair) *kernels.Tensor {
	if p == nil {
		return nil
	}
	return p.Dev
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
				table := h.RandF(c.tableRows, c.dim)
				idh, offh := h.ids(c)
				ids, offs := h.idTensors(idh, offh)
				const col = 3
				out := h.RandF(c.rows, c.dim+col+2) // other columns must stay
				errR := ref.EmbeddingGather(out.Ref, col, table.Ref, ids.Ref, offR(offs), comb)
				errD := dev.EmbeddingGather(out.Dev, col, table.Dev, ids.Dev, offD(offs), comb)
				if errR != nil || errD != nil {
					t.Fatalf("unexpected errors: %s: %v, %s: %v", ref.Name(), errR, dev.Name(), errD)
				}
				h.Check("out", out)
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
			table := h.RandF(5, 4)
			ids, offs := h.idTensors(c.ids, c.offsets)
			rows := len(c.ids)
			if c.offsets != nil {
				rows = len(c.offsets) - 1
			}
			out := h.RandF(rows, 4)
			errR := ref.EmbeddingGather(out.Ref, 0, table.Ref, ids.Ref, offR(offs), kernels.Mean)
			errD := dev.EmbeddingGather(out.Dev, 0, table.Dev, ids.Dev, offD(offs), kernels.Mean)
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
				dout := h.RandF(c.rows, c.dim+col+1)
				capacity := len(idh) + 3
				gr := kernels.SparseGrad{Rows: ref.Alloc(kernels.Int32, capacity), Values: ref.Alloc(kernels.Float32, capacity, c.dim)}
				gd := kernels.SparseGrad{Rows: dev.Alloc(kernels.Int32, capacity), Values: dev.Alloc(kernels.Float32, capacity, c.dim)}
				h.owned = append(h.owned, gr.Rows, gr.Values, gd.Rows, gd.Values)
				ref.EmbeddingBackward(&gr, dout.Ref, col, ids.Ref, offR(offs), comb, c.tableRows)
				dev.EmbeddingBackward(&gd, dout.Dev, col, ids.Dev, offD(offs), comb, c.tableRows)
				h.Sync()
				if gr.N != gd.N {
					t.Fatalf("N: %s gives %d, %s gives %d", dev.Name(), gd.N, ref.Name(), gr.N)
				}
				n := gr.N
				h.CheckExact("Rows", Pair{gr.Rows.View(0, n), gd.Rows.View(0, n)})
				h.Check("Values", Pair{gr.Values.View(0, n, c.dim), gd.Values.View(0, n, c.dim)})
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
					zh := h.Normal(n, 3)
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
					z, y := h.F32(zh, n), h.F32(yh, n)
					var w *Pair
					if weighted {
						wh := h.Uniform(n, 0, 2)
						for i := 0; i < n; i += 4 {
							wh[i] = 0 // masked out of the sample space
						}
						p := h.F32(wh, n)
						w = &p
					}
					loss, dz := h.F32([]float32{1.5}, 1), h.RandF(n)
					ref.BCEWithLogits(loss.Ref, dz.Ref, z.Ref, y.Ref, offR(w), scale)
					dev.BCEWithLogits(loss.Dev, dz.Dev, z.Dev, y.Dev, offD(w), scale)
					h.Check("BCE loss", loss)
					h.Check("BCE dz", dz)

					// MSE on regression-sized values.
					rz, ry := h.F32(h.Normal(n, 2), n), h.F32(h.Normal(n, 2), n)
					ref.MSE(loss.Ref, dz.Ref, rz.Ref, ry.Ref, offR(w), scale)
					dev.MSE(loss.Dev, dz.Dev, rz.Dev, ry.Dev, offD(w), scale)
					h.Check("MSE loss", loss)
					h.Check("MSE dz", dz)

					ref.SumSquares(loss.Ref, rz.Ref, scale*0.01)
					dev.SumSquares(loss.Dev, rz.Dev, scale*0.01)
					h.Check("SumSquares loss", loss)
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
				param, m, v := h.RandF(n), h.F32(make([]float32, n), n), h.F32(make([]float32, n), n)
				pAda, acc := h.RandF(n), h.F32(h.Uniform(n, 0.1, 0.2), n)
				pSGD := h.RandF(n)
				for step := 1; step <= 3; step++ {
					g := h.F32(h.Normal(n, 0.1), n)
					ap := kernels.AdamParams{LR: 1e-2, Beta1: 0.9, Beta2: 0.999, Eps: 1e-7, L2: l2, Step: step}
					ref.Adam(param.Ref, g.Ref, m.Ref, v.Ref, ap)
					dev.Adam(param.Dev, g.Dev, m.Dev, v.Dev, ap)
					gp := kernels.AdagradParams{LR: 0.05, Eps: 1e-7, L2: l2}
					ref.Adagrad(pAda.Ref, g.Ref, acc.Ref, gp)
					dev.Adagrad(pAda.Dev, g.Dev, acc.Dev, gp)
					sp := kernels.SGDParams{LR: 0.1, L2: l2}
					ref.SGD(pSGD.Ref, g.Ref, sp)
					dev.SGD(pSGD.Dev, g.Dev, sp)
				}
				h.Check("Adam param", param)
				h.Check("Adam m", m)
				h.Check("Adam v", v)
				h.Check("Adagrad param", pAda)
				h.Check("Adagrad acc", acc)
				h.Check("SGD param", pSGD)
			})
		}
	}
	t.Run("AdamMulti", func(t *testing.T) {
		h := cm.newHarness(t, 99)
		sizes := []int{1, 17, 64 * 96, 150001}
		var ps, gs, ms, vs []Pair
		for _, n := range sizes {
			ps = append(ps, h.RandF(n))
			gs = append(gs, h.F32(h.Normal(n, 0.1), n))
			ms = append(ms, h.F32(h.Normal(n, 0.01), n))
			vs = append(vs, h.F32(h.Uniform(n, 0, 1e-3), n))
		}
		side := func(ps []Pair, dev bool) []*kernels.Tensor {
			var out []*kernels.Tensor
			for _, p := range ps {
				if dev {
					out = append(out, p.Dev)
				} else {
					out = append(out, p.Ref)
				}
			}
			return out
		}
		ap := kernels.AdamParams{LR: 1e-3, Beta1: 0.9, Beta2: 0.999, Eps: 1e-7, L2: 1e-3, Step: 10}
		ref.AdamMulti(side(ps, false), side(gs, false), side(ms, false), side(vs, false), ap)
		dev.AdamMulti(side(ps, true), side(gs, true), side(ms, true), side(vs, true), ap)
		for i := range sizes {
			h.Check(shapeName("param%d", i), ps[i])
			h.Check(shapeName("m%d", i), ms[i])
			h.Check(shapeName("v%d", i), vs[i])
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
			valsCap := h.Normal(capacity*c.dim, 0.1)
			g := h.I32(rowsCap, capacity)
			gv := h.F32(valsCap, capacity, c.dim)
			gr := kernels.SparseGrad{Rows: g.Ref, Values: gv.Ref, N: nr}
			gd := kernels.SparseGrad{Rows: g.Dev, Values: gv.Dev, N: nr}

			tableh := h.Uniform(c.rows*c.dim, -0.05, 0.05)
			mh, vh := h.Normal(c.rows*c.dim, 0.01), h.Uniform(c.rows*c.dim, 0, 1e-3)
			accH := h.Uniform(c.rows*c.dim, 0.1, 0.2)
			tab, m, v := h.F32(tableh, c.rows, c.dim), h.F32(mh, c.rows, c.dim), h.F32(vh, c.rows, c.dim)
			tabA, acc := h.F32(tableh, c.rows, c.dim), h.F32(accH, c.rows, c.dim)
			tabS := h.F32(tableh, c.rows, c.dim)
			for step := 5; step <= 6; step++ {
				ap := kernels.AdamParams{LR: 1e-2, Beta1: 0.9, Beta2: 0.999, Eps: 1e-7, L2: 1e-4, Step: step}
				ref.SparseAdam(tab.Ref, m.Ref, v.Ref, &gr, ap)
				dev.SparseAdam(tab.Dev, m.Dev, v.Dev, &gd, ap)
				gp := kernels.AdagradParams{LR: 0.05, Eps: 1e-7, L2: 1e-4}
				ref.SparseAdagrad(tabA.Ref, acc.Ref, &gr, gp)
				dev.SparseAdagrad(tabA.Dev, acc.Dev, &gd, gp)
				sp := kernels.SGDParams{LR: 0.1, L2: 1e-4}
				ref.SparseSGD(tabS.Ref, &gr, sp)
				dev.SparseSGD(tabS.Dev, &gd, sp)
			}
			for _, x := range []struct {
				name string
				p    Pair
				init []float32
			}{{"SparseAdam table", tab, tableh}, {"SparseAdam m", m, mh}, {"SparseAdam v", v, vh},
				{"SparseAdagrad table", tabA, tableh}, {"SparseAdagrad acc", acc, accH}, {"SparseSGD table", tabS, tableh}} {
				h.Check(x.name, x.p)
				// Rows outside the gradient keep their bits (lazy updates).
				touched := make([]bool, c.rows)
				for _, r := range rowsh {
					touched[r] = true
				}
				got := Download(dev, x.p.Dev)
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
