package layers

import (
	"math"
	"testing"

	"github.com/mtlrank/mtlrank/kernels"
	"github.com/stretchr/testify/require"
)

// naiveCross is the cross network in float64, from the equation
// x_{l+1} = x0 * (x_l W_l + b_l) + x_l, row by row.
func naiveCross(x0 []float32, ws, bs [][]float32, rows, dim int) []float64 {
	out := make([]float64, rows*dim)
	for r := 0; r < rows; r++ {
		x0r := make([]float64, dim)
		for j := range x0r {
			x0r[j] = float64(x0[r*dim+j])
		}
		x := append([]float64(nil), x0r...)
		for l := range ws {
			next := make([]float64, dim)
			for j := 0; j < dim; j++ {
				u := float64(bs[l][j])
				for i := 0; i < dim; i++ {
					u += x[i] * float64(ws[l][i*dim+j])
				}
				next[j] = x0r[j]*u + x[j]
			}
			x = next
		}
		copy(out[r*dim:], x)
	}
	return out
}

func TestCrossNetForwardBackward(t *testing.T) {
	for _, c := range []struct {
		name             string
		rows, dim, depth int
		accumulate       bool
		dev              func() kernels.Device
	}{
		{"one_layer", 7, 5, 1, false, func() kernels.Device { return testDev() }},
		{"three_layers", 9, 6, 3, false, func() kernels.Device { return testDev() }},
		{"accumulate", 5, 4, 2, true, func() kernels.Device { return testDev() }},
		{"threads", 300, 8, 2, false, func() kernels.Device { return kernels.NewCPU(3) }},
	} {
		t.Run(c.name, func(t *testing.T) {
			dev := c.dev()
			rng := NewRNG(3)
			cn, err := NewCrossNet(dev, "cross", c.dim, c.depth, rng)
			require.NoError(t, err)
			defer cn.Release()
			require.Equal(t, c.depth, cn.Depth())
			// non-zero biases and larger kernels than the initialisation,
			// so that every term of the equation shows
			var ws, bs [][]float32
			for l := range cn.W {
				w, b := randHost(rng, c.dim*c.dim, 0.5), randHost(rng, c.dim, 0.5)
				dev.CopyFromHostF32(cn.W[l], w)
				dev.CopyFromHostF32(cn.B[l], b)
				ws, bs = append(ws, w), append(bs, b)
			}
			ws0 := cn.NewWorkspace(c.rows, true)
			defer ws0.Release()
			x := randTensor(dev, rng, 1, c.rows, c.dim)
			y := cn.Forward(ws0, x)
			want := naiveCross(host(x), ws, bs, c.rows, c.dim)
			for i, v := range host(y) {
				require.InDelta(t, want[i], float64(v), 1e-5*(1+math.Abs(want[i])), "element %d", i)
			}

			r := randHost(rng, c.rows*c.dim, 1)
			loss := func() float64 { return dot(r, cn.Forward(ws0, x)) }
			cn.Forward(ws0, x)
			dev.CopyFromHostF32(ws0.DY(), r)
			dx := dev.Alloc(kernels.Float32, c.rows, c.dim)
			prior := randHost(rng, c.rows*c.dim, 1)
			if c.accumulate {
				dev.CopyFromHostF32(dx, prior)
			}
			cn.Backward(ws0, dx, c.accumulate)
			gx := host(dx)
			if c.accumulate {
				for i := range gx {
					gx[i] -= prior[i]
				}
			}
			// Many rows add float32 rounding noise to the loss; the function
			// is a polynomial, so a larger step costs little truncation error.
			o := fdOpts{eps: 1e-3, atol: 2e-4, rtol: 2e-3, samples: 24, smooth: true}
			if c.rows > 100 {
				o.eps, o.atol = 2e-2, 1e-3
			}
			ps, gs := cn.Params(), ws0.Grads()
			require.Len(t, gs, len(ps))
			for i, p := range ps {
				require.False(t, p.L2, "%s: Merlin's cross layers have no regulariser", p.Name)
				fdCheck(t, p.Name, p.Value, host(gs[i]), loss, o, rng)
			}
			o.samples = 40
			fdCheck(t, "x0", x, gx, loss, o, rng)
		})
	}
}

func TestCrossNetInitAndErrors(t *testing.T) {
	dev := testDev()
	cn, err := NewCrossNet(dev, "dcn/cross", 64, 2, NewRNG(1))
	require.NoError(t, err)
	defer cn.Release()
	require.Equal(t, []string{"dcn/cross/0/kernel", "dcn/cross/0/bias", "dcn/cross/1/kernel", "dcn/cross/1/bias"},
		func() (n []string) {
			for _, p := range cn.Params() {
				n = append(n, p.Name)
			}
			return n
		}())
	// Keras' truncated_normal: N(0, 0.05) cut at two deviations
	w := host(cn.W[0])
	s, s2 := 0.0, 0.0
	for _, v := range w {
		require.LessOrEqual(t, math.Abs(float64(v)), 0.1+1e-7)
		s += float64(v)
		s2 += float64(v) * float64(v)
	}
	n := float64(len(w))
	// the std of N(0,1) truncated at +-2 is 0.8796
	require.InDelta(t, 0, s/n, 0.005)
	require.InDelta(t, 0.05*0.8796, math.Sqrt(s2/n), 0.002)
	for _, v := range host(cn.B[1]) {
		require.Zero(t, v)
	}

	_, err = NewCrossNet(dev, "c", 4, 0, NewRNG(1))
	require.EqualError(t, err, `layers: cross "c": depth (number of cross layers) must be positive, got 0`)
	_, err = NewCrossNet(dev, "c", 0, 1, NewRNG(1))
	require.EqualError(t, err, `layers: cross "c": input width must be positive, got 0`)
}
