package cli

import (
	"bytes"
	"flag"
	"reflect"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/mtlrank/mtlrank/mtl"
	"github.com/mtlrank/mtlrank/schema"
)

// TestModelFlagsReachConfig: each model flag of train sets its Config field
// (mtl.TestConfigWiring checks that each field changes the computation in
// the documented way) and nothing else; the aliases set the same fields.
func TestModelFlagsReachConfig(t *testing.T) {
	cases := []struct {
		args []string
		want func(*mtl.Config)
	}{
		{[]string{"--model", "ple"}, func(c *mtl.Config) { c.Model = "ple" }},
		{[]string{"--mlp_layers", "7,3"}, func(c *mtl.Config) { c.MLPLayers = []int{7, 3} }},
		{[]string{"--expert_mlp_layers", "9,5"}, func(c *mtl.Config) { c.ExpertMLPLayers = []int{9, 5} }},
		{[]string{"--mmoe_num_mlp_experts", "6"}, func(c *mtl.Config) { c.MMoENumExperts = 6 }},
		{[]string{"--cgc_num_task_experts", "3"}, func(c *mtl.Config) { c.CGCTaskExperts = 3 }},
		{[]string{"--cgc_num_shared_experts", "4"}, func(c *mtl.Config) { c.CGCSharedExperts = 4 }},
		{[]string{"--ple_num_layers", "3"}, func(c *mtl.Config) { c.PLELayers = 3 }},
		{[]string{"--ple_gates_on_input", "true"}, func(c *mtl.Config) { c.PLEGatesOnInput = true }},
		{[]string{"--dcn_interacted_layer_num", "3"}, func(c *mtl.Config) { c.DCNInteractedLayerNum = 3 }},
		{[]string{"--embeddings_dim", "24"}, func(c *mtl.Config) { c.EmbeddingsDim = 24 }},
		{[]string{"--gate_dim", "0"}, func(c *mtl.Config) { c.GateDim = 0 }},
		{[]string{"--mtl_gates_softmax_temperature", "0.25"}, func(c *mtl.Config) { c.GateTemperature = 0.25 }},
		{[]string{"--use_task_towers", "False"}, func(c *mtl.Config) { c.UseTaskTowers = false }},
		{[]string{"--tower_layers", "16,8"}, func(c *mtl.Config) { c.TowerLayers = []int{16, 8} }},
		{[]string{"--activation", "linear"}, func(c *mtl.Config) { c.Activation = "linear" }},
		{[]string{"--dropout", "0.3"}, func(c *mtl.Config) { c.Dropout = 0.3 }},
		{[]string{"--embedding_sizes_multiplier", "4.5"}, func(c *mtl.Config) { c.EmbeddingDimMultiplier = 4.5 }},
		{[]string{"--list_combiner", "sqrtn"}, func(c *mtl.Config) { c.ListCombiner = "sqrtn" }},
		{[]string{"--l2_reg", "0.01"}, func(c *mtl.Config) { c.L2Reg = 0.01 }},
		{[]string{"--embeddings_l2_reg", "0.02"}, func(c *mtl.Config) { c.EmbeddingL2Reg = 0.02 }},
		{[]string{"--optimizer", "adagrad"}, func(c *mtl.Config) { c.Optimizer = "adagrad" }},
		{[]string{"--lr", "0.05"}, func(c *mtl.Config) { c.LR = 0.05 }},
		{[]string{"--lr_decay_rate", "0.5"}, func(c *mtl.Config) { c.LRDecayRate = 0.5 }},
		{[]string{"--lr_decay_steps", "7"}, func(c *mtl.Config) { c.LRDecaySteps = 7 }},
		{[]string{"--random_seed", "9"}, func(c *mtl.Config) { c.Seed = 9 }},
		{[]string{"--init_output_bias", "true"}, func(c *mtl.Config) { c.InitOutputBias = true }},
		{[]string{"--init_output_bias", "false"}, func(c *mtl.Config) { c.InitOutputBias = false }},
		{[]string{"--cuda_graph", "true"}, func(c *mtl.Config) { c.CUDAGraph = true }},
	}
	for _, tc := range cases {
		t.Run(strings.Join(tc.args, "="), func(t *testing.T) {
			var a trainArgs
			var out bytes.Buffer
			_, set, err := parseTrainArgs(&env{stdout: &out, stderr: &out}, tc.args, &a, "x", "")
			require.NoError(t, err)
			require.True(t, set[strings.TrimPrefix(tc.args[0], "--")])
			want := merlinDefaults()
			tc.want(&want)
			require.Equal(t, want, a.cfg)
		})
	}

	// the PyTorch reference's names (registered where aliases is set)
	for _, tc := range []struct {
		flag string
		get  func(*mtl.Config) int
	}{
		{"num_experts", func(c *mtl.Config) int { return c.MMoENumExperts }},
		{"num_task_experts", func(c *mtl.Config) int { return c.CGCTaskExperts }},
		{"num_shared_experts", func(c *mtl.Config) int { return c.CGCSharedExperts }},
	} {
		cfg := mtl.DefaultConfig()
		fs := flag.NewFlagSet("x", flag.ContinueOnError)
		registerModelFlags(fs, &cfg, true)
		_, err := parseFlags(fs, []string{"--" + tc.flag, "11"})
		require.NoError(t, err)
		require.Equal(t, 11, tc.get(&cfg), "--%s", tc.flag)
	}
}

