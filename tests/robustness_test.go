package tests

import (
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"syscall"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/mtlrank/mtlrank/loader"
	"github.com/mtlrank/mtlrank/schema"
)

// tinySchema: two small id features, one continuous feature, a binary
// and a regression target.
func tinySchema() *schema.Schema {
	return &schema.Schema{Features: []*schema.Feature{
		{Name: "user_id", DType: schema.Int32, Tags: []schema.Tag{schema.TagCategorical, schema.TagUserID}, IntDomain: &schema.IntDomain{Max: 9}},
		{Name: "item_id", DType: schema.Int32, Tags: []schema.Tag{schema.TagCategorical, schema.TagItemID}, IntDomain: &schema.IntDomain{Max: 9}},
		{Name: "price", DType: schema.Float32, Tags: []schema.Tag{schema.TagContinuous}},
		{Name: "click", DType: schema.Float32, Tags: []schema.Tag{schema.TagBinaryClassification, schema.TagTarget}},
		{Name: "rating", DType: schema.Float32, Tags: []schema.Tag{schema.TagRegression, schema.TagTarget}},
	}}
}

// writeTiny writes a dataset folder of rows rows (row groups of 20) with
// its schema.pbtxt, after letting mod change the columns.
func writeTiny(t *testing.T, dir string, rows int, mod func(cols map[string]any)) string {
	t.Helper()
	user, item := make([]int32, rows), make([]int32, rows)
	price, click, rating := make([]float32, rows), make([]float32, rows), make([]float32, rows)
	for i := range rows {
		user[i], item[i] = int32(i%10), int32((i*3)%10)
		price[i] = float32(i%7) / 7
		if (i%10)%3 == 0 {
			click[i] = 1
		}
		rating[i] = float32(i % 5)
	}
	cols := map[string]any{"user_id": user, "item_id": item, "price": price, "click": click, "rating": rating}
	if mod != nil {
		mod(cols)
	}
	require.NoError(t, os.MkdirAll(dir, 0o755))
	require.NoError(t, loader.WriteParquet(filepath.Join(dir, "part_0000.parquet"), tinySchema(), cols, 20))
	require.NoError(t, schema.Save(filepath.Join(dir, schema.PbtxtFile), tinySchema()))
	return dir
}

// TestBadLabelsThroughCLI: a binary label other than 0/1 stops training
// with an error naming the file (as given), row group, row and column.
func TestBadLabelsThroughCLI(t *testing.T) {
	dir := writeTiny(t, filepath.Join(t.TempDir(), "data"), 50, func(c map[string]any) {
		c["click"].([]float32)[37] = 2
	})
	code, stdout, stderr := run(t, "train", "--train_data_path", dir, "--output_path", t.TempDir(), "--quiet", "--threads", "1",
		"--train_batch_size", "16")
	assert.Equal(t, 1, code, "stdout: %s", stdout)
	for _, w := range []string{filepath.Join(dir, "part_0000.parquet"), "row group 1", "row 37", `column "click"`, "label 2 in a binary target"} {
		assert.Contains(t, stderr, w)
	}

	reg := writeTiny(t, filepath.Join(t.TempDir(), "reg"), 50, func(c map[string]any) {
		c["rating"].([]float32)[3] = float32(math.Inf(1))
	})
	code, _, stderr = run(t, "train", "--train_data_path", reg, "--output_path", t.TempDir(), "--quiet", "--threads", "1")
	assert.Equal(t, 1, code)
	assert.Contains(t, stderr, `column "rating": +Inf in a target`)
}

// TestFillNaN: a NaN in a continuous feature is an error naming the flag
// that fills it; with --fill_nan train, eval and predict read the data.
func TestFillNaN(t *testing.T) {
	dir := writeTiny(t, filepath.Join(t.TempDir(), "data"), 50, func(c map[string]any) {
		c["price"].([]float32)[5] = float32(math.NaN())
	})
	out := t.TempDir()
	code, _, stderr := run(t, "train", "--train_data_path", dir, "--output_path", out, "--quiet", "--threads", "1")
	assert.Equal(t, 1, code)
	assert.Contains(t, stderr, `column "price": NaN in a continuous feature`)
	assert.Contains(t, stderr, "--fill_nan VALUE")
	assert.Contains(t, stderr, "Options.FillNaN")

	model := filepath.Join(out, "model")
	mustRun(t, "train", "--train_data_path", dir, "--eval_data_path", dir, "--fill_nan", "0", "--output_path", out,
		"--save_model_path", model, "--quiet", "--threads", "1")
	mustRun(t, "eval", "--load_model_path", model, "--eval_data_path", dir, "--fill_nan", "-1", "--output_path", out, "--quiet", "--threads", "1")
	mustRun(t, "predict", "--load_model_path", model, "--predict_data_path", dir, "--predict_output_path", filepath.Join(out, "p.parquet"),
		"--fill_nan", "0.5", "--quiet", "--threads", "1")
	code, _, stderr = run(t, "eval", "--load_model_path", model, "--eval_data_path", dir, "--output_path", out, "--quiet")
	assert.Equal(t, 1, code, "eval without --fill_nan reads the NaN")
	assert.Contains(t, stderr, "--fill_nan")
}

