package kernels_test

import (
	"errors"
	"math"
	"math/rand/v2"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/mtlrank/mtlrank/kernels"
	"github.com/mtlrank/mtlrank/kernels/kerneltest"
)

// tensor builds a CPU tensor holding a copy of data.
func tensor(c *kernels.CPU, data []float32, shape ...int) *kernels.Tensor {
	t := c.Alloc(kernels.Float32, shape...)
	c.CopyFromHostF32(t, data)
	return t
}

func itensor(c *kernels.CPU, data []int32, shape ...int) *kernels.Tensor {
	t := c.Alloc(kernels.Int32, shape...)
	c.CopyFromHostI32(t, data)
	return t
}

func randSlice(rng *rand.Rand, n int, lo, hi float32) []float32 {
	x := make([]float32, n)
	for i := range x {
		x[i] = lo + (hi-lo)*rng.Float32()
	}
	return x
}

func newRNG(seed uint64) *rand.Rand { return rand.New(rand.NewPCG(seed, 12345)) }

func assertClose(t *testing.T, want, got []float32, tol float64, msg string) {
	t.Helper()
	require.Equal(t, len(want), len(got), msg)
	for i := range want {
		if d := math.Abs(float64(want[i]) - float64(got[i])); d > tol*(1+math.Abs(float64(want[i]))) || math.IsNaN(float64(got[i])) {
			t.Fatalf("%s[%d]: want %g, got %g", msg, i, want[i], got[i])
		}
	}
}

var threadCounts = []int{1, 2}

func TestAllocZeroedAndWrapBorrows(t *testing.T) {
	c := kernels.NewCPU(1)
	x := c.Alloc(kernels.Float32, 3, 4)
	require.Equal(t, make([]float32, 12), x.F32)
	require.True(t, x.Owned())
	assert.Equal(t, 3, x.Rows())
	assert.Equal(t, 4, x.Cols())
	x.Release()
	assert.Nil(t, x.F32)
	x.Release() // second release is a no-op

	ids := c.Alloc(kernels.Int32, 5)
	require.Equal(t, make([]int32, 5), ids.I32)

	buf := []float32{1, 2, 3, 4, 5, 6, 7}
	w := kernels.WrapF32(c, buf, 2, 3)
	assert.False(t, w.Owned())
	c.Scale(w, 2)
	assert.Equal(t, []float32{2, 4, 6, 8, 10, 12, 7}, buf, "wrap shares memory and stops at prod(shape)")
	w.Release()
	assert.Equal(t, float32(2), buf[0], "releasing a wrap leaves the caller's memory")

	ib := []int32{4, 5, 6}
	wi := kernels.WrapI32(c, ib, 3)
	assert.Equal(t, kernels.Int32, wi.DType)
	ib[1] = 9
	assert.Equal(t, int32(9), wi.I32[1])
	assert.Panics(t, func() { kernels.WrapF32(c, buf, 4, 2) })
}

func TestCopyFillZero(t *testing.T) {
	c := kernels.NewCPU(2)
	x := tensor(c, []float32{1, 2, 3, 4}, 2, 2)
	out := make([]float32, 4)
	c.CopyToHostF32(out, x)
	assert.Equal(t, []float32{1, 2, 3, 4}, out)
	c.Fill(x.View(2, 2), -1)
	assert.Equal(t, []float32{1, 2, -1, -1}, x.F32)
	y := c.Alloc(kernels.Float32, 4)
	c.Copy(y, x)
	assert.Equal(t, x.F32, y.F32)
	c.Zero(x)
	assert.Equal(t, []float32{0, 0, 0, 0}, x.F32)
	ids := itensor(c, []int32{1, 2, 3}, 3)
	c.Fill(ids, 7)
	assert.Equal(t, []int32{7, 7, 7}, ids.I32)
	require.NoError(t, c.Sync())
	assert.Panics(t, func() { c.Copy(y, ids) })
}

// naiveGemm is the textbook triple loop in float64: C = alpha*op(A)op(B) +
// beta*C, and per element the magnitude |alpha|*sum|a*b| + |beta*C| of
// kerneltest.GemmErrorBound.
func naiveGemm(ta, tb bool, m, n, k int, alpha float32, a, b []float32, beta float32, cin []float32) (want, mag []float64) {
	want, mag = make([]float64, m*n), make([]float64, m*n)
	for i := 0; i < m; i++ {
		for j := 0; j < n; j++ {
			var s, abs float64
			for p := 0; p < k; p++ {
				av := a[i*k+p]
				if ta {
					av = a[p*m+i]
				}
				bv := b[p*n+j]
				if tb {
					bv = b[j*k+p]
				}
				s += float64(av) * float64(bv)
				abs += math.Abs(float64(av) * float64(bv))
			}
			want[i*n+j] = float64(alpha)*s + float64(beta)*float64(cin[i*n+j])
			mag[i*n+j] = math.Abs(float64(alpha))*abs + math.Abs(float64(beta)*float64(cin[i*n+j]))
		}
	}
	return want, mag
}

// assertGemm fails unless got[off+i] is within the worst-case float32 GEMM
// error of want[i] for every i: a bound that holds whatever kernel OpenBLAS
// picks on this CPU.
func assertGemm(t *testing.T, k int, want, mag []float64, got []float32, off int, msg string) {
	t.Helper()
	for i := range want {
		bound := kerneltest.GemmErrorBound(k, mag[i])
		if d := math.Abs(float64(got[off+i]) - want[i]); !(d <= bound) {
			t.Fatalf("%s[%d]: want %g, got %g (error %.3g, bound %.3g)", msg, off+i, want[i], got[off+i], d, bound)
		}
	}
}

