package mtl

import (
	"fmt"
	"math"
	"sync"
	"testing"

	"github.com/mtlrank/mtlrank/kernels"
	"github.com/mtlrank/mtlrank/layers"
	"github.com/mtlrank/mtlrank/loader"
	"github.com/stretchr/testify/require"
)

func trainLosses(t *testing.T, m *Model, batches []*loader.Batch, steps int) []float64 {
	var out []float64
	for i := 0; i < steps; i++ {
		st, err := m.TrainStep(batches[i%len(batches)])
		require.NoError(t, err)
		out = append(out, st.Loss)
		out = append(out, st.TaskLoss...)
	}
	return out
}

func detConfig(model string) Config {
	c := gradConfig(model)
	c.Dropout = 0.2
	c.LRDecayRate, c.LRDecaySteps = 0.5, 3
	return c
}

func TestDeterminism(t *testing.T) {
	rng := layers.NewRNG(5)
	batches := []*loader.Batch{gradBatch(rng, 16), gradBatch(rng, 16), gradBatch(rng, 9), gradBatch(rng, 1)}
	for _, model := range []string{"mlp", "mmoe", "cgc", "ple", "dcn", "dlrm", "deepfm", "wide_n_deep"} {
		t.Run(model, func(t *testing.T) {
			run := func(seed int64) []float64 {
				c := detConfig(model)
				c.Seed = seed
				m, err := NewModel(gradSchema(), c, testDev(), 16)
				require.NoError(t, err)
				defer m.Release()
				return trainLosses(t, m, batches, 8)
			}
			a, b, c := run(1), run(1), run(2)
			require.Equal(t, a, b, "same seed, same losses")
			require.NotEqual(t, a, c)
		})
	}
}

// TestResumeMatchesUninterrupted: N steps, copy parameters, optimizer state
// and step into a fresh model (built with another seed), M more steps ==
// N+M steps of one model, bit for bit (dropout and LR decay on).
func TestResumeMatchesUninterrupted(t *testing.T) {
	rng := layers.NewRNG(6)
	batches := []*loader.Batch{gradBatch(rng, 16), gradBatch(rng, 12), gradBatch(rng, 16)}
	for _, opt := range []string{"adam", "adagrad", "sgd"} {
		t.Run(opt, func(t *testing.T) {
			c := detConfig("ple")
			c.Optimizer = opt
			full, err := NewModel(gradSchema(), c, testDev(), 16)
			require.NoError(t, err)
			defer full.Release()
			want := trainLosses(t, full, batches, 7)

			first, err := NewModel(gradSchema(), c, testDev(), 16)
			require.NoError(t, err)
			defer first.Release()
			got := trainLosses(t, first, batches, 4)

			c2 := c
			c2.Seed = c.Seed // dropout seeds follow the config seed
			resumed, err := NewModel(gradSchema(), c2, testDev(), 16)
			require.NoError(t, err)
			defer resumed.Release()
			// scramble the fresh model, then restore
			for _, p := range resumed.Params() {
				resumed.dev.Fill(p.Tensor, 0.5)
			}
			copyTensors(t, resumed.Params(), first.Params())
			copyTensors(t, resumed.OptimizerState(), first.OptimizerState())
			resumed.SetStep(first.Step())
			require.Equal(t, 4, resumed.Step())
			for i := 4; i < 7; i++ {
				st, err := resumed.TrainStep(batches[i%len(batches)])
				require.NoError(t, err)
				got = append(got, st.Loss)
				got = append(got, st.TaskLoss...)
			}
			require.Equal(t, want, got)
		})
	}
}

func copyTensors(t *testing.T, dst, src []NamedTensor) {
	require.Equal(t, len(src), len(dst))
	for i := range src {
		require.Equal(t, src[i].Name, dst[i].Name)
		require.Equal(t, src[i].Tensor.Shape, dst[i].Tensor.Shape)
		dst[i].Tensor.Dev.CopyFromHostF32(dst[i].Tensor, hostT(src[i].Tensor))
	}
}

func TestThreadsDoNotChangeResults(t *testing.T) {
	rng := layers.NewRNG(8)
	batches := []*loader.Batch{gradBatch(rng, 16), gradBatch(rng, 16)}
	run := func(dev kernels.Device) []float64 {
		m, err := NewModel(gradSchema(), detConfig("mmoe"), dev, 16)
		require.NoError(t, err)
		defer m.Release()
		return trainLosses(t, m, batches, 5)
	}
	a, b := run(kernels.NewCPU(1)), run(kernels.NewCPU(2))
	require.InDeltaSlice(t, a, b, 1e-6)
}

