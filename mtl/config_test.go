package mtl

import (
	"testing"

	"github.com/mtlrank/mtlrank/schema"
	"github.com/stretchr/testify/require"
)

func TestDefaultConfigValid(t *testing.T) {
	s := schema.Tenrec()
	for _, model := range []string{"mlp", "mmoe", "cgc", "ple", "dcn", "dlrm", "deepfm", "wide_n_deep"} {
		for _, opt := range []string{"adam", "adagrad", "sgd"} {
			c := DefaultConfig()
			c.Model, c.Optimizer = model, opt
			require.NoError(t, c.Validate(s), "%s/%s", model, opt)
		}
	}
	c := DefaultConfig()
	require.Equal(t, "mmoe", c.Model)
	require.Equal(t, []int{128, 64, 32}, c.MLPLayers)
	require.Equal(t, []int{64}, c.ExpertMLPLayers)
	require.Equal(t, 4, c.MMoENumExperts)
	require.Equal(t, 1, c.CGCTaskExperts)
	require.Equal(t, 2, c.CGCSharedExperts)
	require.Equal(t, 2, c.PLELayers)
	require.Equal(t, 1, c.DCNInteractedLayerNum, "Merlin's --dcn_interacted_layer_num default")
	require.Equal(t, 128, c.EmbeddingsDim, "Merlin's --embeddings_dim default")
	require.Equal(t, 64, c.GateDim)
	require.True(t, c.UseTaskTowers)
	require.Equal(t, []int{64}, c.TowerLayers)
	require.Equal(t, float32(1e-3), c.LR)
	require.Equal(t, float32(1e-7), c.AdamEps)
	require.True(t, c.InitOutputBias, "output heads start at their base rates (a documented departure from Merlin)")
}

