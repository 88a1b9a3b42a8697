package mtl

// Configuration wiring: every Config field changes what the model computes
// (its outputs, its loss or its updates) in the documented way, checked
// against the float64 references (reference_test.go, refUpdate), or is
// refused where it cannot apply. And the optimizer state of a new model.

import (
	"fmt"
	"math"
	"reflect"
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/mtlrank/mtlrank/kernels"
	"github.com/mtlrank/mtlrank/layers"
	"github.com/mtlrank/mtlrank/loader"
	"github.com/mtlrank/mtlrank/mtl/internal/step"
)

// refUpdateTol bounds |model - reference| of an updated parameter or state
// entry, relative to the size of the update plus a float32 rounding of the
// value itself: the model computes the same few operations per element in
// float32 (a relative error of a few 2^-24 on the step, which is at most
// lr / (1 - beta1^t) in size for Adam).
const refUpdateTol = 1e-5

// hostAll reads named tensors into float64 slices.
func hostAll(ts []NamedTensor) map[string][]float64 {
	out := map[string][]float64{}
	for _, n := range ts {
		h := hostT(n.Tensor)
		v := make([]float64, len(h))
		for i, x := range h {
			v[i] = float64(x)
		}
		out[n.Name] = v
	}
	return out
}

// stepGrads returns the gradient of every parameter of the step just taken
// on m (dense: the summed shard gradients with the L2 term; tables: the
// sparse gradient scattered, with the rows it touched).
func stepGrads(m *Model) (map[string][]float64, map[string]map[int]bool) {
	grads, touched := map[string][]float64{}, map[string]map[int]bool{}
	nt := len(m.input.Tables)
	for i, p := range m.params {
		var g []float32
		if i < nt {
			tb := m.input.Tables[i]
			sg := m.exec.Train().Input().SparseGrad(i)
			ids := make([]int32, sg.N)
			sg.Rows.Dev.CopyToHostI32(ids, sg.Rows.View(0, sg.N))
			vals := hostT(sg.Values)
			g = make([]float32, tb.Rows*tb.Dim)
			touched[p.Name] = map[int]bool{}
			for k, r := range ids {
				require.False(nil, touched[p.Name][int(r)], "a sparse gradient lists each row once")
				touched[p.Name][int(r)] = true
				copy(g[int(r)*tb.Dim:(int(r)+1)*tb.Dim], vals[k*tb.Dim:(k+1)*tb.Dim])
			}
		} else {
			g = hostT(m.exec.Train().Grad(i))
		}
		v := make([]float64, len(g))
		for k, x := range g {
			v[k] = float64(x)
		}
		grads[p.Name] = v
	}
	return grads, touched
}

