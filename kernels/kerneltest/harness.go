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

// This file is the one parity harness of the module: CompareDevices' case
// tables, the CPU-versus-CUDA tests of package kernels and the checks of
// device results against float64 references all allocate, upload and
// compare through it.

// Pair is one logical tensor allocated on two devices with equal contents:
// Ref on the reference device, Dev on the device under test.
type Pair struct{ Ref, Dev *kernels.Tensor }

// Harness allocates tensors on a reference and a tested device, fills them
// with the same values and compares what the ops leave in them. Tensors it
// allocates are released when the test ends.
type Harness struct {
	t        testing.TB
	ref, dev kernels.Device
	abs, rel float64 // |got - want| <= abs + rel*|want| + slack*extra
	slack    float64 // factor on the per-op allowances (GEMM accumulation)
	rng      *rand.Rand
	owned    []*kernels.Tensor
}

// NewHarness returns a harness over ref and dev with the default tolerance
// (AbsTol, RelTol) and random values drawn from seed.
func NewHarness(t testing.TB, ref, dev kernels.Device, seed uint64) *Harness {
	return newHarness(t, ref, dev, AbsTol, RelTol, 1, seed)
}

func newHarness(t testing.TB, ref, dev kernels.Device, abs, rel, slack float64, seed uint64) *Harness {
	h := &Harness{t: t, ref: ref, dev: dev, abs: abs, rel: rel, slack: slack,
		rng: rand.New(rand.NewPCG(seed, 0x6b65726e656c73))}
	t.Cleanup(func() {
		for _, x := range h.owned {
			x.Release()
		}
	})
	return h
}

func (cm *comparer) newHarness(t *testing.T, seed uint64) *Harness {
	return newHarness(t, cm.ref, cm.dev, cm.abs, cm.rel, cm.slack, seed)
}

// Rand is the harness's random source.
func (h *Harness) Rand() *rand.Rand { return h.rng }

// F32 allocates a Float32 pair of the shape holding data.
func (h *Harness) F32(data []float32, shape ...int) Pair {
	h.t.Helper()
	p := Pair{h.ref.Alloc(kernels.Float32, shape...), h.dev.Alloc(kernels.Float32, shape...)}
	h.owned = append(h.owned, p.Ref, p.Dev)
	if p.Ref.Len() != len(data) {
		h.t.Fatalf("harness: %d values for shape %v", len(data), shape)
	}
	h.ref.CopyFromHostF32(p.Ref, data)
	h.dev.CopyFromHostF32(p.Dev, data)
	return p
}

// I32 allocates an Int32 pair of the shape holding data.
func (h *Harness) I32(data []int32, shape ...int) Pair {
	h.t.Helper()
	p := Pair{h.ref.Alloc(kernels.Int32, shape...), h.dev.Alloc(kernels.Int32, shape...)}
	h.owned = append(h.owned, p.Ref, p.Dev)
	if p.Ref.Len() != len(data) {
		h.t.Fatalf("harness: %d values for shape %v", len(data), shape)
	}
	h.ref.CopyFromHostI32(p.Ref, data)
	h.dev.CopyFromHostI32(p.Dev, data)
	return p
}

// Uniform returns n values uniform in [lo, hi).
func (h *Harness) Uniform(n int, lo, hi float32) []float32 {
	x := make([]float32, n)
	for i := range x {
		x[i] = lo + (hi-lo)*h.rng.Float32()
	}
	return x
}

// Normal returns n values from N(0, sd^2).
func (h *Harness) Normal(n int, sd float64) []float32 {
	x := make([]float32, n)
	for i := range x {
		x[i] = float32(h.rng.NormFloat64() * sd)
	}
	return x
}

// RandF allocates a pair of the shape with values uniform in [-1, 1).
func (h *Harness) RandF(shape ...int) Pair {
	n := 1
	for _, d := range shape {
		n *= d
	}
	return h.F32(h.Uniform(n, -1, 1), shape...)
}

// View is the same view of both tensors of p.
func (h *Harness) View(p Pair, off int, shape ...int) Pair {
	return Pair{p.Ref.View(off, shape...), p.Dev.View(off, shape...)}
}

// Sync reports asynchronous device faults of both devices as test failures.
func (h *Harness) Sync() {
	h.t.Helper()
	if err := h.ref.Sync(); err != nil {
		h.t.Fatalf("%s: Sync: %v", h.ref.Name(), err)
	}
	if err := h.dev.Sync(); err != nil {
		h.t.Fatalf("%s: Sync: %v", h.dev.Name(), err)
	}
}

// Check compares a Float32 pair with the harness's tolerance.
func (h *Harness) Check(name string, p Pair) { h.CheckTol(name, p, nil) }