func TestGemmHandComputed(t *testing.T) {
	// A = [1 2 3; 4 5 6], B = [7 8; 9 10; 11 12], A*B = [58 64; 139 154].
	a := []float32{1, 2, 3, 4, 5, 6}
	b := []float32{7, 8, 9, 10, 11, 12}
	aT := []float32{1, 4, 2, 5, 3, 6}    // A^T stored [3,2]
	bT := []float32{7, 9, 11, 8, 10, 12} // B^T stored [2,3]
	cases := []struct {
		name         string
		ta, tb       bool
		a, b         []float32
		ashape       []int
		bshape       []int
		alpha, beta  float32
		c0, expected []float32
	}{
		{"NN", false, false, a, b, []int{2, 3}, []int{3, 2}, 1, 0, []float32{9, 9, 9, 9}, []float32{58, 64, 139, 154}},
		{"TN", true, false, aT, b, []int{3, 2}, []int{3, 2}, 1, 0, []float32{0, 0, 0, 0}, []float32{58, 64, 139, 154}},
		{"NT", false, true, a, bT, []int{2, 3}, []int{2, 3}, 1, 0, []float32{0, 0, 0, 0}, []float32{58, 64, 139, 154}},
		{"TT", true, true, aT, bT, []int{3, 2}, []int{2, 3}, 1, 0, []float32{0, 0, 0, 0}, []float32{58, 64, 139, 154}},
		{"alpha_beta", false, false, a, b, []int{2, 3}, []int{3, 2}, 0.5, 2, []float32{1, 2, 3, 4}, []float32{31, 36, 75.5, 85}},
		{"beta0_ignores_nan", false, false, a, b, []int{2, 3}, []int{3, 2}, 1, 0,
			[]float32{float32(math.NaN()), 0, 0, 0}, []float32{58, 64, 139, 154}},
	}
	for _, th := range threadCounts {
		c := kernels.NewCPU(th)
		for _, tc := range cases {
			t.Run(tc.name, func(t *testing.T) {
				cm := tensor(c, tc.c0, 2, 2)
				c.Gemm(tc.ta, tc.tb, tc.alpha, tensor(c, tc.a, tc.ashape...), tensor(c, tc.b, tc.bshape...), tc.beta, cm)
				assert.Equal(t, tc.expected, cm.F32)
			})
		}
	}
}

func TestGemmAgainstNaive(t *testing.T) {
	rng := newRNG(1)
	shapes := [][3]int{{1, 1, 1}, {3, 17, 5}, {17, 1, 1023}, {1023, 3, 17}, {100, 64, 96}}
	for _, th := range threadCounts {
		c := kernels.NewCPU(th)
		for _, s := range shapes {
			m, n, k := s[0], s[1], s[2]
			for _, ta := range []bool{false, true} {
				for _, tb := range []bool{false, true} {
					ah, bh, ch := randSlice(rng, m*k, -1, 1), randSlice(rng, k*n, -1, 1), randSlice(rng, m*n, -1, 1)
					ashape, bshape := []int{m, k}, []int{k, n}
					if ta {
						ashape = []int{k, m}
					}
					if tb {
						bshape = []int{n, k}
					}
					cm := tensor(c, ch, m, n)
					c.Gemm(ta, tb, 1.5, tensor(c, ah, ashape...), tensor(c, bh, bshape...), -0.5, cm)
					want, mag := naiveGemm(ta, tb, m, n, k, 1.5, ah, bh, -0.5, ch)
					assertGemm(t, k, want, mag, cm.F32, 0, "C")
				}
			}
		}
	}
}

func TestGemmZeroK(t *testing.T) {
	c := kernels.NewCPU(1)
	cm := tensor(c, []float32{1, 2}, 1, 2)
	c.Gemm(false, false, 1, c.Alloc(kernels.Float32, 1, 0), c.Alloc(kernels.Float32, 0, 2), 3, cm)
	assert.Equal(t, []float32{3, 6}, cm.F32)
	assert.Panics(t, func() { c.Gemm(false, false, 1, cm, cm, 0, cm) }, "shape mismatch is a programming error")
}

func TestGemmStridedBatched(t *testing.T) {
	rng := newRNG(2)
	for _, th := range threadCounts {
		c := kernels.NewCPU(th)
		for _, tc := range []struct {
			name           string
			batch, m, n, k int
			ta, tb         bool
			bcastA, bcastB bool
			gap            int
			alpha, beta    float32
		}{
			{"experts_shared_input", 4, 32, 16, 24, false, false, true, false, 0, 1, 0},
			{"dW_broadcast_A_transposed", 3, 24, 16, 32, true, false, true, false, 0, 1, 1},
			{"dX_transposed_B", 3, 32, 24, 16, false, true, false, false, 0, 1, 0.5},
			{"broadcast_B_with_gaps", 5, 3, 4, 7, true, true, false, true, 3, -2, 1},
		} {
			t.Run(tc.name, func(t *testing.T) {
				sa, sb, sc := tc.m*tc.k+tc.gap, tc.k*tc.n+tc.gap, tc.m*tc.n+tc.gap
				if tc.bcastA {
					sa = 0
				}
				if tc.bcastB {
					sb = 0
				}
				ah := randSlice(rng, (tc.batch-1)*sa+tc.m*tc.k, -1, 1)
				bh := randSlice(rng, (tc.batch-1)*sb+tc.k*tc.n, -1, 1)
				ch := randSlice(rng, (tc.batch-1)*sc+tc.m*tc.n, -1, 1)
				cm := tensor(c, ch, len(ch))
				c.GemmStridedBatched(tc.ta, tc.tb, tc.m, tc.n, tc.k, tc.alpha, tensor(c, ah, len(ah)), sa,
					tensor(c, bh, len(bh)), sb, tc.beta, cm, sc, tc.batch)
				gaps := append([]float32(nil), ch...)
				for i := 0; i < tc.batch; i++ {
					want, mag := naiveGemm(tc.ta, tc.tb, tc.m, tc.n, tc.k, tc.alpha, ah[i*sa:], bh[i*sb:], tc.beta, ch[i*sc:])
					assertGemm(t, tc.k, want, mag, cm.F32, i*sc, "C")
					copy(gaps[i*sc:], cm.F32[i*sc:i*sc+tc.m*tc.n])
				}
				assert.Equal(t, gaps, cm.F32, "gaps between entries must be left as they were")
			})
		}
	}
}

