package layers

import (
	"fmt"
	"math"
	"testing"

	"github.com/mtlrank/mtlrank/kernels"
	"github.com/stretchr/testify/require"
)

// unfoldedDev is a CPU device without kernels.FusedDataGrad: its layers
// run the activation backward and the bias gradient as a pass of their own
// (ActBiasGrad), as before the fold.
type unfoldedDev struct {
	kernels.Device
	kernels.FusedGemm
	kernels.FusedBiasGrad
}

// foldCounter counts the folded data gradients of a CPU device.
type foldCounter struct {
	*kernels.CPU
	folds int
}

func (f *foldCounter) GemmActBiasGrad(dy, w, y *kernels.Tensor, act kernels.Activation, dx, db *kernels.Tensor) {
	f.folds++
	f.CPU.GemmActBiasGrad(dy, w, y, act, dx, db)
}

// Folding a layer's ReLU backward and bias gradient into the data gradient
// of the layer above (MLP layers, a tower's head over its MLP, a gate's
// logits over its hidden layer) gives the bits of the separate pass: every
// parameter gradient and the input gradient, with one thread or two, at
// shard-like and odd row counts. With dropout between the layers (the mask
// multiplies the gradient first) the fold is not taken.
func TestBackwardFoldsActBiasGrad(t *testing.T) {
	type block struct {
		// run builds the block on dev from a fixed seed, runs forward and
		// backward and returns every gradient and the input gradient
		run   func(dev kernels.Device, rows int) [][]float32
		folds int // folded GEMMs a backward pass takes (without dropout)
	}
	const in = 24
	mlp := func(dims []int, lastLinear bool, dropout float32) func(kernels.Device, int) [][]float32 {
		return func(dev kernels.Device, rows int) [][]float32 {
			rng := NewRNG(51)
			m, err := NewMLP(dev, "mlp", in, dims, kernels.ReLU, lastLinear, dropout, rng)
			require.NoError(t, err)
			defer m.Release()
			for _, l := range m.Layers {
				dev.CopyFromHostF32(l.B, randHost(rng, l.Out, 0.3))
			}
			ws := m.NewWorkspace(rows, true)
			defer ws.Release()
			x := randTensor(dev, rng, 1, rows, in)
			m.Forward(ws, x, Mode{Train: true, Seed: 9})
			dev.CopyFromHostF32(ws.DY(), randHost(rng, rows*m.Out(), 1))
			dx := dev.Alloc(kernels.Float32, rows, in)
			m.Backward(ws, dx, false)
			return hostAll(append(ws.Grads(), dx))
		}
	}
	tower := func(dims []int, dropout float32) func(kernels.Device, int) [][]float32 {
		return func(dev kernels.Device, rows int) [][]float32 {
			rng := NewRNG(52)
			tw, err := NewTower(dev, "tower", in, dims, kernels.ReLU, dropout, rng)
			require.NoError(t, err)
			defer tw.Release()
			ws := tw.NewWorkspace(rows, true)
			defer ws.Release()
			x := randTensor(dev, rng, 1, rows, in)
			tw.Forward(ws, x, Mode{Train: true, Seed: 9})
			dev.CopyFromHostF32(ws.DY(), randHost(rng, rows, 1))
			dx := dev.Alloc(kernels.Float32, rows, in)
			tw.Backward(ws, dx, false)
			return hostAll(append(ws.Grads(), dx))
		}
	}
	gate := func(experts, gateDim int) func(kernels.Device, int) [][]float32 {
		return func(dev kernels.Device, rows int) [][]float32 {
			rng := NewRNG(53)
			const d = 16
			g, err := NewGate(dev, "gate", in, experts, d, gateDim, 1, rng)
			require.NoError(t, err)
			defer g.Release()
			dev.CopyFromHostF32(g.Hidden.B, randHost(rng, gateDim, 0.3))
			ws := g.NewWorkspace(rows, true)
			x := randTensor(dev, rng, 1, rows, in)
			var ex, dex []*kernels.Tensor
			for range experts {
				ex = append(ex, randTensor(dev, rng, 1, rows, d))
				dex = append(dex, dev.Alloc(kernels.Float32, rows, d))
			}
			g.Forward(ws, x, ex)
			dev.CopyFromHostF32(ws.DY(), randHost(rng, rows*d, 1))
			dx := dev.Alloc(kernels.Float32, rows, in)
			g.Backward(ws, dex, dx, false)
			return hostAll(append(append(ws.Grads(), dx), dex...))
		}
	}
	blocks := map[string]block{
		"mlp_128_64_32":         {mlp([]int{128, 64, 32}, false, 0), 2},
		"mlp_17_40_last_linear": {mlp([]int{17, 40, 3}, true, 0), 2},
		"mlp_dropout":           {mlp([]int{32, 16}, false, 0.3), 0},
		"tower_64":              {tower([]int{64}, 0), 1},
		"tower_33_9":            {tower([]int{33, 9}, 0), 2},
		"tower_dropout":         {tower([]int{64}, 0.2), 0},
		"gate_4x64":             {gate(4, 64), 1},
		"gate_3x20":             {gate(3, 20), 1},
	}
	for name, b := range blocks {
		for _, rows := range []int{256, 37, 1} {
			for _, threads := range []int{1, 2} {
				t.Run(fmt.Sprintf("%s/rows%d/threads%d", name, rows, threads), func(t *testing.T) {
					cpu := kernels.NewCPU(threads)
					want := b.run(unfoldedDev{cpu, cpu, cpu}, rows)
					dev := &foldCounter{CPU: cpu}
					got := b.run(dev, rows)
					require.Equal(t, b.folds, dev.folds, "folded data gradients")
					requireSameBits(t, want, got)
				})
			}
		}
	}
}

// requireSameBits fails unless got holds want's lists of floats, bit for
// bit.
func requireSameBits(t *testing.T, want, got [][]float32) {
	t.Helper()
	require.Len(t, got, len(want))
	for i := range want {
		require.Len(t, got[i], len(want[i]))
		for j := range want[i] {
			if math.Float32bits(got[i][j]) != math.Float32bits(want[i][j]) {
				t.Fatalf("result %d element %d: %g, want %g", i, j, got[i][j], want[i][j])
			}
		}
	}
}

func hostAll(ts []*kernels.Tensor) [][]float32 {
	out := make([][]float32, len(ts))
	for i, x := range ts {
		out[i] = host(x)
	}
	return out
}
