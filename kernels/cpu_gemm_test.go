package kernels

import (
	"fmt"
	"math"
	"math/rand/v2"
	"testing"

	"github.com/stretchr/testify/require"
)

// gemmShapes are the thin shapes the small-GEMM kernels take (model layers
// at shard sizes, heads, gate logits, tails of every width) plus edge cases.
var gemmShapes = []struct{ m, n, k int }{
	{1, 16, 1}, {256, 64, 1}, {256, 64, 4}, {256, 64, 112}, {256, 112, 64}, {112, 64, 256}, {7, 17, 33},
	{6, 16, 17}, {37, 100, 9}, {300, 128, 112}, {3, 200, 5}, {65, 47, 129}, {13, 513, 3},
	// thin C (n < 16): heads, gate logits, their weight gradients
	{1, 1, 1}, {256, 1, 64}, {256, 4, 64}, {7, 3, 33}, {17, 15, 136}, {300, 5, 1024}, {136, 4, 256}, {9, 8, 2},
	{5, 2, 15}, {40, 7, 17}, {33, 1, 3000},
	// thin weight gradients (A transposed) at the step's shard size, a k
	// tail, C^T filling the stack buffer
	{64, 7, 256}, {112, 3, 256}, {64, 1, 257}, {1092, 15, 5},
}

// naiveGemm is C = act(alpha*op(A)op(B) + beta*C + bias) in float64, the
// allowance per element for the small-GEMM kernels (slack: they sum over k
// in one fixed order, so a statistical bound is stable for fixed inputs) and
// the magnitude |alpha|*sum|a*b| + |beta*C| + |bias| that gemmErrBound turns
// into a bound that holds for any GEMM, OpenBLAS's included.
func naiveGemm(ta, tb bool, m, n, k int, alpha float32, a []float32, lda int, b []float32, ldb int,
	beta float32, c []float32, bias []float32, relu bool) (want, slack, mag []float64) {
	want, slack, mag = make([]float64, m*n), make([]float64, m*n), make([]float64, m*n)
	for i := range m {
		for j := range n {
			var s, abs float64
			for p := range k {
				var av, bv float32
				if ta {
					av = a[p*lda+i]
				} else {
					av = a[i*lda+p]
				}
				if tb {
					bv = b[j*ldb+p]
				} else {
					bv = b[p*ldb+j]
				}
				s += float64(av) * float64(bv)
				abs += math.Abs(float64(av) * float64(bv))
			}
			v := float64(alpha)*s + float64(beta)*float64(c[i*n+j])
			mag[i*n+j] = math.Abs(float64(alpha))*abs + math.Abs(float64(beta)*float64(c[i*n+j]))
			if bias != nil {
				v += float64(bias[j])
				mag[i*n+j] += math.Abs(float64(bias[j]))
			}
			if relu && v < 0 {
				v = 0
			}
			want[i*n+j] = v
			slack[i*n+j] = 1e-6 + 2e-7*math.Abs(v) + 2*math.Sqrt(float64(k))*0x1p-24*math.Abs(float64(alpha))*abs
		}
	}
	return want, slack, mag
}

// gemmErrBound is kerneltest.GemmErrorBound (which this package's internal
// tests cannot import): the worst-case rounding error of a float32 GEMM
// element of magnitude mag (see naiveGemm), whatever the order of summation.
func gemmErrBound(k int, mag float64) float64 {
	nu := float64(k+4) * 0x1p-24
	return nu / (1 - nu) * mag
}

// checkGemm fails unless every got[i] is within gemmErrBound of want[i].
func checkGemm(t *testing.T, name string, k int, got []float32, want, mag []float64) {
	t.Helper()
	for i := range want {
		if d := math.Abs(float64(got[i]) - want[i]); !(d <= gemmErrBound(k, mag[i])) {
			t.Fatalf("%s: C[%d] = %g, want %g (error %.3g, bound %.3g)", name, i, got[i], want[i], d, gemmErrBound(k, mag[i]))
		}
	}
}