func TestBiasActHand(t *testing.T) {
	c := kernels.NewCPU(1)
	// groups=2, rows=2, n=2
	x := tensor(c, []float32{1, -1, 2, -2, 3, -3, 4, -4}, 2, 2, 2)
	c.BiasAct(x, tensor(c, []float32{0.5, 0.5, -10, 10}, 2, 2), 2, kernels.ReLU)
	assert.Equal(t, []float32{1.5, 0, 2.5, 0, 0, 7, 0, 6}, x.F32)
	y := tensor(c, []float32{1, -1, 2, -2}, 2, 2)
	c.BiasAct(y, tensor(c, []float32{1, 2}, 2), 1, kernels.Linear)
	assert.Equal(t, []float32{2, 1, 3, 0}, y.F32)
}

func TestActBackwardAndBiasGradHand(t *testing.T) {
	c := kernels.NewCPU(1)
	dy := tensor(c, []float32{1, 2, 3, 4}, 4)
	c.ActBackward(dy, tensor(c, []float32{0.5, 0, 2, 0}, 4), kernels.ReLU)
	assert.Equal(t, []float32{1, 0, 3, 0}, dy.F32)
	c.ActBackward(dy, tensor(c, []float32{0, 0, 0, 0}, 4), kernels.Linear)
	assert.Equal(t, []float32{1, 0, 3, 0}, dy.F32)

	// groups=2, rows=3, n=2
	g := tensor(c, []float32{1, 2, 3, 4, 5, 6, 10, 20, 30, 40, 50, 60}, 2, 3, 2)
	db := tensor(c, []float32{100, 100, 100, 100}, 2, 2)
	c.BiasGrad(g, db, 2, false)
	assert.Equal(t, []float32{9, 12, 90, 120}, db.F32)
	c.BiasGrad(g, db, 2, true)
	assert.Equal(t, []float32{18, 24, 180, 240}, db.F32)

	// An empty batch has a zero bias gradient (here wider than one block).
	wide := c.Alloc(kernels.Float32, 3, 70)
	c.Fill(wide, 5)
	c.BiasGrad(c.Alloc(kernels.Float32, 3, 0, 70), wide, 3, false)
	assert.Equal(t, make([]float32, 210), wide.F32)
}

func TestEmptyBatches(t *testing.T) {
	c := kernels.NewCPU(2)
	empty := c.Alloc(kernels.Float32, 0, 8)
	c.Gemm(false, false, 1, c.Alloc(kernels.Float32, 0, 3), c.Alloc(kernels.Float32, 3, 8), 0, empty)
	c.BiasAct(empty, c.Alloc(kernels.Float32, 8), 1, kernels.ReLU)
	require.NoError(t, c.EmbeddingGather(empty, 0, c.Alloc(kernels.Float32, 4, 8), c.Alloc(kernels.Int32, 0), nil, kernels.Mean))
	require.NoError(t, c.EmbeddingGather(empty, 0, c.Alloc(kernels.Float32, 4, 8), c.Alloc(kernels.Int32, 0),
		itensor(c, []int32{0}, 1), kernels.Mean))
	g := sparseGrad(c, 1, 8)
	c.EmbeddingBackward(g, empty, 0, c.Alloc(kernels.Int32, 0), nil, kernels.Mean, 4)
	assert.Equal(t, 0, g.N)
	loss := c.Alloc(kernels.Float32, 1)
	e := c.Alloc(kernels.Float32, 0)
	c.BCEWithLogits(loss, e, e, e, nil, 1)
	c.SoftmaxRows(empty, empty, 1)
	assert.Equal(t, float32(0), loss.F32[0])
}

// lossOf is sum_i r_i*x_i in float64: a random linear functional used to turn
// an op's output into a scalar for finite differences.
func lossOf(r, x []float32) float64 {
	var s float64
	for i := range r {
		s += float64(r[i]) * float64(x[i])
	}
	return s
}

// fdCheck compares analytic with central finite differences of f with
// respect to each element of x (perturbed in place and restored).
func fdCheck(t *testing.T, name string, x []float32, f func() float64, analytic []float32, h, tol float64) {
	t.Helper()
	require.Equal(t, len(x), len(analytic), name)
	for i := range x {
		old := x[i]
		x[i] = old + float32(h)
		fp := f()
		x[i] = old - float32(h)
		fm := f()
		x[i] = old
		num := (fp - fm) / (float64(old+float32(h)) - float64(old-float32(h)))
		if d := math.Abs(num - float64(analytic[i])); d > tol*(1+math.Abs(num)) {
			t.Fatalf("%s: d/dx[%d]: analytic %g, finite difference %g", name, i, analytic[i], num)
		}
	}
}

func TestGradReLUAndBias(t *testing.T) {
	rng := newRNG(3)
	c := kernels.NewCPU(1)
	const groups, rows, n = 2, 5, 3
	xh := randSlice(rng, groups*rows*n, -1, 1)
	for i := range xh { // keep away from the kink at 0
		if math.Abs(float64(xh[i])) < 0.05 {
			xh[i] = 0.3
		}
	}
	bh := make([]float32, groups*n)
	r := randSlice(rng, len(xh), -1, 1)
	x, y, b := c.Alloc(kernels.Float32, len(xh)), c.Alloc(kernels.Float32, groups, rows, n), tensor(c, bh, groups, n)
	f := func() float64 {
		c.CopyFromHostF32(x, xh)
		c.Copy(y, x)
		c.BiasAct(y, b, groups, kernels.ReLU)
		return lossOf(r, y.F32)
	}
	f()
	dy := tensor(c, r, groups, rows, n)
	c.ActBackward(dy, y, kernels.ReLU)
	fdCheck(t, "ReLU", xh, f, dy.F32, 1e-3, 1e-3)

	db := c.Alloc(kernels.Float32, groups, n)
	c.BiasGrad(dy, db, groups, false)
	fdCheck(t, "bias", b.F32, f, db.F32, 1e-3, 1e-3)
}

