// Package tests holds end-to-end tests that drive the mtlrank command line
// in-process (cli.Run) across packages: synth -> train -> eval -> predict,
// flag errors, checkpoint round trips and resumption.
package tests

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/apache/arrow-go/v18/parquet/pqarrow"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/mtlrank/mtlrank/cmd/mtlrank/cli"
	"github.com/mtlrank/mtlrank/internal/tbevents/tbread"
	"github.com/mtlrank/mtlrank/loader"
	"github.com/mtlrank/mtlrank/loader/synth"
	"github.com/mtlrank/mtlrank/preprocess"
	"github.com/mtlrank/mtlrank/schema"
)

// run executes the CLI and returns its exit status, stdout and stderr.
func run(t testing.TB, args ...string) (int, string, string) {
	t.Helper()
	var out, errb bytes.Buffer
	code := cli.RunContext(context.Background(), args, &out, &errb)
	return code, out.String(), errb.String()
}

// mustRun fails the test when the command does not succeed.
func mustRun(t testing.TB, args ...string) string {
	t.Helper()
	code, out, errs := run(t, args...)
	require.Equal(t, 0, code, "mtlrank %s\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), out, errs)
	return out
}

// The shared dataset: TenRec-like schema with small id tables and dense
// rare tasks, so that every task has enough positives to be learned from
// 24k rows in a few seconds.
var (
	dataOnce sync.Once
	dataDir  string
	dataErr  error
)

func sharedData(t *testing.T) string {
	t.Helper()
	dataOnce.Do(func() {
		dataDir, dataErr = os.MkdirTemp("", "mtlrank-e2e-")
		if dataErr != nil {
			return
		}
		code, out, errs := run(t, "synth", "--output_path", dataDir, "--rows", "24000", "--eval_rows", "8000",
			"--table_rows", "400", "--row_group_rows", "4096", "--random_seed", "7", "--quiet",
			"--base_rate_click", "0.3", "--base_rate_like", "0.2", "--base_rate_share", "0.15", "--base_rate_follow", "0.15")
		if code != 0 {
			dataErr = errors.New("synth failed: " + out + errs)
		}
	})
	require.NoError(t, dataErr)
	return dataDir
}

func TestMain(m *testing.M) {
	code := m.Run()
	if dataDir != "" {
		os.RemoveAll(dataDir)
	}
	os.Exit(code)
}

// readMetrics reads the "eval" section of a metrics.json.
func readMetrics(t *testing.T, path string) map[string]*float64 {
	t.Helper()
	raw, err := os.ReadFile(path)
	require.NoError(t, err)
	var doc struct {
		Eval map[string]*float64 `json:"eval"`
	}
	require.NoError(t, json.Unmarshal(raw, &doc))
	require.NotEmpty(t, doc.Eval, "metrics.json has an eval section")
	return doc.Eval
}

func metric(t *testing.T, m map[string]*float64, key string) float64 {
	t.Helper()
	v, ok := m[key]
	require.True(t, ok, "metric %s missing", key)
	require.NotNil(t, v, "metric %s is null", key)
	return *v
}

// constantLogloss is the logloss of always predicting the base rate p.
func constantLogloss(p float64) float64 { return -(p*math.Log(p) + (1-p)*math.Log(1-p)) }

// TestArchitecturesBeatConstant trains each architecture through the CLI
// and requires, on the held-out data and for every task: AUC >= 0.65
// (a constant predictor has 0.5), logloss at least 5% below the logloss of
// the constant base-rate predictor, and RMSE at least 30% below the RMSE
// of the best constant (the label's standard deviation). The oracle bounds
// what is possible: AUCs around 0.81, RMSE 0.48 against 1.40 for the
// constant; the models reach AUCs around 0.75.
func TestArchitecturesBeatConstant(t *testing.T) {
	if testing.Short() {
		t.Skip("trains four models to a quality bar")
	}
	data := sharedData(t)
	oracle, err := synth.ReadOracle(filepath.Join(data, "eval"))
	require.NoError(t, err)
	for _, model := range []string{"mlp", "mmoe", "cgc", "ple"} {
		t.Run(model, func(t *testing.T) {
			out := t.TempDir()
			args := []string{"train", "--train_data_path", filepath.Join(data, "train"), "--eval_data_path", filepath.Join(data, "eval"),
				"--model", model, "--epochs", "3", "--lr", "0.003", "--lr_decay_rate", "1", "--lr_decay_steps", "0",
				"--train_batch_size", "256", "--eval_batch_size", "2048", "--validation_steps", "0", "--train_metrics_steps", "0",
				"--output_path", out, "--threads", "1", "--quiet", "--random_seed", "3"}
			args = append(args, modelFlags(model)...)
			if model == "ple" {
				args = append(args, "--ple_num_layers", "2")
			}
			stdout := mustRun(t, append(args, "--tower_layers", "16")...)
			assert.Contains(t, stdout, "oracle_auc", "the table shows the oracle next to the model")
			m := readMetrics(t, filepath.Join(out, "metrics.json"))
			for _, target := range []string{"click", "like", "share", "follow"} {
				key := target + "/binary_output/"
				auc := metric(t, m, key+"auc")
				ll := metric(t, m, key+"logloss")
				base := oracle.BaseRate[target]
				t.Logf("%s: auc %.4f (oracle %.4f), logloss %.4f (constant %.4f)", target, auc, oracle.AUC[target], ll, constantLogloss(base))
				assert.GreaterOrEqual(t, auc, 0.65, "%s AUC (oracle %.3f)", target, oracle.AUC[target])
				assert.Less(t, ll, 0.95*constantLogloss(base), "%s logloss vs constant %.4f", target, constantLogloss(base))
			}
			rmse := metric(t, m, "watching_times/regression_output/rmse")
			t.Logf("watching_times: rmse %.4f (constant %.4f, oracle %.4f)", rmse, oracle.ConstantRMSE["watching_times"], oracle.RMSE["watching_times"])
			assert.Less(t, rmse, 0.7*oracle.ConstantRMSE["watching_times"], "RMSE vs constant %.3f", oracle.ConstantRMSE["watching_times"])
		})
	}
}

// modelFlags are the layer sizes the end-to-end tests give each model.
func modelFlags(model string) []string {
	switch model {
	case "mlp":
		return []string{"--mlp_layers", "64,32"}
	case "mmoe":
		return []string{"--expert_mlp_layers", "32", "--mmoe_num_mlp_experts", "3", "--gate_dim", "16"}
	}
	return []string{"--expert_mlp_layers", "32", "--gate_dim", "16"}
}

// TestTrainEvalPredictRoundTrip: train and save, evaluate the reloaded
// model (same metrics), predict with it, and continue training from the
// checkpoint (same result as an uninterrupted run).
func TestTrainEvalPredictRoundTrip(t *testing.T) {
	data := sharedData(t)
	train, eval := filepath.Join(data, "train"), filepath.Join(data, "eval")
	out := t.TempDir()
	common := []string{"--model", "mmoe", "--expert_mlp_layers", "16", "--gate_dim", "8", "--tower_layers", "8",
		"--lr", "0.003", "--train_batch_size", "512", "--eval_batch_size", "1000", "--validation_steps", "0",
		"--train_metrics_steps", "5", "--threads", "1", "--quiet", "--dropout", "0.1",
		"--tasks", "click,like,watching_times", "--tasks_sample_space", ",click,", "--mtl_loss_weight_watching_times", "0.5",
		"--mtl_pos_class_weight_like", "2"}

	// Two epochs in one go.
	full := filepath.Join(out, "full")
	mustRun(t, append([]string{"train", "--train_data_path", train, "--eval_data_path", eval, "--epochs", "2",
		"--save_model_path", filepath.Join(full, "model"), "--output_path", full}, common...)...)
	fullMetrics := readMetrics(t, filepath.Join(full, "metrics.json"))

	// One epoch, save, then one more epoch from the checkpoint.
	half := filepath.Join(out, "half")
	mustRun(t, append([]string{"train", "--train_data_path", train, "--eval_data_path", eval, "--epochs", "1",
		"--save_model_path", filepath.Join(half, "model"), "--output_path", half}, common...)...)
	resumed := filepath.Join(out, "resumed")
	mustRun(t, "train", "--train_data_path", train, "--eval_data_path", eval, "--epochs", "1",
		"--load_model_path", filepath.Join(half, "model"), "--save_model_path", filepath.Join(resumed, "model"),
		"--output_path", resumed, "--train_batch_size", "512", "--eval_batch_size", "1000", "--validation_steps", "0",
		"--train_metrics_steps", "5", "--threads", "1", "--quiet")
	resMetrics := readMetrics(t, filepath.Join(resumed, "metrics.json"))
	for _, k := range []string{"loss", "auc_avg", "click/binary_output/auc", "like/binary_output/auc", "watching_times/regression_output/rmse"} {
		assert.InDelta(t, metric(t, fullMetrics, k), metric(t, resMetrics, k), 1e-6, "%s: resumed run equals the uninterrupted one", k)
	}
	// like is evaluated inside its sample space (click == 1) only.
	assert.Less(t, metric(t, fullMetrics, "like/binary_output/count"), metric(t, fullMetrics, "click/binary_output/count"))

	// eval of the reloaded model gives the metrics of the training run.
	evalOut := filepath.Join(out, "eval")
	stdout := mustRun(t, "eval", "--load_model_path", filepath.Join(full, "model"), "--eval_data_path", eval,
		"--output_path", evalOut, "--eval_batch_size", "1000", "--threads", "1", "--quiet")
	assert.Contains(t, stdout, "click/binary_output")
	reMetrics := readMetrics(t, filepath.Join(evalOut, "metrics.json"))
	for _, k := range []string{"loss", "auc_avg", "click/binary_output/auc", "click/binary_output/logloss", "watching_times/regression_output/rmse"} {
		assert.InDelta(t, metric(t, fullMetrics, k), metric(t, reMetrics, k), 1e-9, k)
	}

	// predict: one score column per task next to the kept columns, rows in
	// input order, probabilities in (0, 1).
	predOut := filepath.Join(out, "preds.parquet")
	stdout = mustRun(t, "predict", "--load_model_path", filepath.Join(full, "model"), "--predict_data_path", eval,
		"--predict_output_path", predOut, "--predict_output_keep_cols", "user_id,click", "--threads", "1", "--quiet")
	assert.Contains(t, stdout, "Wrote 8000 predictions")
	s := &schema.Schema{Features: []*schema.Feature{
		{Name: "user_id", DType: schema.Int32},
		{Name: "click", DType: schema.Float32},
		{Name: "click/binary_output", DType: schema.Float32},
		{Name: "like/binary_output", DType: schema.Float32},
		{Name: "watching_times/regression_output", DType: schema.Float32},
	}}
	opt := loader.DefaultOptions()
	opt.BatchSize = 8000
	opt.CheckDomains = false
	ds, err := loader.Open(predOut, s, opt)
	require.NoError(t, err)
	require.Equal(t, int64(8000), ds.Rows())
	pb, err := ds.Epoch(context.Background(), 0).Next()
	require.NoError(t, err)
	defer pb.Release()

	in, err := loader.Open(eval, schemaOf(t, eval), loader.Options{BatchSize: 8000, CheckDomains: true})
	require.NoError(t, err)
	ib, err := in.Epoch(context.Background(), 0).Next()
	require.NoError(t, err)
	defer ib.Release()
	assert.Equal(t, ib.Column("user_id").I32[:8000], pb.Column("user_id").I32[:8000], "rows keep the input order")
	for _, p := range pb.Column("click/binary_output").F32[:8000] {
		require.True(t, p > 0 && p < 1, "probability %v", p)
	}
	// The scores reproduce the evaluation AUC.
	var pos, neg []float32
	for i, y := range pb.Column("click").F32[:8000] {
		if y == 1 {
			pos = append(pos, pb.Column("click/binary_output").F32[i])
		} else {
			neg = append(neg, pb.Column("click/binary_output").F32[i])
		}
	}
	assert.InDelta(t, metric(t, fullMetrics, "click/binary_output/auc"), sampledAUC(pos, neg), 0.02)
}

func schemaOf(t *testing.T, dir string) *schema.Schema {
	s, err := schema.Load(dir)
	require.NoError(t, err)
	return s
}

// sampledAUC compares every 7th positive with every 7th negative (enough
// for a 0.02 tolerance, cheap enough for a test).
func sampledAUC(pos, neg []float32) float64 {
	var num, den float64
	for i := 0; i < len(pos); i += 7 {
		for j := 0; j < len(neg); j += 7 {
			den++
			switch {
			case pos[i] > neg[j]:
				num++
			case pos[i] == neg[j]:
				num += 0.5
			}
		}
	}
	return num / den
}

// TestTrainWithoutDataUsesSynthetic: no data flag -> synthetic tenrec data,
// the settings used on stdout (the synthetic preset for the flags not
// given), a table and metrics.json with the oracle.
func TestTrainWithoutDataUsesSynthetic(t *testing.T) {
	out := t.TempDir()
	stdout := mustRun(t, "train", "--output_path", out, "--synth_rows", "4096", "--synth_eval_rows", "2048",
		"--table_rows", "300", "--model", "cgc", "--quiet", "--threads", "1", "--train_batch_size", "256")
	assert.Contains(t, stdout, "Synthetic TenRec-like data (no data flags): --synth_rows 4096 --synth_eval_rows 2048 --model cgc --epochs 3 --train_batch_size 256 --lr 0.002 --lr_decay_rate 1 --lr_decay_steps 0")
	assert.Contains(t, stdout, "--epochs, --lr, --lr_decay_rate, --lr_decay_steps: not Merlin's defaults")
	assert.Contains(t, stdout, "after 3 epochs, 48 steps", "4096 rows / 256 = 16 steps per epoch")
	assert.Contains(t, stdout, "oracle_auc")
	assert.Contains(t, stdout, "auc_avg")
	raw, err := os.ReadFile(filepath.Join(out, "metrics.json"))
	require.NoError(t, err)
	assert.Contains(t, string(raw), `"oracle"`)
	var doc struct {
		Preset []string `json:"synthetic_preset"`
	}
	require.NoError(t, json.Unmarshal(raw, &doc))
	assert.Equal(t, []string{"epochs", "lr", "lr_decay_rate", "lr_decay_steps"}, doc.Preset)
	assert.DirExists(t, filepath.Join(out, "data", "train"))
}

// TestBareTrainLearns: 'mtlrank train' with no flags at all (but where to
// write) must show a newcomer a model that learns. With Merlin's defaults
// (lr 1e-4 decayed, 1 epoch, 100k rows) the evaluation auc_avg was 0.48;
// the synthetic preset gives about 0.75 (click 0.75 against an oracle of
// 0.80) in a few seconds.
func TestBareTrainLearns(t *testing.T) {
	if testing.Short() {
		t.Skip("trains on 200k rows")
	}
	out := t.TempDir()
	stdout := mustRun(t, "train", "--output_path", out, "--quiet", "--threads", "1")
	assert.Contains(t, stdout, "--model mlp --epochs 3 --train_batch_size 512 --lr 0.002")
	m := readMetrics(t, filepath.Join(out, "metrics.json"))
	assert.Greater(t, metric(t, m, "auc_avg"), 0.68)
	assert.Greater(t, metric(t, m, "click/binary_output/auc"), 0.72)
	assert.Greater(t, metric(t, m, "like/binary_output/auc"), 0.68)
}

// TestBadFlags: every mistake exits with status 2 and a message naming
// the problem; nothing is trained.
func TestBadFlags(t *testing.T) {
	data := sharedData(t)
	train := filepath.Join(data, "train")
	cases := []struct {
		name string
		args []string
		want string
	}{
		{"no command", nil, "Usage: mtlrank <command>"},
		{"unknown command", []string{"fit"}, `unknown command "fit"`},
		{"unknown flag", []string{"train", "--learning_rate", "0.1"}, "unknown flag --learning_rate"},
		{"typo suggestion", []string{"train", "--epoch", "2"}, "did you mean --epochs?"},
		{"malformed int", []string{"train", "--epochs", "two"}, "--epochs"},
		{"malformed list", []string{"train", "--mlp_layers", "64,x"}, `"x" is not an integer`},
		{"negative layer", []string{"train", "--mlp_layers", "64,-3"}, "layer size must be positive"},
		{"malformed bool", []string{"train", "--use_task_towers=maybe"}, "boolean value expected"},
		{"positional", []string{"train", "extra"}, `unexpected argument "extra"`},
		{"bad model", []string{"train", "--model", "lightgbm"}, "--model must be mlp, mmoe, cgc, ple, dcn, dlrm, deepfm or wide_n_deep"},
		{"deepfm and dlrm flag with dcn", []string{"train", "--model", "dcn", "--embeddings_dim", "16"}, "--embeddings_dim does not apply to --model dcn (only to dlrm, deepfm)"},
		{"no cross layers", []string{"train", "--model", "dcn", "--dcn_interacted_layer_num", "0"}, "dcn_interacted_layer_num): the number of cross layers must be >= 1, got 0"},
		{"flag of another model", []string{"train", "--model", "mmoe", "--cgc_num_shared_experts", "3"}, "--cgc_num_shared_experts does not apply to --model mmoe"},
		{"towers off", []string{"train", "--use_task_towers", "False", "--tower_layers", "32"}, "--use_task_towers is false"},
		{"zero epochs", []string{"train", "--epochs", "0"}, "--epochs must be >= 1"},
		{"zero batch", []string{"train", "--train_batch_size", "0"}, "--train_batch_size must be >= 1"},
		{"bad device", []string{"train", "--device", "tpu"}, "--device must be cpu or cuda"},
		{"json predictions", []string{"train", "--predict_output_format", "json"}, "--predict_output_format must be parquet, csv or tsv"},
		{"format contradicts the extension", []string{"predict", "--load_model_path", "x", "--predict_data_path", train, "--predict_output_path", "s.csv", "--predict_output_format", "parquet"},
			"--predict_output_path and --predict_output_format disagree: s.csv has the extension of csv but the format is parquet"},
		{"format contradicts the extension in train", []string{"train", "--train_data_path", train, "--predict_data_path", train, "--predict_output_path", "s.parquet", "--predict_output_format", "tsv"},
			"s.parquet has the extension of parquet but the format is tsv"},
		{"sample space misaligned", []string{"train", "--tasks", "click,like", "--tasks_sample_space", "click"}, "must align"},
		{"sample space without tasks", []string{"train", "--tasks_sample_space", ",click"}, "needs an explicit --tasks"},
		{"eval without train", []string{"train", "--eval_data_path", train}, "--train_data_path or --load_model_path is required"},
		{"predict without train or model", []string{"train", "--predict_data_path", train}, "--train_data_path or --load_model_path is required"},
		{"schema for synthetic", []string{"train", "--schema_path", "x.pbtxt"}, "--schema_path needs --train_data_path"},
		{"synthetic flag with data", []string{"train", "--train_data_path", train, "--synth_rows", "10"}, "applies to synthetic data only"},
		{"early stopping without eval", []string{"train", "--train_data_path", train, "--early_stopping_metric", "auc_avg"}, "needs --eval_data_path"},
		{"early stopping flags without metric", []string{"train", "--early_stopping_patience", "3"}, "need --early_stopping_metric"},
		{"architecture with checkpoint", []string{"train", "--train_data_path", train, "--load_model_path", "x", "--model", "ple"}, "cannot be combined with --load_model_path"},
		{"dynamic flag without value", []string{"train", "--mtl_loss_weight_click"}, "needs a value"},
		{"dynamic flag malformed", []string{"train", "--mtl_loss_weight_click=heavy"}, `"heavy" is not a finite number`},
		{"dynamic flag negative", []string{"train", "--mtl_pos_class_weight_like", "-1"}, "must be >= 0"},
		{"dynamic flag twice", []string{"train", "--mtl_loss_weight_click=1", "--mtl_loss_weight_click=2"}, "given twice"},
		{"dynamic flag without target", []string{"train", "--mtl_loss_weight_=2"}, "needs a target name"},
		{"task not in schema", []string{"train", "--train_data_path", train, "--tasks", "purchase"}, `"purchase" is not a column of the schema`},
		{"task not a target", []string{"train", "--train_data_path", train, "--tasks", "user_id"}, "not tagged as a target"},
		{"weight for unknown task", []string{"train", "--train_data_path", train, "--tasks", "click", "--mtl_loss_weight_like", "2"}, "not one of the tasks"},
		{"pos weight for regression", []string{"train", "--train_data_path", train, "--mtl_pos_class_weight_watching_times", "2"}, "not a binary target"},
		{"sample space column missing", []string{"train", "--train_data_path", train, "--tasks", "click,like", "--tasks_sample_space", ",clicked"}, `"clicked" is not a column`},
		{"keep column missing", []string{"train", "--train_data_path", train, "--ignore_columns", "nope"}, `--ignore_columns: "nope"`},
		{"keep cols without predict", []string{"train", "--predict_output_keep_cols", "user_id"}, "needs --predict_data_path"},
		{"stl weight with several tasks", []string{"train", "--train_data_path", train, "--stl_positive_class_weight", "3"}, "applies when one task is trained, but there are 5"},
		{"stl and per-task weight", []string{"train", "--train_data_path", train, "--tasks", "like", "--stl_positive_class_weight", "3", "--mtl_pos_class_weight_like", "2"}, `both weight task "like"`},
		{"stl weight of regression", []string{"train", "--train_data_path", train, "--tasks", "watching_times", "--stl_positive_class_weight", "3"}, "not a binary target"},
		{"stl weight zero", []string{"train", "--stl_positive_class_weight", "0"}, "--stl_positive_class_weight must be > 0"},
		{"mlp init", []string{"train", "--mlp_init", "he_normal"}, `--mlp_init "he_normal" is not supported`},
		{"in-batch negatives", []string{"train", "--in_batch_negatives_train", "4"}, "in-batch negative sampling is not implemented"},
		{"wandb logging", []string{"train", "--log_to_wandb"}, "--log_to_wandb is not supported"},
		{"negative tensorboard period", []string{"train", "--metrics_log_frequency", "-1"}, "--metrics_log_frequency must be >= 0, got -1"},
		{"eval without model", []string{"eval", "--eval_data_path", train}, "--load_model_path is required"},
		{"eval without data", []string{"eval", "--load_model_path", "x"}, "--eval_data_path is required"},
		{"predict without output", []string{"predict", "--load_model_path", "x", "--predict_data_path", train}, "--predict_output_path is required"},
		{"synth without output", []string{"synth"}, "--output_path is required"},
		{"synth bad correlation", []string{"synth", "--output_path", "x", "--task_correlation", "2"}, "--task_correlation must be in [0, 1]"},
		{"synth bad base rate", []string{"synth", "--output_path", "x", "--base_rate_click", "1.5"}, "strictly between 0 and 1"},
		{"synth base rate of regression", []string{"synth", "--output_path", "x", "--base_rate_watching_times", "0.5"}, "not a binary target"},
		{"synth rho without paper", []string{"synth", "--output_path", "x", "--rho", "0.3"}, "applies to --generator mmoe_paper only"},
		{"preprocess without data", []string{"preprocess"}, "--data_path is required"},
		{"preprocess split and eval", []string{"preprocess", "--data_path", "a.csv", "--eval_data_path", "b.csv", "--dataset_split_strategy", "random", "--random_split_eval_perc", "0.2"}, "both given"},
		{"preprocess bad format", []string{"preprocess", "--data_path", "a.csv", "--input_data_format", "xlsx"}, "--input_data_format"},
		{"schema without subcommand", []string{"schema"}, "a subcommand is required"},
		{"schema unknown subcommand", []string{"schema", "fix", "x"}, `unknown subcommand "fix"`},
		{"schema convert arity", []string{"schema", "convert", "a.pbtxt"}, "takes 2 path argument(s)"},
		{"bench bad mode", []string{"bench", "--mode", "serve"}, "--mode must be train, infer or both"},
		{"bench alias twice", []string{"bench", "--num_experts", "2", "--mmoe_num_mlp_experts", "3"}, "same setting"},
		{"bench flag of other model", []string{"bench", "--model", "mlp", "--gate_dim", "8"}, "does not apply to --model mlp"},
		{"demo bad model", []string{"demo", "--model", "xgboost"}, "--model must be"},
	}
	// The commands run in an empty folder: a refused command writes
	// nothing, not even synthetic data into the default ./output/.
	work := t.TempDir()
	t.Chdir(work)
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			code, stdout, stderr := run(t, tc.args...)
			assert.Equal(t, 2, code, "stdout: %s\nstderr: %s", stdout, stderr)
			assert.Contains(t, stderr, tc.want)
			assert.NotContains(t, stdout, "Evaluation", "nothing was trained")
			left, err := os.ReadDir(work)
			require.NoError(t, err)
			assert.Empty(t, left, "a refused command left files behind")
		})
	}
}

