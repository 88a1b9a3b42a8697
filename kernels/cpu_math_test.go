package kernels

import (
	"fmt"
	"math"
	"math/rand/v2"
	"testing"

	"github.com/stretchr/testify/require"
)

// relErr is |got-want|/max(|want|, tiny).
func relErr(got float32, want float64) float64 {
	return math.Abs(float64(got)-want) / math.Max(math.Abs(want), 1e-30)
}

// The polynomial exp is within a few ulp of math.Exp over the whole range
// it covers (and clamps outside it).
func TestExpPolynomialAccuracy(t *testing.T) {
	var xs []float32
	for x := -87.0; x <= 88.0; x += 0.0137 {
		xs = append(xs, float32(x))
	}
	xs = append(xs, 0, -0.0, 1e-8, -1e-8, 0.5, -0.5, 88.3, -87.3)
	got := append([]float32(nil), xs...)
	mtlExp(got)
	worst := 0.0
	for i, x := range xs {
		worst = max(worst, relErr(got[i], math.Exp(float64(x))))
	}
	require.Less(t, worst, 4e-7, "max relative error")
	// clamped, finite, no denormals or infinities
	ext := []float32{-1000, -88, 89, 1000}
	mtlExp(ext)
	const minNormal = 0x1p-126
	require.True(t, ext[0] >= minNormal && ext[0] < 2e-38 && ext[0] == ext[1], "%v", ext)
	require.False(t, math.IsInf(float64(ext[2]), 0) || math.IsInf(float64(ext[3]), 0), "%v", ext)
}

func TestSigmoidAccuracy(t *testing.T) {
	var xs []float32
	for x := -120.0; x <= 120.0; x += 0.0371 {
		xs = append(xs, float32(x))
	}
	y := make([]float32, len(xs))
	cSigmoid(y, xs)
	for i, x := range xs {
		want := 1 / (1 + math.Exp(-float64(x)))
		require.LessOrEqual(t, relErr(y[i], want), 4e-7, "x=%g: %g want %g", x, y[i], want)
	}
	cSigmoid(xs, xs) // in place
	require.Equal(t, y, xs)
}

// BCE terms and gradients against a float64 reference, including logits
// far outside the range where exp overflows, soft labels and weights.
func TestBCEAccuracy(t *testing.T) {
	rng := rand.New(rand.NewPCG(21, 22))
	zs := []float32{0, -0.0, 1e-7, -1e-7, 0.3, -0.3, 5, -5, 20, -20, 60, -60, 100, -100, 1e4, -1e4}
	for range 2000 {
		zs = append(zs, float32(rng.NormFloat64()*8))
	}
	n := len(zs)
	y, w := make([]float32, n), make([]float32, n)
	for i := range y {
		y[i] = []float32{0, 1, 0.25}[i%3]
		w[i] = float32(rng.Float64() * 2)
	}
	for _, weights := range [][]float32{nil, w} {
		dz := make([]float32, n)
		const scale = 0.125
		got := cBCE(dz, zs, y, weights, scale)
		var want, abs float64
		for i, z := range zs {
			wi := 1.0
			if weights != nil {
				wi = float64(weights[i])
			}
			zf, yf := float64(z), float64(y[i])
			l := math.Max(zf, 0) - zf*yf + math.Log1p(math.Exp(-math.Abs(zf)))
			want += wi * l
			abs += math.Abs(wi * l)
			p := 1 / (1 + math.Exp(-zf))
			g := scale * wi * (p - yf)
			require.InDelta(t, g, float64(dz[i]), 1e-7+4e-7*math.Abs(g), "dz at z=%g", z)
		}
		require.InDelta(t, want, got, 1e-6*abs+1e-9, "loss sum")
	}
}

