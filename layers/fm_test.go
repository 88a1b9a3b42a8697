package layers

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/mtlrank/mtlrank/kernels"
	"github.com/mtlrank/mtlrank/schema"
)

// TestFM compares the FM term with the sum of the pairwise dot products of
// the fields (not the square-of-sums identity the layer uses) and checks
// its input gradient, written and accumulated, by finite differences.
func TestFM(t *testing.T) {
	dev, rng := testDev(), NewRNG(4)
	for _, c := range []struct{ fields, k, rows int }{{1, 3, 4}, {2, 1, 3}, {4, 3, 7}} {
		f, err := NewFM(dev, c.fields, c.k)
		require.NoError(t, err)
		ws := f.NewWorkspace(8, true)
		x := randTensor(dev, rng, 1, c.rows, c.fields*c.k)
		y := host(f.Forward(ws, x))
		xh := host(x)
		for r := 0; r < c.rows; r++ {
			want := 0.0
			for a := 0; a < c.fields; a++ {
				for b := a + 1; b < c.fields; b++ {
					for j := 0; j < c.k; j++ {
						want += float64(xh[r*c.fields*c.k+a*c.k+j]) * float64(xh[r*c.fields*c.k+b*c.k+j])
					}
				}
			}
			require.InDelta(t, want, y[r], 1e-5, "row %d of %d fields of %d", r, c.fields, c.k)
		}
		rw := randHost(rng, c.rows, 1)
		dev.CopyFromHostF32(ws.DY(), rw)
		dx := randTensor(dev, rng, 1, c.rows, c.fields*c.k)
		before := host(dx)
		f.Backward(ws, dx, true)
		acc := host(dx)
		f.Backward(ws, dx, false)
		grad := host(dx)
		for i := range acc {
			require.InDelta(t, before[i]+grad[i], acc[i], 1e-6, "accumulate adds")
		}
		loss := func() float64 { return dot(rw, f.Forward(ws, x)) }
		fdCheck(t, "fm/x", x, grad, loss, fdOpts{eps: 1e-2, atol: 1e-4, rtol: 2e-3, samples: 30, smooth: true}, rng)
		ws.Release()
		f.Release()
	}
	_, err := NewFM(dev, 0, 3)
	require.Error(t, err)
}

// TestColGather: the output is the ranges side by side; the gradient goes
// back to the ranges, added or (with zeros elsewhere) written.
func TestColGather(t *testing.T) {
	dev, rng := testDev(), NewRNG(5)
	g, err := NewColGather(dev, 7, []ColRange{{1, 2}, {3, 1}, {5, 2}})
	require.NoError(t, err)
	require.Equal(t, []ColRange{{1, 3}, {5, 2}}, g.Ranges, "adjacent ranges merge")
	require.Equal(t, 5, g.Out)
	ws := g.NewWorkspace(4, true)
	defer ws.Release()
	x := randTensor(dev, rng, 1, 3, 7)
	y, xh := host(g.Forward(ws, x)), host(x)
	cols := []int{1, 2, 3, 5, 6}
	for r := 0; r < 3; r++ {
		for j, c := range cols {
			require.Equal(t, xh[r*7+c], y[r*5+j])
		}
	}
	dy := randHost(rng, 15, 1)
	dev.CopyFromHostF32(ws.DY(), dy)
	dx := randTensor(dev, rng, 1, 3, 7)
	before := host(dx)
	g.Backward(ws, dx, true)
	acc := host(dx)
	g.Backward(ws, dx, false)
	set := host(dx)
	for r := 0; r < 3; r++ {
		for c := 0; c < 7; c++ {
			want, wantAcc := float32(0), before[r*7+c]
			if j := indexOf(cols, c); j >= 0 {
				want = dy[r*5+j]
				wantAcc += want
			}
			require.Equal(t, want, set[r*7+c], "row %d col %d written", r, c)
			require.InDelta(t, wantAcc, acc[r*7+c], 1e-6, "row %d col %d added", r, c)
		}
	}
	for _, bad := range [][]ColRange{{{6, 2}}, {{-1, 1}}, {{0, 0}}, nil} {
		_, err := NewColGather(dev, 7, bad)
		require.Error(t, err, "%v", bad)
	}
}

func indexOf(s []int, v int) int {
	for i, x := range s {
		if x == v {
			return i
		}
	}
	return -1
}

