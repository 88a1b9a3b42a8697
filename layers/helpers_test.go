package layers

import (
	"math"
	"math/rand/v2"
	"testing"

	"github.com/mtlrank/mtlrank/kernels"
	"github.com/stretchr/testify/require"
)

func testDev() *kernels.CPU { return kernels.NewCPU(1) }

func host(t *kernels.Tensor) []float32 {
	out := make([]float32, t.Len())
	t.Dev.CopyToHostF32(out, t)
	return out
}

func randHost(rng *rand.Rand, n int, scale float64) []float32 {
	out := make([]float32, n)
	for i := range out {
		out[i] = float32((2*rng.Float64() - 1) * scale)
	}
	return out
}

func randTensor(dev kernels.Device, rng *rand.Rand, scale float64, shape ...int) *kernels.Tensor {
	t := dev.Alloc(kernels.Float32, shape...)
	n := 1
	for _, d := range shape {
		n *= d
	}
	dev.CopyFromHostF32(t, randHost(rng, n, scale))
	return t
}

// dot is sum(r * y) in float64: the scalar "loss" the gradient checks
// differentiate, so that dL/dy = r.
func dot(r []float32, y *kernels.Tensor) float64 {
	h := host(y)
	s := 0.0
	for i, v := range h {
		s += float64(r[i]) * float64(v)
	}
	return s
}

// fdOpts sets the finite-difference step and tolerance:
// |analytic - numeric| <= atol + rtol * max(|analytic|, |numeric|).
type fdOpts struct {
	eps, atol, rtol float64
	samples         int
	smooth          bool // no ReLU anywhere: never skip an entry as a kink
}

var defaultFD = fdOpts{eps: 1e-3, atol: 1e-4, rtol: 2e-3, samples: 24}

// fdCheck compares the analytic gradient grad (host, one entry per element
// of p) with central differences of loss w.r.t. a sample of p's entries.
// Entries listed in must are always checked.
func fdCheck(t *testing.T, name string, p *kernels.Tensor, grad []float32, loss func() float64, o fdOpts, rng *rand.Rand, must ...int) {
	t.Helper()
	require.Equal(t, p.Len(), len(grad), "%s: gradient length", name)
	vals := host(p)
	idx := append([]int(nil), must...)
	n := min(o.samples, p.Len())
	if n == p.Len() {
		for i := 0; i < n; i++ {
			idx = append(idx, i)
		}
	} else {
		for i := 0; i < n; i++ {
			idx = append(idx, rng.IntN(p.Len()))
		}
	}
	bad, kinks := 0, 0
	at := func(i int, v float32) float64 {
		vals[i] = v
		p.Dev.CopyFromHostF32(p, vals)
		return loss()
	}
	for _, i := range idx {
		orig := vals[i]
		e := float32(o.eps)
		// the actual steps are what float32 can represent
		hp, hm := float64(orig+e)-float64(orig), float64(orig)-float64(orig-e)
		f0, fp, fm := at(i, orig), at(i, orig+e), at(i, orig-e)
		at(i, orig)
		num := (fp - fm) / (hp + hm)
		// A ReLU kink inside the step shows as a jump between the forward
		// and the backward one-sided slopes (on a smooth function they only
		// differ by eps*f''); such entries say nothing about the analytic
		// gradient and are skipped. A few are expected; many mean the check
		// is useless.
		if !o.smooth && math.Abs((fp-f0)/hp-(f0-fm)/hm) > o.atol+o.rtol*math.Abs(num) {
			kinks++
			continue
		}
		a := float64(grad[i])
		if math.Abs(a-num) > o.atol+o.rtol*math.Max(math.Abs(a), math.Abs(num)) {
			bad++
			if bad <= 5 {
				t.Errorf("%s[%d]: analytic %.6g, numeric %.6g", name, i, a, num)
			}
		}
	}
	if kinks > 0 {
		t.Logf("%s: %d of %d entries skipped (ReLU kink inside the step)", name, kinks, len(idx))
	}
	if kinks > len(idx)/2 {
		t.Errorf("%s: %d of %d entries sit on a ReLU kink; use another seed or step", name, kinks, len(idx))
	}
}