// refUpdate checks one TrainStep of m on b against the optimizer of cfg in
// float64, from the state m holds (the initial state when m has taken no
// step): Keras' SGD, Adagrad (ApplyAdagradV2, epsilon 1e-7) and Adam
// (bias correction with t = step + 1 folded into the step size, epsilon
// added to sqrt(v)), with the staircase learning rate, applied to every
// dense parameter and to the touched rows of every embedding table (the
// other rows and their state stay as they were).
func refUpdate(t *testing.T, m *Model, cfg Config, b *loader.Batch) {
	t.Helper()
	step := m.Step()
	p0, s0 := hostAll(m.Params()), hostAll(m.OptimizerState())
	if step == 0 {
		// A new model's state is Keras' initial state, not whatever the
		// model holds: Adam's moments at 0, Adagrad's accumulators at 0.1.
		for name, v := range s0 {
			init := 0.0
			if strings.HasSuffix(name, "/accumulator") {
				init = float64(float32(0.1)) // held in float32
			}
			for i := range v {
				v[i] = init
			}
		}
	}
	_, err := m.TrainStep(b)
	require.NoError(t, err)
	require.Equal(t, step+1, m.Step())
	p1, s1 := hostAll(m.Params()), hostAll(m.OptimizerState())
	grads, touched := stepGrads(m)
	lr := float64(cfg.LR)
	if cfg.LRDecaySteps > 0 {
		lr *= math.Pow(float64(cfg.LRDecayRate), float64(step/cfg.LRDecaySteps))
	}
	b1, b2, eps := float64(cfg.AdamBeta1), float64(cfg.AdamBeta2), float64(cfg.AdamEps)
	tt := float64(step + 1)
	lrT := lr * math.Sqrt(1-math.Pow(b2, tt)) / (1 - math.Pow(b1, tt))
	for _, p := range m.Params() {
		name := p.Name
		g, w0, w1 := grads[name], p0[name], p1[name]
		dim := 1
		if tr := touched[name]; tr != nil {
			dim = p.Tensor.Cols()
		}
		for i := range w0 {
			if tr := touched[name]; tr != nil && !tr[i/dim] {
				require.Equal(t, w0[i], w1[i], "%s[%d]: a row the batch does not touch moved", name, i)
				for _, suf := range []string{"/m", "/v", "/accumulator"} {
					if s, ok := s0[name+suf]; ok {
						require.Equal(t, s[i], s1[name+suf][i], "%s%s[%d]: state of an untouched row moved", name, suf, i)
					}
				}
				continue
			}
			var want, delta, scale float64
			switch cfg.Optimizer {
			case "sgd":
				delta = lr * g[i]
			case "adagrad":
				acc := s0[name+"/accumulator"][i] + g[i]*g[i]
				requireCloseAt(t, acc, s1[name+"/accumulator"][i], refUpdateTol*acc, name+"/accumulator", i)
				delta = lr * g[i] / (math.Sqrt(acc) + 1e-7)
			case "adam":
				m0 := s0[name+"/m"][i]
				mm := b1*m0 + (1-b1)*g[i]
				vv := b2*s0[name+"/v"][i] + (1-b2)*g[i]*g[i]
				// the new moment may cancel: its error scales with its terms
				mScale := b1*math.Abs(m0) + (1-b1)*math.Abs(g[i])
				requireCloseAt(t, mm, s1[name+"/m"][i], refUpdateTol*mScale+1e-15, name+"/m", i)
				requireCloseAt(t, vv, s1[name+"/v"][i], refUpdateTol*vv+1e-15, name+"/v", i)
				delta = lrT * mm / (math.Sqrt(vv) + eps)
				scale = lrT * mScale / (math.Sqrt(vv) + eps)
			default:
				t.Fatalf("optimizer %q", cfg.Optimizer)
			}
			want = w0[i] - delta
			scale = math.Max(scale, math.Abs(delta))
			requireCloseAt(t, want, w1[i], refUpdateTol*scale+2e-7*math.Abs(w0[i])+1e-12, name, i)
		}
	}
}

func requireCloseAt(t *testing.T, want, got, tol float64, name string, i int) {
	t.Helper()
	if d := math.Abs(got - want); !(d <= tol) {
		t.Fatalf("%s[%d]: model %.10g, reference %.10g (|diff| %.3g > %.3g)", name, i, got, want, d, tol)
	}
}

// TestOptimizerUpdatesMatchReference runs three steps of each optimizer,
// with and without decay, and checks every update against refUpdate: the
// learning rate, its schedule, the Adam moments, bias correction and step
// counter, the Adagrad accumulator and its initial value all show in it.
func TestOptimizerUpdatesMatchReference(t *testing.T) {
	for _, c := range []struct {
		name   string
		mutate func(*Config)
	}{
		{"sgd", func(c *Config) { c.Optimizer = "sgd"; c.LR = 0.05 }},
		{"adagrad", func(c *Config) { c.Optimizer = "adagrad"; c.LR = 0.05 }},
		{"adam", func(c *Config) { c.Optimizer = "adam"; c.LR = 0.01 }},
		{"adam_betas_eps_decay", func(c *Config) {
			c.Optimizer = "adam"
			c.LR, c.LRDecayRate, c.LRDecaySteps = 0.01, 0.5, 2
			c.AdamBeta1, c.AdamBeta2, c.AdamEps = 0.6, 0.8, 1e-3
		}},
		{"sgd_decay", func(c *Config) { c.Optimizer = "sgd"; c.LR, c.LRDecayRate, c.LRDecaySteps = 0.05, 0.3, 1 }},
	} {
		t.Run(c.name, func(t *testing.T) {
			cfg := refConfig("ple")
			c.mutate(&cfg)
			m, err := NewModel(gradSchema(), cfg, testDev(), 16)
			require.NoError(t, err)
			defer m.Release()
			refScramble(m, 3)
			rng := layers.NewRNG(4)
			for range 3 {
				refUpdate(t, m, cfg, gradBatch(rng, 16))
			}
		})
	}
}