// TestWideLogit: y = sum of the columns + b, then dropout in training;
// the gradients of the bias and the input by finite differences (with the
// same dropout mask, which depends only on the seed).
func TestWideLogit(t *testing.T) {
	dev, rng := testDev(), NewRNG(6)
	for _, drop := range []float32{0, 0.5} {
		w, err := NewWideLogit(dev, "wide", 4, drop)
		require.NoError(t, err)
		require.Equal(t, "wide/bias", w.Params()[0].Name)
		require.False(t, w.Params()[0].L2)
		dev.CopyFromHostF32(w.B, []float32{0.3})
		ws := w.NewWorkspace(8, true)
		x := randTensor(dev, rng, 1, 6, 4)
		y, xh := host(w.Forward(ws, x, Mode{})), host(x)
		for r := 0; r < 6; r++ {
			want := 0.3
			for j := 0; j < 4; j++ {
				want += float64(xh[r*4+j])
			}
			require.InDelta(t, want, y[r], 1e-6, "inference: no dropout")
		}
		mode := Mode{Train: true, Seed: 77}
		rw := randHost(rng, 6, 1)
		w.Forward(ws, x, mode)
		dev.CopyFromHostF32(ws.DY(), rw)
		dx := dev.Alloc(kernels.Float32, 6, 4)
		w.Backward(ws, dx, false)
		loss := func() float64 { return dot(rw, w.Forward(ws, x, mode)) }
		o := fdOpts{eps: 1e-2, atol: 1e-4, rtol: 2e-3, samples: 24, smooth: true}
		fdCheck(t, "wide/bias", w.B, host(ws.Grads()[0]), loss, o, rng, 0)
		fdCheck(t, "wide/x", x, host(dx), loss, o, rng)
		if drop > 0 {
			// some rows are dropped (zero), the others scaled by 1/(1-rate)
			yt, zero := host(w.Forward(ws, x, mode)), 0
			for r := range yt {
				if yt[r] == 0 {
					zero++
				} else {
					require.InDelta(t, 2*y[r], yt[r], 1e-5)
				}
			}
			require.Positive(t, zero)
		}
		ws.Release()
		w.Release()
	}
}

// TestInputBlockDomainOptions: extra features come last in the order
// given; a domain's own combiner, batch L2 factor and zero initialisation
// apply to its table only.
func TestInputBlockDomainOptions(t *testing.T) {
	dev := testDev()
	sum, l2w := kernels.Sum, float32(0.5)
	extraList := catFeature("wide/l", "wide/l", 9, true)
	blk, err := NewInputBlock(dev, []*schema.Feature{catFeature("l", "", 9, true), catFeature("a", "", 4, false)},
		InputOptions{Dims: map[string]int{"l": 2, "a": 3, "wide/l": 1, "wide/a": 1}, Combiner: kernels.Mean, BatchL2: 0.25,
			Extra:   []*schema.Feature{extraList, catFeature("wide/a", "wide/a", 4, false)},
			Domains: map[string]DomainOptions{"wide/l": {Combiner: &sum, BatchL2: &l2w, ZeroInit: true}}}, NewRNG(1))
	require.NoError(t, err)
	defer blk.Release()
	var names []string
	for _, f := range blk.Features {
		names = append(names, f.Name)
	}
	require.Equal(t, []string{"a", "l", "wide/l", "wide/a"}, names)
	require.Equal(t, []int{0, 3, 5, 6}, []int{blk.Features[0].Col, blk.Features[1].Col, blk.Features[2].Col, blk.Features[3].Col})
	wl := blk.Tables[blk.Features[2].Table]
	require.Equal(t, kernels.Sum, wl.Combiner)
	require.Equal(t, float32(0.5), wl.BatchL2)
	require.Equal(t, make([]float32, 10), host(wl.W), "zero initialised")
	require.Equal(t, kernels.Mean, blk.Tables[blk.Features[1].Table].Combiner)

	for i, tb := range blk.Tables {
		v := randHost(NewRNG(int64(i)), tb.Rows*tb.Dim, 1)
		dev.CopyFromHostF32(tb.W, v)
	}
	ids := map[string][]int32{"a": {1, 4}, "wide/a": {1, 4}}
	data := blk.NewInputData()
	data.Rows = 2
	for ti, tb := range blk.Tables {
		f := blk.Features[tb.Features[0]]
		if !f.List {
			data.IDs[ti] = kernels.WrapI32(dev, ids[f.Name], 2)
			continue
		}
		data.IDs[ti] = kernels.WrapI32(dev, []int32{2, 2, 7}, 3)
		data.Offsets[ti] = kernels.WrapI32(dev, []int32{0, 3, 3}, 3)
	}
	ws := blk.NewWorkspace(2, true)
	defer ws.Release()
	out, err := blk.Forward(ws, data)
	require.NoError(t, err)
	y := host(out)
	tabOf := func(fi int) []float32 { return host(blk.Tables[blk.Features[fi].Table].W) }
	// row 0 of "wide/l": the sum (not the mean) of the weights of 2, 2, 7
	require.InDelta(t, 2*tabOf(2)[2]+tabOf(2)[7], y[5], 1e-6)
	// row 0 of "l": the mean
	require.InDelta(t, (2*tabOf(1)[4]+tabOf(1)[14])/3, y[3], 1e-6)
	loss := dev.Alloc(kernels.Float32, 1)
	blk.AddRegLoss(ws, loss)
	want := 0.0
	for r := 0; r < 2; r++ {
		for c := 0; c < 7; c++ {
			v := float64(y[r*7+c])
			switch {
			case c < 5: // a, l: the block's factor
				want += 0.25 * v * v
			case c == 5: // wide/l: its own
				want += 0.5 * v * v
			}
			// wide/a has factor 0.25 too (no override)
			if c == 6 {
				want += 0.25 * v * v
			}
		}
	}
	require.InDelta(t, want, host(loss)[0], 1e-5)
	// and its gradient, 2 * factor * e, per group
	dev.Zero(ws.DY())
	blk.BeginBackward(ws)
	dy := host(ws.DY())
	for i, v := range y {
		f := 0.25
		if i%7 == 5 {
			f = 0.5
		}
		require.InDelta(t, 2*f*float64(v), dy[i], 1e-6, "column %d", i%7)
	}
}
