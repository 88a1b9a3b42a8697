package layers

import (
	"errors"
	"fmt"
	"math"
	"testing"

	"github.com/mtlrank/mtlrank/kernels"
	"github.com/mtlrank/mtlrank/schema"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func catFeature(name, domain string, max int64, list bool) *schema.Feature {
	f := &schema.Feature{Name: name, DType: schema.Int32, Tags: []schema.Tag{schema.TagCategorical},
		IntDomain: &schema.IntDomain{Name: domain, Max: max}}
	if list {
		f.Tags = append(f.Tags, schema.TagList)
	}
	return f
}

func TestInferDim(t *testing.T) {
	for _, c := range []struct {
		card int64
		mult float64
		want int
	}{
		{100001, 2, 40}, // ceil(35.57) = 36 -> 40
		{179281, 2, 48}, // ceil(41.15) = 42 -> 48
		{6, 2, 8},       // ceil(3.13) = 4 -> 8
		{11, 0, 8},      // default multiplier
		{100001, 4, 72}, // ceil(71.13) = 72
		{1, 2, 8},       // ceil(2) -> 8
		{65536, 2, 32},  // exactly 32
	} {
		assert.Equal(t, c.want, InferDim(c.card, c.mult), "card %d mult %g", c.card, c.mult)
	}
}

// inputFixture is a block with an own-table scalar (a), a list and a scalar
// sharing domain "shared" (b, c), a continuous feature (d) and a list with
// no value count (e), plus a 5-row batch with empty lists and duplicates.
type inputFixture struct {
	block *InputBlock
	data  *InputData
	// host copies of the batch
	a, c []int32
	b, e [][]int32
	d    []float32
}

func newInputFixture(t *testing.T, dev *kernels.CPU, comb kernels.Combiner, l2 float32) *inputFixture {
	b := catFeature("b", "shared", 19, true)
	b.ValueCount = &schema.ValueCount{Min: 0, Max: 4}
	feats := []*schema.Feature{
		catFeature("e", "", 6, true), // unsorted on purpose
		catFeature("a", "", 9, false),
		b,
		catFeature("c", "shared", 19, false),
		{Name: "d", DType: schema.Float32, Tags: []schema.Tag{schema.TagContinuous}},
	}
	blk, err := NewInputBlock(dev, feats, InputOptions{Dims: map[string]int{"a": 5}, Combiner: comb, BatchL2: l2}, NewRNG(1))
	require.NoError(t, err)
	f := &inputFixture{
		block: blk,
		a:     []int32{0, 9, 4, 4, 1},
		b:     [][]int32{{3, 3, 1}, {}, {19}, {0, 5, 5, 5}, {2}},
		c:     []int32{3, 19, 0, 7, 3},
		d:     []float32{0.5, -1, 2, 0, 3.25},
		e:     [][]int32{{1}, {2, 6}, {}, {0, 0}, {6}},
	}
	const rows = 5
	data := blk.NewInputData()
	data.Rows = rows
	data.IDs[0] = kernels.WrapI32(dev, f.a, rows)
	var shared []int32
	offs := []int32{0}
	for _, l := range f.b {
		shared = append(shared, l...)
		offs = append(offs, int32(len(shared)))
	}
	for _, id := range f.c {
		shared = append(shared, id)
		offs = append(offs, int32(len(shared)))
	}
	data.IDs[1] = kernels.WrapI32(dev, shared, len(shared))
	data.Offsets[1] = kernels.WrapI32(dev, offs, len(offs))
	var eids []int32
	eoffs := []int32{0}
	for _, l := range f.e {
		eids = append(eids, l...)
		eoffs = append(eoffs, int32(len(eids)))
	}
	data.IDs[2] = kernels.WrapI32(dev, eids, len(eids))
	data.Offsets[2] = kernels.WrapI32(dev, eoffs, len(eoffs))
	data.Values[3] = kernels.WrapF32(dev, f.d, rows, 1)
	f.data = data
	return f
}

func combine(table []float32, dim int, ids []int32, comb kernels.Combiner) []float64 {
	out := make([]float64, dim)
	for _, id := range ids {
		for j := 0; j < dim; j++ {
			out[j] += float64(table[int(id)*dim+j])
		}
	}
	n := float64(len(ids))
	for j := range out {
		switch {
		case n == 0:
		case comb == kernels.Mean:
			out[j] /= n
		case comb == kernels.SqrtN:
			out[j] /= math.Sqrt(n)
		}
	}
	return out
}

func TestInputBlockLayout(t *testing.T) {
	dev := testDev()
	f := newInputFixture(t, dev, kernels.Mean, 0)
	blk := f.block
	var names []string
	for _, ft := range blk.Features {
		names = append(names, ft.Name)
	}
	require.Equal(t, []string{"a", "b", "c", "d", "e"}, names)
	require.Len(t, blk.Tables, 3)
	require.Equal(t, "a", blk.Tables[0].Name)
	require.Equal(t, 5, blk.Tables[0].Dim) // override used as is
	require.Equal(t, 10, blk.Tables[0].Rows)
	require.Equal(t, "shared", blk.Tables[1].Name)
	require.Equal(t, []int{1, 2}, blk.Tables[1].Features)
	require.Equal(t, 8, blk.Tables[1].Dim)
	require.Equal(t, 20, blk.Tables[1].Rows)
	require.Equal(t, 4, blk.Tables[1].MaxValues)
	require.Equal(t, 0, blk.Tables[2].MaxValues) // list without value count
	cols := []int{0, 5, 13, 21, 22}
	for i, ft := range blk.Features {
		require.Equal(t, cols[i], ft.Col, ft.Name)
	}
	require.Equal(t, 30, blk.OutDim)
	for _, tb := range blk.Tables {
		for _, v := range host(tb.W) {
			require.LessOrEqual(t, math.Abs(float64(v)), 0.05)
		}
	}
	ps := blk.Params("input/emb")
	require.Equal(t, "input/emb/shared", ps[1].Name)
	require.True(t, ps[1].Sparse)
}

func TestInputBlockForwardBackward(t *testing.T) {
	for _, comb := range []kernels.Combiner{kernels.Mean, kernels.Sum, kernels.SqrtN} {
		for _, l2 := range []float32{0, 0.3} {
			t.Run(fmt.Sprintf("comb%d_l2_%g", comb, l2), func(t *testing.T) {
				dev := testDev()
				f := newInputFixture(t, dev, comb, l2)
				blk := f.block
				rng := NewRNG(5)
				for _, tb := range blk.Tables { // larger values than the init
					dev.CopyFromHostF32(tb.W, randHost(rng, tb.W.Len(), 1))
				}
				ws := blk.NewWorkspace(8, true)
				out, err := blk.Forward(ws, f.data)
				require.NoError(t, err)
				require.Equal(t, []int{5, 30}, out.Shape)
				ta, ts, te := host(blk.Tables[0].W), host(blk.Tables[1].W), host(blk.Tables[2].W)
				want := make([]float32, 0, 5*30)
				for r := 0; r < 5; r++ {
					for _, v := range combine(ta, 5, f.a[r:r+1], comb) {
						want = append(want, float32(v))
					}
					for _, v := range combine(ts, 8, f.b[r], comb) {
						want = append(want, float32(v))
					}
					for _, v := range combine(ts, 8, f.c[r:r+1], comb) {
						want = append(want, float32(v))
					}
					want = append(want, f.d[r])
					for _, v := range combine(te, 8, f.e[r], comb) {
						want = append(want, float32(v))
					}
				}
				assert.InDeltaSlice(t, want, host(out), 1e-6)

				r := randHost(rng, 5*30, 1)
				lossT := dev.Alloc(kernels.Float32, 1)
				loss := func() float64 {
					o, err := blk.Forward(ws, f.data)
					require.NoError(t, err)
					dev.Zero(lossT)
					blk.AddRegLoss(ws, lossT)
					return dot(r, o) + float64(host(lossT)[0])
				}
				if l2 > 0 {
					// the regulariser sums squares of the embedding columns only
					loss()
					s := 0.0
					for i, v := range want {
						if i%30 != 21 {
							s += float64(v) * float64(v)
						}
					}
					require.InDelta(t, float64(l2)*s, float64(host(lossT)[0]), 1e-4)
				}
				_, err = blk.Forward(ws, f.data)
				require.NoError(t, err)
				dev.CopyFromHostF32(ws.DY(), r)
				blk.Backward(ws)
				for ti, tb := range blk.Tables {
					g := ws.SparseGrad(ti)
					rows := make([]int32, g.N)
					dev.CopyToHostI32(rows, g.Rows.View(0, g.N))
					vals := host(g.Values)
					dense := make([]float32, tb.W.Len())
					var must []int
					for i := 0; i < g.N; i++ {
						if i > 0 {
							require.Less(t, rows[i-1], rows[i], "rows unique and ascending")
						}
						copy(dense[int(rows[i])*tb.Dim:], vals[i*tb.Dim:(i+1)*tb.Dim])
						must = append(must, int(rows[i])*tb.Dim, int(rows[i])*tb.Dim+tb.Dim-1)
					}
					// the loss is quadratic in the tables, so a large step is
					// exact for central differences and keeps float32
					// rounding of the loss small relative to the step
					o := defaultFD
					o.eps = 1e-2
					o.smooth = true
					fdCheck(t, tb.Name, tb.W, dense, loss, o, rng, must...)
				}
			})
		}
	}
}

func TestInputBlockIDErrors(t *testing.T) {
	dev := testDev()
	f := newInputFixture(t, dev, kernels.Mean, 0)
	ws := f.block.NewWorkspace(5, false)
	f.a[3] = 10 // table a has 10 rows
	_, err := f.block.Forward(ws, f.data)
	require.ErrorContains(t, err, `input "a"`)
	var re *kernels.IDRangeError
	require.True(t, errors.As(err, &re))
	require.Equal(t, 3, re.Row)
	f.a[3] = -1
	_, err = f.block.Forward(ws, f.data)
	require.ErrorContains(t, err, `input "a"`)
	f.a[3] = 0
	_, err = f.block.Forward(ws, f.data)
	require.NoError(t, err)

	// shape problems are errors, not device panics
	f.data.Rows = 6
	_, err = f.block.Forward(ws, f.data)
	require.ErrorContains(t, err, "workspace holds 1..5")
	f.data.Rows = 4
	_, err = f.block.Forward(ws, f.data)
	require.ErrorContains(t, err, `input "a": 5 ids for 4 rows`)
	f.data.Rows = 5
	f.data.Offsets[1] = nil
	_, err = f.block.Forward(ws, f.data)
	require.ErrorContains(t, err, `table "shared": offsets missing`)
}

func TestInputBlockErrors(t *testing.T) {
	dev := testDev()
	cont := &schema.Feature{Name: "x", DType: schema.Float32, Tags: []schema.Tag{schema.TagContinuous}}
	contList := &schema.Feature{Name: "xl", DType: schema.Float32, Tags: []schema.Tag{schema.TagContinuous, schema.TagList}}
	target := &schema.Feature{Name: "click", DType: schema.Float32, Tags: []schema.Tag{schema.TagBinaryClassification}}
	untagged := &schema.Feature{Name: "u", DType: schema.Int32}
	noDomain := &schema.Feature{Name: "nd", DType: schema.Int32, Tags: []schema.Tag{schema.TagCategorical}}
	for _, c := range []struct {
		name  string
		feats []*schema.Feature
		dims  map[string]int
		want  string
	}{
		{"empty", nil, nil, "no input features"},
		{"target", []*schema.Feature{cont, target}, nil, `"click" is a target`},
		{"untagged", []*schema.Feature{untagged}, nil, `"u" is neither categorical nor continuous`},
		{"no domain", []*schema.Feature{noDomain}, nil, `"nd" needs an int_domain`},
		{"continuous list", []*schema.Feature{contList}, nil, `continuous list feature "xl"`},
		{"duplicate", []*schema.Feature{cont, cont}, nil, `"x" listed twice`},
		{"domain max", []*schema.Feature{catFeature("p", "dom", 5, false), catFeature("q", "dom", 6, false)}, nil,
			`feature "q": domain "dom" has max 6 here but 5`},
		{"negative dim", []*schema.Feature{catFeature("p", "", 5, false)}, map[string]int{"p": -8}, `dim for "p" must be positive`},
		{"dims disagree", []*schema.Feature{catFeature("p", "dom", 5, false), catFeature("q", "dom", 5, false)},
			map[string]int{"p": 8, "dom": 16}, `share table "dom"`},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := NewInputBlock(dev, c.feats, InputOptions{Dims: c.dims}, NewRNG(1))
			require.ErrorContains(t, err, c.want)
		})
	}
}