func TestSparseUpdatesOnlyTouchedRows(t *testing.T) {
	for _, opt := range []string{"adam", "adagrad", "sgd"} {
		c := gradConfig("mmoe")
		c.Optimizer = opt
		c.EmbeddingL2Reg = 0
		m, err := NewModel(gradSchema(), c, testDev(), 16)
		require.NoError(t, err)
		b := gradBatch(layers.NewRNG(1), 16)
		user := m.Params()[len(m.input.Tables)-1] // input/emb/user
		require.Equal(t, "input/emb/user", user.Name)
		before := hostT(user.Tensor)
		_, err = m.TrainStep(b)
		require.NoError(t, err)
		after := hostT(user.Tensor)
		seen := map[int32]bool{}
		for _, id := range b.Column("user").I32 {
			seen[id] = true
		}
		dim := user.Tensor.Cols()
		for r := 0; r < user.Tensor.Rows(); r++ {
			changed := false
			for j := 0; j < dim; j++ {
				if before[r*dim+j] != after[r*dim+j] {
					changed = true
				}
			}
			require.Equal(t, seen[int32(r)], changed, "%s: row %d", opt, r)
		}
		m.Release()
	}
}

func TestLossTerms(t *testing.T) {
	c := gradConfig("mlp")
	m, err := NewModel(gradSchema(), c, testDev(), 16)
	require.NoError(t, err)
	defer m.Release()
	b := gradBatch(layers.NewRNG(2), 16)
	// like trains only where click == 1: with no clicks its loss is 0
	click := b.Column("click").F32
	saved := append([]float32(nil), click...)
	for i := range click {
		click[i] = 0
	}
	st, err := m.Loss(b)
	require.NoError(t, err)
	require.Equal(t, 0.0, st.TaskLoss[1])
	copy(click, saved)
	st, err = m.Loss(b)
	require.NoError(t, err)
	require.Greater(t, st.TaskLoss[1], 0.0)
	// Loss = sum lambda_t * TaskLoss_t + regularisation (> 0 with L2)
	sum := 0.7*st.TaskLoss[0] + st.TaskLoss[1] + 0.3*st.TaskLoss[2]
	require.Greater(t, st.Loss, sum)
	require.InDelta(t, refLoss(t, m, b), st.Loss, 1e-5)
	// Loss does not update anything
	p0 := hostT(m.Params()[3].Tensor)
	_, err = m.Loss(b)
	require.NoError(t, err)
	require.Equal(t, p0, hostT(m.Params()[3].Tensor))
	require.Equal(t, 0, m.Step())
}

func TestZeroAllocs(t *testing.T) {
	for _, model := range []string{"mlp", "mmoe", "cgc", "ple", "dcn", "dlrm", "deepfm", "wide_n_deep"} {
		// 2 threads: the gather and the step's jobs run on the device's pool
		for _, threads := range []int{1, 2} {
			t.Run(fmt.Sprintf("%s/threads%d", model, threads), func(t *testing.T) {
				zeroAllocs(t, model, threads)
			})
		}
	}
}

func zeroAllocs(t *testing.T, model string, threads int) {
	c := gradConfig(model)
	c.Dropout = 0.1
	m, err := NewModel(gradSchema(), c, kernels.NewCPU(threads), 32)
	require.NoError(t, err)
	defer m.Release()
	rng := layers.NewRNG(3)
	big, small := gradBatch(rng, 32), gradBatch(rng, 7)
	out := [][]float32{make([]float32, 32), make([]float32, 32), make([]float32, 32)}
	p := m.NewPredictor(32)
	defer p.Release()
	step := func() {
		for _, b := range []*loader.Batch{big, small} {
			if _, err := m.TrainStep(b); err != nil {
				panic(err)
			}
		}
	}
	step() // sparse-gradient buffers of unbounded lists grow once
	require.Zero(t, testing.AllocsPerRun(10, step), "TrainStep")
	require.Zero(t, testing.AllocsPerRun(10, func() {
		if err := m.Predict(big, out); err != nil {
			panic(err)
		}
		if err := p.Predict(small, out); err != nil {
			panic(err)
		}
		if _, err := m.Loss(small); err != nil {
			panic(err)
		}
	}), "Predict/Loss")
}

