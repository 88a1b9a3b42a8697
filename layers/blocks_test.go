package layers

import (
	"fmt"
	"math"
	"testing"

	"github.com/mtlrank/mtlrank/kernels"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestMLPForwardBackward(t *testing.T) {
	cases := []struct {
		name       string
		dims       []int
		lastLinear bool
		dropout    float32
		train      bool
	}{
		{"one_layer", []int{4}, false, 0, false},
		{"three_layers", []int{7, 5, 3}, false, 0, true},
		{"last_linear", []int{6, 2}, true, 0, true},
		{"dropout", []int{8, 6}, false, 0.3, true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			dev := testDev()
			rng := NewRNG(11)
			const rows, in = 9, 5
			m, err := NewMLP(dev, "mlp", in, c.dims, kernels.ReLU, c.lastLinear, c.dropout, rng)
			require.NoError(t, err)
			for _, l := range m.Layers {
				dev.CopyFromHostF32(l.B, randHost(rng, l.Out, 0.3))
			}
			ws := m.NewWorkspace(rows, true)
			x := randTensor(dev, rng, 1, rows, in)
			mode := Mode{Train: c.train, Seed: 42}
			y := m.Forward(ws, x, mode)

			// reference without dropout; with dropout, the masks reproduce it
			h, w := host(x), in
			for i, l := range m.Layers {
				h = naiveDense(h, host(l.W), host(l.B), rows, w, l.Out, l.Act)
				if c.dropout > 0 && c.train {
					mask := host(ws.masks[i].t())
					zeros := 0
					for j := range h {
						h[j] *= mask[j]
						if mask[j] == 0 {
							zeros++
						}
						require.Contains(t, []float32{0, 1 / (1 - c.dropout)}, mask[j])
					}
					require.Positive(t, zeros, "dropout dropped nothing")
				}
				w = l.Out
			}
			assert.InDeltaSlice(t, h, host(y), 1e-5)
			if c.lastLinear {
				require.Equal(t, kernels.Linear, m.Layers[len(m.Layers)-1].Act)
			}

			r := randHost(rng, rows*m.Out(), 1)
			loss := func() float64 { return dot(r, m.Forward(ws, x, mode)) }
			m.Forward(ws, x, mode)
			dev.CopyFromHostF32(ws.DY(), r)
			dx := dev.Alloc(kernels.Float32, rows, in)
			m.Backward(ws, dx, false)
			ps, gs := m.Params(), ws.Grads()
			require.Len(t, gs, len(ps))
			g := make([][]float32, len(gs))
			for i := range gs {
				g[i] = host(gs[i])
			}
			gx := host(dx)
			for i, p := range ps {
				fdCheck(t, p.Name, p.Value, g[i], loss, defaultFD, rng)
			}
			fdCheck(t, "x", x, gx, loss, defaultFD, rng)
		})
	}
}

func TestMLPDropoutDeterministic(t *testing.T) {
	dev := testDev()
	rng := NewRNG(5)
	m, err := NewMLP(dev, "mlp", 4, []int{32}, kernels.Linear, false, 0.5, rng)
	require.NoError(t, err)
	ws := m.NewWorkspace(16, true)
	x := randTensor(dev, rng, 1, 16, 4)
	a := host(m.Forward(ws, x, Mode{Train: true, Seed: 1}))
	b := host(m.Forward(ws, x, Mode{Train: true, Seed: 1}))
	c := host(m.Forward(ws, x, Mode{Train: true, Seed: 2}))
	d := host(m.Forward(ws, x, Mode{Train: false, Seed: 1}))
	require.Equal(t, a, b)
	require.NotEqual(t, a, c)
	// inference: no dropout
	want := naiveDense(host(x), host(m.Layers[0].W), host(m.Layers[0].B), 16, 4, 32, kernels.Linear)
	assertWithin(t, want, d, denseBound(host(x), host(m.Layers[0].W), host(m.Layers[0].B), 16, 4, 32))
	// about half dropped
	zeros := 0
	for _, v := range host(ws.masks[0].t()) {
		if v == 0 {
			zeros++
		}
	}
	assert.InDelta(t, 0.5, float64(zeros)/float64(16*32), 0.1)
}