func TestInputBlockZeroAllocs(t *testing.T) {
	dev := testDev()
	f := newInputFixture(t, dev, kernels.Mean, 0.1)
	ws := f.block.NewWorkspace(5, true)
	loss := dev.Alloc(kernels.Float32, 1)
	// grow the unknown-length list's gradient buffer once
	_, err := f.block.Forward(ws, f.data)
	require.NoError(t, err)
	f.block.Backward(ws)
	allocs := testing.AllocsPerRun(20, func() {
		if _, err := f.block.Forward(ws, f.data); err != nil {
			panic(err)
		}
		f.block.AddRegLoss(ws, loss)
		dev.Fill(ws.DY(), 1)
		f.block.Backward(ws)
	})
	require.Zero(t, allocs)
}

// serialDev hides the CPU device's Sharder: the input block then gathers
// feature after feature, each op splitting its rows over the threads.
type serialDev struct{ kernels.Device }

// countingSharder is a CPU device that counts its RunShards calls.
type countingSharder struct {
	*kernels.CPU
	runs int
}

func (d *countingSharder) RunShards(n int, f func(int)) {
	d.runs++
	d.CPU.RunShards(n, f)
}

// shardAlways makes ws gather as shards whatever the batch size (the
// fixture's batches are far below gatherShardMinWork).
func shardAlways(ws *InputWS) { ws.gatherCost = gatherShardMinWork }