// TestRuntimeErrors: data problems exit with status 1 and name the file.
func TestRuntimeErrors(t *testing.T) {
	data := sharedData(t)
	missing := filepath.Join(t.TempDir(), "nowhere")
	code, _, stderr := run(t, "train", "--train_data_path", missing, "--quiet")
	assert.Equal(t, 1, code)
	assert.Contains(t, stderr, missing)

	code, _, stderr = run(t, "eval", "--load_model_path", missing, "--eval_data_path", filepath.Join(data, "eval"), "--quiet")
	assert.Equal(t, 1, code)
	assert.Contains(t, stderr, "no checkpoint folder")

	// Raw CSV handed to train: the error points to preprocess.
	csvDir := t.TempDir()
	csv := filepath.Join(csvDir, "raw.csv")
	require.NoError(t, os.WriteFile(csv, []byte("a,b\n1,2\n"), 0o644))
	code, _, stderr = run(t, "train", "--train_data_path", csv, "--quiet")
	assert.Equal(t, 1, code)
	assert.Contains(t, stderr, "no schema beside "+csv)
	assert.Contains(t, stderr, "mtlrank preprocess")

	// A checkpoint refuses data whose ids do not fit its tables.
	out := t.TempDir()
	mustRun(t, "train", "--output_path", out, "--synth_rows", "2048", "--synth_eval_rows", "1024", "--table_rows", "100",
		"--quiet", "--threads", "1", "--save_model_path", filepath.Join(out, "model"))
	code, _, stderr = run(t, "eval", "--load_model_path", filepath.Join(out, "model"), "--eval_data_path", filepath.Join(data, "eval"), "--quiet")
	assert.Equal(t, 1, code)
	assert.Contains(t, stderr, "has ids up to 399")
}

