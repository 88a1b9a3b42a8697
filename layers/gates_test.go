package layers

import (
	"fmt"
	"math"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/mtlrank/mtlrank/kernels"
)

var _ kernels.GatesBackwarder = (*kernels.CPU)(nil)

// TestBackwardGatesMatchesGateAfterGate: BackwardGates (on the CPU, one
// pass of all gates over the experts, the expert gradients written) gives
// the bits of zeroing the expert gradients and running Backward gate after
// gate, as MMoE did: the expert gradients, the input gradient and every
// gate parameter's gradient.
func TestBackwardGatesMatchesGateAfterGate(t *testing.T) {
	cases := []struct {
		gates, experts, gateDim, rows, d, threads int
		temp                                      float32
	}{
		{1, 1, 0, 3, 4, 1, 1},
		{2, 4, 8, 40, 16, 1, 1},
		{5, 4, 16, 70, 64, 2, 1},
		{3, 5, 0, 33, 7, 2, 0.5},
		{4, 9, 6, 100, 20, 2, 2},
	}
	for _, c := range cases {
		name := fmt.Sprintf("g%d_e%d_gd%d_rows%d_d%d_t%d", c.gates, c.experts, c.gateDim, c.rows, c.d, c.threads)
		t.Run(name, func(t *testing.T) {
			dev := kernels.NewCPU(c.threads)
			rng := NewRNG(int64(7 + c.gates*c.experts))
			const in = 5
			var gates []*Gate
			var wss []*GateWS
			for i := 0; i < c.gates; i++ {
				g, err := NewGate(dev, fmt.Sprintf("gate%d", i), in, c.experts, c.d, c.gateDim, c.temp, rng)
				require.NoError(t, err)
				defer g.Release()
				dev.CopyFromHostF32(g.Logits.W, randHost(rng, g.Logits.W.Len(), 1.5))
				ws := g.NewWorkspace(c.rows, true)
				defer ws.Release()
				gates, wss = append(gates, g), append(wss, ws)
			}
			x := randTensor(dev, rng, 1, c.rows, in)
			var ex, dex []*kernels.Tensor
			dy := dev.Alloc(kernels.Float32, c.experts, c.rows, c.d)
			for e := 0; e < c.experts; e++ {
				ex = append(ex, randTensor(dev, rng, 1, c.rows, c.d))
				dex = append(dex, dy.View(e*c.rows*c.d, c.rows, c.d))
			}
			for i, g := range gates {
				g.Forward(wss[i], x, ex)
				dev.CopyFromHostF32(wss[i].DY(), randHost(rng, c.rows*c.d, 1))
			}
			dx := dev.Alloc(kernels.Float32, c.rows, in)
			results := func() [][]float32 {
				out := [][]float32{host(dy), host(dx)}
				for _, ws := range wss {
					for _, gr := range ws.Grads() {
						out = append(out, host(gr))
					}
				}
				return out
			}

			dev.Fill(dy, float32(math.NaN())) // written, not added into
			dev.Fill(dx, float32(math.NaN()))
			BackwardGates(gates, wss, NewGatesWS(wss), dy, dex, dx)
			got := results()

			dev.Fill(dx, float32(math.NaN()))
			dev.Zero(dy)
			for i, g := range gates {
				g.Backward(wss[i], dex, dx, i > 0)
			}
			want := results()

			require.Len(t, got, len(want))
			for k := range want {
				for i := range want[k] {
					if math.Float32bits(want[k][i]) != math.Float32bits(got[k][i]) {
						t.Fatalf("result %d, element %d: %g, want %g", k, i, got[k][i], want[k][i])
					}
				}
			}
		})
	}
}