// The AVX2 and AVX-512 kernels give the same bits (they follow one order of
// operations) and both match a float64 reference. Shapes they do not take
// (both operands transposed, thin C whose B does not fit the buffer) are
// declined.
func TestSmallGemmKernels(t *testing.T) {
	if gemmLevel == 0 {
		t.Skip("no AVX2/FMA on this machine")
	}
	top := gemmLevel
	defer setGemmLevel(top)
	rng := rand.New(rand.NewPCG(11, 12))
	x, c := randF32(rng, 64*64, -1, 1), make([]float32, 64*64)
	big := randF32(rng, 2*4000, -1, 1)
	require.False(t, cSgemm(false, false, 2, 5, 4000, 1, big, 4000, big, 5, 0, c, 5, nil, false), "n < 16, B past the buffer")
	require.False(t, smallGemm(false, false, 2, 5, 4000))
	require.False(t, cSgemm(true, true, 64, 64, 64, 1, x, 64, x, 64, 0, c, 64, nil, false), "both transposed")
	wide := randF32(rng, 3*1093*15, -1, 1)
	require.False(t, cSgemm(true, false, 1093, 15, 3, 1, wide, 1093, wide, 15, 0, wide, 15, nil, false), "thin A^T B, C^T past the buffer")
	require.False(t, smallGemm(true, false, 1093, 15, 3))
	require.True(t, smallGemm(true, false, 1092, 15, 3))
	for _, s := range gemmShapes {
		for _, tr := range [][2]bool{{false, false}, {true, false}, {false, true}} {
			for _, ep := range []struct {
				alpha, beta float32
				bias, relu  bool
			}{{1, 0, false, false}, {0.5, 1, true, true}, {-2, 0.25, false, true}, {1, 0, true, false}} {
				ta, tb := tr[0], tr[1]
				name := fmt.Sprintf("m%d_n%d_k%d_ta%v_tb%v_a%g_b%g_bias%v_relu%v", s.m, s.n, s.k, ta, tb, ep.alpha, ep.beta, ep.bias, ep.relu)
				lda, ldb := s.k, s.n
				if ta {
					lda = s.m
				}
				if tb {
					ldb = s.k
				}
				a, b := randF32(rng, s.m*s.k, -1, 1), randF32(rng, s.k*s.n, -1, 1)
				c0 := randF32(rng, s.m*s.n, -1, 1)
				var bias []float32
				if ep.bias {
					bias = randF32(rng, s.n, -1, 1)
				}
				want, slack, _ := naiveGemm(ta, tb, s.m, s.n, s.k, ep.alpha, a, lda, b, ldb, ep.beta, c0, bias, ep.relu)
				var first []float32
				for l := top; l >= 1; l-- {
					setGemmLevel(l)
					c := append([]float32(nil), c0...)
					require.True(t, cSgemm(ta, tb, s.m, s.n, s.k, ep.alpha, a, lda, b, ldb, ep.beta, c, s.n, bias, ep.relu), name)
					require.True(t, smallGemm(ta, tb, s.m, s.n, s.k) || s.n > 512, "%s: the device routes it here", name)
					for i, v := range c {
						if math.Abs(float64(v)-want[i]) > slack[i] {
							t.Fatalf("%s level %d: C[%d] = %g, want %g", name, l, i, v, want[i])
						}
					}
					if first == nil {
						first = c
						continue
					}
					for i := range c {
						if math.Float32bits(c[i]) != math.Float32bits(first[i]) {
							t.Fatalf("%s: level %d gives %g at %d, level %d %g", name, l, c[i], i, top, first[i])
						}
					}
				}
				setGemmLevel(top)
			}
		}
	}
}

