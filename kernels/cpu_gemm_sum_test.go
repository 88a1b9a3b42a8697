package kernels

import (
	"fmt"
	"math"
	"math/rand/v2"
	"testing"

	"github.com/stretchr/testify/require"
)

// gemmSumCase is the terms of a shared input's gradient: dys[s] [m, k_s]
// and ws[s] [n, k_s], with dx's starting values c0 [m, n].
type gemmSumCase struct {
	m, n     int
	ks       []int
	dys, ws  [][]float32
	c0       []float32
	name     string
	specials bool
}

func newGemmSumCase(rng *rand.Rand, m, n int, ks []int, specials bool) gemmSumCase {
	g := gemmSumCase{m: m, n: n, ks: ks, c0: randF32(rng, m*n, -1, 1), specials: specials,
		name: fmt.Sprintf("m%d_n%d_k%v_special%v", m, n, ks, specials)}
	for _, k := range ks {
		g.dys = append(g.dys, randF32(rng, m*k, -1, 1))
		g.ws = append(g.ws, randF32(rng, n*k, -1, 1))
	}
	if specials {
		// a NaN and negative zeros in the gradients, a -0 in dx
		s := len(ks) / 2
		g.dys[s][(m/2)*ks[s]] = float32(math.NaN())
		g.dys[0][0], g.ws[0][0] = float32(math.Copysign(0, -1)), float32(math.Copysign(0, -1))
		g.c0[len(g.c0)-1] = float32(math.Copysign(0, -1))
	}
	return g
}

// concat returns [dys[0] | dys[1] | ...] [m, K] and the stacked W^T
// [K, n], built element by element (no transpose of the code under test).
func (g gemmSumCase) concat() (a, bt []float32, k int) {
	for _, ks := range g.ks {
		k += ks
	}
	a, bt = make([]float32, g.m*k), make([]float32, k*g.n)
	off := 0
	for s, ks := range g.ks {
		for i := range g.m {
			copy(a[i*k+off:i*k+off+ks], g.dys[s][i*ks:(i+1)*ks])
		}
		for kk := range ks {
			for j := range g.n {
				bt[(off+kk)*g.n+j] = g.ws[s][j*ks+kk]
			}
		}
		off += ks
	}
	return a, bt, k
}

// tensors wraps the case's terms on dev.
func (g gemmSumCase) tensors(dev *CPU) (dys, ws []*Tensor) {
	for s, k := range g.ks {
		dys = append(dys, WrapF32(dev, g.dys[s], g.m, k))
		ws = append(ws, WrapF32(dev, g.ws[s], g.n, k))
	}
	return dys, ws
}

// The K-segmented kernel gives the bits of one GEMM of the explicitly
// concatenated operands at both kernel levels, and is within the float32
// error bound of a float64 reference.
func TestGemmSumMatchesConcatenatedGemm(t *testing.T) {
	if gemmLevel == 0 {
		t.Skip("no AVX2/FMA on this machine")
	}
	top := gemmLevel
	defer setGemmLevel(top)
	rng := rand.New(rand.NewPCG(21, 22))
	kvals := []int{1, 7, 16, 64, 65}
	dev := NewCPU(1)
	cases := 0
	for segs := 1; segs <= 13; segs++ {
		for mi, m := range []int{1, 5, 6, 7, 256} {
			for ni, n := range []int{16, 17, 48, 112, 113} {
				ks := make([]int, segs)
				for s := range ks {
					ks[s] = kvals[(s+mi+ni+segs)%len(kvals)]
				}
				g := newGemmSumCase(rng, m, n, ks, (segs+mi+ni)%3 == 0)
				a, bt, k := g.concat()
				dys, ws := g.tensors(dev)
				// the float64 reference on the small cases (the large ones
				// are covered by the bits of the concatenated GEMM, which
				// TestSmallGemmKernels checks against its own reference)
				var want, mag []float64
				if m <= 7 && !g.specials {
					want, _, mag = naiveGemm(false, false, m, n, k, 1, a, k, bt, n, 1, g.c0, nil, false)
				}
				for _, acc := range []bool{false, true} {
					beta := float32(0)
					if acc {
						beta = 1
					}
					ref := append([]float32(nil), g.c0...)
					require.True(t, cSgemm(false, false, m, n, k, 1, a, k, bt, n, beta, ref, n, nil, false))
					for l := top; l >= 1; l-- {
						setGemmLevel(l)
						name := fmt.Sprintf("%s_acc%v_level%d", g.name, acc, l)
						require.True(t, gemmSumKernel(segs, n, k), name)
						got := WrapF32(dev, append([]float32(nil), g.c0...), m, n)
						dev.GemmSum(dys, ws, acc, got)
						requireBits(t, ref, got.F32, name)
						if want != nil && acc {
							checkGemm(t, name, k, got.F32, want, mag)
						}
						cases++
					}
					setGemmLevel(top)
				}
			}
		}
	}
	t.Logf("%d cases", cases)
}

