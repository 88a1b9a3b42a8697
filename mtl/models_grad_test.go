package mtl

import (
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/mtlrank/mtlrank/kernels"
	"github.com/mtlrank/mtlrank/layers"
	"github.com/mtlrank/mtlrank/loader"
	"github.com/stretchr/testify/require"
)

// TestModelGradients checks every parameter of every architecture against
// finite differences of the objective computed independently on the host
// (refLoss), with every loss term active: loss weights, a positive-class
// weight, a weight column, a sample-space mask, L2 on kernels and on the
// batch's embeddings; inputs include lists (one sharing a table with a
// scalar), int64 ids and a continuous feature.
func TestModelGradients(t *testing.T) {
	cases := []struct {
		name   string
		model  string
		mutate func(*Config)
	}{
		{"mlp", "mlp", nil},
		{"mmoe", "mmoe", nil},
		{"cgc", "cgc", nil},
		{"ple", "ple", nil},
		{"ple_gates_on_input", "ple", func(c *Config) { c.PLEGatesOnInput = true }},
		{"mmoe_no_gate_mlp_no_towers", "mmoe", func(c *Config) { c.GateDim = 0; c.UseTaskTowers = false }},
		// inputs 16 or more wide, so that their gradients (the input of
		// gates and experts, of PLE's upper levels' groups, of mlp's
		// towers) run as one K-segmented GEMM on the CPU (kernels.GemmSum)
		{"mlp_towers_sum", "mlp", func(c *Config) { c.MLPLayers = []int{12, 16} }},
		{"ple_upper_levels_sum", "ple", func(c *Config) { c.ExpertMLPLayers = []int{6, 16} }},
		{"ple_gates_on_input_sum", "ple", func(c *Config) { c.ExpertMLPLayers = []int{8, 16}; c.PLEGatesOnInput = true }},
		{"mlp_sum_combiner_linear", "mlp", func(c *Config) { c.ListCombiner = "sum"; c.Activation = "linear" }},
		// Keras activations in the MLP, the experts and the towers
		{"mlp_gelu", "mlp", func(c *Config) { c.Activation = "gelu" }},
		{"mmoe_selu", "mmoe", func(c *Config) { c.Activation = "selu" }},
		{"cgc_swish", "cgc", func(c *Config) { c.Activation = "swish" }},
		{"ple_tanh", "ple", func(c *Config) { c.Activation = "tanh" }},
		{"mmoe_elu", "mmoe", func(c *Config) { c.Activation = "elu" }},
		{"mlp_sigmoid", "mlp", func(c *Config) { c.Activation = "sigmoid" }},
		{"ple_leaky_relu", "ple", func(c *Config) { c.Activation = "leaky_relu" }},
		{"mmoe_silu", "mmoe", func(c *Config) { c.Activation = "silu" }},
		{"dcn", "dcn", nil},
		{"dcn_one_cross_layer_elu", "dcn", func(c *Config) { c.DCNInteractedLayerNum = 1; c.Activation = "elu" }},
		{"dlrm", "dlrm", nil},
		{"dlrm_tanh_no_towers", "dlrm", func(c *Config) { c.Activation = "tanh"; c.UseTaskTowers = false }},
		{"dlrm_without_continuous_features", "dlrm", func(c *Config) { c.WeightColumns = map[string]string{"click": "w", "watch": "price"} }},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			cfg := gradConfig(c.model)
			if c.mutate != nil {
				c.mutate(&cfg)
			}
			m, err := NewModel(gradSchema(), cfg, testDev(), 16)
			require.NoError(t, err)
			defer m.Release()
			rng := layers.NewRNG(99)
			b := gradBatch(rng, 13)
			// larger, non-zero biases and embeddings than the initialisation
			// so that no gradient is trivially zero
			for _, p := range m.params {
				if !p.L2 {
					v := hostT(p.Value)
					for i := range v {
						v[i] = float32(rng.Float64()-0.5) * 0.4
					}
					p.Value.Dev.CopyFromHostF32(p.Value, v)
				}
			}

			// the device objective matches the host reference
			st, err := m.Loss(b)
			require.NoError(t, err)
			ref := refLoss(t, m, b)
			require.InDelta(t, ref, st.Loss, 1e-5*ref+1e-6, "device loss vs host reference")

			checkModelGrads(t, m, b, func() float64 { return refLoss(t, m, b) },
				fdOpts{eps: 1e-3, atol: 2e-4, rtol: 1e-2, samples: 40}, rng)
		})
	}
}

// checkModelGrads compares the gradient of every parameter of m on b
// (sparse table gradients scattered, the rows they touch always checked)
// with finite differences of loss.
func checkModelGrads(t *testing.T, m *Model, b *loader.Batch, loss func() float64, o fdOpts, rng *rand.Rand) {
	t.Helper()
	require.NoError(t, m.exec.Train().LossPass(b, layers.Mode{}, true))
	grads := make([][]float32, len(m.params))
	for i := range m.params {
		if g := m.exec.Train().Grad(i); g != nil {
			grads[i] = hostT(g)
		}
	}
	var touched [][]int
	for ti, tb := range m.input.Tables {
		d, must := sparseToDense(m.exec.Train().Input().SparseGrad(ti), tb.Rows, tb.Dim)
		grads[ti] = d
		touched = append(touched, must)
	}
	for i, p := range m.params {
		var must []int
		if i < len(touched) {
			must = touched[i][:min(len(touched[i]), 12)]
		}
		fdCheck(t, p.Name, p.Value, grads[i], loss, o, rng, must...)
	}
}