// TestHelp: every command documents every flag it accepts and exits 0.
func TestHelp(t *testing.T) {
	code, stdout, _ := run(t, "--help")
	require.Equal(t, 0, code)
	for _, c := range []string{"train", "eval", "predict", "synth", "preprocess", "schema", "bench", "demo", "version"} {
		assert.Contains(t, stdout, c)
		code, out, _ := run(t, c, "--help")
		assert.Equal(t, 0, code, c)
		assert.Contains(t, out, "Usage: mtlrank "+c, c)
	}
	_, out, _ := run(t, "train", "--help")
	for _, f := range []string{"--model", "--tasks", "--tasks_sample_space", "--mtl_loss_weight_<target>", "--mtl_pos_class_weight_<target>",
		"--expert_mlp_layers", "--mmoe_num_mlp_experts", "--cgc_num_task_experts", "--cgc_num_shared_experts", "--ple_num_layers",
		"--gate_dim", "--use_task_towers", "--tower_layers", "--mlp_layers", "--embedding_sizes_multiplier", "--dropout", "--l2_reg",
		"--lr", "--lr_decay_rate", "--lr_decay_steps", "--train_batch_size", "--eval_batch_size", "--epochs", "--optimizer",
		"--random_seed", "--train_data_path", "--eval_data_path", "--predict_data_path", "--output_path", "--save_model_path",
		"--load_model_path", "--device"} {
		assert.Contains(t, out, f)
	}
	_, out, _ = run(t, "bench", "--help")
	for _, f := range []string{"--model", "--threads", "--batch", "--steps", "--warmup", "--mode", "--device", "--table_rows"} {
		assert.Contains(t, out, f)
	}

	// What the texts say agrees with what the commands do.
	_, top, _ := run(t, "--help")
	assert.Regexp(t, `(?m)^  predict .*Parquet, CSV or TSV$`, top)
	assert.Regexp(t, `(?m)^  version `, top)
	_, out, _ = run(t, "schema", "--help")
	assert.NotContains(t, out, "Flags:", "schema has no flags of its own")
	assert.Contains(t, out, "mtlrank schema infer --help")
	_, out, _ = run(t, "schema", "infer", "--help")
	assert.Contains(t, out, "Flags:\n  --binary_classif_targets")
	_, out, _ = run(t, "train", "--help")
	assert.Contains(t, out, "  --shuffled_train[=bool]\n    \tshuffle the training data every epoch (default true)\n")
	assert.Regexp(t, `--init_output_bias\[=bool\]\n.*\(default true\)\n`, out)
	_, out, _ = run(t, "preprocess", "--help")
	for _, s := range []string{preprocess.SplitRandom, preprocess.SplitRandomByUser, preprocess.SplitByUserHoldout, preprocess.SplitTemporal} {
		assert.Contains(t, out, s, "--dataset_split_strategy lists every strategy")
	}
	// An error that suggests a strategy names one that --help lists.
	code, _, stderr := run(t, "preprocess", "--data_path", "x.csv", "--dataset_split_strategy", "chronological", "--random_split_eval_perc", "0.2")
	require.Equal(t, 2, code)
	assert.Contains(t, stderr, preprocess.SplitByUserHoldout)
	assert.Contains(t, stderr, preprocess.SplitTemporal)
}

