package tests

import (
	"crypto/sha256"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/mtlrank/mtlrank/schema"
)

// treeHash fingerprints every file under root (names and contents), to
// show that a refused command changed nothing.
func treeHash(t *testing.T, root string) string {
	t.Helper()
	h := sha256.New()
	require.NoError(t, filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		fmt.Fprintf(h, "%s %v\n", rel, d.IsDir())
		if d.Type().IsRegular() {
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			h.Write(b)
		}
		return nil
	}))
	return fmt.Sprintf("%x", h.Sum(nil))
}

// trainedTiny trains and saves a model on a tiny dataset; it returns the
// data folder and the checkpoint.
func trainedTiny(t *testing.T) (data, model string) {
	t.Helper()
	root := t.TempDir()
	data = writeTiny(t, filepath.Join(root, "data"), 60, nil)
	model = filepath.Join(root, "model")
	mustRun(t, "train", "--train_data_path", data, "--output_path", filepath.Join(root, "out"), "--save_model_path", model,
		"--quiet", "--threads", "1", "--train_batch_size", "32")
	return data, model
}

// TestPredictNeverOverwritesInput: the predictions may not replace the
// data, land in its folder (where the next read takes them for data) or in
// the checkpoint, however the path is spelt.
func TestPredictNeverOverwritesInput(t *testing.T) {
	data, model := trainedTiny(t)
	link := filepath.Join(t.TempDir(), "link")
	require.NoError(t, os.Symlink(data, link))
	file := filepath.Join(data, "part_0000.parquet")
	cases := []struct {
		name, in, out, want string
	}{
		{"output is the data file", file, file, "is --predict_data_path"},
		{"output is the data folder", data, data, "lies inside --predict_data_path"},
		{"output file in the data folder", data, filepath.Join(data, "scores.parquet"), "lies inside --predict_data_path"},
		{"through a symlink", file, filepath.Join(link, "part_0000.parquet"), "is --predict_data_path"},
		{"folder holding the data file", file, filepath.Join(data, "..", "data"), "lies inside the dataset folder of --predict_data_path"},
		{"file beside the data file", file, filepath.Join(data, "p.parquet"), "lies inside the dataset folder of --predict_data_path"},
		{"into the checkpoint", data, filepath.Join(model, "p.parquet"), "--load_model_path"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			before, ckBefore := treeHash(t, data), treeHash(t, model)
			code, _, stderr := run(t, "predict", "--load_model_path", model, "--predict_data_path", tc.in,
				"--predict_output_path", tc.out, "--quiet", "--threads", "1")
			assert.Equal(t, 2, code, stderr)
			assert.Contains(t, stderr, tc.want)
			assert.Equal(t, before, treeHash(t, data), "the data is untouched")
			assert.Equal(t, ckBefore, treeHash(t, model), "the checkpoint is untouched")
		})
	}
	// Beside the data file is fine.
	mustRun(t, "predict", "--load_model_path", model, "--predict_data_path", file,
		"--predict_output_path", filepath.Join(t.TempDir(), "p.parquet"), "--quiet", "--threads", "1")
}

// TestPredictMessages: a missing output or data flag is named alone.
func TestPredictMessages(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--predict_data_path", "d"}, "--predict_output_path is required"},
		{[]string{"--predict_output_path", "o.parquet"}, "--predict_data_path is required"},
		{nil, "--predict_data_path and --predict_output_path are required"},
	} {
		code, _, stderr := run(t, append([]string{"predict", "--load_model_path", "m"}, tc.args...)...)
		assert.Equal(t, 2, code)
		assert.Contains(t, stderr, tc.want)
		if tc.args != nil {
			assert.NotContains(t, stderr, " and ")
		}
	}
}

// TestTrainOutputsAreNotInputs: train's outputs (checkpoint, metrics,
// predictions) may not be its inputs.
func TestTrainOutputsAreNotInputs(t *testing.T) {
	data, model := trainedTiny(t)
	before := treeHash(t, data)
	for _, args := range [][]string{
		{"--save_model_path", data},
		{"--output_path", data},
		{"--predict_data_path", data, "--predict_output_path", data},
		{"--load_model_path", model, "--save_model_path", model},
		{"--save_model_path", filepath.Join(model, "nested")},
	} {
		code, _, stderr := run(t, append([]string{"train", "--train_data_path", data, "--quiet", "--threads", "1"}, args...)...)
		assert.Equal(t, 2, code, "%v: %s", args, stderr)
		assert.Regexp(t, "(lies inside|contains|is) (--train_data_path|--predict_data_path|--load_model_path|the checkpoint folder)", stderr, args)
	}
	assert.Equal(t, before, treeHash(t, data))
}