// TestHugeSizes: a batch size far above the data trains (the workspace is
// sized for the rows that exist), and a model that cannot fit is refused
// with an estimate before anything is allocated, instead of the Go
// runtime's fatal "out of memory".
func TestHugeSizes(t *testing.T) {
	dir := writeTiny(t, filepath.Join(t.TempDir(), "data"), 50, nil)
	out := t.TempDir()
	stdout := mustRun(t, "train", "--train_data_path", dir, "--eval_data_path", dir, "--train_batch_size", "100000000",
		"--eval_batch_size", "100000000", "--output_path", out, "--quiet", "--threads", "1", "--save_model_path", filepath.Join(out, "model"))
	assert.Contains(t, stdout, "(50 rows) after 1 epochs, 1 steps")
	mustRun(t, "eval", "--load_model_path", filepath.Join(out, "model"), "--eval_data_path", dir, "--eval_batch_size", "100000000",
		"--output_path", out, "--quiet", "--threads", "1")

	for _, args := range [][]string{
		{"--mlp_layers", "200000,200000"},
		{"--max_memory", "10K"},
	} {
		code, stdout, stderr := run(t, append([]string{"train", "--train_data_path", dir, "--output_path", out, "--quiet", "--threads", "1"}, args...)...)
		assert.Equal(t, 1, code, "%v: %s", args, stdout)
		assert.Contains(t, stderr, "the model needs about", args)
		assert.Regexp(t, `more than the [0-9.]+ [KMGT]iB of (--max_memory|the memory available)`, stderr, args)
	}
	code, _, stderr := run(t, "eval", "--load_model_path", filepath.Join(out, "model"), "--eval_data_path", dir, "--max_memory", "1K", "--quiet")
	assert.Equal(t, 1, code)
	assert.Contains(t, stderr, "of --max_memory")
	code, _, stderr = run(t, "bench", "--model", "mlp", "--mlp_layers", "200000,200000", "--threads", "1", "--steps", "1")
	assert.Equal(t, 1, code)
	assert.Contains(t, stderr, "the model needs about")
}

// TestSynthKeepsUserFiles: synth refuses a folder with the user's own
// files and replaces only its own earlier output.
func TestSynthKeepsUserFiles(t *testing.T) {
	dir := writeTiny(t, filepath.Join(t.TempDir(), "mine"), 50, nil)
	before, err := os.ReadFile(filepath.Join(dir, "part_0000.parquet"))
	require.NoError(t, err)
	code, _, stderr := run(t, "synth", "--output_path", dir, "--rows", "100", "--quiet")
	assert.Equal(t, 1, code)
	assert.Contains(t, stderr, dir)
	assert.Contains(t, stderr, "refusing to replace its files")
	after, err := os.ReadFile(filepath.Join(dir, "part_0000.parquet"))
	require.NoError(t, err)
	assert.Equal(t, before, after, "the user's data is untouched")

	own := filepath.Join(t.TempDir(), "synth")
	mustRun(t, "synth", "--output_path", own, "--rows", "100", "--table_rows", "50", "--quiet")
	mustRun(t, "synth", "--output_path", own, "--rows", "200", "--table_rows", "50", "--quiet")
}