func TestConfigErrors(t *testing.T) {
	s := gradSchema()
	cases := []struct {
		name   string
		mutate func(*Config)
		want   string
	}{
		{"unknown model", func(c *Config) { c.Model = "xdeepfm" }, `mtl: config Model (model): unknown model "xdeepfm" (want mlp, mmoe, cgc, ple, dcn, dlrm, deepfm or wide_n_deep)`},
		{"empty model", func(c *Config) { c.Model = "" }, `config Model (model): unknown model ""`},
		{"zero experts", func(c *Config) { c.MMoENumExperts = 0 }, "mtl: config MMoENumExperts (mmoe_num_mlp_experts): must be >= 1, got 0"},
		{"zero task experts", func(c *Config) { c.Model = "cgc"; c.CGCTaskExperts = 0 }, "config CGCTaskExperts (cgc_num_task_experts): must be >= 1, got 0"},
		{"zero shared experts", func(c *Config) { c.Model = "ple"; c.CGCSharedExperts = 0 }, "config CGCSharedExperts (cgc_num_shared_experts): must be >= 1, got 0"},
		{"zero ple layers", func(c *Config) { c.Model = "ple"; c.PLELayers = 0 }, "config PLELayers (ple_num_layers): must be >= 1, got 0"},
		{"negative expert dim", func(c *Config) { c.ExpertMLPLayers = []int{64, -3} }, "config ExpertMLPLayers (expert_mlp_layers): layer 1 width must be >= 1, got -3"},
		{"no expert layers", func(c *Config) { c.ExpertMLPLayers = nil }, "config ExpertMLPLayers (expert_mlp_layers): needs at least one layer"},
		{"dcn without cross layers", func(c *Config) { c.Model = "dcn"; c.DCNInteractedLayerNum = 0 },
			"config DCNInteractedLayerNum (dcn_interacted_layer_num): the number of cross layers must be >= 1, got 0"},
		{"dcn without deep layers", func(c *Config) { c.Model = "dcn"; c.MLPLayers = nil }, "config MLPLayers (mlp_layers): needs at least one layer"},
		{"dlrm without top layers", func(c *Config) { c.Model = "dlrm"; c.MLPLayers = nil }, "config MLPLayers (mlp_layers): needs at least one layer"},
		{"dlrm zero embeddings dim", func(c *Config) { c.Model = "dlrm"; c.EmbeddingsDim = 0 }, "config EmbeddingsDim (embeddings_dim): must be >= 1, got 0"},
		{"dlrm embedding dim of another width", func(c *Config) {
			c.Model = "dlrm"
			c.EmbeddingDims = map[string]int{"item": 4, "user": 8}
		}, `config EmbeddingDims (embedding_dims): "user": dim 8 differs from embeddings_dim 4; dlrm pairs embeddings of one width (embeddings_dim)`},
		{"negative mlp dim", func(c *Config) { c.Model = "mlp"; c.MLPLayers = []int{-1} }, "config MLPLayers (mlp_layers): layer 0 width must be >= 1, got -1"},
		{"zero tower dim", func(c *Config) { c.TowerLayers = []int{0} }, "config TowerLayers (tower_layers): layer 0 width must be >= 1, got 0"},
		{"negative gate dim", func(c *Config) { c.GateDim = -1 }, "config GateDim (gate_dim): must be >= 0, got -1"},
		{"zero temperature", func(c *Config) { c.GateTemperature = 0 }, "config GateTemperature (mtl_gates_softmax_temperature): must be > 0"},
		{"unknown activation", func(c *Config) { c.Activation = "softmax" }, `config Activation (activation): unknown activation "softmax" (want one of linear, relu, selu, elu, gelu, tanh, sigmoid, swish, leaky_relu, silu)`},
		{"activation names are case-sensitive", func(c *Config) { c.Activation = "ReLU" }, `unknown activation "ReLU"`},
		{"dropout one", func(c *Config) { c.Dropout = 1 }, "config Dropout (dropout): must be in [0, 1), got 1"},
		{"negative multiplier", func(c *Config) { c.EmbeddingDimMultiplier = -2 }, "config EmbeddingDimMultiplier (embedding_sizes_multiplier): must be > 0"},
		{"negative emb dim", func(c *Config) { c.EmbeddingDims = map[string]int{"user": -8} }, `config EmbeddingDims (embedding_dims): "user": dim must be >= 1, got -8`},
		{"emb dim unknown feature", func(c *Config) { c.EmbeddingDims = map[string]int{"nope": 8} }, `config EmbeddingDims (embedding_dims): "nope" is not a categorical feature`},
		{"unknown combiner", func(c *Config) { c.ListCombiner = "max" }, `config ListCombiner (list_combiner): unknown combiner "max"`},
		{"negative l2", func(c *Config) { c.L2Reg = -1 }, "config L2Reg (l2_reg): must be >= 0"},
		{"negative emb l2", func(c *Config) { c.EmbeddingL2Reg = -1 }, "config EmbeddingL2Reg (embeddings_l2_reg): must be >= 0"},
		{"target missing", func(c *Config) { c.Tasks = []string{"click", "buy"} }, `config Tasks (tasks): target "buy" is not in the schema`},
		{"task not a target", func(c *Config) { c.Tasks = []string{"user"} }, `config Tasks (tasks): column "user" is not tagged as a target`},
		{"task twice", func(c *Config) { c.Tasks = []string{"click", "click"} }, `config Tasks (tasks): target "click" listed twice`},
		{"loss weight unknown", func(c *Config) { c.LossWeights = map[string]float32{"buy": 1} }, `config LossWeights (loss_weights): "buy" is not one of the tasks`},
		{"loss weight not selected", func(c *Config) { c.Tasks = []string{"click"}; c.LossWeights = map[string]float32{"like": 1} },
			`config LossWeights (loss_weights): "like" is not one of the tasks [click]`},
		{"negative loss weight", func(c *Config) { c.LossWeights = map[string]float32{"click": -1} }, `config LossWeights (loss_weights): "click": weight must be >= 0`},
		{"pos weight regression", func(c *Config) { c.PosClassWeights = map[string]float32{"watch": 2} },
			`config PosClassWeights (pos_class_weights): "watch" is a regression task`},
		{"pos weight zero", func(c *Config) { c.PosClassWeights = map[string]float32{"click": 0} }, `config PosClassWeights (pos_class_weights): "click": weight must be > 0`},
		{"weight column missing", func(c *Config) { c.WeightColumns = map[string]string{"click": "nope"} },
			`config WeightColumns (weight_columns): "click": column "nope" is not in the schema`},
		{"weight column list", func(c *Config) { c.WeightColumns = map[string]string{"click": "hist"} },
			`config WeightColumns (weight_columns): "click": column "hist" is a list`},
		{"sample space missing", func(c *Config) { c.SampleSpace = map[string]string{"like": "purchase"} },
			`config SampleSpace (sample_space): "like": column "purchase" is not in the schema`},
		{"sample space unknown task", func(c *Config) { c.SampleSpace = map[string]string{"buy": "click"} },
			`config SampleSpace (sample_space): "buy" is not one of the tasks`},
		{"unknown optimizer", func(c *Config) { c.Optimizer = "rmsprop" }, `config Optimizer (optimizer): unknown optimizer "rmsprop"`},
		{"zero lr", func(c *Config) { c.LR = 0 }, "config LR (lr): must be > 0, got 0"},
		{"zero decay rate", func(c *Config) { c.LRDecayRate = 0 }, "config LRDecayRate (lr_decay_rate): must be > 0"},
		{"negative decay steps", func(c *Config) { c.LRDecaySteps = -1 }, "config LRDecaySteps (lr_decay_steps): must be >= 0, got -1"},
		{"beta1", func(c *Config) { c.AdamBeta1 = 1 }, "config AdamBeta1 (adam_beta1): must be in [0, 1), got 1"},
		{"beta2", func(c *Config) { c.AdamBeta2 = -0.1 }, "config AdamBeta2 (adam_beta2): must be in [0, 1)"},
		{"eps", func(c *Config) { c.AdamEps = 0 }, "config AdamEps (adam_epsilon): must be > 0"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			cfg := gradConfig("mmoe")
			c.mutate(&cfg)
			err := cfg.Validate(s)
			require.Error(t, err)
			require.Contains(t, err.Error(), c.want)
			_, err = NewModel(s, cfg, testDev(), 8)
			require.ErrorContains(t, err, c.want, "NewModel validates too")
		})
	}
}