// TestPreprocessNeverOverwritesInput: an output folder that is, contains
// or lies inside the raw inputs is refused before anything is read, for a
// fit and for applying a workflow.
func TestPreprocessNeverOverwritesInput(t *testing.T) {
	raw := t.TempDir()
	var b strings.Builder
	b.WriteString("user,item,clicked\n")
	for i := range 200 {
		fmt.Fprintf(&b, "u%d,i%d,%d\n", i%13, i%7, i%2)
	}
	train := filepath.Join(raw, "train.csv")
	eval := filepath.Join(raw, "eval.csv")
	require.NoError(t, os.WriteFile(train, []byte(b.String()), 0o644))
	require.NoError(t, os.WriteFile(eval, []byte(b.String()), 0o644))
	fit := []string{"preprocess", "--categorical_features", "user,item", "--binary_classif_targets", "clicked", "--quiet"}
	before := treeHash(t, raw)
	for _, args := range [][]string{
		{"--data_path", train, "--output_path", raw},
		{"--data_path", train, "--eval_data_path", eval, "--output_path", raw},
		{"--data_path", filepath.Join(raw, "*.csv"), "--output_path", raw},
		{"--data_path", train, "--output_path", filepath.Join(raw, "..")},
	} {
		code, _, stderr := run(t, append(fit, args...)...)
		assert.Equal(t, 2, code, "%v: %s", args, stderr)
		assert.Contains(t, stderr, "would overwrite an input", args)
		assert.Equal(t, before, treeHash(t, raw), "%v: the raw data is untouched", args)
	}

	out := filepath.Join(t.TempDir(), "prep")
	mustRun(t, append(fit, "--data_path", train, "--eval_data_path", eval, "--output_path", out)...)
	enc := filepath.Join(out, "train")
	encBefore := treeHash(t, out)
	for _, args := range [][]string{
		{"--data_path", enc, "--output_path", enc},
		{"--data_path", enc, "--output_path", out},
		{"--data_path", train, "--output_path", out},
	} {
		code, _, stderr := run(t, append([]string{"preprocess", "--workflow_path", filepath.Join(out, "workflow.json"), "--quiet"}, args...)...)
		assert.Equal(t, 2, code, "%v: %s", args, stderr)
		assert.Contains(t, stderr, "would overwrite an input", args)
		assert.Equal(t, encBefore, treeHash(t, out), args)
	}

	// A fit into a folder holding other files of the user is refused too:
	// the whole output folder is replaced.
	mine := t.TempDir()
	require.NoError(t, os.WriteFile(filepath.Join(mine, "notes.txt"), []byte("x"), 0o644))
	code, _, stderr := run(t, append(fit, "--data_path", train, "--output_path", mine)...)
	assert.Equal(t, 1, code)
	assert.Contains(t, stderr, "notes.txt, which is not part of a preprocessing output")
	assert.FileExists(t, filepath.Join(mine, "notes.txt"))
}

// TestOutputsCheckedBeforeTraining: an output that cannot be written, or a
// metric that validation does not compute, stops train before the first
// step (nothing is trained, no file is written).
func TestOutputsCheckedBeforeTraining(t *testing.T) {
	root := t.TempDir()
	data := writeTiny(t, filepath.Join(root, "data"), 60, nil)
	file := filepath.Join(root, "file")
	require.NoError(t, os.WriteFile(file, []byte("x"), 0o644))
	out := filepath.Join(root, "out")
	cases := []struct {
		name string
		args []string
		want string
	}{
		{"checkpoint under a regular file", []string{"--save_model_path", filepath.Join(file, "model")}, "--save_model_path " + filepath.Join(file, "model") + ": " + file + " is a file"},
		{"output under a regular file", []string{"--output_path", filepath.Join(file, "out")}, file + " is a file"},
		{"predictions file under a regular file", []string{"--predict_data_path", data, "--predict_output_path", filepath.Join(file, "p.parquet")}, file + " is a file"},
		{"unknown early-stopping metric", []string{"--eval_data_path", data, "--early_stopping_metric", "nosuch"}, `early stopping metric "nosuch" is not a validation metric`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			args := append([]string{"train", "--train_data_path", data, "--output_path", out, "--threads", "1", "--epochs", "50"}, tc.args...)
			code, stdout, stderr := run(t, args...)
			assert.NotEqual(t, 0, code)
			assert.Contains(t, stderr, tc.want)
			assert.NotContains(t, stderr, "epoch 1", "no training step ran")
			assert.NotContains(t, stdout, "Trained")
			assert.NoFileExists(t, filepath.Join(out, "metrics.json"))
		})
	}

	t.Run("read-only mount", func(t *testing.T) {
		ro := mountTmpfs(t, "ro")
		code, stdout, stderr := run(t, "train", "--train_data_path", data, "--output_path", out, "--threads", "1", "--quiet",
			"--save_model_path", filepath.Join(ro, "model"))
		assert.Equal(t, 1, code)
		assert.NotContains(t, stdout, "Trained", "no training step ran")
		assert.Contains(t, stderr, "read-only file system")
		assert.NoFileExists(t, filepath.Join(out, "metrics.json"))
	})
}