// Small batches are gathered in the calling goroutine: a join of the
// device's goroutines would cost more than the gather.
func TestInputBlockGatherShardsOnlyLargeBatches(t *testing.T) {
	f := newInputFixture(t, kernels.NewCPU(2), kernels.Mean, 0)
	dev := &countingSharder{CPU: f.block.dev.(*kernels.CPU)}
	f.block.dev = dev
	ws := f.block.NewWorkspace(5, false)
	require.Less(t, 5*ws.gatherCost, gatherShardMinWork)
	_, err := f.block.Forward(ws, f.data)
	require.NoError(t, err)
	require.Zero(t, dev.runs, "5 rows")
	shardAlways(ws)
	_, err = f.block.Forward(ws, f.data)
	require.NoError(t, err)
	require.Equal(t, 1, dev.runs, "every feature in one join")
}

// On a kernels.Sharder the block gathers its features as shards: the same
// output bits as feature after feature, and the same error (the first
// failing feature in feature order) when several features hold bad ids.
func TestInputBlockGatherShards(t *testing.T) {
	sharded := newInputFixture(t, kernels.NewCPU(2), kernels.Mean, 0)
	serial := newInputFixture(t, kernels.NewCPU(2), kernels.Mean, 0)
	serial.block.dev = serialDev{serial.block.dev}
	wsSharded, wsSerial := sharded.block.NewWorkspace(5, false), serial.block.NewWorkspace(5, false)
	shardAlways(wsSharded)
	require.NotNil(t, wsSharded.gatherFn)
	require.Nil(t, wsSerial.gatherFn)
	// every feature is handed out, the widest (most ids per row) first
	require.ElementsMatch(t, []int{0, 1, 2, 3, 4}, wsSharded.gatherOrder)
	first := sharded.block.Features[wsSharded.gatherOrder[0]]
	require.Equal(t, "b", first.Name)

	forward := func(f *inputFixture, ws *InputWS) ([]float32, error) {
		out, err := f.block.Forward(ws, f.data)
		if err != nil {
			return nil, err
		}
		return host(out), nil
	}
	want, err := forward(serial, wsSerial)
	require.NoError(t, err)
	got, err := forward(sharded, wsSharded)
	require.NoError(t, err)
	require.Equal(t, want, got)

	cases := []struct {
		name string
		bad  func(f *inputFixture)
		want string
	}{
		{"one feature", func(f *inputFixture) { f.data.IDs[1].I32[9+2] = 20 }, `input "c"`}, // c's ids follow b's 9
		{"two features, the first in feature order wins", func(f *inputFixture) {
			f.data.IDs[2].I32[0] = 7
			f.data.IDs[1].I32[9+2] = 20
		}, `input "c"`},
		{"the largest and the last feature", func(f *inputFixture) {
			f.data.IDs[2].I32[0] = 7
			f.data.IDs[1].I32[0] = -1
		}, `input "b"`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			sharded := newInputFixture(t, kernels.NewCPU(2), kernels.Mean, 0)
			serial := newInputFixture(t, kernels.NewCPU(2), kernels.Mean, 0)
			serial.block.dev = serialDev{serial.block.dev}
			tc.bad(sharded)
			tc.bad(serial)
			ws := sharded.block.NewWorkspace(5, false)
			shardAlways(ws)
			_, errSerial := forward(serial, serial.block.NewWorkspace(5, false))
			_, errSharded := forward(sharded, ws)
			require.ErrorContains(t, errSerial, tc.want)
			require.EqualError(t, errSharded, errSerial.Error())
			// the error is not kept for the next batch
			sharded2 := newInputFixture(t, kernels.NewCPU(2), kernels.Mean, 0)
			_, err := sharded2.block.Forward(ws, sharded2.data)
			require.NoError(t, err)
		})
	}
}