// TestBenchJSON: bench prints one JSON object per mode with the fields of
// the PyTorch reference.
func TestBenchJSON(t *testing.T) {
	for _, model := range []string{"mlp", "ple", "dcn", "dlrm", "deepfm", "wide_n_deep"} {
		stdout := mustRun(t, "bench", "--model", model, "--threads", "1", "--batch", "128", "--steps", "2", "--warmup", "1", "--table_rows", "1000")
		lines := strings.Split(strings.TrimSpace(stdout), "\n")
		require.Len(t, lines, 2)
		for i, mode := range []string{"train", "infer"} {
			var rec map[string]any
			require.NoError(t, json.Unmarshal([]byte(lines[i]), &rec))
			assert.Equal(t, model, rec["model"])
			assert.Equal(t, mode, rec["mode"])
			assert.Equal(t, 1.0, rec["threads"])
			assert.Equal(t, 128.0, rec["batch"])
			assert.Greater(t, rec["examples_per_s"].(float64), 0.0)
		}
	}
}

// TestSchemaCommands: print, validate, convert pbtxt -> json -> pbtxt, infer.
func TestSchemaCommands(t *testing.T) {
	data := sharedData(t)
	dir := t.TempDir()
	out := mustRun(t, "schema", "print", filepath.Join(data, "train"))
	assert.Contains(t, out, "user_id")
	assert.Contains(t, out, "int [0, 399]")
	out = mustRun(t, "schema", "validate", filepath.Join(data, "train", "schema.pbtxt"))
	assert.Contains(t, out, "valid, 10 features (5 categorical, 0 continuous, 5 targets)")
	js := filepath.Join(dir, "schema.json")
	mustRun(t, "schema", "convert", filepath.Join(data, "train", "schema.pbtxt"), js)
	pb := filepath.Join(dir, "back.pbtxt")
	mustRun(t, "schema", "convert", js, pb)
	a, err := schema.Load(filepath.Join(data, "train", "schema.pbtxt"))
	require.NoError(t, err)
	b, err := schema.Load(pb)
	require.NoError(t, err)
	assert.Equal(t, a.Names(), b.Names())
	for _, f := range a.Features {
		assert.Equal(t, f.Tags, b.Feature(f.Name).Tags, f.Name)
	}
	inferred := filepath.Join(dir, "inferred.pbtxt")
	mustRun(t, "schema", "infer", filepath.Join(data, "train"), "--output", inferred,
		"--binary_classif_targets", "click,like,share,follow", "--regression_targets", "watching_times")
	s, err := schema.Load(inferred)
	require.NoError(t, err)
	assert.True(t, s.Feature("click").IsTarget())
	assert.LessOrEqual(t, s.Feature("user_id").IntDomain.Max, int64(399))

	code, _, stderr := run(t, "schema", "validate", filepath.Join(dir, "missing.pbtxt"))
	assert.Equal(t, 1, code)
	assert.Contains(t, stderr, "missing.pbtxt")
}

