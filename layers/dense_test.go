package layers

import (
	"fmt"
	"math"
	"testing"

	"github.com/mtlrank/mtlrank/kernels"
	"github.com/mtlrank/mtlrank/kernels/kerneltest"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// naiveDense is the reference: y = act(x W + b) with float64 sums.
func naiveDense(x, w, b []float32, rows, in, out int, act kernels.Activation) []float32 {
	y := make([]float32, rows*out)
	for r := 0; r < rows; r++ {
		for j := 0; j < out; j++ {
			s := 0.0
			if b != nil {
				s = float64(b[j])
			}
			for k := 0; k < in; k++ {
				s += float64(x[r*in+k]) * float64(w[k*out+j])
			}
			y[r*out+j] = float32(kerneltest.Activation(act, s))
		}
	}
	return y
}

// denseBound is the worst-case float32 error of each element of x W + b
// computed in any order (kerneltest.GemmErrorBound), so that a Dense layer
// is checked against naiveDense the same way whichever kernel OpenBLAS
// picks for the CPU.
func denseBound(x, w, b []float32, rows, in, out int) []float64 {
	bound := make([]float64, rows*out)
	for r := 0; r < rows; r++ {
		for j := 0; j < out; j++ {
			mag := 0.0
			if b != nil {
				mag = math.Abs(float64(b[j]))
			}
			for k := 0; k < in; k++ {
				mag += math.Abs(float64(x[r*in+k]) * float64(w[k*out+j]))
			}
			bound[r*out+j] = kerneltest.GemmErrorBound(in, mag)
		}
	}
	return bound
}

// assertWithin checks |want[i] - got[i]| <= bound[i] for every i.
func assertWithin(t *testing.T, want, got []float32, bound []float64) {
	t.Helper()
	require.Equal(t, len(want), len(got))
	for i := range want {
		if d := math.Abs(float64(want[i]) - float64(got[i])); !(d <= bound[i]) {
			t.Errorf("element %d: want %g, got %g (error %.3g, bound %.3g)", i, want[i], got[i], d, bound[i])
		}
	}
}

// activationBound widens a pre-activation bound for an activation applied
// after the GEMM: twice the bound for a slope up to 1.76, plus 8 float32
// roundings of the output.
func activationBound(bound []float64, want []float32) []float64 {
	out := make([]float64, len(bound))
	for i := range bound {
		out[i] = 2*bound[i] + 8*0x1p-24*math.Abs(float64(want[i]))
	}
	return out
}

// smoothAct reports whether the activation has a continuous derivative,
// so that finite differences may check every entry (no kink to skip).
func smoothAct(act kernels.Activation) bool {
	switch act {
	case kernels.ELU, kernels.GELU, kernels.Tanh, kernels.Sigmoid, kernels.Swish, kernels.Linear:
		return true
	}
	return false
}

func TestDenseForwardBackward(t *testing.T) {
	cases := []struct {
		in, out, rows int
		bias          bool
		act           kernels.Activation
	}{
		{1, 1, 1, true, kernels.Linear},
		{5, 3, 7, true, kernels.ReLU},
		{8, 4, 3, false, kernels.Linear},
		{6, 5, 4, false, kernels.ReLU},
		{17, 9, 33, true, kernels.ReLU},
		{5, 3, 7, true, kernels.SELU},
		{6, 5, 4, false, kernels.SELU},
		{5, 3, 7, true, kernels.ELU},
		{5, 3, 7, true, kernels.GELU},
		{6, 5, 4, false, kernels.GELU},
		{5, 3, 7, true, kernels.Tanh},
		{5, 3, 7, true, kernels.Sigmoid},
		{5, 3, 7, true, kernels.Swish},
		{6, 5, 4, false, kernels.Swish},
		{17, 9, 33, true, kernels.LeakyReLU},
	}
	for _, c := range cases {
		t.Run(fmt.Sprintf("%dx%d_rows%d_bias%v_%s", c.in, c.out, c.rows, c.bias, c.act), func(t *testing.T) {
			dev := testDev()
			rng := NewRNG(int64(c.in*100 + c.out))
			d, err := NewDense(dev, "d", c.in, c.out, c.bias, c.act, rng)
			require.NoError(t, err)
			// glorot-uniform bound and zero bias
			limit := math.Sqrt(6 / float64(c.in+c.out))
			for _, v := range host(d.W) {
				require.LessOrEqual(t, math.Abs(float64(v)), limit)
			}
			if c.bias {
				require.Equal(t, make([]float32, c.out), host(d.B))
				dev.CopyFromHostF32(d.B, randHost(rng, c.out, 0.5))
			} else {
				require.Nil(t, d.B)
			}
			ws := d.NewWorkspace(c.rows+3, true) // larger than the batch on purpose
			x := randTensor(dev, rng, 1, c.rows, c.in)
			y := d.Forward(ws, x)
			var bh []float32
			if c.bias {
				bh = host(d.B)
			}
			want := naiveDense(host(x), host(d.W), bh, c.rows, c.in, c.out, c.act)
			require.Equal(t, []int{c.rows, c.out}, y.Shape)
			// The activation's slope is at most 1.76 (selu's negative side) and
			// it adds a few float32 roundings of its own.
			assertWithin(t, want, host(y), activationBound(denseBound(host(x), host(d.W), bh, c.rows, c.in, c.out), want))
			// an inference workspace (no pre-activation kept) computes the same
			wsInf := d.NewWorkspace(c.rows, false)
			assert.Equal(t, host(y), host(d.Forward(wsInf, x)))
			wsInf.Release()

			r := randHost(rng, c.rows*c.out, 1)
			loss := func() float64 { return dot(r, d.Forward(ws, x)) }
			d.Forward(ws, x)
			dev.CopyFromHostF32(ws.DY(), r)
			dx := dev.Alloc(kernels.Float32, c.rows, c.in)
			d.Backward(ws, dx, false)
			grads := ws.Grads()
			gw, gdx := host(grads[0]), host(dx)
			var gb []float32
			if c.bias {
				gb = host(grads[1])
			}
			o := defaultFD
			o.smooth = smoothAct(c.act)
			fdCheck(t, "W", d.W, gw, loss, o, rng)
			if c.bias {
				fdCheck(t, "b", d.B, gb, loss, o, rng)
			}
			fdCheck(t, "x", x, gdx, loss, o, rng)

			// accumulate adds to what dx holds
			d.Forward(ws, x)
			dev.CopyFromHostF32(ws.DY(), r)
			d.Backward(ws, dx, true)
			assert.InDeltaSlice(t, scaled(gdx, 2), host(dx), 1e-5)
		})
	}
}

func scaled(v []float32, a float32) []float32 {
	out := make([]float32, len(v))
	for i := range v {
		out[i] = v[i] * a
	}
	return out
}

func TestDenseErrors(t *testing.T) {
	dev := testDev()
	_, err := NewDense(dev, "bad", 0, 3, true, kernels.ReLU, NewRNG(1))
	require.ErrorContains(t, err, `dense "bad"`)
	_, err = NewDense(dev, "bad", 3, -1, true, kernels.ReLU, NewRNG(1))
	require.ErrorContains(t, err, "out=-1")
}

func TestDenseZeroAllocs(t *testing.T) {
	dev := testDev()
	rng := NewRNG(3)
	d, err := NewDense(dev, "d", 16, 8, true, kernels.ReLU, rng)
	require.NoError(t, err)
	ws := d.NewWorkspace(64, true)
	x := randTensor(dev, rng, 1, 64, 16)
	small := x.View(0, 10, 16)
	dx := dev.Alloc(kernels.Float32, 64, 16)
	dxs := dx.View(0, 10, 16)
	allocs := testing.AllocsPerRun(20, func() {
		// alternate batch sizes: re-pointing the views must not allocate
		d.Forward(ws, x)
		d.Backward(ws, dx, false)
		d.Forward(ws, small)
		d.Backward(ws, dxs, false)
	})
	require.Zero(t, allocs)
}