func TestSoftmaxHandAndGrad(t *testing.T) {
	c := kernels.NewCPU(1)
	l2, l3 := float32(math.Log(2)), float32(math.Log(3))
	y := c.Alloc(kernels.Float32, 2, 3)
	// Temperature 2 on 2*log(1, 2, 3) gives 1/6, 2/6, 3/6; shifting a row by
	// 100 changes nothing (up to the float32 rounding of 100 + 2*log 3).
	c.SoftmaxRows(y, tensor(c, []float32{0, 2 * l2, 2 * l3, 100, 100 + 2*l2, 100 + 2*l3}, 2, 3), 2)
	assertClose(t, []float32{1. / 6, 2. / 6, 3. / 6, 1. / 6, 2. / 6, 3. / 6}, y.F32, 1e-5, "softmax")

	rng := newRNG(4)
	for _, temp := range []float32{1, 0.5, 3} {
		const rows, cols = 3, 5
		xh := randSlice(rng, rows*cols, -2, 2)
		r := randSlice(rng, rows*cols, -1, 1)
		x, y := c.Alloc(kernels.Float32, rows, cols), c.Alloc(kernels.Float32, rows, cols)
		f := func() float64 {
			c.CopyFromHostF32(x, xh)
			c.SoftmaxRows(y, x, temp)
			return lossOf(r, y.F32)
		}
		f()
		dx := c.Alloc(kernels.Float32, rows, cols)
		c.SoftmaxBackward(dx, tensor(c, r, rows, cols), y, temp)
		fdCheck(t, "softmax", xh, f, dx.F32, 1e-2, 2e-3)
	}
}

func TestGateCombineHandAndGrad(t *testing.T) {
	c := kernels.NewCPU(1)
	e0 := tensor(c, []float32{1, 2, 3, 4}, 2, 2)
	e1 := tensor(c, []float32{10, 20, 30, 40}, 2, 2)
	w := tensor(c, []float32{0.25, 0.75, 1, 0}, 2, 2)
	out := c.Alloc(kernels.Float32, 2, 2)
	c.GateCombine(out, w, []*kernels.Tensor{e0, e1})
	assert.Equal(t, []float32{7.75, 15.5, 3, 4}, out.F32)

	rng := newRNG(5)
	const rows, ne, d = 4, 3, 5
	wh := randSlice(rng, rows*ne, 0, 1)
	all := randSlice(rng, ne*rows*d, -1, 1)
	r := randSlice(rng, rows*d, -1, 1)
	wt, allT := c.Alloc(kernels.Float32, rows, ne), c.Alloc(kernels.Float32, ne, rows, d)
	var experts []*kernels.Tensor
	for e := 0; e < ne; e++ {
		experts = append(experts, allT.View(e*rows*d, rows, d))
	}
	o := c.Alloc(kernels.Float32, rows, d)
	f := func() float64 {
		c.CopyFromHostF32(wt, wh)
		c.CopyFromHostF32(allT, all)
		c.GateCombine(o, wt, experts)
		return lossOf(r, o.F32)
	}
	f()
	dw := c.Alloc(kernels.Float32, rows, ne)
	dall := c.Alloc(kernels.Float32, ne, rows, d)
	var dex []*kernels.Tensor
	for e := 0; e < ne; e++ {
		dex = append(dex, dall.View(e*rows*d, rows, d))
	}
	c.Fill(dall, 1) // accumulates onto what is there
	c.GateCombineBackward(tensor(c, r, rows, d), wt, experts, dw, dex)
	for i := range dall.F32 {
		dall.F32[i]--
	}
	fdCheck(t, "gate weights", wh, f, dw.F32, 1e-3, 1e-3)
	fdCheck(t, "experts", all, f, dall.F32, 1e-3, 1e-3)
}

func TestCopyColsConcatSplitGrad(t *testing.T) {
	c := kernels.NewCPU(1)
	a := tensor(c, []float32{1, 2, 3, 4}, 2, 2)
	b := tensor(c, []float32{5, 6, 7, 8, 9, 10}, 2, 3)
	cat := c.Alloc(kernels.Float32, 2, 5)
	c.CopyCols(cat, 0, a, 0, 2, false)
	c.CopyCols(cat, 2, b, 0, 3, false)
	assert.Equal(t, []float32{1, 2, 5, 6, 7, 3, 4, 8, 9, 10}, cat.F32)
	c.CopyCols(cat, 4, b, 1, 1, true)
	assert.Equal(t, []float32{1, 2, 5, 6, 13, 3, 4, 8, 9, 19}, cat.F32)

	// The gradient of a concat is a split: d/da sum(r*concat(a,b)) = r[:, :2].
	rng := newRNG(6)
	r := randSlice(rng, 10, -1, 1)
	ah := []float32{1, 2, 3, 4}
	f := func() float64 {
		c.CopyFromHostF32(a, ah)
		c.CopyCols(cat, 0, a, 0, 2, false)
		c.CopyCols(cat, 2, b, 0, 3, false)
		return lossOf(r, cat.F32)
	}
	da := c.Alloc(kernels.Float32, 2, 2)
	c.Fill(da, 0.5)
	c.CopyCols(da, 0, tensor(c, r, 2, 5), 0, 2, true)
	for i := range da.F32 {
		da.F32[i] -= 0.5
	}
	fdCheck(t, "concat", ah, f, da.F32, 1e-2, 1e-4)
}