// TestPreprocessThenTrain: a CSV goes through preprocess and the result
// trains directly.
func TestPreprocessThenTrain(t *testing.T) {
	dir := t.TempDir()
	var b strings.Builder
	b.WriteString("user,item,price,bought,rating\n")
	for i := 0; i < 3000; i++ {
		u, it := i%37, (i*7)%23
		bought := 0
		if u%3 == 0 || it%4 == 0 {
			bought = 1
		}
		price := strconv.FormatFloat(float64(it)*1.5, 'f', -1, 64)
		if i%50 == 0 {
			price = "?" // missing, filled with the median
		}
		fmt.Fprintf(&b, "u%d,i%d,%s,%d,%.1f\n", u, it, price, bought, float64(u%5)+0.5)
	}
	csv := filepath.Join(dir, "data.csv")
	require.NoError(t, os.WriteFile(csv, []byte(b.String()), 0o644))
	out := filepath.Join(dir, "prep")
	stdout := mustRun(t, "preprocess", "--data_path", csv, "--output_path", out, "--categorical_features", "user,item",
		"--continuous_features", "price", "--continuous_features_fillna", "median", "--csv_na_values", "?",
		"--binary_classif_targets", "bought", "--regression_targets", "rating", "--user_id_feature", "user", "--item_id_feature", "item",
		"--dataset_split_strategy", "random", "--random_split_eval_perc", "0.2", "--quiet")
	assert.Contains(t, stdout, "user")
	mustRun(t, "train", "--train_data_path", filepath.Join(out, "train"), "--eval_data_path", filepath.Join(out, "eval"),
		"--model", "mmoe", "--lr", "0.01", "--epochs", "5", "--train_batch_size", "128", "--output_path", filepath.Join(dir, "run"), "--quiet", "--threads", "1")
	m := readMetrics(t, filepath.Join(dir, "run", "metrics.json"))
	// bought is a deterministic function of the user and the item ids.
	assert.Greater(t, metric(t, m, "bought/binary_output/auc"), 0.6)
}

// readAll reads every row of the Parquet dataset in dir (its own schema) as
// one batch, in file order.
func readAll(t *testing.T, dir string) *loader.Batch {
	t.Helper()
	ds, err := loader.Open(dir, schemaOf(t, dir), loader.Options{BatchSize: 1 << 20})
	require.NoError(t, err)
	b, err := ds.Epoch(context.Background(), 0).Next()
	require.NoError(t, err)
	t.Cleanup(b.Release)
	return b
}

