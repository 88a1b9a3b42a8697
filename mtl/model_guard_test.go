package mtl

import (
	"errors"
	"math"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/mtlrank/mtlrank/kernels"
	"github.com/mtlrank/mtlrank/layers"
	"github.com/mtlrank/mtlrank/loader"
)

// modelState is every parameter and optimizer tensor of m, on the host.
func modelState(m *Model) map[string][]float32 {
	out := map[string][]float32{}
	for _, p := range append(m.Params(), m.OptimizerState()...) {
		out[p.Name] = hostT(p.Tensor)
	}
	return out
}

// A batch whose loss is not finite is refused before the update: TrainStep
// returns a *NonFiniteLossError naming the step and the task, and the
// parameters, the optimizer state and the step counter are exactly as
// before, so that training can go on as if the batch had not been seen.
func TestTrainStepRefusesNonFiniteLoss(t *testing.T) {
	cases := []struct {
		name    string
		spoil   func(b *loader.Batch)
		task    string // the task named by a *NonFiniteLossError; "" for a feeder error
		message string
	}{
		{"huge regression label", func(b *loader.Batch) {
			for i := range b.Column("watch").F32 {
				b.Column("watch").F32[i] = 3e38 // finite, but its square overflows
			}
		}, "watch/regression_output", "loss of task watch/regression_output is +Inf at step 2 (batch test)"},
		{"one huge label", func(b *loader.Batch) { b.Column("watch").F32[5] = -2e38 }, "watch/regression_output", "step 2"},
		{"infinite weight", func(b *loader.Batch) { b.Column("w").F32[3] = float32(math.Inf(1)) }, "",
			`column "w" row 3: value +Inf is not finite`},
	}
	for _, model := range []string{"mlp", "ple"} {
		for _, c := range cases {
			t.Run(model+"/"+c.name, func(t *testing.T) {
				cfg := gradConfig(model)
				cfg.Dropout = 0.1
				newModel := func() *Model {
					m, err := NewModel(gradSchema(), cfg, kernels.NewCPU(2), 600)
					require.NoError(t, err)
					return m
				}
				m, ref := newModel(), newModel()
				defer m.Release()
				defer ref.Release()
				rng := layers.NewRNG(8)
				good := []*loader.Batch{gradBatch(rng, 600), gradBatch(rng, 40), gradBatch(rng, 300)}
				bad := gradBatch(rng, 600)
				c.spoil(bad)
				for _, b := range good[:2] {
					_, err := m.TrainStep(b)
					require.NoError(t, err)
					_, err = ref.TrainStep(b)
					require.NoError(t, err)
				}
				before := modelState(m)
				_, err := m.TrainStep(bad)
				require.Error(t, err)
				assert.Contains(t, err.Error(), c.message)
				var nf *NonFiniteLossError
				if c.task != "" {
					require.True(t, errors.As(err, &nf), "%v", err)
					assert.Equal(t, 2, nf.Step)
					assert.Equal(t, c.task, nf.Task)
					assert.True(t, math.IsInf(nf.Value, 0) || math.IsNaN(nf.Value))
				}
				assert.Equal(t, 2, m.Step(), "the step counter did not move")
				require.Equal(t, before, modelState(m), "parameters and optimizer state untouched")
				// The next step is the step the model would have taken
				// without the bad batch, bit for bit.
				st, err := m.TrainStep(good[2])
				require.NoError(t, err)
				stRef, err := ref.TrainStep(good[2])
				require.NoError(t, err)
				assert.Equal(t, stRef.Loss, st.Loss)
				assert.Equal(t, modelState(ref), modelState(m))
			})
		}
	}
}

// skewedBatch is a gradBatch with base rates far from 0.5: about 10% of
// clicks, 30% likes among the clicks (like's sample space), and watch
// values around 20.
func skewedBatch(rows int, seed uint64) *loader.Batch {
	rng := layers.NewRNG(int64(seed))
	b := gradBatch(rng, rows)
	click, like, watch := b.Column("click").F32, b.Column("like").F32, b.Column("watch").F32
	for i := range click {
		click[i], like[i] = 0, 0
		if rng.Float64() < 0.1 {
			click[i] = 1
			if rng.Float64() < 0.3 {
				like[i] = 1
			}
		}
		watch[i] = 20 + float32(rng.NormFloat64()*3)
	}
	return b
}

// baseRates are the base rates of skewedBatch's tasks computed on the
// host: click's positive rate, like's positive rate among the clicked rows,
// and watch's mean.
func baseRates(b *loader.Batch) (click, like, watch float64) {
	var n, nc, nl, sw float64
	for i, c := range b.Column("click").F32 {
		n++
		nc += float64(c)
		if c == 1 {
			nl += float64(b.Column("like").F32[i])
		}
		sw += float64(b.Column("watch").F32[i])
	}
	return nc / n, nl / nc, sw / n
}