// TestNewModelOptimizerState: a new model has taken no step and starts
// from Keras' optimizer state: Adam moments m and v at 0, Adagrad
// accumulators at 0.1 (initial_accumulator_value), no state for SGD; one
// state tensor of the parameter's shape per parameter and slot.
func TestNewModelOptimizerState(t *testing.T) {
	for _, c := range []struct {
		optimizer string
		slots     map[string]float32
	}{
		{"adam", map[string]float32{"/m": 0, "/v": 0}},
		{"adagrad", map[string]float32{"/accumulator": 0.1}},
		{"sgd", nil},
	} {
		for _, model := range []string{"mlp", "mmoe", "cgc", "ple", "dcn", "dlrm", "deepfm", "wide_n_deep"} {
			t.Run(c.optimizer+"/"+model, func(t *testing.T) {
				cfg := refConfig(model)
				cfg.Optimizer = c.optimizer
				m, err := NewModel(gradSchema(), cfg, testDev(), 8)
				require.NoError(t, err)
				defer m.Release()
				require.Equal(t, 0, m.Step())
				state := m.OptimizerState()
				require.Len(t, state, len(c.slots)*len(m.Params()))
				byName := map[string]*kernels.Tensor{}
				for _, s := range state {
					byName[s.Name] = s.Tensor
				}
				for _, p := range m.Params() {
					for suf, init := range c.slots {
						s := byName[p.Name+suf]
						require.NotNil(t, s, "state %s%s", p.Name, suf)
						require.Equal(t, p.Tensor.Shape, s.Shape, "state %s%s", p.Name, suf)
						for i, v := range hostT(s) {
							require.Equal(t, init, v, "%s%s[%d]", p.Name, suf, i)
						}
					}
				}
			})
		}
	}
}

// refOutputBiasShift is what InitOutputBias adds to each head's bias,
// computed from the reference logits z: for a binary task the c with
// mean_i sigmoid(z_i + c) = the positive rate (kept inside
// [0.5/n, 1 - 0.5/n]), for a regression task mean_i(y_i - z_i), over the
// rows of the task's sample space (0 when it has none).
func refOutputBiasShift(r *refNet, b *loader.Batch, z [][]float64) []float64 {
	shift := make([]float64, len(r.tasks))
	for t, task := range r.tasks {
		y := b.Column(task.target).F32
		var zs []float64
		sumY := 0.0
		for i := 0; i < b.Rows; i++ {
			if c, ok := r.cfg.SampleSpace[task.target]; ok && colF32(b, c)[i] != 1 {
				continue
			}
			zs = append(zs, z[t][i])
			sumY += float64(y[i])
		}
		n := float64(len(zs))
		if n == 0 {
			continue
		}
		if !task.binary {
			for _, v := range zs {
				sumY -= v
			}
			shift[t] = sumY / n
			continue
		}
		rate := math.Min(math.Max(sumY/n, 0.5/n), 1-0.5/n)
		lo, hi := -100.0, 100.0
		for range 200 {
			c := (lo + hi) / 2
			mean := 0.0
			for _, v := range zs {
				mean += 1 / (1 + math.Exp(-(v + c)))
			}
			if mean/n < rate {
				lo = c
			} else {
				hi = c
			}
		}
		shift[t] = (lo + hi) / 2
	}
	return shift
}

// wiringEffect is what a Config field changes.
type wiringEffect int

const (
	changesOutputs   wiringEffect = iota // Predict (and with it the loss)
	changesLoss                          // the loss, not Predict
	changesTraining                      // the updates, not the first forward pass
	changesTrainLoss                     // the training step's loss only (dropout)
	changesFirstStep                     // the first step's output biases (InitOutputBias)
	// changesNoResult: an execution option that changes no result; a
	// device that cannot honour it may refuse it instead.
	changesNoResult
)