// TestPreprocessWorkflowOnNewData: preprocess --workflow_path encodes new
// rows exactly as the fitted rows were encoded, maps unseen values to the
// out-of-vocabulary id and fills missing numbers as fitted, leaves the
// targets out with --skip_targets, and its output can be scored.
func TestPreprocessWorkflowOnNewData(t *testing.T) {
	dir := t.TempDir()
	var train, serve strings.Builder
	train.WriteString("user,item,price,bought\n")
	serve.WriteString("user,item,price\n")
	for i := 0; i < 2000; i++ {
		u, it := i%37, (i*7)%23
		bought := 0
		if u%3 == 0 || it%4 == 0 {
			bought = 1
		}
		price := strconv.FormatFloat(float64(it)*1.5, 'f', -1, 64)
		if i%50 == 0 {
			price = "?"
		}
		fmt.Fprintf(&train, "u%d,i%d,%s,%d\n", u, it, price, bought)
		if i < 100 {
			fmt.Fprintf(&serve, "u%d,i%d,%s\n", u, it, price)
		}
	}
	serve.WriteString("new-user,i3,?\n") // an unseen user and a missing price
	trainCSV, serveCSV := filepath.Join(dir, "train.csv"), filepath.Join(dir, "serve.csv")
	require.NoError(t, os.WriteFile(trainCSV, []byte(train.String()), 0o644))
	require.NoError(t, os.WriteFile(serveCSV, []byte(serve.String()), 0o644))
	prep := filepath.Join(dir, "prep")
	mustRun(t, "preprocess", "--data_path", trainCSV, "--input_data_format", "csv", "--output_path", prep,
		"--categorical_features", "user,item", "--continuous_features", "price", "--continuous_features_fillna", "median",
		"--csv_na_values", "?", "--binary_classif_targets", "bought", "--quiet")
	workflow := filepath.Join(prep, "workflow.json")

	enc := filepath.Join(dir, "enc")
	stdout := mustRun(t, "preprocess", "--workflow_path", workflow, "--data_path", serveCSV, "--output_path", enc,
		"--skip_targets", "--quiet")
	assert.Contains(t, stdout, "Encoded 101 rows")
	assert.Regexp(t, `user\s+0\s+1\n`, stdout, "one out-of-vocabulary user")
	assert.Nil(t, schemaOf(t, enc).Feature("bought"), "no target with --skip_targets")

	fitted, got := readAll(t, filepath.Join(prep, "train")), readAll(t, enc)
	require.Equal(t, 101, got.Rows)
	for _, c := range []string{"user", "item"} {
		assert.Equal(t, fitted.Column(c).I32[:100], got.Column(c).I32[:100], c)
	}
	assert.Equal(t, fitted.Column("price").F32[:100], got.Column("price").F32[:100])
	assert.Equal(t, int32(1), got.Column("user").I32[100], "unseen user -> out-of-vocabulary id")
	assert.Equal(t, fitted.Column("item").I32[7], got.Column("item").I32[100], "i3 (row 7) as fitted")
	assert.Equal(t, fitted.Column("price").F32[0], got.Column("price").F32[100], "missing price filled as fitted (row 0 has none)")

	// The encoded rows can be scored by a model trained on the fitted data.
	mustRun(t, "train", "--train_data_path", filepath.Join(prep, "train"), "--model", "mlp", "--epochs", "1",
		"--train_batch_size", "256", "--save_model_path", filepath.Join(dir, "model"), "--output_path", filepath.Join(dir, "run"),
		"--quiet", "--threads", "1")
	stdout = mustRun(t, "predict", "--load_model_path", filepath.Join(dir, "model"), "--predict_data_path", enc,
		"--predict_output_path", filepath.Join(dir, "pred"), "--quiet", "--threads", "1")
	assert.Contains(t, stdout, "Wrote 101 predictions")
	// The same scores as CSV, kept columns first.
	mustRun(t, "predict", "--load_model_path", filepath.Join(dir, "model"), "--predict_data_path", enc,
		"--predict_output_path", filepath.Join(dir, "pred-csv"), "--predict_output_format", "csv",
		"--predict_output_keep_cols", "user", "--quiet", "--threads", "1")
	text, err := os.ReadFile(filepath.Join(dir, "pred-csv", "predictions.csv"))
	require.NoError(t, err)
	lines := strings.Split(strings.TrimSpace(string(text)), "\n")
	require.Len(t, lines, 102)
	assert.Equal(t, "user,bought/binary_output", lines[0])
	assert.True(t, strings.HasPrefix(lines[101], "1,"), "the unseen user's id: %s", lines[101])

	// The same rows as raw Parquet: the CSV-fitted workflow reads them by
	// the file's extension and encodes them identically.
	rawPQ := filepath.Join(dir, "serve.parquet")
	writeRawParquet(t, rawPQ, serve.String())
	encPQ := filepath.Join(dir, "enc-pq")
	mustRun(t, "preprocess", "--workflow_path", workflow, "--data_path", rawPQ, "--output_path", encPQ, "--skip_targets", "--quiet")
	gotPQ := readAll(t, encPQ)
	for _, c := range []string{"user", "item"} {
		assert.Equal(t, got.Column(c).I32, gotPQ.Column(c).I32, c)
	}
	assert.Equal(t, got.Column("price").F32, gotPQ.Column("price").F32)

	// Without --skip_targets the missing target column is an error naming it.
	code, _, errs := run(t, "preprocess", "--workflow_path", workflow, "--data_path", serveCSV, "--output_path",
		filepath.Join(dir, "enc2"), "--quiet")
	assert.NotEqual(t, 0, code)
	assert.Contains(t, errs, "bought")
	// Fitting flags contradict a saved workflow.
	code, _, errs = run(t, "preprocess", "--workflow_path", workflow, "--data_path", serveCSV, "--output_path",
		filepath.Join(dir, "enc3"), "--categorical_features", "user", "--normalize=false")
	assert.Equal(t, 2, code)
	assert.Contains(t, errs, "--categorical_features, --normalize fit a workflow")
	code, _, errs = run(t, "preprocess", "--data_path", trainCSV, "--output_path", filepath.Join(dir, "x"), "--skip_targets")
	assert.Equal(t, 2, code)
	assert.Contains(t, errs, "--skip_targets applies only with --workflow_path")
}

// TestPreprocessMerlinCommandLine: a command line of Merlin's quick-start
// preprocessing script runs as it is — execution settings accepted,
// --test_data_path encoded without targets — and the Merlin features
// mtlrank lacks are refused by name.
func TestPreprocessMerlinCommandLine(t *testing.T) {
	dir := t.TempDir()
	var train, test strings.Builder
	train.WriteString("user,item,price,click\n")
	test.WriteString("user,item,price\n")
	for i := 0; i < 500; i++ {
		fmt.Fprintf(&train, "u%d,i%d,%d,%d\n", i%17, i%11, i%7, i%2)
		if i < 40 {
			fmt.Fprintf(&test, "u%d,i%d,%d\n", i%19, i%11, i%7)
		}
	}
	trainCSV, testCSV := filepath.Join(dir, "train.csv"), filepath.Join(dir, "test.csv")
	require.NoError(t, os.WriteFile(trainCSV, []byte(train.String()), 0o644))
	require.NoError(t, os.WriteFile(testCSV, []byte(test.String()), 0o644))
	out := filepath.Join(dir, "prep")
	base := []string{"preprocess", "--data_path", trainCSV, "--input_data_format", "csv", "--output_path", out,
		"--categorical_features", "user,item", "--continuous_features", "price", "--binary_classif_targets", "click",
		"--user_id_feature", "user", "--item_id_feature", "item"}
	stdout := mustRun(t, append(base, "--test_data_path", testCSV, "--device", "gpu", "--output_num_partitions", "4",
		"--persist_intermediate_files", "--to_int32", "user,item", "--visible_gpu_devices", "0,1",
		"--gpu_device_spill_frac", "0.5", "--dataset_split_strategy", "random", "--random_split_eval_perc", "0.2", "--quiet")...)
	assert.Contains(t, stdout, "(40 rows, no targets)")
	te := readAll(t, filepath.Join(out, "test"))
	assert.Equal(t, 40, te.Rows)
	assert.Nil(t, schemaOf(t, filepath.Join(out, "test")).Feature("click"))
	assert.NotNil(t, schemaOf(t, filepath.Join(out, "eval")).Feature("click"))

	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--control_features", "price"}, `column "price" is both continuous and control feature`},
		{[]string{"--filter_query", "price + 1 > 2"}, "arithmetic (+) is not supported (supported: comparisons of a column with a literal"},
		{[]string{"--filter_query", "price > 2 and"}, "unexpected end of query"},
		{[]string{"--min_user_freq", "5", "--max_user_freq", "2"}, "min user frequency 5 exceeds the max 2"},
		{[]string{"--dataset_split_strategy", "temporal", "--timestamp_feature", "price"}, "--dataset_split_strategy temporal needs --dataset_split_temporal_timestamp"},
		{[]string{"--dataset_split_strategy", "temporal", "--dataset_split_temporal_timestamp", "3"}, `split "temporal" needs the timestamp column`},
		{[]string{"--dataset_split_strategy", "temporal", "--dataset_split_temporal_timestamp", "3", "--timestamp_feature", "price", "--random_split_eval_perc", "0.2"}, "--random_split_eval_perc does not apply to the temporal split"},
		{[]string{"--dataset_split_temporal_timestamp", "3"}, `a temporal split timestamp is given without the "temporal" split`},
		{[]string{"--session_id_feature", "price"}, `session id column "price" must be a categorical feature`},
		{[]string{"--to_int8", "price"}, `"price" is continuous`},
		{[]string{"--device", "tpu"}, "--device must be cpu or gpu"},
	} {
		code, _, stderr := run(t, append(base, tc.args...)...)
		assert.Equal(t, 2, code, "%v", tc.args)
		assert.Contains(t, stderr, tc.want)
	}
}

