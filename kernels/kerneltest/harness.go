package kerneltest

import (
	"fmt"
	"math"
	"math/rand/v2"
	"testing"

	"github.com/mtlrank/mtlrank/kernels"
)

// Default tolerance of the comparisons: |got - want| <= AbsTol + RelTol*|want|
// (docs/ARCHITECTURE.md, "Numerics and determinism"). Float32 element-wise
// math agrees far closer; the margin is for reductions, whose order of
// summation differs between devices. GEMMs get GemmErrorBound on top.
const (
	AbsTol = 1e-5
	RelTol = 1e-4
)

// pair is one logical tensor allocated on both devices with equal contents.
type pair struct{ r, d *kernels.Tensor }

// harness allocates tensors on a reference and a tested device, fills them
// with the same values and compares what the ops leave in them.
type harness struct {
	t        *testing.T
	ref, dev kernels.Device
	cm       *comparer
	rng      *rand.Rand
	owned    []*kernels.Tensor
}

func (cm *comparer) newHarness(t *testing.T, seed uint64) *harness {
	h := &harness{t: t, ref: cm.ref, dev: cm.dev, cm: cm, rng: rand.New(rand.NewPCG(seed, 0x6b65726e656c73))}
	t.Cleanup(func() {
		for _, x := range h.owned {
			x.Release()
		}
	})
	return h
}

func (h *harness) f32(data []float32, shape ...int) pair {
	h.t.Helper()
	p := pair{h.ref.Alloc(kernels.Float32, shape...), h.dev.Alloc(kernels.Float32, shape...)}
	if p.r.Len() != len(data) {
		h.t.Fatalf("harness: %d values for shape %v", len(data), shape)
	}
	h.ref.CopyFromHostF32(p.r, data)
	h.dev.CopyFromHostF32(p.d, data)
	h.owned = append(h.owned, p.r, p.d)
	return p
}

func (h *harness) i32(data []int32, shape ...int) pair {
	h.t.Helper()
	p := pair{h.ref.Alloc(kernels.Int32, shape...), h.dev.Alloc(kernels.Int32, shape...)}
	if p.r.Len() != len(data) {
		h.t.Fatalf("harness: %d values for shape %v", len(data), shape)
	}
	h.ref.CopyFromHostI32(p.r, data)
	h.dev.CopyFromHostI32(p.d, data)
	h.owned = append(h.owned, p.r, p.d)
	return p
}

// uniform returns n values uniform in [lo, hi).
func (h *harness) uniform(n int, lo, hi float32) []float32 {
	x := make([]float32, n)
	for i := range x {
		x[i] = lo + (hi-lo)*h.rng.Float32()
	}
	return x
}

// normal returns n values from N(0, sd^2).
func (h *harness) normal(n int, sd float64) []float32 {
	x := make([]float32, n)
	for i := range x {
		x[i] = float32(h.rng.NormFloat64() * sd)
	}
	return x
}

func (h *harness) randf(shape ...int) pair {
	n := 1
	for _, d := range shape {
		n *= d
	}
	return h.f32(h.uniform(n, -1, 1), shape...)
}

func (h *harness) view(p pair, off int, shape ...int) pair {
	return pair{p.r.View(off, shape...), p.d.View(off, shape...)}
}

func (h *harness) hostF32(dev kernels.Device, x *kernels.Tensor) []float32 {
	out := make([]float32, x.Len())
	dev.CopyToHostF32(out, x)
	return out
}

func (h *harness) hostI32(dev kernels.Device, x *kernels.Tensor) []int32 {
	out := make([]int32, x.Len())
	dev.CopyToHostI32(out, x)
	return out
}

// sync reports asynchronous device faults as test failures.
func (h *harness) sync() {
	h.t.Helper()
	if err := h.ref.Sync(); err != nil {
		h.t.Fatalf("%s: Sync: %v", h.ref.Name(), err)
	}
	if err := h.dev.Sync(); err != nil {
		h.t.Fatalf("%s: Sync: %v", h.dev.Name(), err)
	}
}

// close32 reports whether got is within abs + rel*|want| + extra of want.
func close32(got, want float32, abs, rel, extra float64) bool {
	if math.IsNaN(float64(got)) || math.IsNaN(float64(want)) {
		return math.IsNaN(float64(got)) && math.IsNaN(float64(want))
	}
	if math.IsInf(float64(want), 0) {
		return got == want
	}
	return math.Abs(float64(got)-float64(want)) <= abs+rel*math.Abs(float64(want))+extra
}

// check compares a Float32 tensor on both devices with the run's tolerance.
func (h *harness) check(name string, p pair) { h.checkTol(name, p, nil) }

// checkTol compares with the run's tolerance plus (scaled by the run's slack
// factor) extra(i) at element i.
func (h *harness) checkTol(name string, p pair, extra func(i int) float64) {
	h.t.Helper()
	h.sync()
	want, got := h.hostF32(h.ref, p.r), h.hostF32(h.dev, p.d)
	bad := 0
	for i := range want {
		e := 0.0
		if extra != nil && h.cm.slack != 0 {
			e = h.cm.slack * extra(i)
		}
		if !close32(got[i], want[i], h.cm.abs, h.cm.rel, e) {
			if bad < 5 {
				h.t.Errorf("%s[%d]: %s gives %g, %s gives %g (diff %.3g)", name, i,
					h.dev.Name(), got[i], h.ref.Name(), want[i], math.Abs(float64(got[i])-float64(want[i])))
			}
			bad++
		}
	}
	if bad > 5 {
		h.t.Errorf("%s: %d of %d elements differ", name, bad, len(want))
	}
}

// checkExact compares a tensor bit for bit (Float32 by value, so -0 == 0).
func (h *harness) checkExact(name string, p pair) {
	h.t.Helper()
	h.sync()
	bad := 0
	report := func(i int, got, want any) {
		if bad < 5 {
			h.t.Errorf("%s[%d]: %s gives %v, %s gives %v", name, i, h.dev.Name(), got, h.ref.Name(), want)
		}
		bad++
	}
	if p.r.DType == kernels.Int32 {
		want, got := h.hostI32(h.ref, p.r), h.hostI32(h.dev, p.d)
		for i := range want {
			if got[i] != want[i] {
				report(i, got[i], want[i])
			}
		}
	} else {
		want, got := h.hostF32(h.ref, p.r), h.hostF32(h.dev, p.d)
		for i := range want {
			if got[i] != want[i] {
				report(i, got[i], want[i])
			}
		}
	}
	if bad > 5 {
		h.t.Errorf("%s: %d elements differ", name, bad)
	}
}

// shapeName formats case parameters for subtest names.
func shapeName(format string, args ...any) string { return fmt.Sprintf(format, args...) }