// With InitOutputBias the mean prediction of every head on the batch it
// was measured on equals the task's base rate (within 1e-3; the solve is
// exact up to float32 rounding), for every architecture and with the
// batch cut into shards; without it the heads start far from the rates.
func TestInitOutputBiasMatchesBaseRates(t *testing.T) {
	for _, model := range []string{"mlp", "mmoe", "cgc", "ple"} {
		t.Run(model, func(t *testing.T) {
			b := skewedBatch(700, 3)
			wantClick, wantLike, wantWatch := baseRates(b)
			require.InDelta(t, 0.1, wantClick, 0.04, "the fixture is skewed")
			m, err := NewModel(gradSchema(), gradConfig(model), kernels.NewCPU(2), 700)
			require.NoError(t, err)
			defer m.Release()
			means := func() (click, like, watch float64) {
				out := [][]float32{make([]float32, b.Rows), make([]float32, b.Rows), make([]float32, b.Rows)}
				require.NoError(t, m.Predict(b, out))
				var nl float64
				for i := range b.Rows {
					click += float64(out[0][i])
					if b.Column("click").F32[i] == 1 {
						like += float64(out[1][i])
						nl++
					}
					watch += float64(out[2][i])
				}
				n := float64(b.Rows)
				return click / n, like / nl, watch / n
			}
			c0, _, w0 := means()
			assert.Greater(t, math.Abs(c0-wantClick), 0.1, "zero biases predict about 0.5")
			assert.Greater(t, math.Abs(w0-wantWatch), 10.0)
			require.NoError(t, m.InitOutputBias(b))
			c1, l1, w1 := means()
			assert.InDelta(t, wantClick, c1, 1e-3, "click")
			assert.InDelta(t, wantLike, l1, 1e-3, "like over its sample space")
			assert.InDelta(t, wantWatch, w1, 1e-3*wantWatch, "watch")
			assert.Equal(t, 0, m.Step())
		})
	}
}

// Config.InitOutputBias makes the first TrainStep calibrate on its batch:
// the same as calling InitOutputBias before it, bit for bit; later steps
// do not calibrate again, and SetOutputBias replaces the measurement.
func TestInitOutputBiasOnFirstStep(t *testing.T) {
	b0, b1 := skewedBatch(300, 4), skewedBatch(300, 5)
	cfg := gradConfig("mmoe")
	newModel := func(init bool) *Model {
		c := cfg
		c.InitOutputBias = init
		m, err := NewModel(gradSchema(), c, kernels.NewCPU(1), 300)
		require.NoError(t, err)
		return m
	}
	auto, manual, off := newModel(true), newModel(false), newModel(false)
	defer auto.Release()
	defer manual.Release()
	defer off.Release()
	require.NoError(t, manual.InitOutputBias(b0))
	for _, b := range []*loader.Batch{b0, b1} {
		sa, err := auto.TrainStep(b)
		require.NoError(t, err)
		sm, err := manual.TrainStep(b)
		require.NoError(t, err)
		so, err := off.TrainStep(b)
		require.NoError(t, err)
		assert.Equal(t, sm.Loss, sa.Loss)
		assert.NotEqual(t, so.Loss, sa.Loss)
	}
	assert.Equal(t, modelState(manual), modelState(auto))

	// Given rates: the bias is their log-odds (or the mean), and the first
	// step does not measure the batch.
	given := newModel(true)
	defer given.Release()
	require.NoError(t, given.SetOutputBias(map[string]float64{"click": 0.2, "watch/regression_output": 7}))
	_, err := given.TrainStep(b0) // would recalibrate click, like and watch if it measured
	require.NoError(t, err)
	fresh := newModel(false)
	defer fresh.Release()
	require.NoError(t, fresh.SetOutputBias(map[string]float64{"click": 0.2, "watch": 7}))
	assert.InDelta(t, math.Log(0.2/0.8), float64(hostT(fresh.towers[0].Head.B)[0]), 1e-7)
	assert.Equal(t, []float32{0}, hostT(fresh.towers[1].Head.B), "like was not named")
	assert.Equal(t, []float32{7}, hostT(fresh.towers[2].Head.B))
	_, err = fresh.TrainStep(b0)
	require.NoError(t, err)
	assert.Equal(t, modelState(fresh), modelState(given))

	for _, bad := range []map[string]float64{{"nope": 0.5}, {"click": 1}, {"click": 0}, {"watch": math.NaN()}} {
		assert.Error(t, fresh.SetOutputBias(bad), "%v", bad)
	}
}

// A refused first step leaves the output biases as they were, too: the
// calibration of Config.InitOutputBias is undone with the step and redone
// on the next batch.
func TestRefusedFirstStepUndoesOutputBias(t *testing.T) {
	cfg := gradConfig("cgc")
	cfg.InitOutputBias = true
	newModel := func() *Model {
		m, err := NewModel(gradSchema(), cfg, kernels.NewCPU(2), 300)
		require.NoError(t, err)
		return m
	}
	m, ref := newModel(), newModel()
	defer m.Release()
	defer ref.Release()
	bad, good := skewedBatch(300, 7), skewedBatch(300, 8)
	bad.Column("watch").F32[9] = -2e38 // the mean label is finite, the squared errors are not
	before := modelState(m)
	_, err := m.TrainStep(bad)
	var nf *NonFiniteLossError
	require.True(t, errors.As(err, &nf), "%v", err)
	assert.Equal(t, 0, nf.Step)
	require.Equal(t, before, modelState(m))
	st, err := m.TrainStep(good)
	require.NoError(t, err)
	stRef, err := ref.TrainStep(good)
	require.NoError(t, err)
	assert.Equal(t, stRef.Loss, st.Loss)
	assert.Equal(t, modelState(ref), modelState(m))
}