// mountTmpfs mounts a small tmpfs with the given options (e.g. "ro",
// "size=2m") and unmounts it at the end; it skips the test where mounting
// is not allowed (not root, no mount(8)).
func mountTmpfs(t *testing.T, opts string) string {
	t.Helper()
	dir := t.TempDir()
	if os.Geteuid() != 0 {
		t.Skip("mounting a tmpfs needs root")
	}
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", opts, "tmpfs", dir).CombinedOutput(); err != nil {
		t.Skipf("cannot mount a tmpfs: %v: %s", err, out)
	}
	t.Cleanup(func() { _ = exec.Command("umount", dir).Run() })
	return dir
}

// TestFullDiskKeepsPreviousOutput: preprocess and synth over an earlier
// output on a full disk fail with the disk's error and leave the earlier
// output complete and loadable (never new data beside an old vocabulary,
// or new part files beside old ones).
func TestFullDiskKeepsPreviousOutput(t *testing.T) {
	disk := mountTmpfs(t, "size=3m")
	raw := t.TempDir()
	small, big := filepath.Join(raw, "small.csv"), filepath.Join(raw, "big.csv")
	var b strings.Builder
	b.WriteString("user,item,clicked\n")
	for i := range 300 {
		fmt.Fprintf(&b, "u%d,i%d,%d\n", i%13, i%7, i%2)
	}
	require.NoError(t, os.WriteFile(small, []byte(b.String()), 0o644))
	b.Reset()
	b.WriteString("user,item,clicked\n")
	for i := range 400000 {
		fmt.Fprintf(&b, "u%d,i%d,%d\n", i, i*7, i%2)
	}
	require.NoError(t, os.WriteFile(big, []byte(b.String()), 0o644))
	fit := []string{"preprocess", "--categorical_features", "user,item", "--binary_classif_targets", "clicked", "--quiet",
		"--dataset_split_strategy", "random", "--random_split_eval_perc", "0.2"}

	out := filepath.Join(disk, "prep")
	mustRun(t, append(fit, "--data_path", small, "--output_path", out)...)
	before := treeHash(t, out)
	code, _, stderr := run(t, append(fit, "--data_path", big, "--output_path", out)...)
	require.Equal(t, 1, code)
	assert.Contains(t, stderr, "no space left on device")
	assert.Equal(t, before, treeHash(t, out), "the previous output is intact")
	mustRun(t, "train", "--train_data_path", filepath.Join(out, "train"), "--output_path", t.TempDir(), "--quiet", "--threads", "1")

	syn := filepath.Join(disk, "synth")
	mustRun(t, "synth", "--output_path", syn, "--rows", "500", "--table_rows", "50", "--quiet")
	before = treeHash(t, syn)
	code, _, stderr = run(t, "synth", "--output_path", syn, "--rows", "300000", "--table_rows", "50", "--row_group_rows", "10000", "--quiet")
	require.Equal(t, 1, code)
	assert.Contains(t, stderr, "no space left on device")
	assert.Equal(t, before, treeHash(t, syn), "the previous dataset is intact")
	entries, err := os.ReadDir(disk)
	require.NoError(t, err)
	for _, e := range entries {
		assert.False(t, strings.HasPrefix(e.Name(), "."), "temporary %s left", e.Name())
	}
}

// TestForcedMaxMemoryStillRefusesTheImpossible: --max_memory overrides the
// estimate of the memory available now, but a model beyond what the
// machine could ever hold (a 1e12-row embedding table) is still an error,
// not a panic in the kernels' allocation.
func TestForcedMaxMemoryStillRefusesTheImpossible(t *testing.T) {
	root := t.TempDir()
	data := writeTiny(t, filepath.Join(root, "data"), 60, nil)
	s := tinySchema()
	s.Feature("user_id").IntDomain.Max = 1e12
	huge := filepath.Join(root, "schema.pbtxt")
	require.NoError(t, schema.Save(huge, s))
	code, _, stderr := run(t, "train", "--train_data_path", data, "--schema_path", huge, "--max_memory", "100000T",
		"--output_path", filepath.Join(root, "out"), "--quiet", "--threads", "1")
	assert.Equal(t, 2, code, stderr)
	assert.Contains(t, stderr, "cannot fit in this machine's memory")
	assert.NotContains(t, stderr, "panic")
}