func TestEmbeddingGatherHand(t *testing.T) {
	table := []float32{0, 1, 2, 3, 4, 5, 6, 7} // 4 rows x 2
	ids := []int32{3, 0, 0, 1, 2}
	offs := []int32{0, 1, 4, 4, 5} // [3] [0 0 1] [] [2]
	s3 := float32(1 / math.Sqrt(3))
	for _, tc := range []struct {
		comb kernels.Combiner
		want []float32
	}{
		{kernels.Mean, []float32{6, 7, 2.0 / 3, 5.0 / 3, 0, 0, 4, 5}},
		{kernels.Sum, []float32{6, 7, 2, 5, 0, 0, 4, 5}},
		{kernels.SqrtN, []float32{6, 7, 2 * s3, 5 * s3, 0, 0, 4, 5}},
	} {
		for _, th := range threadCounts {
			c := kernels.NewCPU(th)
			out := tensor(c, []float32{-1, 9, 9, -1, -1, 9, 9, -1, -1, 9, 9, -1, -1, 9, 9, -1}, 4, 4)
			err := c.EmbeddingGather(out, 1, tensor(c, table, 4, 2), itensor(c, ids, 5), itensor(c, offs, 5), tc.comb)
			require.NoError(t, err)
			for b := 0; b < 4; b++ {
				assert.Equal(t, float32(-1), out.F32[b*4], "column 0 untouched")
				assert.Equal(t, float32(-1), out.F32[b*4+3], "column 3 untouched")
				assert.InDelta(t, tc.want[2*b], out.F32[b*4+1], 1e-6)
				assert.InDelta(t, tc.want[2*b+1], out.F32[b*4+2], 1e-6)
			}
		}
	}
	c := kernels.NewCPU(1)
	out := c.Alloc(kernels.Float32, 3, 2)
	require.NoError(t, c.EmbeddingGather(out, 0, tensor(c, table, 4, 2), itensor(c, []int32{1, 1, 3}, 3), nil, kernels.Mean))
	assert.Equal(t, []float32{2, 3, 2, 3, 6, 7}, out.F32)
}

func TestEmbeddingGatherErrors(t *testing.T) {
	c := kernels.NewCPU(2)
	table := tensor(c, []float32{0, 1, 2, 3, 4, 5}, 3, 2)
	for _, tc := range []struct {
		name      string
		ids, offs []int32
		want      kernels.IDRangeError
	}{
		{"too_large", []int32{0, 3, 1}, nil, kernels.IDRangeError{Row: 1, ID: 3, Rows: 3}},
		{"negative_last", []int32{0, 1, -7}, nil, kernels.IDRangeError{Row: 2, ID: -7, Rows: 3}},
		{"first_of_several", []int32{9, -1, 5}, nil, kernels.IDRangeError{Row: 0, ID: 9, Rows: 3}},
		{"list_after_empty", []int32{0, 1, 2, 4}, []int32{0, 2, 2, 4}, kernels.IDRangeError{Row: 2, ID: 4, Rows: 3}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rows := len(tc.ids)
			var offs *kernels.Tensor
			if tc.offs != nil {
				rows = len(tc.offs) - 1
				offs = itensor(c, tc.offs, len(tc.offs))
			}
			out := c.Alloc(kernels.Float32, rows, 2)
			c.Fill(out, 42)
			err := c.EmbeddingGather(out, 0, table, itensor(c, tc.ids, len(tc.ids)), offs, kernels.Sum)
			var ie *kernels.IDRangeError
			require.True(t, errors.As(err, &ie), "got %v", err)
			assert.Equal(t, tc.want, *ie)
			assert.Contains(t, err.Error(), "outside the embedding table")
			for _, v := range out.F32 {
				require.Equal(t, float32(42), v, "nothing is written when an id is bad")
			}
		})
	}
	t.Run("bad_offsets", func(t *testing.T) {
		out := c.Alloc(kernels.Float32, 2, 2)
		for _, offs := range [][]int32{{0, 2, 1}, {0, 1, 9}, {-1, 0, 1}, {0, 1}} {
			err := c.EmbeddingGather(out, 0, table, itensor(c, []int32{0, 1, 2}, 3), itensor(c, offs, len(offs)), kernels.Sum)
			require.Error(t, err, "%v", offs)
			assert.Contains(t, err.Error(), "offsets")
		}
	})
}

func sparseGrad(c *kernels.CPU, capacity, dim int) *kernels.SparseGrad {
	return &kernels.SparseGrad{Rows: c.Alloc(kernels.Int32, capacity), Values: c.Alloc(kernels.Float32, capacity, dim)}
}

func TestEmbeddingBackwardHand(t *testing.T) {
	c := kernels.NewCPU(1)
	// ids per row: [3] [0 0 1] [] [2 3] ; dout[:, 1:3]
	dout := tensor(c, []float32{
		9, 1, 2, 9,
		9, 3, 6, 9,
		9, 5, 5, 9,
		9, 4, 8, 9,
	}, 4, 4)
	ids := itensor(c, []int32{3, 0, 0, 1, 2, 3}, 6)
	offs := itensor(c, []int32{0, 1, 4, 4, 6}, 5)
	g := sparseGrad(c, 6, 2)
	c.EmbeddingBackward(g, dout, 1, ids, offs, kernels.Mean, 5)
	require.Equal(t, 4, g.N)
	assert.Equal(t, []int32{0, 1, 2, 3}, g.Rows.I32[:4])
	// row 0 gets 2 * (3,6)/3; row 1 (3,6)/3; row 2 (4,8)/2; row 3 (1,2) + (4,8)/2.
	assertClose(t, []float32{2, 4, 1, 2, 2, 4, 3, 6}, g.Values.F32[:8], 1e-6, "mean")

	c.EmbeddingBackward(g, dout, 1, ids, offs, kernels.Sum, 5)
	assertClose(t, []float32{6, 12, 3, 6, 4, 8, 5, 10}, g.Values.F32[:8], 1e-6, "sum")

	single := itensor(c, []int32{7, 2, 7, 7}, 4)
	c.EmbeddingBackward(g, dout, 1, single, nil, kernels.Mean, 8)
	require.Equal(t, 2, g.N)
	assert.Equal(t, []int32{2, 7}, g.Rows.I32[:2])
	assertClose(t, []float32{3, 6, 10, 15}, g.Values.F32[:4], 1e-6, "single")

	// Few ids far apart in a large table (sorted rather than read off the
	// bitmap).
	far := itensor(c, []int32{70000, 5, 70000, 99999}, 4)
	c.EmbeddingBackward(g, dout, 1, far, nil, kernels.Sum, 100000)
	require.Equal(t, 3, g.N)
	assert.Equal(t, []int32{5, 70000, 99999}, g.Rows.I32[:3])
	assertClose(t, []float32{3, 6, 6, 7, 4, 8}, g.Values.F32[:6], 1e-6, "far")
	// A bad id panics (gather reports it as an error first) and leaves the
	// scratch clean.
	assert.Panics(t, func() { c.EmbeddingBackward(g, dout, 1, itensor(c, []int32{1, 8, 2, 3}, 4), nil, kernels.Sum, 8) })
	// The scratch is clean afterwards: a small table sees only its own ids.
	c.EmbeddingBackward(g, dout, 1, single, nil, kernels.Mean, 8)
	assert.Equal(t, []int32{2, 7}, g.Rows.I32[:2])
}