// naiveExperts runs each expert's MLP separately on its group's input.
func naiveExperts(x *Experts, xs [][]float32, rows int) [][]float32 {
	var outs [][]float32
	e := 0
	for g, n := range x.Groups {
		for i := 0; i < n; i++ {
			h, w := xs[g], x.In
			for l, d := range x.Dims {
				W := host(x.W[l])[e*w*d : (e+1)*w*d]
				B := host(x.B[l])[e*d : (e+1)*d]
				h = naiveDense(h, W, B, rows, w, d, x.Act)
				w = d
			}
			outs = append(outs, h)
			e++
		}
	}
	return outs
}

func TestExpertsForwardBackward(t *testing.T) {
	cases := []struct {
		groups  []int
		dims    []int
		dropout float32
		act     kernels.Activation
	}{
		{[]int{1}, []int{3}, 0, kernels.ReLU},
		{[]int{4}, []int{6}, 0, kernels.ReLU},
		{[]int{3}, []int{5, 4}, 0, kernels.ReLU},
		{[]int{2, 1, 2}, []int{4}, 0, kernels.ReLU},
		{[]int{1, 2}, []int{5, 3}, 0.25, kernels.ReLU},
		{[]int{3}, []int{5, 4}, 0, kernels.GELU},
		{[]int{2, 1, 2}, []int{4}, 0, kernels.SELU},
		{[]int{1, 2}, []int{5, 3}, 0.25, kernels.Swish},
		{[]int{3}, []int{5, 4}, 0, kernels.Tanh},
		{[]int{2}, []int{4, 3}, 0, kernels.LeakyReLU},
	}
	for _, c := range cases {
		t.Run(fmt.Sprintf("groups%v_dims%v_drop%g_%s", c.groups, c.dims, c.dropout, c.act), func(t *testing.T) {
			dev := testDev()
			rng := NewRNG(21)
			const rows, in = 7, 6
			x, err := NewExperts(dev, "ex", c.groups, in, c.dims, c.act, c.dropout, rng)
			require.NoError(t, err)
			for _, b := range x.B {
				dev.CopyFromHostF32(b, randHost(rng, b.Len(), 0.3))
			}
			ws := x.NewWorkspace(rows+2, true)
			var xs []*kernels.Tensor
			var xh [][]float32
			for range c.groups {
				xt := randTensor(dev, rng, 1, rows, in)
				xs = append(xs, xt)
				xh = append(xh, host(xt))
			}
			mode := Mode{Train: true, Seed: 9}
			y := x.Forward(ws, xs, mode)
			require.Equal(t, []int{x.E, rows, x.Out()}, y.Shape)
			if c.dropout == 0 {
				want := naiveExperts(x, xh, rows)
				for e, o := range ws.Outputs() {
					assert.InDeltaSlice(t, want[e], host(o), 1e-5, "expert %d", e)
				}
			}
			r := randHost(rng, y.Len(), 1)
			loss := func() float64 { return dot(r, x.Forward(ws, xs, mode)) }
			x.Forward(ws, xs, mode)
			dev.CopyFromHostF32(ws.DY(), r)
			var dxs []*kernels.Tensor
			for range xs {
				dxs = append(dxs, dev.Alloc(kernels.Float32, rows, in))
			}
			x.Backward(ws, dxs, false)
			ps, gs := x.Params(), ws.Grads()
			require.Len(t, gs, len(ps))
			var g [][]float32
			for i := range gs {
				g = append(g, host(gs[i]))
			}
			var gx [][]float32
			for _, d := range dxs {
				gx = append(gx, host(d))
			}
			o := defaultFD
			o.samples = 40
			o.smooth = smoothAct(c.act)
			for i, p := range ps {
				fdCheck(t, p.Name, p.Value, g[i], loss, o, rng)
			}
			for gi := range xs {
				fdCheck(t, fmt.Sprintf("x%d", gi), xs[gi], gx[gi], loss, o, rng)
			}
		})
	}
}

func TestExpertsErrors(t *testing.T) {
	dev := testDev()
	for _, c := range []struct {
		groups []int
		in     int
		dims   []int
		want   string
	}{
		{nil, 3, []int{2}, "no expert groups"},
		{[]int{0}, 3, []int{2}, "group 0 has 0 experts"},
		{[]int{2}, 3, []int{2, -1}, "layer 1 width"},
		{[]int{2}, 0, []int{2}, "positive input width"},
	} {
		_, err := NewExperts(dev, "ex", c.groups, c.in, c.dims, kernels.ReLU, 0, NewRNG(1))
		require.ErrorContains(t, err, c.want)
	}
}

