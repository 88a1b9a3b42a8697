package kernels

import (
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

// Both ways of running a batch of GEMMs give the same bits.
func TestBatchedGemmStrategiesAgree(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	c := NewCPU(2)
	const batch, m, n, k = 4, 200, 64, 96
	a := randF32(rng, m*k, -1, 1)
	b := randF32(rng, batch*k*n, -1, 1)
	c1, c2 := make([]float32, batch*m*n), make([]float32, batch*m*n)
	sgemmBatch(2, false, false, m, n, k, 1, a, 0, k, b, k*n, n, 0, c1, m*n, n, batch)
	c.gemmBatchedEntries(false, false, m, n, k, 1, a, 0, k, b, k*n, n, 0, c2, m*n, n, batch)
	for i := range c1 {
		if math.Float32bits(c1[i]) != math.Float32bits(c2[i]) {
			t.Fatalf("element %d: %g vs %g", i, c1[i], c2[i])
		}
	}
}

// Several single-threaded devices run OpenBLAS concurrently (shared read
// lock); their results must equal a serial run.
func TestConcurrentSingleThreadDevices(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	const m, n, k = 300, 64, 128
	a, b := randF32(rng, m*k, -1, 1), randF32(rng, k*n, -1, 1)
	want := make([]float32, m*n)
	sgemm(1, false, false, m, n, k, 1, a, k, b, n, 0, want, n)
	done := make(chan []float32)
	for g := 0; g < 4; g++ {
		go func() {
			c := NewCPU(1)
			out := make([]float32, m*n)
			for it := 0; it < 30; it++ {
				c.Gemm(false, false, 1, WrapF32(c, a, m, k), WrapF32(c, b, k, n), 0, WrapF32(c, out, m, n))
			}
			done <- out
		}()
	}
	// Meanwhile a two-thread device switches OpenBLAS's thread count.
	c2 := NewCPU(2)
	out2 := make([]float32, m*n)
	for it := 0; it < 10; it++ {
		c2.Gemm(false, false, 1, WrapF32(c2, a, m, k), WrapF32(c2, b, k, n), 0, WrapF32(c2, out2, m, n))
	}
	for g := 0; g < 4; g++ {
		require.Equal(t, want, <-done)
	}
	require.Equal(t, want, out2)
}
