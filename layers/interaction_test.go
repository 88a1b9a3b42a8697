package layers

import (
	"math"
	"testing"

	"github.com/mtlrank/mtlrank/kernels"
	"github.com/stretchr/testify/require"
)

// naiveDot lists <v_i, v_j> for i < j in row-major upper-triangle order,
// per row, in float64.
func naiveDot(z []float32, rows, f, dim int) []float64 {
	var out []float64
	for r := 0; r < rows; r++ {
		v := func(i, k int) float64 { return float64(z[r*f*dim+i*dim+k]) }
		for i := 0; i < f; i++ {
			for j := i + 1; j < f; j++ {
				s := 0.0
				for k := 0; k < dim; k++ {
					s += v(i, k) * v(j, k)
				}
				out = append(out, s)
			}
		}
	}
	return out
}

func TestDotInteractionForwardBackward(t *testing.T) {
	for _, c := range []struct {
		name       string
		rows, f, d int
		col, outW  int // where the pairs go in a wider output
		accumulate bool
		dev        func() kernels.Device
	}{
		{"two_vectors", 6, 2, 3, 0, 1, false, func() kernels.Device { return testDev() }},
		{"five_vectors_offset", 7, 5, 4, 3, 3 + 10 + 2, false, func() kernels.Device { return testDev() }},
		{"accumulate", 4, 3, 8, 1, 5, true, func() kernels.Device { return testDev() }},
		{"threads", 300, 4, 8, 2, 8, false, func() kernels.Device { return kernels.NewCPU(3) }},
	} {
		t.Run(c.name, func(t *testing.T) {
			dev := c.dev()
			rng := NewRNG(8)
			di, err := NewDotInteraction(dev, c.f, c.d)
			require.NoError(t, err)
			require.Equal(t, c.f*(c.f-1)/2, di.Out())
			ws := di.NewWorkspace(c.rows)
			defer ws.Release()
			z := randTensor(dev, rng, 1, c.rows, c.f*c.d)
			out := randTensor(dev, rng, 1, c.rows, c.outW)
			before := host(out)
			di.Forward(ws, z, out, c.col)
			want := naiveDot(host(z), c.rows, c.f, c.d)
			got := host(out)
			P := di.Out()
			for r := 0; r < c.rows; r++ {
				for j := 0; j < c.outW; j++ {
					v := float64(got[r*c.outW+j])
					if j < c.col || j >= c.col+P {
						require.Equal(t, before[r*c.outW+j], got[r*c.outW+j], "row %d col %d outside the pairs is left alone", r, j)
						continue
					}
					w := want[r*P+j-c.col]
					require.InDelta(t, w, v, 1e-5*(1+math.Abs(w)), "row %d pair %d", r, j-c.col)
				}
			}

			// loss = sum over the pairs of r * pair
			rr := randHost(rng, c.rows*c.outW, 1)
			loss := func() float64 {
				di.Forward(ws, z, out, c.col)
				h := host(out)
				s := 0.0
				for r := 0; r < c.rows; r++ {
					for j := c.col; j < c.col+P; j++ {
						s += float64(rr[r*c.outW+j]) * float64(h[r*c.outW+j])
					}
				}
				return s
			}
			di.Forward(ws, z, out, c.col)
			dout := dev.Alloc(kernels.Float32, c.rows, c.outW)
			dev.CopyFromHostF32(dout, rr)
			dz := dev.Alloc(kernels.Float32, c.rows, c.f*c.d)
			prior := randHost(rng, c.rows*c.f*c.d, 1)
			dev.CopyFromHostF32(dz, prior) // added to with accumulate, else overwritten
			di.Backward(ws, dout, c.col, dz, c.accumulate)
			g := host(dz)
			if c.accumulate {
				for i := range g {
					g[i] -= prior[i]
				}
			}
			o := fdOpts{eps: 1e-3, atol: 2e-4, rtol: 2e-3, samples: 60, smooth: true}
			if c.rows > 100 { // float32 noise of a long sum; the function is quadratic
				o.eps, o.atol = 2e-2, 1e-3
			}
			fdCheck(t, "z", z, g, loss, o, rng)
		})
	}
}

func TestDotInteractionErrors(t *testing.T) {
	_, err := NewDotInteraction(testDev(), 1, 4)
	require.EqualError(t, err, "layers: dot interaction: needs at least 2 vectors to pair, got 1")
	_, err = NewDotInteraction(testDev(), 3, 0)
	require.EqualError(t, err, "layers: dot interaction: vector width must be positive, got 0")
}
