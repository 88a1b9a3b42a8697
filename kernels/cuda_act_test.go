//go:build cuda

package kernels_test

import (
	"math"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/mtlrank/mtlrank/kernels"
	"github.com/mtlrank/mtlrank/kernels/kerneltest"
)

// actTol bounds |got - want| for an activation or its derivative computed in
// float32 against the float64 definition: 1e-6*(1 + |want|). The CUDA
// device's expf, erff and tanhf are within 2 ulp (CUDA C Programming Guide,
// mathematical functions; no fast-math build), the CPU device's vectorised
// exp and sigmoid within a few ulp (kernels/cpu_math.Ref, checked by
// TestActivateAgainstFloat64), and each formula adds at most a few float32
// roundings (2^-24 each): a few ulp is ~5e-7 relative. The absolute part
// covers the cancellation in exp(x)-1 and 1-tanh(x)^2 near 0, where the
// error is a few ulp of 1, not of the result. So each device is held to the
// reference within the bound, and the two devices agree within twice it.
func actTol(want float64) float64 { return 1e-6 * (1 + math.Abs(want)) }

// TestCUDAActivationParity runs every activation and its backward on the CPU
// and the CUDA device over ordinary and extreme inputs (overflow of exp,
// denormal results, +-0) and holds both to the float64 reference.
func TestCUDAActivationParity(t *testing.T) {
	r := newRig(t, 31)
	xs := append([]float32{0, float32(math.Copysign(0, -1)), 1e-30, -1e-30, 1e-4, -1e-4, 0.5, -0.5, 20, -20,
		88, -88, 100, -100, 1e4, -1e4}, r.Uniform(size(t, 1<<20, 3000), -8, 8)...)
	dys := r.Uniform(len(xs), -2, 2)
	n := len(xs)
	for _, act := range allActivations {
		t.Run(act.String(), func(t *testing.T) {
			x := r.F32(xs, n)
			y := kerneltest.Pair{Ref: r.cpu.Alloc(kernels.Float32, n), Dev: r.gpu.Alloc(kernels.Float32, n)}
			r.Own(y.Ref, y.Dev)
			r.cpu.Activate(y.Ref, x.Ref, act)
			r.gpu.Activate(y.Dev, x.Dev, act)
			dy := r.F32(dys, n)
			r.cpu.ActivateBackward(dy.Ref, x.Ref, act)
			r.gpu.ActivateBackward(dy.Dev, x.Dev, act)
			// in place (y aliases x), as the layers run it at inference
			inPlace := r.F32(xs, n)
			r.gpu.Activate(inPlace.Dev, inPlace.Dev, act)
			r.Sync()
			gy, gdy, gin := r.gpuF32(y.Dev), r.gpuF32(dy.Dev), r.gpuF32(inPlace.Dev)
			bad := 0
			fail := func(format string, args ...any) {
				if bad++; bad <= 5 {
					t.Errorf(format, args...)
				}
			}
			for i, v := range xs {
				want := kerneltest.Activation(act, float64(v))
				wantD := float64(dys[i]) * kerneltest.ActivationGrad(act, float64(v))
				for _, c := range []struct {
					what string
					got  float32
					want float64
				}{
					{"cpu " + act.String(), y.Ref.F32[i], want},
					{"cuda " + act.String(), gy[i], want},
					{"cpu " + act.String() + "'", dy.Ref.F32[i], wantD},
					{"cuda " + act.String() + "'", gdy[i], wantD},
				} {
					if g := float64(c.got); math.IsNaN(g) || math.Abs(g-c.want) > actTol(c.want) {
						fail("%s(%g) = %g, want %g", c.what, v, c.got, c.want)
					}
				}
				if gin[i] != gy[i] {
					fail("cuda %s(%g) in place = %g, out of place %g", act, v, gin[i], gy[i])
				}
			}
			require.Zero(t, bad, "%d mismatches of %d", bad, 5*n)
		})
	}
}

// An activation outside the enumeration panics like on the CPU device, and
// BiasAct keeps refusing the activations it does not fuse (a layer would
// otherwise lose the pre-activation its backward needs).
func TestCUDAActivationRefusals(t *testing.T) {
	d := newCUDA(t)
	x := d.Alloc(kernels.Float32, 4)
	b := d.Alloc(kernels.Float32, 4)
	defer x.Release()
	defer b.Release()
	require.PanicsWithValue(t, "kernels: Activate: unknown activation 9", func() { d.Activate(x, x, kernels.Activation(9)) })
	require.PanicsWithValue(t, "kernels: ActivateBackward: unknown activation 200",
		func() { d.ActivateBackward(x, x, kernels.Activation(200)) })
	require.PanicsWithValue(t, "kernels: BiasAct: unknown activation 4", func() { d.BiasAct(x, b, 1, kernels.GELU) })
	require.NoError(t, kernels.CheckActivation(d, kernels.GELU))
	require.NoError(t, d.Sync())
}