// The fused ops give the bits of Gemm + BiasAct, on both engines and with
// any number of threads.
func TestGemmBiasActMatchesUnfused(t *testing.T) {
	rng := rand.New(rand.NewPCG(13, 14))
	// the small kernels' shapes, heads and gate logits (OpenBLAS + a
	// separate bias pass), and a large GEMM cut into row blocks
	shapes := append(append([]struct{ m, n, k int }(nil), gemmShapes...),
		struct{ m, n, k int }{256, 1, 64}, struct{ m, n, k int }{256, 4, 64}, struct{ m, n, k int }{1024, 600, 700})
	for _, th := range []int{1, 2} {
		c := NewCPU(th)
		for _, s := range shapes {
			for _, act := range []Activation{Linear, ReLU} {
				for _, withBias := range []bool{true, false} {
					name := fmt.Sprintf("threads%d_m%d_n%d_k%d_act%d_bias%v", th, s.m, s.n, s.k, act, withBias)
					const batch = 3
					x := WrapF32(c, randF32(rng, batch*s.m*s.k, -1, 1), batch*s.m, s.k)
					w := WrapF32(c, randF32(rng, batch*s.k*s.n, -1, 1), batch, s.k, s.n)
					var bias, bias0 *Tensor
					if withBias {
						bias = WrapF32(c, randF32(rng, batch*s.n, -1, 1), batch, s.n)
					} else {
						bias = c.Alloc(Float32, batch, s.n)
					}
					if withBias {
						bias0 = bias.View(0, s.n)
					}
					x0, w0 := x.View(0, s.m, s.k), w.View(0, s.k, s.n)
					want, got := c.Alloc(Float32, s.m, s.n), c.Alloc(Float32, s.m, s.n)
					c.Gemm(false, false, 1, x0, w0, 0, want)
					c.BiasAct(want, bias.View(0, s.n), 1, act)
					c.Fill(got, float32(math.NaN())) // must be overwritten
					c.GemmBiasAct(x0, w0, bias0, act, got)
					require.Equal(t, want.F32, got.F32, name)

					wantB, gotB := c.Alloc(Float32, batch, s.m, s.n), c.Alloc(Float32, batch, s.m, s.n)
					for _, sa := range []int{0, s.m * s.k} {
						c.GemmStridedBatched(false, false, s.m, s.n, s.k, 1, x, sa, w, s.k*s.n, 0, wantB, s.m*s.n, batch)
						c.BiasAct(wantB, bias, batch, act)
						var bb *Tensor
						if withBias {
							bb = bias
						}
						c.GemmStridedBatchedBiasAct(s.m, s.n, s.k, x, sa, w, s.k*s.n, bb, act, gotB, batch)
						require.Equal(t, wantB.F32, gotB.F32, name+fmt.Sprintf("_batched_sa%d", sa))
					}
				}
			}
		}
	}
}

// A row of C is the same bits whatever the other rows of the call: every
// element is one sum over k in a fixed order, so scores do not depend on
// how many rows share a batch or a shard. This holds for the kernels at
// every level and so for the device's Gemm on the shapes they take.
func TestGemmRowIndependentOfRows(t *testing.T) {
	require.False(t, RowIndependentGemm(600, 64), "wide layers go to OpenBLAS")
	require.False(t, RowIndependentGemm(256, 512), "so do large weights")
	if gemmLevel == 0 {
		t.Skip("no AVX2/FMA on this machine")
	}
	rng := rand.New(rand.NewPCG(21, 22))
	c := NewCPU(1)
	for _, s := range []struct{ n, k int }{{1, 64}, {3, 64}, {4, 136}, {6, 64}, {15, 33}, {16, 64}, {64, 136}, {128, 64}} {
		require.True(t, RowIndependentGemm(s.n, s.k), "n %d k %d", s.n, s.k)
		x, w := c.Alloc(Float32, 300, s.k), c.Alloc(Float32, s.k, s.n)
		copy(x.F32, randF32(rng, 300*s.k, -1, 1))
		copy(w.F32, randF32(rng, s.k*s.n, -1, 1))
		var ref []float32
		for _, m := range []int{1, 2, 5, 8, 16, 17, 31, 64, 100, 300} {
			y := c.Alloc(Float32, m, s.n)
			c.Gemm(false, false, 1, x.View(0, m, s.k), w, 0, y)
			if ref == nil {
				ref = append([]float32(nil), y.F32[:s.n]...)
				continue
			}
			require.Equal(t, ref, y.F32[:s.n], "n %d k %d: row 0 with %d rows", s.n, s.k, m)
		}
	}
}