func TestConfigIgnoresUnusedFields(t *testing.T) {
	s := gradSchema()
	c := gradConfig("mlp")
	c.MMoENumExperts = 0 // not an MMoE
	c.ExpertMLPLayers = nil
	c.AdamEps = 0 // not Adam
	c.Optimizer = "sgd"
	require.NoError(t, c.Validate(s))
}

func TestConfigTaskResolution(t *testing.T) {
	s := gradSchema()
	c := gradConfig("mlp")
	c.Tasks = nil
	m, err := NewModel(s, c, testDev(), 4)
	require.NoError(t, err)
	defer m.Release()
	require.Equal(t, []Task{
		{Name: "click/binary_output", Target: "click", Kind: Binary},
		{Name: "like/binary_output", Target: "like", Kind: Binary},
		{Name: "watch/regression_output", Target: "watch", Kind: Regression},
	}, m.Tasks())
	require.Equal(t, []string{"click", "like", "watch"}, m.Config().Tasks)

	c.Tasks = []string{"watch", "click"}
	c.SampleSpace, c.PosClassWeights, c.LossWeights = nil, nil, nil
	m2, err := NewModel(s, c, testDev(), 4)
	require.NoError(t, err)
	defer m2.Release()
	require.Equal(t, "watch/regression_output", m2.Tasks()[0].Name)
	require.Len(t, m2.Tasks(), 2)

	noTargets := &schema.Schema{Features: []*schema.Feature{cat("user", "", 3)}}
	d := DefaultConfig()
	require.ErrorContains(t, d.Validate(noTargets), "config Tasks (tasks): the schema has no target column")
}

func TestLearningRateSchedule(t *testing.T) {
	c := DefaultConfig()
	c.LR, c.LRDecayRate, c.LRDecaySteps = 0.1, 0.5, 10
	for _, tc := range []struct {
		step int
		want float32
	}{{0, 0.1}, {9, 0.1}, {10, 0.05}, {19, 0.05}, {20, 0.025}, {35, 0.0125}} {
		require.InDelta(t, tc.want, c.LearningRate(tc.step), 1e-9, "step %d", tc.step)
	}
	c.LRDecaySteps = 0
	require.Equal(t, float32(0.1), c.LearningRate(1000))
}

func TestConfigClone(t *testing.T) {
	c := gradConfig("mmoe")
	d := c.Clone()
	d.ExpertMLPLayers[0] = 99
	d.LossWeights["click"] = 5
	require.Equal(t, 6, c.ExpertMLPLayers[0])
	require.Equal(t, float32(0.7), c.LossWeights["click"])
}

// TestDLRMSchemaChecks: dlrm refuses, with a message that says why, a
// schema whose inputs give it nothing to pair, and takes one whose inputs
// give two vectors (Merlin: "DLRM requires categorical features"; the
// continuous features are optional).
func TestDLRMSchemaChecks(t *testing.T) {
	for _, c := range []struct {
		name  string
		feats []*schema.Feature
		want  string
	}{
		{"continuous only", []*schema.Feature{contFeature("a"), contFeature("b")},
			"mtl: config Model (model): dlrm needs categorical input features (it pairs their embeddings), and the schema has none"},
		{"one categorical, no continuous", []*schema.Feature{cat("user", "", 9)},
			"mtl: config Model (model): dlrm pairs the embeddings of the categorical features and the bottom MLP's output of the continuous ones; " +
				"the inputs give only one vector (1 categorical feature, no continuous one), so there is nothing to interact"},
		{"one categorical and a continuous", []*schema.Feature{cat("user", "", 9), contFeature("a")}, ""},
		{"two categorical", []*schema.Feature{cat("user", "", 9), cat("item", "", 9)}, ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			s := &schema.Schema{Features: append(c.feats, binTarget("click"))}
			cfg := DefaultConfig()
			cfg.Model, cfg.EmbeddingsDim = "dlrm", 4
			err := cfg.Validate(s)
			if c.want == "" {
				require.NoError(t, err)
				m, err := NewModel(s, cfg, testDev(), 4)
				require.NoError(t, err)
				m.Release()
				return
			}
			require.EqualError(t, err, c.want)
			_, err = NewModel(s, cfg, testDev(), 4)
			require.EqualError(t, err, c.want)
		})
	}
}