// TestConfigWiring changes one Config field at a time from a base and
// checks that the model's computation changes visibly and in the
// documented way: the changed model matches the references (Predict, loss,
// gate weights; or three optimizer steps), and its outputs, loss or
// trained parameters differ from the base model's. Every field of Config
// must have a case.
func TestConfigWiring(t *testing.T) {
	cases := []struct {
		field  string
		model  string
		mutate func(*Config)
		effect wiringEffect
		base   func(*Config) // when the field needs another base to show
	}{
		{"Model", "mmoe", func(c *Config) { c.Model = "mlp" }, changesOutputs, nil},
		{"Tasks", "mmoe", func(c *Config) { c.Tasks = []string{"watch", "click", "like"} }, changesOutputs, nil},
		{"MLPLayers", "mlp", func(c *Config) { c.MLPLayers = []int{9} }, changesOutputs, nil},
		{"ExpertMLPLayers", "mmoe", func(c *Config) { c.ExpertMLPLayers = []int{7} }, changesOutputs, nil},
		{"MMoENumExperts", "mmoe", func(c *Config) { c.MMoENumExperts = 5 }, changesOutputs, nil},
		{"CGCTaskExperts", "cgc", func(c *Config) { c.CGCTaskExperts = 1 }, changesOutputs, nil},
		{"CGCSharedExperts", "cgc", func(c *Config) { c.CGCSharedExperts = 3 }, changesOutputs, nil},
		{"PLELayers", "ple", func(c *Config) { c.PLELayers = 2 }, changesOutputs, nil},
		{"PLEGatesOnInput", "ple", func(c *Config) { c.PLEGatesOnInput = true }, changesOutputs, nil},
		{"DCNInteractedLayerNum", "dcn", func(c *Config) { c.DCNInteractedLayerNum = 3 }, changesOutputs, nil},
		{"EmbeddingsDim", "dlrm", func(c *Config) { c.EmbeddingsDim = 6 }, changesOutputs, nil},
		{"MLPLayers", "dcn", func(c *Config) { c.MLPLayers = []int{9} }, changesOutputs, nil},
		{"MLPLayers", "dlrm", func(c *Config) { c.MLPLayers = []int{9} }, changesOutputs, nil},
		{"Dropout", "dlrm", func(c *Config) { c.Dropout = 0.4 }, changesTrainLoss, nil},
		{"Activation", "dlrm", func(c *Config) { c.Activation = "linear" }, changesOutputs, nil},
		{"GateDim", "mmoe", func(c *Config) { c.GateDim = 0 }, changesOutputs, nil},
		{"GateTemperature", "mmoe", func(c *Config) { c.GateTemperature = 0.2 }, changesOutputs, nil},
		{"GateTemperature", "cgc", func(c *Config) { c.GateTemperature = 0.2 }, changesOutputs, nil},
		{"GateTemperature", "ple", func(c *Config) { c.GateTemperature = 0.2 }, changesOutputs, nil},
		{"UseTaskTowers", "mmoe", func(c *Config) { c.UseTaskTowers = false }, changesOutputs, nil},
		{"TowerLayers", "mmoe", func(c *Config) { c.TowerLayers = []int{4, 3} }, changesOutputs, nil},
		{"Activation", "mlp", func(c *Config) { c.Activation = "linear" }, changesOutputs, nil},
		{"Activation", "ple", func(c *Config) { c.Activation = "linear" }, changesOutputs, nil},
		{"Dropout", "mmoe", func(c *Config) { c.Dropout = 0.4 }, changesTrainLoss, nil},
		{"Dropout", "mlp", func(c *Config) { c.Dropout = 0.4 }, changesTrainLoss, nil},
		{"Dropout", "ple", func(c *Config) { c.Dropout = 0.4 }, changesTrainLoss, nil},
		{"EmbeddingDimMultiplier", "mmoe", func(c *Config) { c.EmbeddingDimMultiplier = 5 }, changesOutputs, nil},
		{"EmbeddingDims", "mmoe", func(c *Config) { c.EmbeddingDims = map[string]int{"tags": 3} }, changesOutputs, nil},
		{"ListCombiner", "mmoe", func(c *Config) { c.ListCombiner = "sum" }, changesOutputs, nil},
		{"ListCombiner", "mmoe", func(c *Config) { c.ListCombiner = "sqrtn" }, changesOutputs, nil},
		{"ListCombiner", "ple", func(c *Config) { c.ListCombiner = "sqrtn" }, changesOutputs, nil},
		{"L2Reg", "mmoe", func(c *Config) { c.L2Reg = 0.05 }, changesLoss, nil},
		{"EmbeddingL2Reg", "mmoe", func(c *Config) { c.EmbeddingL2Reg = 0.05 }, changesLoss, nil},
		{"LossWeights", "mmoe", func(c *Config) { c.LossWeights = map[string]float32{"like": 2.5} }, changesLoss, nil},
		{"PosClassWeights", "mmoe", func(c *Config) { c.PosClassWeights = map[string]float32{"click": 4} }, changesLoss, nil},
		{"WeightColumns", "mmoe", func(c *Config) { c.WeightColumns = map[string]string{"click": "w", "watch": "w"} }, changesLoss, nil},
		{"SampleSpace", "mmoe", func(c *Config) { c.SampleSpace = map[string]string{"like": "click", "watch": "click"} }, changesLoss, nil},
		{"Optimizer", "mmoe", func(c *Config) { c.Optimizer = "adagrad" }, changesTraining, nil},
		{"Optimizer", "mmoe", func(c *Config) { c.Optimizer = "sgd" }, changesTraining, nil},
		{"LR", "mmoe", func(c *Config) { c.LR = 0.003 }, changesTraining, nil},
		{"LRDecayRate", "mmoe", func(c *Config) { c.LRDecayRate = 0.5 }, changesTraining,
			func(c *Config) { c.LRDecaySteps = 1 }},
		{"LRDecaySteps", "mmoe", func(c *Config) { c.LRDecaySteps = 1 }, changesTraining,
			func(c *Config) { c.LRDecayRate = 0.5 }},
		{"AdamBeta1", "mmoe", func(c *Config) { c.AdamBeta1 = 0.5 }, changesTraining, nil},
		{"AdamBeta2", "mmoe", func(c *Config) { c.AdamBeta2 = 0.9 }, changesTraining, nil},
		{"AdamEps", "mmoe", func(c *Config) { c.AdamEps = 0.05 }, changesTraining, nil},
		{"Seed", "mmoe", func(c *Config) { c.Seed = 8 }, changesOutputs, nil},
		{"InitOutputBias", "mmoe", func(c *Config) { c.InitOutputBias = true }, changesFirstStep, nil},
		{"InitOutputBias", "ple", func(c *Config) { c.InitOutputBias = true }, changesFirstStep, nil},
		{"CUDAGraph", "mmoe", func(c *Config) { c.CUDAGraph = true }, changesNoResult, nil},
		{"MLPLayers", "deepfm", func(c *Config) { c.MLPLayers = []int{9} }, changesOutputs, nil},
		{"EmbeddingsDim", "deepfm", func(c *Config) { c.EmbeddingsDim = 6 }, changesOutputs, nil},
		{"MultihotMaxSeqLength", "deepfm", func(c *Config) { c.MultihotMaxSeqLength = 2 }, changesOutputs, nil},
		{"MultihotMaxSeqLength", "wide_n_deep", func(c *Config) { c.MultihotMaxSeqLength = 2 }, changesOutputs, nil},
		{"WNDHashedCrossNumBins", "wide_n_deep", func(c *Config) { c.WNDHashedCrossNumBins = 5 }, changesOutputs, nil},
		{"WNDIgnoreCombinations", "wide_n_deep", func(c *Config) { c.WNDIgnoreCombinations = []string{"hist:tags"} }, changesOutputs, nil},
		{"WNDWideL2Reg", "wide_n_deep", func(c *Config) { c.WNDWideL2Reg = 0.05 }, changesLoss, nil},
		{"Dropout", "wide_n_deep", func(c *Config) { c.Dropout = 0.4 }, changesTrainLoss, nil},
		{"Activation", "deepfm", func(c *Config) { c.Activation = "linear" }, changesOutputs, nil},
	}
	covered := map[string]bool{}
	for _, c := range cases {
		covered[c.field] = true
	}
	for i := range reflect.TypeFor[Config]().NumField() {
		f := reflect.TypeFor[Config]().Field(i).Name
		require.True(t, covered[f], "Config.%s has no wiring case", f)
	}

	s := gradSchema()
	batches := []*loader.Batch{gradBatch(layers.NewRNG(31), 16), gradBatch(layers.NewRNG(32), 16), gradBatch(layers.NewRNG(33), 11)}
	b := batches[0]
	build := func(t *testing.T, cfg Config) *Model {
		m, err := NewModel(s, cfg, testDev(), 16)
		require.NoError(t, err)
		t.Cleanup(m.Release)
		if m.wide != nil {
			wdScramble(m, 12)
		} else {
			refScramble(m, 12)
		}
		return m
	}
	predict := func(t *testing.T, m *Model) map[string][]float32 {
		out := map[string][]float32{}
		dst := make([][]float32, len(m.Tasks()))
		for i := range dst {
			dst[i] = make([]float32, b.Rows)
		}
		require.NoError(t, m.Predict(b, dst))
		for i, task := range m.Tasks() {
			out[task.Name] = dst[i]
		}
		return out
	}
	for _, c := range cases {
		t.Run(c.field+"/"+c.model, func(t *testing.T) {
			base := refConfig(c.model)
			if c.base != nil {
				c.base(&base)
			}
			cfg := base.Clone()
			c.mutate(&cfg)
			require.False(t, reflect.DeepEqual(base, cfg), "the case changes nothing")
			if c.effect == changesNoResult {
				m1, err := NewModel(s, cfg, testDev(), 16)
				if err != nil {
					require.ErrorContains(t, err, c.field)
					return
				}
				defer m1.Release()
				m0 := build(t, base)
				refScramble(m1, 12)
				for _, bb := range batches {
					st0, err := m0.TrainStep(bb)
					require.NoError(t, err)
					st1, err := m1.TrainStep(bb)
					require.NoError(t, err)
					require.Equal(t, st0, st1)
				}
				require.Equal(t, hostAll(m0.Params()), hostAll(m1.Params()))
				return
			}
			m0, m1 := build(t, base), build(t, cfg)
			var want refResult
			switch {
			case c.effect == changesTraining:
			case m1.wide != nil:
				want = wdCheck(t, m1, cfg, s, b)
			default:
				// the documented computation
				want = refCheck(t, m1, cfg, s, b)
			}
			out0, out1 := predict(t, m0), predict(t, m1)
			l0, err := m0.Loss(b)
			require.NoError(t, err)
			l1, err := m1.Loss(b)
			require.NoError(t, err)
			switch c.effect {
			case changesOutputs:
				require.Greater(t, maxOutputDiff(out0, out1), 1e-3, "Predict does not change")
			case changesLoss:
				require.Equal(t, out0, out1, "Predict changes")
				require.Greater(t, math.Abs(l1.Loss-l0.Loss), 1e-3*l0.Loss, "the loss does not change")
			case changesTrainLoss:
				require.Equal(t, out0, out1, "Predict changes")
				require.Equal(t, l0.Loss, l1.Loss, "the validation loss changes")
				st0, err := m0.TrainStep(b)
				require.NoError(t, err)
				st1, err := m1.TrainStep(b)
				require.NoError(t, err)
				require.Equal(t, l0.Loss, st0.Loss)
				require.Greater(t, math.Abs(st1.Loss-st0.Loss), 1e-3*st0.Loss, "the training loss does not change")
			case changesFirstStep:
				require.Equal(t, out0, out1, "Predict changes before the first step")
				r := newRefNet(t, m1, cfg, s)
				shifted := r.forward(b, refOutputBiasShift(r, b, want.z))
				st0, err := m0.TrainStep(b)
				require.NoError(t, err)
				st1, err := m1.TrainStep(b)
				require.NoError(t, err)
				requireClose(t, want.loss, st0.Loss, refLossTol, "first step without InitOutputBias")
				requireClose(t, shifted.loss, st1.Loss, refLossTol, "first step with InitOutputBias")
				require.Greater(t, math.Abs(st1.Loss-st0.Loss), 1e-3*st0.Loss, "the first step's loss does not change")
			case changesTraining:
				require.Equal(t, out0, out1, "Predict changes before training")
				require.Equal(t, l0.Loss, l1.Loss, "the loss changes before training")
				for _, bb := range batches {
					refUpdate(t, m1, cfg, bb)
					_, err := m0.TrainStep(bb)
					require.NoError(t, err)
				}
				require.Greater(t, maxOutputDiff(predict(t, m0), predict(t, m1)), 1e-5, "training does not change")
			}
		})
	}
}