// A row-sharded job's lookup gathers from a small per-batch table
// (InputWS.SetTables: the batch's distinct ids' rows, the ids renumbered
// into it); gathered as shards, the output is the bits of the full tables
// gathered feature after feature.
func TestInputBlockGatherShardsFromBatchTables(t *testing.T) {
	full := newInputFixture(t, kernels.NewCPU(2), kernels.Mean, 0)
	full.block.dev = serialDev{full.block.dev}
	want, err := full.block.Forward(full.block.NewWorkspace(5, false), full.data)
	require.NoError(t, err)

	compact := newInputFixture(t, kernels.NewCPU(2), kernels.Mean, 0)
	dev := compact.block.dev
	tables := make([]*kernels.Tensor, len(compact.block.Tables))
	for ti, tab := range compact.block.Tables {
		ids := compact.data.IDs[ti].I32
		w := host(tab.W)
		index := map[int32]int32{}
		var rows []float32
		for i, id := range ids {
			k, ok := index[id]
			if !ok {
				k = int32(len(index))
				index[id] = k
				rows = append(rows, w[int(id)*tab.Dim:(int(id)+1)*tab.Dim]...)
			}
			ids[i] = k
		}
		tables[ti] = dev.Alloc(kernels.Float32, len(index), tab.Dim)
		dev.CopyFromHostF32(tables[ti], rows)
		require.Less(t, len(index), tab.Rows, "table %q: the batch table must be smaller than the table", tab.Name)
	}
	ws := compact.block.NewWorkspace(5, false)
	shardAlways(ws)
	ws.SetTables(tables)
	got, err := compact.block.Forward(ws, compact.data)
	require.NoError(t, err)
	require.Equal(t, host(want), host(got))
}