// GemmActBiasGrad gives the bits of Gemm followed by ActBiasGrad, on the
// small kernels at every level (the epilogue), on the shapes they decline
// (OpenBLAS and then the separate pass), on GEMMs cut into column blocks
// (each block sums its own columns) or row blocks (the separate pass), with
// one thread or two; and it matches a float64 reference: the GEMM within
// its rounding bound, +0 wherever y > 0 fails (y <= 0, -0 or NaN), and the
// column sums of what it wrote.
func TestGemmActBiasGradMatchesUnfused(t *testing.T) {
	rng := rand.New(rand.NewPCG(41, 42))
	shapes := []struct{ m, n, k int }{
		// a shard's layers (128 <- 64, 64 <- 32), a tower below its head (k = 1)
		{256, 128, 64}, {256, 64, 32}, {256, 64, 1},
		// tile and vector tails
		{1, 16, 1}, {7, 17, 33}, {6, 16, 17}, {37, 100, 9}, {5, 65, 3}, {13, 47, 129},
		// thin C (n < 16)
		{256, 4, 64}, {7, 3, 33}, {9, 8, 2}, {3, 1, 5},
		// declined by the small kernels: n > 512, W past the transpose buffer
		{13, 513, 3}, {256, 64, 300},
		// cut into two column blocks; into two row blocks
		{600, 512, 32}, {2048, 64, 64},
		// no rows
		{0, 16, 4},
	}
	top := gemmLevel
	defer setGemmLevel(top)
	for l := top; l >= 0; l-- {
		setGemmLevel(l)
		for _, th := range []int{1, 2} {
			c := NewCPU(th)
			for _, s := range shapes {
				for _, act := range []Activation{Linear, ReLU} {
					name := fmt.Sprintf("level%d_threads%d_m%d_n%d_k%d_act%d", l, th, s.m, s.n, s.k, act)
					dy := WrapF32(c, randF32(rng, max(1, s.m*s.k), -1, 1)[:s.m*s.k], s.m, s.k)
					w := WrapF32(c, randF32(rng, s.n*s.k, -1, 1), s.n, s.k)
					yv := randF32(rng, s.m*s.n, -1, 1)
					for i := range yv {
						switch i % 11 {
						case 3:
							yv[i] = float32(math.NaN())
						case 5:
							yv[i] = float32(math.Copysign(0, -1))
						case 7:
							yv[i] = 0
						}
					}
					y := WrapF32(c, yv, s.m, s.n)
					want, got := c.Alloc(Float32, s.m, s.n), c.Alloc(Float32, s.m, s.n)
					dbWant, dbGot := c.Alloc(Float32, s.n), c.Alloc(Float32, s.n)
					c.Gemm(false, true, 1, dy, w, 0, want)
					c.ActBiasGrad(want, y, act, dbWant, 1, false)
					c.Fill(got, float32(math.NaN())) // must be overwritten
					c.Fill(dbGot, float32(math.NaN()))
					c.GemmActBiasGrad(dy, w, y, act, got, dbGot)
					requireBits(t, want.F32, got.F32, name+": dx")
					requireBits(t, dbWant.F32, dbGot.F32, name+": db")

					ref, _, mag := naiveGemm(false, true, s.m, s.n, s.k, 1, dy.F32, s.k, w.F32, s.k, 0, got.F32, nil, false)
					for j := range s.n {
						var sum, abs float64
						for i := range s.m {
							e := i*s.n + j
							if act == ReLU && !(yv[e] > 0) {
								require.Equal(t, uint32(0), math.Float32bits(got.F32[e]), "%s: dx[%d] masked by y = %g", name, e, yv[e])
								continue
							}
							if d := math.Abs(float64(got.F32[e]) - ref[e]); !(d <= gemmErrBound(s.k, mag[e])) {
								t.Fatalf("%s: dx[%d] = %g, want %g", name, e, got.F32[e], ref[e])
							}
							sum += float64(got.F32[e])
							abs += math.Abs(float64(got.F32[e]))
						}
						if d := math.Abs(float64(dbGot.F32[j]) - sum); !(d <= 1e-6*abs+0x1p-24*math.Abs(sum)) {
							t.Fatalf("%s: db[%d] = %g, want %g", name, j, dbGot.F32[j], sum)
						}
					}
				}
			}
		}
	}
}

// requireBits fails unless got holds the bits of want (NaNs included).
func requireBits(t *testing.T, want, got []float32, name string) {
	t.Helper()
	require.Equal(t, len(want), len(got), name)
	for i := range want {
		if math.Float32bits(want[i]) != math.Float32bits(got[i]) {
			t.Fatalf("%s: element %d is %g (%#08x), want %g (%#08x)", name, i, got[i], math.Float32bits(got[i]), want[i], math.Float32bits(want[i]))
		}
	}
}