func TestPredictorsConcurrent(t *testing.T) {
	m, err := NewModel(gradSchema(), gradConfig("ple"), kernels.NewCPU(2), 32)
	require.NoError(t, err)
	defer m.Release()
	rng := layers.NewRNG(4)
	var batches []*loader.Batch
	var want [][][]float32
	for i := 0; i < 8; i++ {
		b := gradBatch(rng, 5+3*i)
		out := [][]float32{make([]float32, b.Rows), make([]float32, b.Rows), make([]float32, b.Rows)}
		require.NoError(t, m.Predict(b, out))
		for _, p := range out[:2] {
			for _, v := range p {
				require.True(t, v > 0 && v < 1)
			}
		}
		batches = append(batches, b)
		want = append(want, out)
	}
	var wg sync.WaitGroup
	errs := make([]error, 4)
	for g := 0; g < 4; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			p := m.NewPredictor(32)
			defer p.Release()
			for rep := 0; rep < 20; rep++ {
				for i, b := range batches {
					out := [][]float32{make([]float32, b.Rows), make([]float32, b.Rows), make([]float32, b.Rows)}
					if err := p.Predict(b, out); err != nil {
						errs[g] = err
						return
					}
					for t := range out {
						for r := range out[t] {
							if out[t][r] != want[i][t][r] {
								errs[g] = errMismatch
								return
							}
						}
					}
				}
			}
		}(g)
	}
	wg.Wait()
	for _, err := range errs {
		require.NoError(t, err)
	}
}

var errMismatch = &mismatchErr{}

type mismatchErr struct{}

func (*mismatchErr) Error() string { return "predictor output differs from Model.Predict" }

func TestBatchErrors(t *testing.T) {
	m, err := NewModel(gradSchema(), gradConfig("mmoe"), testDev(), 16)
	require.NoError(t, err)
	defer m.Release()
	cases := []struct {
		name   string
		mutate func(b *loader.Batch)
		want   string
	}{
		{"missing input", func(b *loader.Batch) { delete(b.Columns, "user") }, `batch test: column "user" is missing`},
		{"missing target", func(b *loader.Batch) { delete(b.Columns, "watch") }, `column "watch" is missing`},
		{"missing weight column", func(b *loader.Batch) { delete(b.Columns, "w") }, `column "w" is missing`},
		{"id too large", func(b *loader.Batch) { b.Column("user").I32[3] = 31 }, `column "user" row 3: id 31 outside [0, 30]`},
		{"negative id", func(b *loader.Batch) { b.Column("user").I32[0] = -1 }, `column "user" row 0: id -1 outside [0, 30]`},
		{"int64 id too large", func(b *loader.Batch) { b.Column("item").I64[5] = 1 << 40 }, `column "item" row 5: id 1099511627776 outside [0, 40]`},
		{"list id too large", func(b *loader.Batch) {
			c := b.Column("hist")
			c.I32[c.Offsets[2]] = 41
			if c.Offsets[3] == c.Offsets[2] {
				c.Offsets[3]++ // make sure row 2 holds the id
			}
		}, `column "hist" row 2: id 41 outside [0, 40]`},
		{"list without offsets", func(b *loader.Batch) { b.Column("tags").Offsets = nil }, `column "tags" is a list feature in the schema but has no list offsets`},
		{"scalar with offsets", func(b *loader.Batch) { b.Column("user").Offsets = make([]int32, 17) }, `column "user" is a scalar feature in the schema but holds lists`},
		{"short offsets", func(b *loader.Batch) { c := b.Column("tags"); c.Offsets = c.Offsets[:10] }, `column "tags": 10 list offsets for 16 rows`},
		{"offsets past values", func(b *loader.Batch) { c := b.Column("tags"); c.Offsets[16] = int32(len(c.I32) + 1) }, `column "tags" row 15: list offsets`},
		{"decreasing offsets", func(b *loader.Batch) { c := b.Column("tags"); c.Offsets[1], c.Offsets[2] = 5, 2 }, `column "tags" row 1: list offsets`},
		{"short column", func(b *loader.Batch) { c := b.Column("user"); c.I32 = c.I32[:15] }, `column "user": 15 values for 16 rows`},
		{"float ids", func(b *loader.Batch) { c := b.Column("user"); c.F32 = make([]float32, 16); c.I32 = nil }, `column "user": categorical ids must be int32 or int64`},
		{"nan target", func(b *loader.Batch) { b.Column("click").F32[4] = float32(math.NaN()) }, `column "click" row 4: value NaN is not finite`},
		{"inf continuous", func(b *loader.Batch) { b.Column("price").F32[7] = float32(math.Inf(1)) }, `column "price" row 7: value +Inf is not finite`},
		{"short target", func(b *loader.Batch) { c := b.Column("watch"); c.F32 = c.F32[:3] }, `column "watch": 3 values for 16 rows`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			b := gradBatch(layers.NewRNG(9), 16)
			c.mutate(b)
			_, err := m.TrainStep(b)
			require.Error(t, err)
			require.Contains(t, err.Error(), c.want)
			_, err = m.Loss(b)
			require.ErrorContains(t, err, c.want)
		})
	}
	// the model still works afterwards, and nothing was updated by the failures
	require.Equal(t, 0, m.Step())
	_, err = m.TrainStep(gradBatch(layers.NewRNG(9), 16))
	require.NoError(t, err)

	b := gradBatch(layers.NewRNG(9), 16)
	big := gradBatch(layers.NewRNG(9), 17)
	out := [][]float32{make([]float32, 16), make([]float32, 16), make([]float32, 16)}
	require.ErrorContains(t, m.Predict(big, [][]float32{make([]float32, 17), make([]float32, 17), make([]float32, 17)}),
		"17 rows, more than the 16")
	require.ErrorContains(t, m.Predict(b, out[:2]), "2 output slices for 3 tasks")
	require.ErrorContains(t, m.Predict(b, [][]float32{out[0], out[1], out[2][:3]}), `task "watch/regression_output" has room for 3 rows`)
	_, err = m.TrainStep(loader.NewBatch(0, nil, "", nil))
	require.ErrorContains(t, err, "empty batch")
	// Predict needs only the inputs
	for _, k := range []string{"click", "like", "watch", "w"} {
		delete(b.Columns, k)
	}
	require.NoError(t, m.Predict(b, out))
}