// TestEmbeddingGrad checks EmbeddingBackward against finite differences of
// EmbeddingGather for every combiner, with empty lists and repeated ids.
func TestEmbeddingGrad(t *testing.T) {
	rng := newRNG(7)
	const tableRows, dim, col, width = 6, 3, 1, 5
	ids := []int32{2, 2, 5, 0, 1, 1, 1, 4}
	for _, offs := range [][]int32{nil, {0, 3, 3, 4, 7, 7, 8}} {
		for _, comb := range []kernels.Combiner{kernels.Mean, kernels.Sum, kernels.SqrtN} {
			c := kernels.NewCPU(1)
			rows := len(ids)
			var offT *kernels.Tensor
			if offs != nil {
				rows = len(offs) - 1
				offT = itensor(c, offs, len(offs))
			}
			tableH := randSlice(rng, tableRows*dim, -1, 1)
			table := c.Alloc(kernels.Float32, tableRows, dim)
			idT := itensor(c, ids, len(ids))
			out := c.Alloc(kernels.Float32, rows, width)
			r := randSlice(rng, rows*width, -1, 1)
			f := func() float64 {
				c.CopyFromHostF32(table, tableH)
				require.NoError(t, c.EmbeddingGather(out, col, table, idT, offT, comb))
				return lossOf(r, out.F32)
			}
			g := sparseGrad(c, len(ids), dim)
			c.EmbeddingBackward(g, tensor(c, r, rows, width), col, idT, offT, comb, tableRows)
			dense := make([]float32, tableRows*dim)
			for i := 0; i < g.N; i++ {
				copy(dense[int(g.Rows.I32[i])*dim:], g.Values.F32[i*dim:(i+1)*dim])
			}
			// Row 3 is never used: no gradient row for it.
			for i := 0; i < g.N; i++ {
				require.NotEqual(t, int32(3), g.Rows.I32[i])
			}
			fdCheck(t, "embedding", tableH, f, dense, 1e-2, 1e-4)
		}
	}
}

func TestBCEWithLogitsHand(t *testing.T) {
	c := kernels.NewCPU(1)
	z := tensor(c, []float32{0, 1e4, -1e4, 1e4, -1e4, 2}, 6)
	y := tensor(c, []float32{1, 0, 0, 1, 1, 0.25}, 6)
	loss := tensor(c, []float32{0.5}, 1)
	dz := c.Alloc(kernels.Float32, 6)
	c.BCEWithLogits(loss, dz, z, y, nil, 1)
	// ln2 + 1e4 + 0 + 0 + 1e4 + [softplus(2) - 2*0.25]
	sp2 := math.Log1p(math.Exp(2))
	want := 0.5 + math.Ln2 + 2e4 + sp2 - 0.5
	assert.InDelta(t, want, float64(loss.F32[0]), 2e4*1e-7)
	s2 := float32(1 / (1 + math.Exp(-2)))
	assertClose(t, []float32{-0.5, 1, 0, 0, -1, s2 - 0.25}, dz.F32, 1e-7, "dz")

	// Weights and scale.
	loss.F32[0] = 0
	w := tensor(c, []float32{2, 0, 1, 1, 0.5, 1}, 6)
	c.BCEWithLogits(loss, dz, z, y, w, 0.1)
	want = 0.1 * (2*math.Ln2 + 0.5*1e4 + sp2 - 0.5)
	assert.InDelta(t, want, float64(loss.F32[0]), 1e-3)
	assertClose(t, []float32{-0.1, 0, 0, 0, -0.05, 0.1 * (s2 - 0.25)}, dz.F32, 1e-7, "weighted dz")
	for _, v := range dz.F32 {
		require.False(t, math.IsNaN(float64(v)) || math.IsInf(float64(v), 0))
	}
}

func TestMSEAndSumSquaresHand(t *testing.T) {
	c := kernels.NewCPU(1)
	loss := tensor(c, []float32{1}, 1)
	dz := c.Alloc(kernels.Float32, 3)
	c.MSE(loss, dz, tensor(c, []float32{1, 2, 3}, 3), tensor(c, []float32{1, 0, 5}, 3), tensor(c, []float32{1, 0.5, 2}, 3), 0.5)
	// 1 + 0.5*(0 + 0.5*4 + 2*4) = 6
	assert.InDelta(t, 6, float64(loss.F32[0]), 1e-6)
	assert.Equal(t, []float32{0, 1, -4}, dz.F32)
	c.SumSquares(loss, tensor(c, []float32{1, -2, 3}, 3), 0.01)
	assert.InDelta(t, 6.14, float64(loss.F32[0]), 1e-6)
}

func TestLossGrads(t *testing.T) {
	rng := newRNG(8)
	c := kernels.NewCPU(1)
	const n = 9
	zh := randSlice(rng, n, -4, 4)
	yh := []float32{0, 1, 1, 0, 0.3, 1, 0, 1, 0.7}
	wh := randSlice(rng, n, 0, 2)
	wh[3] = 0
	z, y, w := c.Alloc(kernels.Float32, n), tensor(c, yh, n), tensor(c, wh, n)
	dz := c.Alloc(kernels.Float32, n)
	for _, kind := range []string{"bce", "mse"} {
		for _, weights := range []*kernels.Tensor{nil, w} {
			loss := c.Alloc(kernels.Float32, 1)
			run := func() {
				c.CopyFromHostF32(z, zh)
				loss.F32[0] = 0
				if kind == "bce" {
					c.BCEWithLogits(loss, dz, z, y, weights, 0.25)
				} else {
					c.MSE(loss, dz, z, y, weights, 0.25)
				}
			}
			f := func() float64 { run(); return float64(loss.F32[0]) }
			run()
			grad := append([]float32(nil), dz.F32...)
			fdCheck(t, kind, zh, f, grad, 1e-2, 2e-3)
		}
	}
}

