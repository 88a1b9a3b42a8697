package layers

import (
	"fmt"
	"math"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/mtlrank/mtlrank/kernels"
)

var _ kernels.GatesFusedBackwarder = (*kernels.CPU)(nil)

// composedGatesDev is a CPU device without the gates' one-pass backward
// (kernels.GatesFusedBackwarder) or the earlier combined passes: its gates
// run gate after gate into zeroed expert gradients, each with its own
// softmax backward, and the experts their own activation backward and bias
// gradient, as before those passes.
type composedGatesDev struct {
	kernels.Device
	kernels.FusedGemm
	kernels.FusedBiasGrad
	kernels.Activator
}

// TestGatesFoldExperts: an Experts block and its gates, forward and
// backward, with the gates' backward in one pass (kernels.GatesBackward)
// that folds the experts' last activation backward and bias gradient
// (GatesWS.FoldExperts), gives every gradient (the experts' kernels and
// biases, the input's, the gates' parameters) and the experts' output
// gradient bit for bit as the composed path; for MMoE's gates
// (BackwardGates) and CGC's (BackwardGateSets), ReLU and linear experts of
// one and two layers, 1 and 2 threads (rows split over threads take the
// bias sums out of the pass), one row. Dropout and an activation the
// kernel cannot fold (SELU) leave the pass to the experts, which the test
// checks too.
func TestGatesFoldExperts(t *testing.T) {
	cases := []struct {
		sets          bool
		act           kernels.Activation
		dims          []int
		dropout       float32
		rows, threads int
		folds         bool
	}{
		{false, kernels.ReLU, []int{64}, 0, 70, 1, true},
		{false, kernels.ReLU, []int{64}, 0, 300, 2, true},
		{false, kernels.Linear, []int{24}, 0, 33, 1, true},
		{false, kernels.ReLU, []int{16, 20}, 0, 41, 2, true},
		{false, kernels.ReLU, []int{64}, 0, 1, 1, true},
		{false, kernels.ReLU, []int{32}, 0.3, 50, 1, false},
		{false, kernels.SELU, []int{32}, 0, 50, 1, false},
		{true, kernels.ReLU, []int{64}, 0, 70, 1, true},
		{true, kernels.ReLU, []int{17}, 0, 257, 2, true},
		{true, kernels.Linear, []int{8, 33}, 0, 9, 1, true},
		{true, kernels.ReLU, []int{32}, 0.5, 20, 2, false},
	}
	for _, c := range cases {
		name := fmt.Sprintf("sets%v_act%d_dims%v_drop%g_rows%d_t%d", c.sets, c.act, c.dims, c.dropout, c.rows, c.threads)
		t.Run(name, func(t *testing.T) {
			cpu := kernels.NewCPU(c.threads)
			run := func(dev kernels.Device) (out [][]float32, folded bool) {
				rng := NewRNG(int64(3 + c.rows))
				const in, tasks = 6, 3
				groups, ne := []int{4}, 4
				if c.sets {
					groups, ne = []int{tasks*1 + 2}, tasks*1+2 // a task expert each, 2 shared
				}
				x, err := NewExperts(dev, "experts", groups, in, c.dims, c.act, c.dropout, rng)
				require.NoError(t, err)
				defer x.Release()
				for _, b := range x.B {
					dev.CopyFromHostF32(b, randHost(rng, b.Len(), 0.5))
				}
				xws := x.NewWorkspace(c.rows, true)
				defer xws.Release()
				input := randTensor(dev, rng, 1, c.rows, in)
				mode := Mode{Train: true, Seed: 99}
				x.Forward(xws, []*kernels.Tensor{input}, mode)
				outs, douts := xws.Outputs(), xws.DOutputs()
				var lists, dlists [][]*kernels.Tensor
				for g := range tasks + 1 {
					l := rangeInts(0, ne)
					if c.sets && g < tasks {
						l = append([]int{g}, rangeInts(tasks, 2)...)
					}
					lists, dlists = append(lists, pickT(outs, l)), append(dlists, pickT(douts, l))
				}
				var gates []*Gate
				var gws []*GateWS
				dxs := make([]*kernels.Tensor, len(lists))
				dx := dev.Alloc(kernels.Float32, c.rows, in)
				for g, l := range lists {
					gate, err := NewGate(dev, fmt.Sprintf("gate%d", g), in, len(l), x.Out(), 8, 1+0.5*float32(g%2), rng)
					require.NoError(t, err)
					defer gate.Release()
					ws := gate.NewWorkspace(c.rows, true)
					defer ws.Release()
					gate.Forward(ws, input, l)
					dev.CopyFromHostF32(ws.DY(), randHost(rng, c.rows*x.Out(), 1))
					gates, gws, dxs[g] = append(gates, gate), append(gws, ws), dx
				}
				s := NewGatesWS(gws)
				s.FoldExperts(x, xws)
				dev.Fill(xws.DY(), float32(math.NaN())) // written, not added into
				dev.Zero(dx)
				if c.sets {
					BackwardGateSets(gates, gws, s, xws.DY(), lists, dlists, dxs, true)
				} else {
					BackwardGates(gates, gws, s, xws.DY(), douts, dx)
				}
				folded = xws.lastFolded
				x.Backward(xws, []*kernels.Tensor{dx}, true)
				out = append(hostAll(xws.Grads()), host(xws.DY()), host(dx))
				for _, ws := range gws {
					out = append(out, hostAll(ws.Grads())...)
				}
				return out, folded
			}
			want, _ := run(composedGatesDev{cpu, cpu, cpu, cpu})
			got, folded := run(cpu)
			require.Equal(t, c.folds, folded, "the gates folded the experts' pass")
			requireSameBits(t, want, got)
		})
	}
}

