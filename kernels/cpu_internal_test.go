package kernels

import (
	"fmt"
	"math"
	"math/rand/v2"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func randF32(rng *rand.Rand, n int, lo, hi float32) []float32 {
	x := make([]float32, n)
	for i := range x {
		x[i] = lo + (hi-lo)*rng.Float32()
	}
	return x
}

func TestChunksFor(t *testing.T) {
	one, two := NewCPU(1), NewCPU(2)
	assert.Equal(t, 1, one.chunksFor(1<<30, 1), "one thread never splits")
	assert.Equal(t, 1, two.chunksFor(1000, 1), "small work is not split")
	assert.Equal(t, 2, two.chunksFor(150001, 1), "the large test sizes do split")
	assert.Equal(t, 2, two.chunksFor(1<<30, 1), "never more chunks than threads")
}

// The AVX2 paths of the optimizers must round exactly like the scalar loop
// (which handles tails and machines without AVX2).
func TestOptimizerVectorPathMatchesScalar(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	const n = 37
	p0, g := randF32(rng, n, -1, 1), randF32(rng, n, -0.1, 0.1)
	m0, v0 := randF32(rng, n, -0.01, 0.01), randF32(rng, n, 0, 1e-3)
	clone := func(x []float32) []float32 { return append([]float32(nil), x...) }

	p, m, v := clone(p0), clone(m0), clone(v0)
	cAdam(p, g, m, v, 0.01, 0.9, 0.999, 1e-7, 0.02)
	ps, ms, vs := clone(p0), clone(m0), clone(v0)
	for i := range ps { // n = 1: scalar loop only
		cAdam(ps[i:i+1], g[i:i+1], ms[i:i+1], vs[i:i+1], 0.01, 0.9, 0.999, 1e-7, 0.02)
	}
	require.Equal(t, ps, p)
	require.Equal(t, ms, m)
	require.Equal(t, vs, v)

	p, a := clone(p0), clone(v0)
	cAdagrad(p, g, a, 0.1, 1e-7, 0.02)
	ps, as := clone(p0), clone(v0)
	for i := range ps {
		cAdagrad(ps[i:i+1], g[i:i+1], as[i:i+1], 0.1, 1e-7, 0.02)
	}
	require.Equal(t, ps, p)
	require.Equal(t, as, a)
}

// The C dropout kernel uses the documented hash.
func TestDropoutKernelUsesHash(t *testing.T) {
	const n, lo, seed = 1000, 123456789, 99
	thr, scale := DropoutThreshold(0.4)
	x, mask := make([]float32, n), make([]float32, n)
	for i := range x {
		x[i] = 1
	}
	cDropout(x, mask, lo, seed, thr, scale)
	for i := range mask {
		want := scale
		if DropoutHash(seed, uint64(lo+i))>>40 < thr {
			want = 0
		}
		require.Equal(t, want, mask[i], "element %d", i)
	}
	thr, _ = DropoutThreshold(0.25)
	assert.Equal(t, uint64(1<<22), thr)
}

// A GEMM cut into row or column blocks and spread over goroutines gives the
// same bits with one thread or many, because the cut depends only on the
// shape (never on the thread count) and every element is one call over the
// full k; and it is the GEMM, within the worst-case float32 error of a
// float64 reference. The engine a block runs on (small kernels or OpenBLAS,
// whichever kernel OpenBLAS picked for this CPU) may round differently from
// one call over the whole shape, so that is not compared.
func TestGemmBlocksIndependentOfThreads(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	cases := []struct {
		name            string
		ta, tb          bool
		batch, m, n, k  int
		sa              bool // A shared by every entry (stride 0)
		wantRows, wantC int
	}{
		{"experts", false, false, 4, 200, 64, 96, true, 1, 1},
		{"rows", false, false, 1, 1200, 300, 200, false, 2, 1},
		{"rows_transA", true, false, 2, 2048, 128, 300, false, 4, 1},
		{"cols", false, false, 1, 100, 1024, 512, false, 1, 4},
		{"cols_transB", false, true, 3, 64, 700, 400, false, 1, 2},
		{"rows_openblas", false, false, 2, 1100, 600, 96, false, 2, 1},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			rb, cb := gemmSplit(tc.m, tc.n, tc.k)
			require.Equal(t, [2]int{tc.wantRows, tc.wantC}, [2]int{rb, cb}, "split")
			m, n, k := tc.m, tc.n, tc.k
			lda, ldb := k, n
			if tc.ta {
				lda = m
			}
			if tc.tb {
				ldb = k
			}
			sa := m * k
			if tc.sa {
				sa = 0
			}
			a := randF32(rng, max(sa, m*k)*tc.batch, -1, 1)
			b := randF32(rng, k*n*tc.batch, -1, 1)
			init := randF32(rng, m*n*tc.batch, -1, 1)
			var first []float32
			for _, th := range []int{1, 2, 3} {
				got := append([]float32(nil), init...)
				NewCPU(th).gemm(tc.ta, tc.tb, m, n, k, 0.5, a, sa, lda, b, k*n, ldb, 0.25, got, m*n, n, tc.batch)
				if first == nil {
					first = got
					for e := range tc.batch {
						want, _, mag := naiveGemm(tc.ta, tc.tb, m, n, k, 0.5, a[e*sa:], lda, b[e*k*n:], ldb, 0.25, init[e*m*n:], nil, false)
						checkGemm(t, fmt.Sprintf("entry %d", e), k, got[e*m*n:(e+1)*m*n], want, mag)
					}
					continue
				}
				for i := range first {
					if math.Float32bits(got[i]) != math.Float32bits(first[i]) {
						t.Fatalf("threads %d, element %d: %g, with one thread %g", th, i, got[i], first[i])
					}
				}
			}
		})
	}
}