func TestGateWeightNames(t *testing.T) {
	for _, c := range []struct {
		model string
		want  []string
	}{
		{"mmoe", []string{"click", "like", "watch"}},
		{"cgc", []string{"click", "like", "watch"}},
		{"ple", []string{"level_0/click", "level_0/like", "level_0/watch", "level_0/shared",
			"level_1/click", "level_1/like", "level_1/watch", "level_1/shared",
			"level_2/click", "level_2/like", "level_2/watch"}},
		{"mlp", nil},
	} {
		m, err := NewModel(gradSchema(), gradConfig(c.model), testDev(), 8)
		require.NoError(t, err)
		require.Empty(t, m.GateWeights(), "before any forward pass")
		_, err = m.Loss(gradBatch(layers.NewRNG(1), 8))
		require.NoError(t, err)
		gw := m.GateWeights()
		require.Len(t, gw, len(c.want))
		for _, name := range c.want {
			require.Contains(t, gw, name)
		}
		if c.model == "ple" {
			require.Len(t, gw["level_0/click"], 3)  // 2 own + 1 shared
			require.Len(t, gw["level_0/shared"], 7) // 3 tasks x 2 + 1
		}
		m.Release()
	}
}

// A list column whose lists are all empty may come without values.
func TestEmptyListsWithoutValues(t *testing.T) {
	m, err := NewModel(gradSchema(), gradConfig("ple"), testDev(), 16)
	require.NoError(t, err)
	defer m.Release()
	b := gradBatch(layers.NewRNG(12), 6)
	b.Columns["tags"] = &loader.Column{Name: "tags", Offsets: make([]int32, 7)}
	b.Columns["hist"] = &loader.Column{Name: "hist", I32: []int32{}, Offsets: make([]int32, 7)}
	st, err := m.TrainStep(b)
	require.NoError(t, err)
	require.False(t, math.IsNaN(st.Loss))
	require.InDelta(t, refLoss(t, m, b), func() float64 { s, _ := m.Loss(b); return s.Loss }(), 1e-5)
}