// naiveGate computes the gate output on the host.
func naiveGate(g *Gate, x []float32, experts [][]float32, rows int) (w, out []float32) {
	h, width := x, g.In
	if g.Hidden != nil {
		h = naiveDense(x, host(g.Hidden.W), host(g.Hidden.B), rows, g.In, g.Hidden.Out, kernels.ReLU)
		width = g.Hidden.Out
	}
	logits := naiveDense(h, host(g.Logits.W), nil, rows, width, g.E, kernels.Linear)
	w = make([]float32, rows*g.E)
	out = make([]float32, rows*g.D)
	for r := 0; r < rows; r++ {
		mx := math.Inf(-1)
		for e := 0; e < g.E; e++ {
			mx = math.Max(mx, float64(logits[r*g.E+e])/float64(g.Temperature))
		}
		s := 0.0
		for e := 0; e < g.E; e++ {
			s += math.Exp(float64(logits[r*g.E+e])/float64(g.Temperature) - mx)
		}
		for e := 0; e < g.E; e++ {
			w[r*g.E+e] = float32(math.Exp(float64(logits[r*g.E+e])/float64(g.Temperature)-mx) / s)
			for j := 0; j < g.D; j++ {
				out[r*g.D+j] += w[r*g.E+e] * experts[e][r*g.D+j]
			}
		}
	}
	return w, out
}

func TestGateForwardBackward(t *testing.T) {
	cases := []struct {
		experts, gateDim int
		temp             float32
	}{
		{1, 0, 1},
		{3, 0, 1},
		{4, 8, 1},
		{5, 6, 0.5},
		{2, 4, 3},
	}
	for _, c := range cases {
		t.Run(fmt.Sprintf("E%d_gd%d_T%g", c.experts, c.gateDim, c.temp), func(t *testing.T) {
			dev := testDev()
			rng := NewRNG(31)
			const rows, in, d = 6, 5, 4
			g, err := NewGate(dev, "gate", in, c.experts, d, c.gateDim, c.temp, rng)
			require.NoError(t, err)
			if g.Hidden != nil {
				dev.CopyFromHostF32(g.Hidden.B, randHost(rng, c.gateDim, 0.3))
			}
			// larger logits weights so the softmax is far from uniform
			dev.CopyFromHostF32(g.Logits.W, randHost(rng, g.Logits.W.Len(), 1.5))
			ws := g.NewWorkspace(rows, true)
			x := randTensor(dev, rng, 1, rows, in)
			var ex []*kernels.Tensor
			var exh [][]float32
			for range c.experts {
				e := randTensor(dev, rng, 1, rows, d)
				ex = append(ex, e)
				exh = append(exh, host(e))
			}
			out := g.Forward(ws, x, ex)
			wantW, wantOut := naiveGate(g, host(x), exh, rows)
			assert.InDeltaSlice(t, wantW, host(ws.Weights()), 1e-6)
			assert.InDeltaSlice(t, wantOut, host(out), 1e-5)

			r := randHost(rng, rows*d, 1)
			loss := func() float64 { return dot(r, g.Forward(ws, x, ex)) }
			g.Forward(ws, x, ex)
			dev.CopyFromHostF32(ws.DY(), r)
			var dex []*kernels.Tensor
			for range ex {
				dex = append(dex, dev.Alloc(kernels.Float32, rows, d))
			}
			dx := dev.Alloc(kernels.Float32, rows, in)
			g.Backward(ws, dex, dx, false)
			ps, gs := g.Params(), ws.Grads()
			require.Len(t, gs, len(ps))
			var gh [][]float32
			for i := range gs {
				gh = append(gh, host(gs[i]))
			}
			gx := host(dx)
			var gex [][]float32
			for _, de := range dex {
				gex = append(gex, host(de))
			}
			for i, p := range ps {
				fdCheck(t, p.Name, p.Value, gh[i], loss, defaultFD, rng)
			}
			fdCheck(t, "x", x, gx, loss, defaultFD, rng)
			for e := range ex {
				fdCheck(t, fmt.Sprintf("expert%d", e), ex[e], gex[e], loss, defaultFD, rng)
			}
		})
	}
}