// Several devices run GEMMs concurrently, OpenBLAS included (it is
// single-threaded, so no lock is needed): each result is the bits of the
// same GEMM run alone, on both engines.
func TestConcurrentSingleThreadDevices(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	for _, s := range []struct {
		name    string
		m, n, k int
		small   bool // on the small-GEMM kernels where the CPU has them
	}{
		{"small_kernels", 300, 64, 128, true},
		{"openblas", 300, 600, 128, false},
	} {
		t.Run(s.name, func(t *testing.T) {
			m, n, k := s.m, s.n, s.k
			require.Equal(t, s.small && gemmLevel != 0, smallGemm(false, false, m, n, k), "engine")
			a, b := randF32(rng, m*k, -1, 1), randF32(rng, k*n, -1, 1)
			alone := NewCPU(1)
			want := make([]float32, m*n)
			alone.Gemm(false, false, 1, WrapF32(alone, a, m, k), WrapF32(alone, b, k, n), 0, WrapF32(alone, want, m, n))
			ref, _, mag := naiveGemm(false, false, m, n, k, 1, a, k, b, n, 0, make([]float32, m*n), nil, false)
			checkGemm(t, "alone", k, want, ref, mag)
			done := make(chan []float32)
			for range 4 {
				go func() {
					c := NewCPU(1)
					out := make([]float32, m*n)
					for range 30 {
						c.Gemm(false, false, 1, WrapF32(c, a, m, k), WrapF32(c, b, k, n), 0, WrapF32(c, out, m, n))
					}
					done <- out
				}()
			}
			// Meanwhile a two-thread device runs the same GEMM on its pool.
			c2 := NewCPU(2)
			out2 := make([]float32, m*n)
			for range 10 {
				c2.Gemm(false, false, 1, WrapF32(c2, a, m, k), WrapF32(c2, b, k, n), 0, WrapF32(c2, out2, m, n))
			}
			for range 4 {
				require.Equal(t, want, <-done)
			}
			require.Equal(t, want, out2)
		})
	}
}