// scalarAdam is Keras' Adam on one value, step by step, in float64.
func scalarAdam(p, g []float64, lr, b1, b2, eps, l2 float64) float64 {
	var m, v float64
	x := p[0]
	for t, gt := range g {
		gt += 2 * l2 * x
		m = b1*m + (1-b1)*gt
		v = b2*v + (1-b2)*gt*gt
		step := float64(t + 1)
		x -= lr * math.Sqrt(1-math.Pow(b2, step)) / (1 - math.Pow(b1, step)) * m / (math.Sqrt(v) + eps)
	}
	return x
}

func TestDenseOptimizersAgainstScalar(t *testing.T) {
	rng := newRNG(9)
	const n, steps = 150001, 4 // large enough to run in parallel with 2 threads
	for _, th := range threadCounts {
		for _, l2 := range []float32{0, 0.05} {
			c := kernels.NewCPU(th)
			p0 := randSlice(rng, n, -1, 1)
			grads := make([][]float32, steps)
			for s := range grads {
				grads[s] = randSlice(rng, n, -0.1, 0.1)
			}
			adam := tensor(c, p0, n)
			m, v := c.Alloc(kernels.Float32, n), c.Alloc(kernels.Float32, n)
			ada, acc := tensor(c, p0, n), c.Alloc(kernels.Float32, n)
			c.Fill(acc, 0.1) // Keras' initial_accumulator_value
			sgd := tensor(c, p0, n)
			for s := 0; s < steps; s++ {
				g := tensor(c, grads[s], n)
				c.Adam(adam, g, m, v, kernels.AdamParams{LR: 0.01, Beta1: 0.9, Beta2: 0.999, Eps: 1e-7, L2: l2, Step: s + 1})
				c.Adagrad(ada, g, acc, kernels.AdagradParams{LR: 0.1, Eps: 1e-7, L2: l2})
				c.SGD(sgd, g, kernels.SGDParams{LR: 0.5, L2: l2})
			}
			for i := 0; i < n; i += 997 {
				gs := make([]float64, steps)
				for s := range gs {
					gs[s] = float64(grads[s][i])
				}
				wantAdam := scalarAdam([]float64{float64(p0[i])}, gs, 0.01, 0.9, 0.999, 1e-7, float64(l2))
				x, a := float64(p0[i]), 0.1
				xs := float64(p0[i])
				for _, g := range gs {
					ga := g + 2*float64(l2)*x
					a += ga * ga
					x -= 0.1 * ga / (math.Sqrt(a) + 1e-7)
					xs -= 0.5 * (g + 2*float64(l2)*xs)
				}
				require.InDelta(t, wantAdam, float64(adam.F32[i]), 1e-6, "adam %d", i)
				require.InDelta(t, x, float64(ada.F32[i]), 1e-6, "adagrad %d", i)
				require.InDelta(t, xs, float64(sgd.F32[i]), 1e-6, "sgd %d", i)
			}
		}
	}
	// First Adam step from zero moments moves every parameter by about -lr*sign(g).
	c := kernels.NewCPU(1)
	p := tensor(c, []float32{1, 1}, 2)
	c.Adam(p, tensor(c, []float32{0.3, -2}, 2), c.Alloc(kernels.Float32, 2), c.Alloc(kernels.Float32, 2),
		kernels.AdamParams{LR: 0.1, Beta1: 0.9, Beta2: 0.999, Eps: 1e-7, Step: 1})
	assertClose(t, []float32{0.9, 1.1}, p.F32, 1e-5, "first adam step")
}

func TestSparseOptimizersTouchOnlyGivenRows(t *testing.T) {
	rng := newRNG(10)
	const rows, dim = 40, 4
	c := kernels.NewCPU(2)
	t0 := randSlice(rng, rows*dim, -1, 1)
	m0, v0 := randSlice(rng, rows*dim, -0.1, 0.1), randSlice(rng, rows*dim, 0, 0.01)
	g := sparseGrad(c, 6, dim)
	copy(g.Rows.I32, []int32{3, 17, 39, 0, 0, 0}) // entries past N are junk
	g.N = 3
	copy(g.Values.F32, randSlice(rng, 6*dim, -1, 1))
	ap := kernels.AdamParams{LR: 0.01, Beta1: 0.9, Beta2: 0.999, Eps: 1e-7, L2: 0.01, Step: 7}

	table, m, v := tensor(c, t0, rows, dim), tensor(c, m0, rows, dim), tensor(c, v0, rows, dim)
	c.SparseAdam(table, m, v, g, ap)
	// Dense Adam on the gathered rows gives the expected values.
	for k, r := range []int{3, 17, 39} {
		pr := tensor(c, t0[r*dim:(r+1)*dim], dim)
		mr, vr := tensor(c, m0[r*dim:(r+1)*dim], dim), tensor(c, v0[r*dim:(r+1)*dim], dim)
		c.Adam(pr, tensor(c, g.Values.F32[k*dim:(k+1)*dim], dim), mr, vr, ap)
		assert.Equal(t, pr.F32, table.F32[r*dim:(r+1)*dim])
		assert.Equal(t, mr.F32, m.F32[r*dim:(r+1)*dim])
		assert.Equal(t, vr.F32, v.F32[r*dim:(r+1)*dim])
	}
	acc := tensor(c, v0, rows, dim)
	tabA := tensor(c, t0, rows, dim)
	c.SparseAdagrad(tabA, acc, g, kernels.AdagradParams{LR: 0.1, Eps: 1e-7, L2: 0.01})
	tabS := tensor(c, t0, rows, dim)
	c.SparseSGD(tabS, g, kernels.SGDParams{LR: 0.1, L2: 0.01})
	for k, r := range []int{3, 17, 39} {
		for j := 0; j < dim; j++ {
			i := r*dim + j
			gv := float64(g.Values.F32[k*dim+j]) + 0.02*float64(t0[i])
			assert.InDelta(t, float64(t0[i])-0.1*gv, float64(tabS.F32[i]), 1e-6)
			a := float64(v0[i]) + gv*gv
			assert.InDelta(t, float64(t0[i])-0.1*gv/(math.Sqrt(a)+1e-7), float64(tabA.F32[i]), 1e-5)
		}
	}
	touched := map[int]bool{3: true, 17: true, 39: true}
	for r := 0; r < rows; r++ {
		if touched[r] {
			continue
		}
		for j := 0; j < dim; j++ {
			i := r*dim + j
			for _, x := range []struct {
				name      string
				got, want float32
			}{{"adam table", table.F32[i], t0[i]}, {"adam m", m.F32[i], m0[i]}, {"adam v", v.F32[i], v0[i]},
				{"adagrad table", tabA.F32[i], t0[i]}, {"adagrad acc", acc.F32[i], v0[i]}, {"sgd table", tabS.F32[i], t0[i]}} {
				require.Equal(t, math.Float32bits(x.want), math.Float32bits(x.got), "%s row %d changed", x.name, r)
			}
		}
	}
}