// TestPreprocessMerlinFilters runs Merlin's row filters and temporal split
// through the command line; the expected rows are counted from the rule
// (row i has user i%17, item i%11, price i%7, click i%2).
func TestPreprocessMerlinFilters(t *testing.T) {
	dir := t.TempDir()
	var train strings.Builder
	train.WriteString("user,item,price,click\n")
	for i := 0; i < 500; i++ {
		fmt.Fprintf(&train, "u%d,i%d,%d,%d\n", i%17, i%11, i%7, i%2)
	}
	trainCSV := filepath.Join(dir, "train.csv")
	require.NoError(t, os.WriteFile(trainCSV, []byte(train.String()), 0o644))
	base := []string{"preprocess", "--data_path", trainCSV, "--categorical_features", "user,item", "--continuous_features", "price",
		"--binary_classif_targets", "click", "--user_id_feature", "user", "--item_id_feature", "item", "--quiet"}

	// The query keeps price in {2, 5} with click 1; per user that leaves 4
	// or 5 rows, and --min_user_freq 5 keeps the users with 5.
	perUser := map[int]int{}
	for i := 0; i < 500; i++ {
		if (i%7 == 2 || i%7 == 5) && i%2 == 1 {
			perUser[i%17]++
		}
	}
	queried, kept := 0, 0
	for _, n := range perUser {
		queried += n
		if n >= 5 {
			kept += n
		}
	}
	require.Greater(t, kept, 0)
	require.Less(t, kept, queried)
	out := filepath.Join(dir, "filtered")
	stdout := mustRun(t, append(base, "--output_path", out, "--filter_query", "price in [2, 5] and not click == 0",
		"--min_user_freq", "5", "--num_max_rounds_filtering", "3")...)
	assert.Contains(t, stdout, fmt.Sprintf("Filters kept %d of 500 training rows (%d removed by --filter_query, %d by frequency in 2 rounds)",
		kept, 500-queried, queried-kept))
	assert.Equal(t, kept, readAll(t, filepath.Join(out, "train")).Rows)

	// Temporal split on price, which stays a feature, tagged time.
	before := 0
	for i := 0; i < 500; i++ {
		if i%7 < 4 {
			before++
		}
	}
	out = filepath.Join(dir, "temporal")
	mustRun(t, append(base, "--output_path", out, "--dataset_split_strategy", "temporal", "--timestamp_feature", "price",
		"--dataset_split_temporal_timestamp", "4")...)
	assert.Equal(t, before, readAll(t, filepath.Join(out, "train")).Rows)
	assert.Equal(t, 500-before, readAll(t, filepath.Join(out, "eval")).Rows)
	assert.True(t, schemaOf(t, filepath.Join(out, "train")).Feature("price").HasTag(schema.TagTime))
}

// writeRawParquet writes a small CSV (header user,item,price; "?" = null)
// as a Parquet file with string ids and a nullable float64 price, as raw
// data would come.
func writeRawParquet(t *testing.T, path, csv string) {
	t.Helper()
	mem := memory.DefaultAllocator
	user, item := array.NewStringBuilder(mem), array.NewStringBuilder(mem)
	price := array.NewFloat64Builder(mem)
	lines := strings.Split(strings.TrimSpace(csv), "\n")
	for _, l := range lines[1:] {
		f := strings.Split(l, ",")
		user.Append(f[0])
		item.Append(f[1])
		if f[2] == "?" {
			price.AppendNull()
			continue
		}
		v, err := strconv.ParseFloat(f[2], 64)
		require.NoError(t, err)
		price.Append(v)
	}
	sch := arrow.NewSchema([]arrow.Field{
		{Name: "user", Type: arrow.BinaryTypes.String, Nullable: true},
		{Name: "item", Type: arrow.BinaryTypes.String, Nullable: true},
		{Name: "price", Type: arrow.PrimitiveTypes.Float64, Nullable: true},
	}, nil)
	cols := []arrow.Array{user.NewArray(), item.NewArray(), price.NewArray()}
	rec := array.NewRecordBatch(sch, cols, int64(len(lines)-1))
	for _, c := range cols {
		c.Release()
	}
	defer rec.Release()
	tbl := array.NewTableFromRecords(sch, []arrow.RecordBatch{rec})
	defer tbl.Release()
	f, err := os.Create(path)
	require.NoError(t, err)
	// WriteTable closes the file
	require.NoError(t, pqarrow.WriteTable(tbl, f, 1024, nil, pqarrow.DefaultWriterProps()))
}

