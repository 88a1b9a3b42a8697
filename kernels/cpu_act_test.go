package kernels_test

import (
	"fmt"
	"math"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/mtlrank/mtlrank/kernels"
	"github.com/mtlrank/mtlrank/kernels/kerneltest"
)

var allActivations = []kernels.Activation{kernels.Linear, kernels.ReLU, kernels.SELU, kernels.ELU, kernels.GELU,
	kernels.Tanh, kernels.Sigmoid, kernels.Swish, kernels.LeakyReLU}

func TestParseActivation(t *testing.T) {
	for _, tc := range []struct {
		name string
		want kernels.Activation
		err  string
	}{
		{"linear", kernels.Linear, ""}, {"relu", kernels.ReLU, ""}, {"selu", kernels.SELU, ""},
		{"elu", kernels.ELU, ""}, {"gelu", kernels.GELU, ""}, {"tanh", kernels.Tanh, ""},
		{"sigmoid", kernels.Sigmoid, ""}, {"swish", kernels.Swish, ""}, {"silu", kernels.Swish, ""},
		{"leaky_relu", kernels.LeakyReLU, ""},
		{"ReLU", 0, `unknown activation "ReLU"`}, {"softmax", 0, "want one of linear, relu, selu"}, {"", 0, "unknown activation"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := kernels.ParseActivation(tc.name)
			if tc.err != "" {
				require.ErrorContains(t, err, tc.err)
				return
			}
			require.NoError(t, err)
			assert.Equal(t, tc.want, got)
			if tc.name != "silu" {
				assert.Equal(t, tc.name, got.String())
			}
		})
	}
}

// Hand-computed values (Keras' definitions evaluated by hand with a
// calculator) pin the constants: selu's alpha and scale, elu's alpha 1,
// leaky_relu's 0.2, gelu's exact erf form.
func TestActivateHandValues(t *testing.T) {
	c := kernels.NewCPU(1)
	for _, tc := range []struct {
		act  kernels.Activation
		x, y float32
	}{
		{kernels.SELU, 1, 1.0507009873554805},
		{kernels.SELU, -1, -1.1113307378125625},
		{kernels.ELU, -1, -0.6321205588285577},
		{kernels.GELU, 1, 0.8413447460685429},
		{kernels.GELU, -1, -0.15865525393145707},
		{kernels.Tanh, 0.5, 0.46211715726000974},
		{kernels.Sigmoid, 0, 0.5},
		{kernels.Swish, 1, 0.7310585786300049},
		{kernels.LeakyReLU, -1, -0.2},
		{kernels.LeakyReLU, 3, 3},
	} {
		x := tensor(c, []float32{tc.x}, 1)
		y := c.Alloc(kernels.Float32, 1)
		c.Activate(y, x, tc.act)
		assert.InDelta(t, tc.y, y.F32[0], 1e-7, "%s(%g)", tc.act, tc.x)
	}
}

// TestActivateAgainstFloat64 compares every activation and its derivative
// with the float64 definitions over ordinary and extreme inputs, on one and
// two threads (the two-thread run splits the work).
func TestActivateAgainstFloat64(t *testing.T) {
	rng := newRNG(7)
	xs := append([]float32{0, -0, 1e-30, -1e-30, 1e-4, -1e-4, 20, -20, 88, -88, 100, -100, 1e4, -1e4},
		randSlice(rng, 20000, -8, 8)...)
	for _, threads := range threadCounts {
		c := kernels.NewCPU(threads)
		for _, act := range allActivations {
			x := tensor(c, xs, len(xs))
			y := c.Alloc(kernels.Float32, len(xs))
			c.Activate(y, x, act)
			dy := tensor(c, ones(len(xs)), len(xs))
			c.ActivateBackward(dy, x, act)
			for i, v := range xs {
				want := kerneltest.Activation(act, float64(v))
				require.False(t, math.IsNaN(float64(y.F32[i])), "%s(%g) is NaN", act, v)
				require.InDelta(t, want, float64(y.F32[i]), 1e-6*(1+math.Abs(want)), "%s(%g), %d threads", act, v, threads)
				if math.Abs(float64(v)) < 1e-3 && (act == kernels.ReLU || act == kernels.LeakyReLU || act == kernels.SELU) {
					continue // the kink: no derivative to compare with
				}
				// the derivative by a float64 central difference
				h := 1e-6 * math.Max(1, math.Abs(float64(v)))
				num := (kerneltest.Activation(act, float64(v)+h) - kerneltest.Activation(act, float64(v)-h)) / (2 * h)
				require.InDelta(t, num, float64(dy.F32[i]), 1e-5*(1+math.Abs(num)), "%s'(%g), %d threads", act, v, threads)
			}
		}
	}
}

func ones(n int) []float32 {
	s := make([]float32, n)
	for i := range s {
		s[i] = 1
	}
	return s
}

// TestGradActivations is the finite-difference check of the float32 ops
// themselves: the loss sum_i r_i*act(x_i + b_j) through BiasAct (linear)
// and Activate, against ActivateBackward and BiasGrad.
func TestGradActivations(t *testing.T) {
	c := kernels.NewCPU(1)
	const groups, rows, n = 2, 4, 3
	for _, act := range allActivations {
		t.Run(act.String(), func(t *testing.T) {
			rng := newRNG(11)
			xh := randSlice(rng, groups*rows*n, -3, 3)
			for i := range xh { // away from the kinks at 0
				if math.Abs(float64(xh[i])) < 0.1 {
					xh[i] = 0.4
				}
			}
			bh := randSlice(rng, groups*n, -0.05, 0.05)
			r := randSlice(rng, len(xh), -1, 1)
			x, z, y := c.Alloc(kernels.Float32, len(xh)), c.Alloc(kernels.Float32, groups, rows, n), c.Alloc(kernels.Float32, groups, rows, n)
			b := tensor(c, bh, groups, n)
			f := func() float64 {
				c.CopyFromHostF32(x, xh)
				c.CopyFromHostF32(b, bh)
				c.Copy(z, x)
				c.BiasAct(z, b, groups, kernels.Linear)
				c.Activate(y, z, act)
				return lossOf(r, y.F32)
			}
			f()
			dy := tensor(c, r, groups, rows, n)
			c.ActivateBackward(dy, z, act)
			fdCheck(t, act.String(), xh, f, dy.F32, 1e-2, 2e-3)
			db := c.Alloc(kernels.Float32, groups, n)
			c.BiasGrad(dy, db, groups, false)
			fdCheck(t, act.String()+" bias", bh, f, db.F32, 1e-2, 2e-3)
		})
	}
}

func TestCheckActivation(t *testing.T) {
	c := kernels.NewCPU(1)
	ref := kerneltest.NewRef()
	for _, act := range allActivations {
		assert.NoError(t, kernels.CheckActivation(c, act), "cpu %s", act)
		err := kernels.CheckActivation(ref, act)
		if act.NeedsActivator() {
			assert.EqualError(t, err, fmt.Sprintf("the ref device does not implement the %s activation (it runs relu and linear)", act))
		} else {
			assert.NoError(t, err, "ref %s", act)
		}
	}
	assert.Error(t, kernels.CheckActivation(c, kernels.Activation(200)))
}