// TestModelParamNames pins the naming scheme checkpoints rely on.
func TestModelParamNames(t *testing.T) {
	for _, c := range []struct {
		model string
		want  []string
	}{
		{"mlp", []string{"input/emb/item", "input/emb/tags", "input/emb/user", "mlp/0/kernel", "mlp/1/bias",
			"tower/click/mlp/0/kernel", "tower/watch/head/bias"}},
		{"mmoe", []string{"mmoe/experts/0/kernel", "mmoe/experts/1/bias", "mmoe/gate/like/mlp/kernel", "mmoe/gate/like/logits/kernel"}},
		{"cgc", []string{"cgc/experts/0/kernel", "cgc/gate/watch/logits/kernel"}},
		{"ple", []string{"ple/level_0/experts/0/kernel", "ple/level_1/gate/shared/mlp/bias", "ple/level_2/gate/click/logits/kernel"}},
		{"dcn", []string{"dcn/cross/0/kernel", "dcn/cross/1/bias", "dcn/mlp/0/kernel", "dcn/mlp/1/bias"}},
		{"dlrm", []string{"dlrm/bottom/0/kernel", "dlrm/bottom/0/bias", "dlrm/top/0/kernel", "dlrm/top/1/bias"}},
	} {
		t.Run(c.model, func(t *testing.T) {
			m, err := NewModel(gradSchema(), gradConfig(c.model), testDev(), 4)
			require.NoError(t, err)
			defer m.Release()
			names := map[string]bool{}
			for _, p := range m.Params() {
				require.False(t, names[p.Name], "duplicate %s", p.Name)
				names[p.Name] = true
			}
			for _, w := range c.want {
				require.True(t, names[w], "missing %s in %v", w, names)
			}
			require.False(t, names["ple/level_2/gate/shared/logits/kernel"], "the last PLE level has no shared gate")
			for _, s := range m.OptimizerState() {
				require.True(t, names[s.Name[:len(s.Name)-2]], "state %s", s.Name)
			}
			require.Len(t, m.OptimizerState(), 2*len(m.Params()))
		})
	}
}

// TestModelShapes checks the architecture sizes on the tenrec schema.
func TestModelShapes(t *testing.T) {
	s := tenrecSmall()
	for _, c := range []struct {
		model string
		check func(t *testing.T, m *Model)
	}{
		{"mmoe", func(t *testing.T, m *Model) {
			b := m.body.(*mmoeBody)
			require.Equal(t, 4, b.experts.E)
			require.Equal(t, []int{4, 112, 64}, b.experts.W[0].Shape)
			require.Len(t, b.gates, 5)
			require.Equal(t, []int{112, 64}, b.gates[0].Hidden.W.Shape)
			require.Equal(t, []int{64, 4}, b.gates[0].Logits.W.Shape)
		}},
		{"ple", func(t *testing.T, m *Model) {
			b := m.body.(*pleBody)
			require.Len(t, b.levels, 2)
			require.Equal(t, []int{5*1 + 2}, b.levels[0].experts.Groups)
			require.Equal(t, []int{1, 1, 1, 1, 1, 2}, b.levels[1].experts.Groups)
			require.Equal(t, []int{7, 64, 64}, b.levels[1].experts.W[0].Shape) // 7 experts over the 64-wide outputs
			require.NotNil(t, b.levels[0].sharedGate)
			require.Equal(t, 7, b.levels[0].sharedGate.E)
			require.Equal(t, 3, b.levels[0].taskGates[0].E)
			require.Nil(t, b.levels[1].sharedGate)
		}},
		{"mlp", func(t *testing.T, m *Model) {
			b := m.body.(*mlpBody)
			require.Equal(t, []int{112, 128}, b.mlp.Layers[0].W.Shape)
			require.Equal(t, 32, b.outDim())
		}},
	} {
		t.Run(c.model, func(t *testing.T) {
			cfg := DefaultConfig()
			cfg.Model = c.model
			m, err := NewModel(s, cfg, testDev(), 8)
			require.NoError(t, err)
			defer m.Release()
			require.Equal(t, 112, m.input.OutDim) // 40 + 48 + 8 + 8 + 8
			var names []string
			for _, tk := range m.Tasks() {
				names = append(names, tk.Name)
			}
			require.Equal(t, []string{"click/binary_output", "follow/binary_output", "like/binary_output",
				"share/binary_output", "watching_times/regression_output"}, names)
			c.check(t, m)
			fmt.Fprint(nopWriter{}, m.Summary())
		})
	}
}

type nopWriter struct{}

func (nopWriter) Write(p []byte) (int, error) { return len(p), nil }

// noActivator is a device without the Activator capability (a device that
// fuses only relu and linear into its bias add): only those may be built on
// it.
type noActivator struct{ kernels.Device }

func TestActivationRefusedWithoutActivator(t *testing.T) {
	dev := noActivator{testDev()}
	for _, act := range []string{"relu", "linear"} {
		cfg := gradConfig("mmoe")
		cfg.Activation = act
		m, err := NewModel(gradSchema(), cfg, dev, 4)
		require.NoError(t, err, act)
		m.Release()
	}
	for _, act := range []string{"gelu", "selu", "swish"} {
		cfg := gradConfig("mmoe")
		cfg.Activation = act
		_, err := NewModel(gradSchema(), cfg, dev, 4)
		require.EqualError(t, err, "mtl: config Activation (activation): the cpu device does not implement the "+
			act+" activation (it runs relu and linear)", act)
	}
}