// TestModelFlagsCoverConfig: every saved Config field is reached from the
// command line, by a flag of its JSON name or by the per-task flags, or is
// listed here as library-only; and every model flag is refused together
// with --load_model_path (the checkpoint's configuration wins), not
// silently dropped.
func TestModelFlagsCoverConfig(t *testing.T) {
	other := map[string]string{
		"tasks":             "--tasks",
		"sample_space":      "--tasks_sample_space",
		"loss_weights":      "--mtl_loss_weight_<target>",
		"pos_class_weights": "--mtl_pos_class_weight_<target>",
	}
	libraryOnly := map[string]bool{
		"embedding_dims": true, // per-feature widths: Config only
		"weight_columns": true, // sample-weight columns: Config only
		"adam_beta1":     true, // Keras' defaults, as in Merlin's script
		"adam_beta2":     true,
		"adam_epsilon":   true,
	}
	var a trainArgs
	fs := flag.NewFlagSet("train", flag.ContinueOnError)
	a.register(fs)
	typ := reflect.TypeFor[mtl.Config]()
	for i := range typ.NumField() {
		name, _, _ := strings.Cut(typ.Field(i).Tag.Get("json"), ",")
		if name == "-" || libraryOnly[name] || other[name] != "" {
			continue
		}
		require.NotNil(t, fs.Lookup(name), "Config.%s (%s) has no flag", typ.Field(i).Name, name)
	}
	model := flag.NewFlagSet("model", flag.ContinueOnError)
	cfg := mtl.DefaultConfig()
	registerModelFlags(model, &cfg, true)
	model.VisitAll(func(f *flag.Flag) {
		require.Contains(t, architectureFlags, f.Name, "--%s is not refused with --load_model_path", f.Name)
	})
}

// TestTaskFlagsReachConfig: --tasks, --tasks_sample_space and the per-task
// weights fill Config's task fields.
func TestTaskFlagsReachConfig(t *testing.T) {
	bin := func(name string) *schema.Feature {
		return &schema.Feature{Name: name, DType: schema.Float32, Tags: []schema.Tag{schema.TagBinaryClassification, schema.TagTarget}}
	}
	s := &schema.Schema{Features: []*schema.Feature{
		bin("click"), bin("like"), bin("share"),
		{Name: "watch", DType: schema.Float32, Tags: []schema.Tag{schema.TagRegression, schema.TagTarget}},
	}}
	var a trainArgs
	var out bytes.Buffer
	_, _, err := parseTrainArgs(&env{stdout: &out, stderr: &out}, []string{
		"--tasks", "like,click,watch", "--tasks_sample_space", "click,,",
		"--mtl_loss_weight_watch", "0.25", "--mtl_pos_class_weight_like", "3",
	}, &a, "x", "")
	require.NoError(t, err)
	require.NoError(t, a.applyTasks(s))
	want := merlinDefaults()
	want.Tasks = []string{"like", "click", "watch"}
	want.SampleSpace = map[string]string{"like": "click"}
	want.LossWeights = map[string]float32{"watch": 0.25}
	want.PosClassWeights = map[string]float32{"like": 3}
	require.Equal(t, want, a.cfg)

	// a single binary task takes Merlin's single-task positive weight
	a = trainArgs{}
	_, _, err = parseTrainArgs(&env{stdout: &out, stderr: &out}, []string{"--tasks", "share", "--stl_positive_class_weight", "4"}, &a, "x", "")
	require.NoError(t, err)
	require.NoError(t, a.applyTasks(s))
	require.Equal(t, map[string]float32{"share": 4}, a.cfg.PosClassWeights)
}