// Where the kernel does not run (no AVX2/FMA, C narrower than 16
// columns, a stacked W^T past its limit, more terms than it takes), GemmSum
// is the chain of GEMMs: the first writes dx (or adds to it when
// accumulating), the others add into it, each its rounded product. The
// helper gives the same on a device without the capability.
func TestGemmSumFallsBackToChainedGemms(t *testing.T) {
	rng := rand.New(rand.NewPCG(23, 24))
	top := gemmLevel
	defer setGemmLevel(top)
	cases := []struct {
		name  string
		m, n  int
		ks    []int
		level int
	}{
		{"thin_dx", 37, 15, []int{64, 64, 7}, top},
		{"past_the_limit", 9, 512, []int{64, 64, 64, 64, 64, 64, 64, 64, 65}, top},
		{"too_many_terms", 6, 32, make([]int, gemmSumMaxSegs+1), top},
		{"no_kernels", 33, 112, []int{64, 64, 64, 16, 1}, 0},
	}
	for _, tc := range cases {
		for s := range tc.ks {
			if tc.ks[s] == 0 {
				tc.ks[s] = 1 + s%3
			}
		}
		g := newGemmSumCase(rng, tc.m, tc.n, tc.ks, false)
		a, bt, k := g.concat()
		want, _, mag := naiveGemm(false, false, g.m, g.n, k, 1, a, k, bt, g.n, 1, g.c0, nil, false)
		setGemmLevel(tc.level)
		dev := NewCPU(2)
		require.False(t, gemmSumKernel(len(g.ks), g.n, k), tc.name)
		for _, acc := range []bool{false, true} {
			dys, ws := g.tensors(dev)
			chain := WrapF32(dev, append([]float32(nil), g.c0...), g.m, g.n)
			for s := range dys {
				b := float32(0)
				if acc || s > 0 {
					b = 1
				}
				dev.Gemm(false, true, 1, dys[s], ws[s], b, chain)
			}
			got := WrapF32(dev, append([]float32(nil), g.c0...), g.m, g.n)
			dev.GemmSum(dys, ws, acc, got)
			requireBits(t, chain.F32, got.F32, tc.name)
			helper := WrapF32(dev, append([]float32(nil), g.c0...), g.m, g.n)
			GemmSum(plainDevice{dev}, dys, ws, acc, helper)
			requireBits(t, chain.F32, helper.F32, tc.name+"_helper")
			if acc {
				checkGemm(t, tc.name, k, got.F32, want, mag)
			}
		}
		setGemmLevel(top)
	}
}

// plainDevice hides the CPU device's optional capabilities.
type plainDevice struct{ Device }

// The rows of a large sum are cut into blocks over the pool: the same bits
// with any number of threads.
func TestGemmSumIndependentOfThreads(t *testing.T) {
	if gemmLevel == 0 {
		t.Skip("no AVX2/FMA on this machine")
	}
	rng := rand.New(rand.NewPCG(25, 26))
	g := newGemmSumCase(rng, 2048, 112, []int{64, 64, 64, 64, 64, 64, 64, 64, 64}, false)
	rb, _ := gemmSplit(g.m, g.n, 9*64)
	require.Greater(t, rb, 1, "the shape is cut into row blocks")
	var first []float32
	for _, th := range []int{1, 2, 3} {
		dev := NewCPU(th)
		dys, ws := g.tensors(dev)
		got := WrapF32(dev, append([]float32(nil), g.c0...), g.m, g.n)
		dev.GemmSum(dys, ws, true, got)
		if first == nil {
			first = got.F32
			continue
		}
		requireBits(t, first, got.F32, fmt.Sprintf("threads %d", th))
	}
}

// Bad terms panic with the term named, before any work.
func TestGemmSumChecksShapes(t *testing.T) {
	dev := NewCPU(1)
	dx := dev.Alloc(Float32, 8, 32)
	dy, w := dev.Alloc(Float32, 8, 4), dev.Alloc(Float32, 32, 4)
	require.PanicsWithValue(t, "kernels: GemmSum: 2 output gradients for 1 kernels", func() {
		dev.GemmSum([]*Tensor{dy, dy}, []*Tensor{w}, false, dx)
	})
	bad := dev.Alloc(Float32, 32, 5)
	require.Panics(t, func() { dev.GemmSum([]*Tensor{dy, dy}, []*Tensor{w, bad}, false, dx) })
	require.Panics(t, func() { GemmSum(plainDevice{dev}, []*Tensor{dy}, []*Tensor{bad}, false, dx) })
}