// maxOutputDiff is the largest difference between two Predict results by
// task name (Inf when they have different tasks or task orders).
func maxOutputDiff(a, b map[string][]float32) float64 {
	if len(a) != len(b) {
		return math.Inf(1)
	}
	d := 0.0
	for name, x := range a {
		y, ok := b[name]
		if !ok {
			return math.Inf(1)
		}
		for i := range x {
			d = math.Max(d, math.Abs(float64(x[i]-y[i])))
		}
	}
	return d
}

// TestReferenceInputFeatures: the reference's input features are the
// model's (a column used as a weight or a sample space is not an input).
func TestReferenceInputFeatures(t *testing.T) {
	s := gradSchema()
	for _, c := range []struct {
		name   string
		mutate func(*Config)
		want   []string
	}{
		{"weight column left out", nil, []string{"hist", "item", "price", "tags", "user"}},
		{"no weight column: w is an input", func(c *Config) { c.WeightColumns = nil }, []string{"hist", "item", "price", "tags", "user", "w"}},
		{"sample space column left out", func(c *Config) { c.SampleSpace = map[string]string{"like": "price"} }, []string{"hist", "item", "tags", "user"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			cfg := refConfig("mmoe")
			if c.mutate != nil {
				c.mutate(&cfg)
			}
			m, err := NewModel(s, cfg, testDev(), 4)
			require.NoError(t, err)
			defer m.Release()
			r := newRefNet(t, m, cfg, s)
			var names []string
			for _, f := range r.inputFeatures() {
				names = append(names, f.Name)
			}
			require.Equal(t, c.want, names)
			var model []string
			for _, f := range m.input.Features {
				model = append(model, f.Name)
			}
			sort.Strings(model)
			require.Equal(t, c.want, model)
			require.Contains(t, m.Summary(), fmt.Sprintf("inputs: %d columns", len(c.want)))
		})
	}
}