// CheckRel compares a Float32 pair within AbsTol + rel*|want|.
func (h *Harness) CheckRel(name string, p Pair, rel float64) {
	h.t.Helper()
	h.Sync()
	CheckClose(h.t, h.label(name), Download(h.dev, p.Dev), Widen(Download(h.ref, p.Ref)), AbsTol, rel, nil)
}

// CheckTol compares with the harness's tolerance plus (scaled by its slack
// factor) extra(i) at element i.
func (h *Harness) CheckTol(name string, p Pair, extra func(i int) float64) {
	h.t.Helper()
	h.Sync()
	var scaled func(i int) float64
	if extra != nil && h.slack != 0 {
		scaled = func(i int) float64 { return h.slack * extra(i) }
	}
	CheckClose(h.t, h.label(name), Download(h.dev, p.Dev), Widen(Download(h.ref, p.Ref)), h.abs, h.rel, scaled)
}

func (h *Harness) label(name string) string {
	return fmt.Sprintf("%s (%s against %s)", name, h.dev.Name(), h.ref.Name())
}

// CheckExact compares a pair bit for bit (Float32 by value, so -0 == 0).
func (h *Harness) CheckExact(name string, p Pair) {
	h.t.Helper()
	h.Sync()
	bad := 0
	report := func(i int, got, want any) {
		if bad < 5 {
			h.t.Errorf("%s[%d]: %s gives %v, %s gives %v", name, i, h.dev.Name(), got, h.ref.Name(), want)
		}
		bad++
	}
	if p.Ref.DType == kernels.Int32 {
		want, got := DownloadI32(h.ref, p.Ref), DownloadI32(h.dev, p.Dev)
		for i := range want {
			if got[i] != want[i] {
				report(i, got[i], want[i])
			}
		}
	} else {
		want, got := Download(h.ref, p.Ref), Download(h.dev, p.Dev)
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

// Upload allocates a Float32 tensor of the shape on dev holding data.
func Upload(dev kernels.Device, data []float32, shape ...int) *kernels.Tensor {
	t := dev.Alloc(kernels.Float32, shape...)
	dev.CopyFromHostF32(t, data)
	return t
}

// Download copies a Float32 tensor to the host.
func Download(dev kernels.Device, x *kernels.Tensor) []float32 {
	out := make([]float32, x.Len())
	dev.CopyToHostF32(out, x)
	return out
}

// DownloadI32 copies an Int32 tensor to the host.
func DownloadI32(dev kernels.Device, x *kernels.Tensor) []int32 {
	out := make([]int32, x.Len())
	dev.CopyToHostI32(out, x)
	return out
}

// Widen converts float32 values to float64, for CheckClose's want.
func Widen(x []float32) []float64 {
	out := make([]float64, len(x))
	for i, v := range x {
		out[i] = float64(v)
	}
	return out
}

// Close reports whether got is within abs + rel*|want| + extra of want. A
// NaN want needs a NaN got, an infinite want the same infinity; otherwise
// a NaN got is never close.
func Close(got float32, want, abs, rel, extra float64) bool {
	g := float64(got)
	switch {
	case math.IsNaN(want):
		return math.IsNaN(g)
	case math.IsInf(want, 0):
		return g == want
	}
	return math.Abs(g-want) <= abs+rel*math.Abs(want)+extra
}

// CheckClose reports (as errors of t, the first five and a count) the
// elements where got is not Close to want with abs, rel and extra(i) (nil:
// none).
func CheckClose(t testing.TB, name string, got []float32, want []float64, abs, rel float64, extra func(i int) float64) {
	t.Helper()
	if len(got) != len(want) {
		t.Errorf("%s: %d values, want %d", name, len(got), len(want))
		return
	}
	bad := 0
	for i := range want {
		e := 0.0
		if extra != nil {
			e = extra(i)
		}
		if !Close(got[i], want[i], abs, rel, e) {
			if bad < 5 {
				t.Errorf("%s[%d]: got %.8g, want %.8g (diff %.3g, tolerance %.3g)", name, i, got[i], want[i],
					math.Abs(float64(got[i])-want[i]), abs+rel*math.Abs(want[i])+e)
			}
			bad++
		}
	}
	if bad > 5 {
		t.Errorf("%s: %d of %d elements differ", name, bad, len(want))
	}
}

// shapeName formats case parameters for subtest names.
func shapeName(format string, args ...any) string { return fmt.Sprintf(format, args...) }

// RandF32 returns n values uniform in [lo, hi) drawn from rng in float64.
func RandF32(rng *rand.Rand, n int, lo, hi float64) []float32 {
	x := make([]float32, n)
	for i := range x {
		x[i] = float32(lo + (hi-lo)*rng.Float64())
	}
	return x
}

// Own makes the harness release ts when the test ends.
func (h *Harness) Own(ts ...*kernels.Tensor) { h.owned = append(h.owned, ts...) }