// TestBackwardGateSetsWritesInputGradients: without accumulate,
// BackwardGateSets writes the gates' input gradients (NaN before the
// call), each gate adding into a tensor an earlier gate of the call wrote,
// and gives the values of zeroing them and accumulating (a -0 may stay -0
// there, so the values are compared, not the bits); with one input
// gradient for all the gates (PLE's level 0) and one per gate (its upper
// levels), on the CPU's one pass and on the composed path.
func TestBackwardGateSetsWritesInputGradients(t *testing.T) {
	for _, shared := range []bool{true, false} {
		for _, threads := range []int{1, 2} {
			cpu := kernels.NewCPU(threads)
			for _, dev := range []kernels.Device{cpu, composedGatesDev{cpu, cpu, cpu, cpu}} {
				t.Run(fmt.Sprintf("one_dx_%v/threads%d/%T", shared, threads, dev), func(t *testing.T) {
					run := func(accumulate bool) [][]float32 {
						rng := NewRNG(5)
						const in, rows, d, tasks = 7, 45, 16, 3
						dy := dev.Alloc(kernels.Float32, tasks+2, rows, d)
						var ex, dex []*kernels.Tensor
						for e := range tasks + 2 {
							ex = append(ex, randTensor(dev, rng, 1, rows, d))
							dex = append(dex, dy.View(e*rows*d, rows, d))
						}
						var gates []*Gate
						var wss []*GateWS
						var lists, dlists [][]*kernels.Tensor
						var dxs []*kernels.Tensor
						one := dev.Alloc(kernels.Float32, rows, in)
						x := randTensor(dev, rng, 1, rows, in)
						for g := range tasks + 1 {
							l := rangeInts(0, tasks+2)
							if g < tasks {
								l = []int{g, tasks, tasks + 1}
							}
							lists, dlists = append(lists, pickT(ex, l)), append(dlists, pickT(dex, l))
							gate, err := NewGate(dev, fmt.Sprintf("gate%d", g), in, len(l), d, 4, 1, rng)
							require.NoError(t, err)
							defer gate.Release()
							ws := gate.NewWorkspace(rows, true)
							defer ws.Release()
							gate.Forward(ws, x, lists[g])
							dev.CopyFromHostF32(ws.DY(), randHost(rng, rows*d, 1))
							gates, wss = append(gates, gate), append(wss, ws)
							dx := one
							if !shared {
								dx = dev.Alloc(kernels.Float32, rows, in)
							}
							dxs = append(dxs, dx)
						}
						for _, dx := range dxs {
							if accumulate {
								dev.Zero(dx)
							} else {
								dev.Fill(dx, float32(math.NaN()))
							}
						}
						BackwardGateSets(gates, wss, NewGatesWS(wss), dy, lists, dlists, dxs, accumulate)
						out := [][]float32{host(dy)}
						for _, dx := range dxs {
							out = append(out, host(dx))
						}
						return out
					}
					want, got := run(true), run(false)
					require.Len(t, got, len(want))
					for i := range want {
						for j := range want[i] {
							if got[i][j] != want[i][j] {
								t.Fatalf("result %d element %d: %g, want %g", i, j, got[i][j], want[i][j])
							}
						}
					}
				})
			}
		}
	}
}