// repeatBatch is b's rows twice.
func repeatBatch(b *loader.Batch) *loader.Batch {
	cols := map[string]*loader.Column{}
	for name, c := range b.Columns {
		d := &loader.Column{Name: name, I32: twice(c.I32), I64: twice(c.I64), F32: twice(c.F32)}
		if c.Offsets != nil {
			n := c.Offsets[len(c.Offsets)-1]
			d.Offsets = slices.Clone(c.Offsets)
			for _, o := range c.Offsets[1:] {
				d.Offsets = append(d.Offsets, n+o)
			}
		}
		cols[name] = d
	}
	return loader.NewBatch(2*b.Rows, cols, b.Source, nil)
}

func twice[T any](a []T) []T {
	if a == nil {
		return nil
	}
	return append(slices.Clone(a), a...)
}

// TestShardsDrawTheirOwnDropoutMasks: on a device that shards a training
// batch, each shard draws its own dropout masks. A batch made of the same
// rows twice, cut into two shards, gives the two shards the same loss
// without dropout and different losses with it.
func TestShardsDrawTheirOwnDropoutMasks(t *testing.T) {
	half := gradBatch(layers.NewRNG(41), step.ShardRows)
	b := repeatBatch(half)
	for _, dropout := range []float32{0, 0.5} {
		cfg := refConfig("ple")
		cfg.Dropout = dropout
		m, err := NewModel(gradSchema(), cfg, kernels.NewCPU(2), b.Rows)
		require.NoError(t, err)
		_, err = m.TrainStep(b)
		require.NoError(t, err)
		require.Equal(t, 2, m.exec.Train().Shards())
		l0, l1 := hostT(m.exec.Train().ShardLoss(0)), hostT(m.exec.Train().ShardLoss(1))
		if dropout == 0 {
			require.Equal(t, l0, l1, "the same rows without dropout")
		} else {
			for ti := range l0 {
				require.NotEqual(t, l0[ti], l1[ti], "task %d: the shards drew the same dropout masks", ti)
			}
		}
		m.Release()
	}
}
