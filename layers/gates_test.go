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

// BackwardGateSets over CGC/PLE-style gates (task gate t over task t's
// experts and the shared ones, then a shared gate over all of them, or
// none as at PLE's last level) gives the bits of zeroing the expert
// gradients and running gate after gate: expert gradients (NaN before the
// call: written, not added into), the gates' input gradients and parameter
// gradients. Lists that do not cover the expert gradients take the gate
// after gate path, which must leave the uncovered rows zero.
func TestBackwardGateSetsMatchesGateAfterGate(t *testing.T) {
	cases := []struct {
		tasks, nt, ns, gateDim, rows, d, threads int
		shared, partial                          bool
	}{
		{5, 1, 2, 64, 70, 64, 2, true, false}, // cgc
		{4, 1, 2, 0, 40, 16, 1, false, false}, // ple's last level
		{2, 2, 3, 8, 33, 20, 1, true, false},  // chunks mixing own and shared experts
		{3, 3, 0, 6, 100, 7, 2, true, false},  // no shared experts
		{2, 1, 1, 0, 9, 5, 1, false, true},    // an expert no gate lists
	}
	for _, c := range cases {
		name := fmt.Sprintf("tasks%d_nt%d_ns%d_gd%d_rows%d_d%d_t%d_shared%v_partial%v", c.tasks, c.nt, c.ns, c.gateDim, c.rows, c.d, c.threads, c.shared, c.partial)
		t.Run(name, func(t *testing.T) {
			cpu := kernels.NewCPU(c.threads)
			ne := c.tasks*c.nt + c.ns
			if c.partial {
				ne++ // the last expert is in no list
			}
			run := func(dev kernels.Device) [][]float32 {
				rng := NewRNG(int64(11 + ne))
				const in = 6
				var ex, dex []*kernels.Tensor
				dy := dev.Alloc(kernels.Float32, ne, c.rows, c.d)
				for e := range ne {
					ex = append(ex, randTensor(dev, rng, 1, c.rows, c.d))
					dex = append(dex, dy.View(e*c.rows*c.d, c.rows, c.d))
				}
				var lists, dlists [][]*kernels.Tensor
				for tk := range c.tasks {
					l := append(append([]int(nil), rangeInts(tk*c.nt, c.nt)...), rangeInts(c.tasks*c.nt, c.ns)...)
					lists, dlists = append(lists, pickT(ex, l)), append(dlists, pickT(dex, l))
				}
				if c.shared {
					l := rangeInts(0, c.tasks*c.nt+c.ns)
					lists, dlists = append(lists, pickT(ex, l)), append(dlists, pickT(dex, l))
				}
				var gates []*Gate
				var wss []*GateWS
				var dxs []*kernels.Tensor
				for i, l := range lists {
					g, err := NewGate(dev, fmt.Sprintf("gate%d", i), in, len(l), c.d, c.gateDim, 1, rng)
					require.NoError(t, err)
					defer g.Release()
					dev.CopyFromHostF32(g.Logits.W, randHost(rng, g.Logits.W.Len(), 1.5))
					ws := g.NewWorkspace(c.rows, true)
					defer ws.Release()
					gates, wss = append(gates, g), append(wss, ws)
					dxs = append(dxs, dev.Alloc(kernels.Float32, c.rows, in))
				}
				x := randTensor(dev, rng, 1, c.rows, in)
				for i, g := range gates {
					g.Forward(wss[i], x, lists[i])
					dev.CopyFromHostF32(wss[i].DY(), randHost(rng, c.rows*c.d, 1))
				}
				dev.Fill(dy, float32(math.NaN()))
				BackwardGateSets(gates, wss, NewGatesWS(wss), dy, lists, dlists, dxs, true)
				out := [][]float32{host(dy)}
				for i, ws := range wss {
					out = append(out, host(dxs[i]))
					for _, gr := range ws.Grads() {
						out = append(out, host(gr))
					}
				}
				return out
			}
			want := run(unfoldedDev{cpu, cpu, cpu})
			got := run(cpu)
			require.Len(t, got, len(want))
			for i := range want {
				for j := range want[i] {
					if math.Float32bits(got[i][j]) != math.Float32bits(want[i][j]) {
						t.Fatalf("result %d element %d: %g, want %g", i, j, got[i][j], want[i][j])
					}
				}
			}
			if c.partial {
				last := want[0][(ne-1)*c.rows*c.d:]
				require.Equal(t, make([]float32, len(last)), last, "the unlisted expert's gradient is zero")
			}
		})
	}
}

func rangeInts(lo, n int) []int {
	out := make([]int, n)
	for i := range out {
		out[i] = lo + i
	}
	return out
}

func pickT(ts []*kernels.Tensor, idx []int) []*kernels.Tensor {
	var out []*kernels.Tensor
	for _, i := range idx {
		out = append(out, ts[i])
	}
	return out
}
