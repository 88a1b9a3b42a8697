package cli

import (
	"bytes"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/mtlrank/mtlrank/schema"
)

// TestSyntheticPreset: a train command line without data flags gets the
// synthetic-run settings for every preset flag it does not give; with data
// flags (or for flags given) Merlin's defaults and the user's values stay.
func TestSyntheticPreset(t *testing.T) {
	type want struct {
		lr, decayRate     float32
		decaySteps        int
		epochs, batch     int
		synthRows         int64
		initBias          bool
		applied           []string
		settingsContains  []string
		settingsNotPrints []string
	}
	merlin := want{lr: 1e-4, decayRate: 0.99, decaySteps: 100, epochs: 1, batch: 1024, synthRows: 200000, initBias: true}
	cases := []struct {
		name string
		args []string
		want want
	}{
		{"bare", nil, want{lr: 0.002, decayRate: 1, decaySteps: 0, epochs: 3, batch: 512, synthRows: 200000, initBias: true,
			applied: []string{"epochs", "train_batch_size", "lr", "lr_decay_rate", "lr_decay_steps"},
			settingsContains: []string{"--synth_rows 200000 --synth_eval_rows 20000 --model mlp --epochs 3 --train_batch_size 512 --lr 0.002 --lr_decay_rate 1 --lr_decay_steps 0 --init_output_bias true",
				"--epochs, --train_batch_size, --lr, --lr_decay_rate, --lr_decay_steps: not Merlin's defaults"}}},
		{"model and rows given", []string{"--model", "ple", "--synth_rows", "5000"}, want{lr: 0.002, decayRate: 1, decaySteps: 0, epochs: 3, batch: 512, synthRows: 5000, initBias: true,
			applied:          []string{"epochs", "train_batch_size", "lr", "lr_decay_rate", "lr_decay_steps"},
			settingsContains: []string{"--synth_rows 5000 ", "--model ple "}}},
		{"lr given", []string{"--lr", "1e-4"}, want{lr: 1e-4, decayRate: 1, decaySteps: 0, epochs: 3, batch: 512, synthRows: 200000, initBias: true,
			applied:           []string{"epochs", "train_batch_size", "lr_decay_rate", "lr_decay_steps"},
			settingsContains:  []string{"--lr 0.0001 ", "--epochs, --train_batch_size, --lr_decay_rate, --lr_decay_steps: not"},
			settingsNotPrints: []string{"--lr, "}}},
		{"one decay flag keeps Merlin's decay", []string{"--lr_decay_steps", "50"}, want{lr: 0.002, decayRate: 0.99, decaySteps: 50, epochs: 3, batch: 512, synthRows: 200000, initBias: true,
			applied: []string{"epochs", "train_batch_size", "lr"}}},
		{"every preset flag given", []string{"--epochs", "2", "--train_batch_size", "256", "--lr", "0.01", "--lr_decay_rate", "0.5", "--lr_decay_steps", "10", "--init_output_bias", "false"},
			want{lr: 0.01, decayRate: 0.5, decaySteps: 10, epochs: 2, batch: 256, synthRows: 200000,
				settingsContains: []string{"--epochs 2 --train_batch_size 256 --lr 0.01 --lr_decay_rate 0.5 --lr_decay_steps 10 --init_output_bias false"}, settingsNotPrints: []string{"not Merlin's"}}},
		{"checkpoint keeps its optimizer", []string{"--load_model_path", "ckpt"}, want{lr: 1e-4, decayRate: 0.99, decaySteps: 100, epochs: 3, batch: 512, synthRows: 200000, initBias: true,
			applied:           []string{"epochs", "train_batch_size"},
			settingsContains:  []string{"learning rate and decay from the checkpoint"},
			settingsNotPrints: []string{"--lr "}}},
		{"training data: Merlin's defaults", []string{"--train_data_path", "data"}, merlin},
		{"prediction data: Merlin's defaults", []string{"--train_data_path", "data", "--predict_data_path", "p"}, merlin},
		{"zero biases as in Merlin", []string{"--train_data_path", "data", "--init_output_bias=false"},
			want{lr: 1e-4, decayRate: 0.99, decaySteps: 100, epochs: 1, batch: 1024, synthRows: 200000}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var a trainArgs
			var out bytes.Buffer
			fs, set, err := parseTrainArgs(&env{stdout: &out, stderr: &out}, tc.args, &a, "x", "")
			require.NoError(t, err)
			applied, err := a.applySyntheticPreset(fs, set)
			require.NoError(t, err)
			w := tc.want
			assert.Equal(t, w.applied, applied)
			assert.Equal(t, w.lr, a.cfg.LR)
			assert.Equal(t, w.decayRate, a.cfg.LRDecayRate)
			assert.Equal(t, w.decaySteps, a.cfg.LRDecaySteps)
			assert.Equal(t, w.epochs, a.epochs)
			assert.Equal(t, w.batch, a.trainBatch)
			assert.Equal(t, w.synthRows, a.synthRows)
			assert.Equal(t, w.initBias, a.cfg.InitOutputBias)
			for _, f := range applied {
				assert.False(t, set[f], "--%s set by the preset does not count as given (checks such as --load_model_path conflicts)", f)
			}
			settings := a.syntheticSettings(applied)
			for _, s := range w.settingsContains {
				assert.Contains(t, settings, s)
			}
			for _, s := range w.settingsNotPrints {
				assert.NotContains(t, settings, s)
			}
		})
	}
}