func TestGateErrors(t *testing.T) {
	dev := testDev()
	_, err := NewGate(dev, "g", 4, 0, 3, 8, 1, NewRNG(1))
	require.ErrorContains(t, err, "at least one expert")
	_, err = NewGate(dev, "g", 4, 2, 3, -1, 1, NewRNG(1))
	require.ErrorContains(t, err, "gate dim")
	_, err = NewGate(dev, "g", 4, 2, 3, 8, 0, NewRNG(1))
	require.ErrorContains(t, err, "temperature")
}

func TestTowerForwardBackward(t *testing.T) {
	for _, dims := range [][]int{nil, {6}, {5, 3}} {
		t.Run(fmt.Sprint(dims), func(t *testing.T) {
			dev := testDev()
			rng := NewRNG(41)
			const rows, in = 8, 4
			tw, err := NewTower(dev, "tower", in, dims, kernels.ReLU, 0.2, rng)
			require.NoError(t, err)
			ws := tw.NewWorkspace(rows, true)
			x := randTensor(dev, rng, 1, rows, in)
			mode := Mode{Train: true, Seed: 3}
			y := tw.Forward(ws, x, mode)
			require.Equal(t, []int{rows, 1}, y.Shape)
			r := randHost(rng, rows, 1)
			loss := func() float64 { return dot(r, tw.Forward(ws, x, mode)) }
			tw.Forward(ws, x, mode)
			dev.CopyFromHostF32(ws.DY(), r)
			dx := dev.Alloc(kernels.Float32, rows, in)
			tw.Backward(ws, dx, false)
			ps, gs := tw.Params(), ws.Grads()
			require.Len(t, gs, len(ps))
			var gh [][]float32
			for i := range gs {
				gh = append(gh, host(gs[i]))
			}
			gx := host(dx)
			for i, p := range ps {
				fdCheck(t, p.Name, p.Value, gh[i], loss, defaultFD, rng)
			}
			fdCheck(t, "x", x, gx, loss, defaultFD, rng)
		})
	}
}

func TestBlocksZeroAllocs(t *testing.T) {
	dev := testDev()
	rng := NewRNG(7)
	const rows, in = 32, 12
	x, err := NewExperts(dev, "ex", []int{2, 2}, in, []int{8, 8}, kernels.ReLU, 0.1, rng)
	require.NoError(t, err)
	g, err := NewGate(dev, "g", in, 4, 8, 6, 1, rng)
	require.NoError(t, err)
	tw, err := NewTower(dev, "t", 8, []int{5}, kernels.ReLU, 0.1, rng)
	require.NoError(t, err)
	xws, gws, tws := x.NewWorkspace(rows, true), g.NewWorkspace(rows, true), tw.NewWorkspace(rows, true)
	in1, in2 := randTensor(dev, rng, 1, rows, in), randTensor(dev, rng, 1, rows, in)
	small1, small2 := in1.View(0, 5, in), in2.View(0, 5, in)
	dx1, dx2 := dev.Alloc(kernels.Float32, rows, in), dev.Alloc(kernels.Float32, rows, in)
	sdx1, sdx2 := dx1.View(0, 5, in), dx2.View(0, 5, in)
	full := []*kernels.Tensor{in1, in2}
	fullD := []*kernels.Tensor{dx1, dx2}
	part := []*kernels.Tensor{small1, small2}
	partD := []*kernels.Tensor{sdx1, sdx2}
	step := func(xs, dxs []*kernels.Tensor, seed uint64) {
		mode := Mode{Train: true, Seed: seed}
		x.Forward(xws, xs, mode)
		out := g.Forward(gws, xs[0], xws.Outputs())
		tw.Forward(tws, out, mode)
		dev.Fill(tws.DY(), 1)
		tw.Backward(tws, gws.DY(), false)
		dev.Zero(xws.DY())
		g.Backward(gws, xws.DOutputs(), dxs[0], false)
		x.Backward(xws, dxs, true)
	}
	allocs := testing.AllocsPerRun(10, func() {
		step(full, fullD, 1)
		step(part, partD, 2)
	})
	require.Zero(t, allocs)
}