// TestTrainWithoutTrainingData: Merlin's predict-only form, train with
// --load_model_path and --predict_data_path (and --eval_data_path) but no
// --train_data_path, trains nothing: it scores and evaluates with the
// saved model, exactly as predict and eval do, and leaves the checkpoint
// as it was.
func TestTrainWithoutTrainingData(t *testing.T) {
	data := sharedData(t)
	train, eval := filepath.Join(data, "train"), filepath.Join(data, "eval")
	out := t.TempDir()
	model := filepath.Join(out, "model")
	// 6 steps, fewer than --train_metrics_steps' default of 10: the last
	// batch (24000 - 5*4096 = 3520 rows) gives the training metrics.
	mustRun(t, "train", "--train_data_path", train, "--model", "mlp", "--mlp_layers", "16", "--lr", "0.003",
		"--train_batch_size", "4096", "--save_model_path", model, "--output_path", filepath.Join(out, "trained"), "--threads", "1", "--quiet")
	raw, err := os.ReadFile(filepath.Join(out, "trained", "metrics.json"))
	require.NoError(t, err)
	var trained struct {
		Epochs []struct {
			Steps int                 `json:"steps"`
			Train map[string]*float64 `json:"train"`
		} `json:"epochs"`
	}
	require.NoError(t, json.Unmarshal(raw, &trained))
	require.Len(t, trained.Epochs, 1)
	assert.Equal(t, 6, trained.Epochs[0].Steps)
	assert.Equal(t, 3520.0, metric(t, trained.Epochs[0].Train, "click/binary_output/count"))
	auc := metric(t, trained.Epochs[0].Train, "auc_avg")
	assert.True(t, auc > 0 && auc < 1, "train auc_avg %v", auc)

	files := func() map[string][]byte {
		m := map[string][]byte{}
		entries, err := os.ReadDir(model)
		require.NoError(t, err)
		for _, e := range entries {
			b, err := os.ReadFile(filepath.Join(model, e.Name()))
			require.NoError(t, err)
			m[e.Name()] = b
		}
		return m
	}
	before := files()

	// The format comes from the extension: a CSV file, not a folder.
	viaPredict := filepath.Join(out, "predict.csv")
	stdout := mustRun(t, "predict", "--load_model_path", model, "--predict_data_path", eval, "--predict_output_path", viaPredict,
		"--predict_output_keep_cols", "user_id,item_id", "--threads", "1", "--quiet")
	assert.Contains(t, stdout, "Wrote 8000 predictions to "+viaPredict+"\n")
	require.FileExists(t, viaPredict)
	mustRun(t, "eval", "--load_model_path", model, "--eval_data_path", eval, "--output_path", filepath.Join(out, "eval"), "--threads", "1", "--quiet")

	// Predict only, as in Merlin's README.
	viaTrain := filepath.Join(out, "train.csv")
	stdout = mustRun(t, "train", "--load_model_path", model, "--predict_data_path", eval, "--predict_output_path", viaTrain,
		"--predict_output_format", "csv", "--predict_output_keep_cols", "user_id,item_id", "--output_path", filepath.Join(out, "only"),
		"--threads", "1", "--quiet")
	assert.Contains(t, stdout, "no training")
	assert.Contains(t, stdout, "Wrote 8000 predictions")
	assert.NotContains(t, stdout, "Evaluation")
	want, err := os.ReadFile(viaPredict)
	require.NoError(t, err)
	got, err := os.ReadFile(viaTrain)
	require.NoError(t, err)
	assert.Equal(t, string(want), string(got), "the same scores as mtlrank predict")

	// With evaluation data too: the metrics of mtlrank eval.
	both := filepath.Join(out, "both")
	stdout = mustRun(t, "train", "--load_model_path", model, "--eval_data_path", eval, "--predict_data_path", eval,
		"--predict_output_path", filepath.Join(both, "scores.parquet"), "--output_path", both, "--threads", "1", "--quiet")
	assert.Contains(t, stdout, "click/binary_output")
	evalMetrics := readMetrics(t, filepath.Join(out, "eval", "metrics.json"))
	trainMetrics := readMetrics(t, filepath.Join(both, "metrics.json"))
	for _, k := range []string{"loss", "auc_avg", "click/binary_output/auc", "watching_times/regression_output/rmse"} {
		assert.InDelta(t, metric(t, evalMetrics, k), metric(t, trainMetrics, k), 1e-12, k)
	}
	assert.FileExists(t, filepath.Join(both, "scores.parquet"))
	raw, err = os.ReadFile(filepath.Join(both, "metrics.json"))
	require.NoError(t, err)
	var doc struct {
		Steps  int   `json:"steps"`
		Epochs []any `json:"epochs"`
	}
	require.NoError(t, json.Unmarshal(raw, &doc))
	assert.Equal(t, 6, doc.Steps, "the checkpoint's steps: none added")
	assert.Empty(t, doc.Epochs)
	assert.Equal(t, before, files(), "the checkpoint is left as it was")

	// Flags that need training are refused rather than ignored.
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--save_model_path", filepath.Join(out, "copy")}, "--save_model_path needs --train_data_path"},
		{[]string{"--eval_data_path", eval, "--early_stopping_metric", "auc_avg"}, "--early_stopping_metric needs --train_data_path"},
	} {
		args := append([]string{"train", "--load_model_path", model, "--predict_data_path", eval,
			"--predict_output_path", filepath.Join(out, "x.parquet"), "--quiet"}, tc.args...)
		code, stdout, stderr := run(t, args...)
		assert.Equal(t, 2, code, "stdout: %s\nstderr: %s", stdout, stderr)
		assert.Contains(t, stderr, tc.want)
	}
}

// TestKerasActivationsLearn trains with Keras activations other than relu
// (in the MLP, the experts and the towers) and requires every binary task
// to beat a constant predictor on held-out data.
func TestKerasActivationsLearn(t *testing.T) {
	data := sharedData(t)
	for _, tc := range []struct{ model, act string }{{"mlp", "selu"}, {"mmoe", "gelu"}, {"cgc", "swish"}, {"ple", "leaky_relu"}} {
		t.Run(tc.model+"_"+tc.act, func(t *testing.T) {
			out := t.TempDir()
			args := []string{"train", "--train_data_path", filepath.Join(data, "train"), "--eval_data_path", filepath.Join(data, "eval"),
				"--model", tc.model, "--activation", tc.act, "--epochs", "2", "--lr", "0.003", "--lr_decay_rate", "1", "--lr_decay_steps", "0",
				"--train_batch_size", "256", "--eval_batch_size", "2048", "--validation_steps", "0", "--train_metrics_steps", "0",
				"--tower_layers", "16", "--output_path", out, "--threads", "1", "--quiet", "--random_seed", "3"}
			mustRun(t, append(args, modelFlags(tc.model)...)...)
			m := readMetrics(t, filepath.Join(out, "metrics.json"))
			for _, target := range []string{"click", "like", "share", "follow"} {
				auc := metric(t, m, target+"/binary_output/auc")
				t.Logf("%s %s: auc %.4f", tc.act, target, auc)
				assert.GreaterOrEqual(t, auc, 0.65, "%s AUC", target)
			}
		})
	}
	code, _, errs := run(t, "train", "--activation", "softmax", "--output_path", t.TempDir())
	assert.Equal(t, 2, code)
	assert.Contains(t, errs, `unknown activation "softmax"`)
}

// TestTrainTensorBoard: --log_to_tensorboard writes event files that an
// independent decoder reads back: the running loss every
// --metrics_log_frequency steps, and per epoch the same values as
// metrics.json, gate weights included.
func TestTrainTensorBoard(t *testing.T) {
	data := sharedData(t)
	out := t.TempDir()
	mustRun(t, "train", "--train_data_path", filepath.Join(data, "train"), "--eval_data_path", filepath.Join(data, "eval"),
		"--model", "mmoe", "--epochs", "2", "--train_batch_size", "2048", "--eval_batch_size", "4096",
		"--expert_mlp_layers", "16", "--mmoe_num_mlp_experts", "2", "--tower_layers", "8",
		"--log_to_tensorboard", "--metrics_log_frequency", "5", "--output_path", out, "--threads", "1", "--quiet")
	read := func(run string) map[string][]tbread.Scalar {
		files, err := filepath.Glob(filepath.Join(out, "tensorboard", run, "events.out.tfevents.*"))
		require.NoError(t, err)
		require.Len(t, files, 1, run)
		version, scalars, err := tbread.Read(files[0])
		require.NoError(t, err)
		assert.Equal(t, "brain.Event:2", version)
		byTag := map[string][]tbread.Scalar{}
		for _, s := range scalars {
			byTag[s.Tag] = append(byTag[s.Tag], s)
		}
		return byTag
	}
	train, val := read("train"), read("validation")
	// 24000 rows in batches of 2048: 12 steps per epoch, so steps 5, 10, 17, 22
	var steps []int64
	for _, s := range train["batch_loss"] {
		steps = append(steps, s.Step)
	}
	assert.Equal(t, []int64{5, 10, 17, 22}, steps)
	raw, err := os.ReadFile(filepath.Join(out, "metrics.json"))
	require.NoError(t, err)
	var doc struct {
		Epochs []struct {
			Loss       float64             `json:"loss"`
			Validation map[string]*float64 `json:"validation"`
		} `json:"epochs"`
	}
	require.NoError(t, json.Unmarshal(raw, &doc))
	require.Len(t, doc.Epochs, 2)
	for i, e := range doc.Epochs {
		require.Len(t, train["epoch_loss"], 2)
		assert.Equal(t, int64(i), train["epoch_loss"][i].Step)
		assert.InDelta(t, e.Loss, float64(train["epoch_loss"][i].Value), 1e-6*math.Abs(e.Loss))
		for _, k := range []string{"auc_avg", "click/binary_output/auc", "gate/click/expert_1"} {
			require.NotNil(t, e.Validation[k], k)
			require.Len(t, val["epoch_"+k], 2, k)
			assert.InDelta(t, *e.Validation[k], float64(val["epoch_"+k][i].Value), 1e-6, k)
		}
	}
}