// TestSyntheticPresetDocumented: the help text quotes the preset exactly.
func TestSyntheticPresetDocumented(t *testing.T) {
	var parts []string
	for _, p := range syntheticPreset {
		parts = append(parts, "--"+p.flag+" "+p.value)
	}
	assert.Equal(t, strings.Join(parts, " "), syntheticPresetText)
	assert.Contains(t, trainDescription, syntheticPresetText)
}

// --cuda_graph is a CUDA option: with --device cpu it is a usage error.
func TestCUDAGraphFlagNeedsCUDA(t *testing.T) {
	cases := []struct {
		args    []string
		wantErr string
	}{
		{[]string{"--cuda_graph", "true"}, "--cuda_graph needs --device cuda (got --device cpu)"},
		{[]string{"--cuda_graph", "true", "--device", "cpu"}, "--cuda_graph needs --device cuda (got --device cpu)"},
		{[]string{"--cuda_graph", "false"}, ""},
		{[]string{"--cuda_graph", "true", "--device", "cuda"}, ""},
	}
	for _, tc := range cases {
		var a trainArgs
		var out bytes.Buffer
		_, _, err := parseTrainArgs(&env{stdout: &out, stderr: &out}, tc.args, &a, "x", "")
		require.NoError(t, err, tc.args)
		err = a.checkCommon()
		if tc.wantErr == "" {
			require.NoError(t, err, tc.args)
			continue
		}
		var ue *usageError
		require.ErrorAs(t, err, &ue, tc.args)
		assert.EqualError(t, err, tc.wantErr)
	}
}

// TestMerlinOnlyFlags: Merlin quick-start flags for features mtlrank does
// not have are accepted at their "off" values, so that such a command line
// carries over, and --stl_positive_class_weight weights the single task.
func TestMerlinOnlyFlags(t *testing.T) {
	parse := func(t *testing.T, args ...string) (*trainArgs, map[string]bool) {
		t.Helper()
		var a trainArgs
		var out bytes.Buffer
		_, set, err := parseTrainArgs(&env{stdout: &out, stderr: &out}, append([]string{"--train_data_path", "x"}, args...), &a, "x", "")
		require.NoError(t, err)
		return &a, set
	}
	a, set := parse(t, "--mlp_init", "glorot_uniform", "--in_batch_negatives_train", "0", "--in_batch_negatives_eval", "0",
		"--log_to_tensorboard", "false", "--log_to_wandb=false", "--wandb_project", "p", "--wandb_entity", "e",
		"--wandb_exp_group", "g", "--metrics_log_frequency", "10")
	require.NoError(t, a.check(set))

	// the settings of deepfm and wide_n_deep reach the Config with those
	// models and are refused with the others, like every model flag
	a, set = parse(t, "--model", "wide_n_deep", "--mlp_layers", "8,4", "--wnd_hashed_cross_num_bins", "100", "--wnd_wide_l2_reg", "0.5",
		"--wnd_ignore_combinations", "a:b,c:d", "--multihot_max_seq_length", "3")
	require.NoError(t, a.check(set))
	assert.Equal(t, 100, a.cfg.WNDHashedCrossNumBins)
	assert.Equal(t, 0.5, a.cfg.WNDWideL2Reg)
	assert.Equal(t, []string{"a:b", "c:d"}, a.cfg.WNDIgnoreCombinations)
	assert.Equal(t, 3, a.cfg.MultihotMaxSeqLength)
	a, set = parse(t, "--model", "deepfm", "--embeddings_dim", "16", "--multihot_max_seq_length", "2")
	require.NoError(t, a.check(set))
	assert.Equal(t, 16, a.cfg.EmbeddingsDim)
	a, set = parse(t, "--model", "dlrm", "--embeddings_dim", "24")
	require.NoError(t, a.check(set))
	assert.Equal(t, 24, a.cfg.EmbeddingsDim)
	for _, args := range [][]string{
		{"--embeddings_dim", "64"},
		{"--model", "dcn", "--embeddings_dim", "64"},
		{"--model", "dlrm", "--multihot_max_seq_length", "3"},
		{"--model", "wide_n_deep", "--embeddings_dim", "64"},
		{"--model", "deepfm", "--wnd_hashed_cross_num_bins", "100"},
		{"--wnd_wide_l2_reg", "0"},
		{"--model", "mmoe", "--wnd_ignore_combinations", "a:b"},
		{"--multihot_max_seq_length", "3"},
	} {
		a, set = parse(t, args...)
		var ue *usageError
		require.ErrorAs(t, a.check(set), &ue, args)
		assert.Contains(t, a.check(set).Error(), "does not apply to --model", args)
	}

	s := schema.Tenrec()
	a, set = parse(t, "--tasks", "like", "--stl_positive_class_weight", "4")
	require.NoError(t, a.check(set))
	require.NoError(t, a.applyTasks(s))
	assert.Equal(t, map[string]float32{"like": 4}, a.cfg.PosClassWeights)

	// a weight of 1 changes nothing, whatever the number of tasks (Merlin ignores it then)
	a, set = parse(t, "--stl_positive_class_weight", "1")
	require.NoError(t, a.check(set))
	require.NoError(t, a.applyTasks(s))
	assert.Empty(t, a.cfg.PosClassWeights)
}