// TestResourceFlags: --threads above the CPUs and malformed layer lists
// are command-line mistakes (exit 2) naming the flag.
func TestResourceFlags(t *testing.T) {
	over := strconv.Itoa(runtime.NumCPU() + 1)
	cases := []struct {
		args []string
		want string
	}{
		{[]string{"train", "--threads", over}, "--threads " + over + " is more than the " + strconv.Itoa(runtime.NumCPU()) + " CPUs"},
		{[]string{"eval", "--load_model_path", "m", "--eval_data_path", "d", "--threads", over}, "--threads " + over},
		{[]string{"predict", "--load_model_path", "m", "--predict_data_path", "d", "--predict_output_path", "o", "--threads", over}, "--threads " + over},
		{[]string{"bench", "--threads", over}, "--threads " + over},
		{[]string{"demo", "--threads", over}, "--threads " + over},
		{[]string{"train", "--mlp_layers", "1,,2"}, `--mlp_layers: invalid value "1,,2": entry 2 is empty`},
		{[]string{"train", "--model", "mmoe", "--expert_mlp_layers", "64,"}, "--expert_mlp_layers"},
		{[]string{"train", "--fill_nan", "NaN"}, "--fill_nan"},
		{[]string{"train", "--max_memory", "lots"}, "--max_memory"},
	}
	for _, c := range cases {
		code, stdout, stderr := run(t, c.args...)
		assert.Equal(t, 2, code, "%v\n%s%s", c.args, stdout, stderr)
		assert.Contains(t, stderr, c.want, c.args)
	}
}

// snakeKey matches the keys metrics.json may hold: snake_case words, or
// metric keys made of them joined by "/" (click/binary_output/auc).
var snakeKey = regexp.MustCompile(`^[a-z0-9_]+(/[a-z0-9_]+)*$`)

func assertSnakeKeys(t *testing.T, v any, path string) {
	switch x := v.(type) {
	case map[string]any:
		for k, e := range x {
			assert.Regexp(t, snakeKey, k, "key %q at %s", k, path)
			assertSnakeKeys(t, e, path+"."+k)
		}
	case []any:
		for i, e := range x {
			assertSnakeKeys(t, e, path+"["+strconv.Itoa(i)+"]")
		}
	}
}

// TestMetricsJSON: train and eval write metrics.json with snake_case keys
// throughout (epochs included), readable by others (0666 minus the umask),
// and eval writes one by default to ./output/eval/metrics.json.
func TestMetricsJSON(t *testing.T) {
	old := syscall.Umask(0o022)
	defer syscall.Umask(old)
	dir := writeTiny(t, filepath.Join(t.TempDir(), "data"), 200, nil)
	work := t.TempDir()
	t.Chdir(work)
	mustRun(t, "train", "--train_data_path", dir, "--eval_data_path", dir, "--epochs", "2", "--train_metrics_steps", "1",
		"--model", "mmoe", "--expert_mlp_layers", "8", "--gate_dim", "4", "--tower_layers", "4",
		"--train_batch_size", "64", "--save_model_path", "model", "--quiet", "--threads", "1")
	// Default --output_path of train: ./output/.
	raw, err := os.ReadFile(filepath.Join(work, "output", "metrics.json"))
	require.NoError(t, err)
	var doc map[string]any
	require.NoError(t, json.Unmarshal(raw, &doc))
	assertSnakeKeys(t, doc, "")
	epochs := doc["epochs"].([]any)
	require.Len(t, epochs, 2)
	first := epochs[0].(map[string]any)
	for _, k := range []string{"epoch", "steps", "examples", "loss", "task_loss", "train", "validation", "seconds", "examples_per_s"} {
		assert.Contains(t, first, k)
	}
	assert.Equal(t, 200.0, first["examples"])
	st, err := os.Stat(filepath.Join(work, "output", "metrics.json"))
	require.NoError(t, err)
	assert.Equal(t, os.FileMode(0o644), st.Mode().Perm())

	// eval without --output_path writes ./output/eval/metrics.json.
	stdout := mustRun(t, "eval", "--load_model_path", "model", "--eval_data_path", dir, "--quiet", "--threads", "1")
	assert.Contains(t, stdout, "Metrics written to "+filepath.Join("output", "eval", "metrics.json"))
	m := readMetrics(t, filepath.Join(work, "output", "eval", "metrics.json"))
	assert.InDelta(t, metric(t, readMetrics(t, filepath.Join(work, "output", "metrics.json")), "loss"), metric(t, m, "loss"), 1e-9)
	raw, err = os.ReadFile(filepath.Join(work, "output", "eval", "metrics.json"))
	require.NoError(t, err)
	doc = nil
	require.NoError(t, json.Unmarshal(raw, &doc))
	assertSnakeKeys(t, doc, "")
	_, out, _ := run(t, "eval", "--help")
	assert.Contains(t, out, "./output/eval/metrics.json")
}