func TestDropoutHashKnownAnswers(t *testing.T) {
	// DropoutHash(seed, i) is the i-th output of SplitMix64 seeded with seed;
	// these are the published SplitMix64 outputs.
	assert.Equal(t, uint64(0xE220A8397B1DCDAF), kernels.DropoutHash(0, 0))
	assert.Equal(t, uint64(0x6E789E6AA1B965F4), kernels.DropoutHash(0, 1))
	assert.Equal(t, uint64(0x06C45D188009454F), kernels.DropoutHash(0, 2))
	assert.Equal(t, uint64(6457827717110365317), kernels.DropoutHash(1234567, 0))
}

func TestDropout(t *testing.T) {
	const n = 1 << 20
	for _, rate := range []float32{0.1, 0.3, 0.5} {
		var first []float32
		for _, th := range threadCounts {
			c := kernels.NewCPU(th)
			x, mask := c.Alloc(kernels.Float32, n), c.Alloc(kernels.Float32, n)
			c.Fill(x, 2)
			c.Dropout(x, mask, rate, 77)
			scale := 1 / (1 - rate)
			dropped := 0
			for i, m := range mask.F32 {
				switch m {
				case 0:
					dropped++
					require.Equal(t, float32(0), x.F32[i])
				case scale:
					require.Equal(t, 2*scale, x.F32[i])
				default:
					t.Fatalf("mask[%d] = %g", i, m)
				}
			}
			// Binomial(n, rate): 5 standard deviations.
			sd := math.Sqrt(n * float64(rate) * float64(1-rate))
			assert.InDelta(t, float64(rate)*n, float64(dropped), 5*sd, "rate %g", rate)
			if first == nil {
				first = append([]float32(nil), mask.F32...)
			} else {
				require.Equal(t, first, mask.F32, "the pattern does not depend on threads")
			}
			// Same seed: same pattern; another seed: another one.
			m2 := c.Alloc(kernels.Float32, n)
			c.Dropout(c.Alloc(kernels.Float32, n), m2, rate, 77)
			require.Equal(t, mask.F32, m2.F32)
			c.Dropout(c.Alloc(kernels.Float32, n), m2, rate, 78)
			same := 0
			for i := range m2.F32 {
				if (m2.F32[i] == 0) == (mask.F32[i] == 0) {
					same++
				}
			}
			// Independent patterns agree with probability r^2 + (1-r)^2.
			pAgree := float64(rate*rate + (1-rate)*(1-rate))
			assert.InDelta(t, pAgree*n, float64(same), 5*math.Sqrt(n*pAgree*(1-pAgree)))
		}
	}
	c := kernels.NewCPU(1)
	x, mask := tensor(c, []float32{1, 2, 3}, 3), c.Alloc(kernels.Float32, 3)
	c.Dropout(x, mask, 0, 1)
	assert.Equal(t, []float32{1, 2, 3}, x.F32)
	assert.Equal(t, []float32{1, 1, 1}, mask.F32)
	c.Dropout(x, mask, 1, 1)
	assert.Equal(t, []float32{0, 0, 0}, x.F32)
	assert.Equal(t, []float32{0, 0, 0}, mask.F32)
}

func TestElementwiseHand(t *testing.T) {
	c := kernels.NewCPU(1)
	a := tensor(c, []float32{1, 2, 3}, 3)
	b := tensor(c, []float32{4, 5, 6}, 3)
	d := c.Alloc(kernels.Float32, 3)
	c.Mul(d, a, b)
	assert.Equal(t, []float32{4, 10, 18}, d.F32)
	c.Axpy(2, a, d)
	assert.Equal(t, []float32{6, 14, 24}, d.F32)
	c.Scale(d, 0.5)
	assert.Equal(t, []float32{3, 7, 12}, d.F32)
	c.EqualMask(d, tensor(c, []float32{1, 0, 1}, 3), 1)
	assert.Equal(t, []float32{1, 0, 1}, d.F32)
	z := tensor(c, []float32{0, 1e4, -1e4, float32(math.Log(3))}, 4)
	c.Sigmoid(z, z)
	assertClose(t, []float32{0.5, 1, 0, 0.75}, z.F32, 1e-7, "sigmoid")
}

// Threads share nothing but the pool: concurrent callers on one device must
// get the results of serial calls (run with -race to check for data races).
func TestConcurrentUse(t *testing.T) {
	c := kernels.NewCPU(2)
	const n = 1 << 16
	rng := newRNG(11)
	xh := randSlice(rng, n, -1, 1)
	want := make([]float32, n)
	for i, v := range xh {
		want[i] = 3 * v
	}
	done := make(chan []float32)
	for g := 0; g < 4; g++ {
		go func() {
			x := tensor(c, xh, n)
			a := tensor(c, xh[:64*64], 64, 64)
			out := c.Alloc(kernels.Float32, 64, 64)
			for it := 0; it < 20; it++ {
				c.CopyFromHostF32(x, xh)
				c.Scale(x, 3)
				c.Gemm(false, true, 1, a, a, 0, out)
			}
			done <- x.F32
		}()
	}
	for g := 0; g < 4; g++ {
		assert.Equal(t, want, <-done)
	}
}