func TestSoftmaxKernels(t *testing.T) {
	rng := rand.New(rand.NewPCG(23, 24))
	for _, n := range []int{1, 3, 4, 7, 16, 33} {
		for _, temp := range []float32{1, 0.3, 4} {
			rows := 50
			x, dy := make([]float32, rows*n), make([]float32, rows*n)
			for i := range x {
				x[i] = float32(rng.NormFloat64() * 30)
				dy[i] = float32(rng.NormFloat64())
			}
			y, dx := make([]float32, rows*n), make([]float32, rows*n)
			cSoftmax(y, x, 0, rows, n, 1/temp)
			cSoftmaxBwd(dx, dy, y, 0, rows, n, 1/temp)
			for r := range rows {
				xr := x[r*n : r*n+n]
				mx := math.Inf(-1)
				for _, v := range xr {
					mx = math.Max(mx, float64(v))
				}
				var s float64
				e := make([]float64, n)
				for j, v := range xr {
					e[j] = math.Exp((float64(v) - mx) / float64(temp))
					s += e[j]
				}
				var dot float64
				for j := range e {
					e[j] /= s
					dot += e[j] * float64(dy[r*n+j])
				}
				for j := range e {
					name := fmt.Sprintf("n%d T%g row %d col %d", n, temp, r, j)
					// float32 rounding of the argument (x - max)/T costs
					// |arg| * 2^-24 relative, as in any float32 softmax
					arg := (float64(xr[j]) - mx) / float64(temp)
					require.InDelta(t, e[j], float64(y[r*n+j]), (6e-7+1.2e-7*math.Abs(arg))*e[j]+1e-37, name)
					g := e[j] * (float64(dy[r*n+j]) - dot) / float64(temp)
					require.InDelta(t, g, float64(dx[r*n+j]), 1e-6*(math.Abs(g)+e[j]*math.Abs(dot)/float64(temp))+1e-12, name)
				}
			}
		}
	}
}

// ActBiasGrad gives the bits of ActBackward followed by BiasGrad.
func TestActBiasGradMatchesUnfused(t *testing.T) {
	rng := rand.New(rand.NewPCG(25, 26))
	for _, th := range []int{1, 2} {
		c := NewCPU(th)
		for _, s := range []struct{ groups, rows, n int }{{1, 1, 1}, {1, 256, 64}, {4, 256, 64}, {3, 37, 100}, {2, 1024, 130}, {1, 0, 5}} {
			for _, act := range []Activation{Linear, ReLU} {
				for _, acc := range []bool{false, true} {
					name := fmt.Sprintf("th%d_%dx%dx%d_act%d_acc%v", th, s.groups, s.rows, s.n, act, acc)
					size := s.groups * s.rows * s.n
					dy0, y := randF32(rng, size, -1, 1), randF32(rng, size, -1, 1)
					db0 := randF32(rng, s.groups*s.n, -1, 1)
					dyA, dbA := WrapF32(c, append([]float32(nil), dy0...), size), WrapF32(c, append([]float32(nil), db0...), s.groups*s.n)
					dyB, dbB := WrapF32(c, append([]float32(nil), dy0...), size), WrapF32(c, append([]float32(nil), db0...), s.groups*s.n)
					yt := WrapF32(c, y, size)
					c.ActBackward(dyA, yt, act)
					c.BiasGrad(dyA, dbA, s.groups, acc)
					c.ActBiasGrad(dyB, yt, act, dbB, s.groups, acc)
					require.Equal(t, dyA.F32, dyB.F32, name)
					require.Equal(t, dbA.F32, dbB.F32, name)
				}
			}
		}
	}
}

// The AVX-512, AVX2 and scalar instances of the exp-based kernels give the
// same bits, on odd lengths (vector bodies and scalar tails) and on special
// values.
func TestMathLevelsAgree(t *testing.T) {
	defer setMathLevel(2)
	rng := rand.New(rand.NewPCG(27, 28))
	const n = 1000 + 13
	x := make([]float32, n)
	y := make([]float32, n)
	w := make([]float32, n)
	for i := range x {
		x[i] = float32(rng.NormFloat64() * 30)
		y[i] = float32(rng.IntN(2))
		w[i] = float32(rng.Float64())
	}
	copy(x, []float32{float32(math.Inf(1)), float32(math.Inf(-1)), 0, -0.0, 1e-30, -1e-30, 200, -200})
	type out struct {
		exp, sig, dz []float32
		loss         float64
	}
	run := func() out {
		o := out{exp: append([]float32(nil), x...), sig: make([]float32, n), dz: make([]float32, n)}
		mtlExp(o.exp)
		cSigmoid(o.sig, x)
		o.loss = cBCE(o.dz, x[2:], y[2:], w[2:], 0.5) // finite logits
		return o
	}
	var ref out
	for l := 2; l >= 0; l-- {
		setMathLevel(l)
		o := run()
		if l == 2 {
			ref = o
			require.Equal(t, float32(math.Float32frombits(0)), o.sig[1]*0, "sigmoid(-inf) is finite")
			continue
		}
		require.Equal(t, ref.exp, o.exp, "exp level %d", l)
		require.Equal(t, ref.sig, o.sig, "sigmoid level %d", l)
		require.Equal(t, ref.dz, o.dz, "bce gradient level %d", l)
		require.Equal(t, ref.loss, o.loss, "bce loss level %d", l)
	}
}
