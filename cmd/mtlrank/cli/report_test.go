package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/net/html"
)

func runCLI(args ...string) (code int, stdout, stderr string) {
	var o, e bytes.Buffer
	code = RunContext(context.Background(), args, &o, &e)
	return code, o.String(), e.String()
}

// trainSmall trains on a little synthetic data into dir and returns its
// metrics.json.
func trainSmall(t *testing.T, dir, model string) string {
	t.Helper()
	code, _, stderr := runCLI("train", "--output_path", dir, "--model", model, "--epochs", "2",
		"--synth_rows", "2048", "--synth_eval_rows", "1024", "--train_batch_size", "256", "--threads", "1", "--quiet")
	require.Equal(t, 0, code, stderr)
	return filepath.Join(dir, "metrics.json")
}

// svgKinds counts the page's plots by kind, and as "empty:<title>" the
// figures that say why they have nothing to draw.
func svgKinds(t *testing.T, path string) map[string]int {
	t.Helper()
	data, err := os.ReadFile(path)
	require.NoError(t, err)
	doc, err := html.Parse(bytes.NewReader(data))
	require.NoError(t, err)
	out := map[string]int{}
	var walk func(*html.Node)
	walk = func(n *html.Node) {
		if n.Type == html.ElementNode {
			for _, a := range n.Attr {
				switch {
				case n.Data == "svg" && a.Key == "data-kind":
					out[a.Val]++
				case a.Key == "data-empty":
					out["empty:"+strings.SplitN(a.Val, ":", 2)[0]]++
				}
			}
		}
		for c := n.FirstChild; c != nil; c = c.NextSibling {
			walk(c)
		}
	}
	walk(doc)
	return out
}

// TestReportOfTrainRuns: train writes what the report draws (the loss
// curve, the gate weights, the oracle, the configuration), and report
// draws one run beside its metrics.json and two runs into --output.
func TestReportOfTrainRuns(t *testing.T) {
	if testing.Short() {
		t.Skip("trains two models")
	}
	dir := t.TempDir()
	mmoe := trainSmall(t, filepath.Join(dir, "mmoe"), "mmoe")
	mlp := trainSmall(t, filepath.Join(dir, "mlp"), "mlp")

	var m map[string]any
	data, err := os.ReadFile(mmoe)
	require.NoError(t, err)
	require.NoError(t, json.Unmarshal(data, &m))
	for _, k := range []string{"config", "tasks", "args", "oracle", "train_batch_size"} {
		assert.Contains(t, m, k)
	}
	epochs := m["epochs"].([]any)
	require.Len(t, epochs, 2)
	// 2048 rows in batches of 256: 8 steps, one point each.
	assert.Len(t, epochs[0].(map[string]any)["step_loss"], 8)

	code, stdout, stderr := runCLI("report", filepath.Dir(mmoe))
	require.Equal(t, 0, code, stderr)
	out := filepath.Join(dir, "mmoe", "report.html")
	assert.Contains(t, stdout, out)
	k := svgKinds(t, out)
	assert.Equal(t, 1, k["step-loss"])
	assert.Equal(t, 1, k["auc-validation"])
	assert.Equal(t, 5, k["gates"], "one gate per task of TenRec")

	both := filepath.Join(dir, "cmp", "both.html")
	code, _, stderr = runCLI("report", mmoe, "--output", both, mlp, "--labels", "MMoE,MLP")
	require.Equal(t, 0, code, stderr)
	k = svgKinds(t, both)
	// A plot per binary task; on 1024 rows a rare task may see one class
	// only, and its figure says so instead.
	assert.Equal(t, 4, k["auc-validation"]+k["empty:Validation AUC"], "a figure per binary task")
	assert.GreaterOrEqual(t, k["auc-validation"], 2)
	assert.Equal(t, 5, k["gates"], "the MLP has none")
	page, err := os.ReadFile(both)
	require.NoError(t, err)
	assert.Contains(t, string(page), `data-name="MMoE"`)
	assert.Contains(t, string(page), `data-name="MLP"`)
}

// TestReportRefusals: bad command lines and bad inputs are refused before
// anything is written, with a message naming the file; no input is ever
// overwritten; a failed report leaves no file behind.
func TestReportRefusals(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "run", "metrics.json")
	require.NoError(t, os.MkdirAll(filepath.Dir(good), 0o755))
	goodJSON := `{"command": "train", "model": "model=mlp", "epochs": [{"epoch": 1, "loss": 0.5, "task_loss": {"click/binary_output": 0.5}}]}`
	require.NoError(t, os.WriteFile(good, []byte(goodJSON), 0o644))
	evalJSON := filepath.Join(dir, "eval", "metrics.json")
	require.NoError(t, os.MkdirAll(filepath.Dir(evalJSON), 0o755))
	require.NoError(t, os.WriteFile(evalJSON, []byte(`{"command": "eval", "eval": {}}`), 0o644))
	corrupt := filepath.Join(dir, "corrupt.json")
	require.NoError(t, os.WriteFile(corrupt, []byte(`{"command": "train", "epochs": [`), 0o644))
	emptyDir := filepath.Join(dir, "empty")
	require.NoError(t, os.MkdirAll(emptyDir, 0o755))
	out := filepath.Join(dir, "out.html")

	for _, tc := range []struct {
		name string
		args []string
		code int
		want string
	}{
		{"no run", []string{"report"}, 2, "give the metrics.json of at least one run"},
		{"output is the input", []string{"report", good, "--output", good}, 2, "overwrite an input"},
		{"output is the second input", []string{"report", "--output", good, corrupt, good}, 2, "overwrite an input"},
		{"output is the input folder", []string{"report", good, "--output", filepath.Dir(good)}, 2, "is a folder"},
		{"several runs, no output", []string{"report", good, good}, 2, "--output is required with several runs"},
		{"labels count", []string{"report", good, "--labels", "a,b"}, 2, "--labels names 2 runs but 1 are given"},
		{"labels repeat", []string{"report", good, good, "--output", out, "--labels", "a,a"}, 2, `"a" names two runs`},
		{"empty label", []string{"report", good, good, "--output", out, "--labels", "a,"}, 2, "label 2 is empty"},
		{"unknown flag", []string{"report", good, "--ouptut", out}, 2, "did you mean --output"},
		{"missing file", []string{"report", filepath.Join(dir, "nope.json"), "--output", out}, 1, "nope.json: no such file"},
		{"folder without metrics", []string{"report", emptyDir, "--output", out}, 1, emptyDir + " is a folder without metrics.json"},
		{"eval metrics", []string{"report", good, evalJSON, "--output", out}, 1, evalJSON + ": this is the metrics.json of 'mtlrank eval'"},
		{"corrupt", []string{"report", good, corrupt, "--output", out}, 1, corrupt + ": not valid JSON: it ends early"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, _, stderr := runCLI(tc.args...)
			assert.Equal(t, tc.code, code, stderr)
			assert.Contains(t, stderr, tc.want)
			data, err := os.ReadFile(good)
			require.NoError(t, err)
			assert.Equal(t, goodJSON, string(data), "the input is untouched")
			assert.NoFileExists(t, out)
			assert.NoFileExists(t, filepath.Join(dir, "run", "report.html"))
		})
	}
	entries, err := os.ReadDir(dir)
	require.NoError(t, err)
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	assert.ElementsMatch(t, []string{"run", "eval", "corrupt.json", "empty"}, names, "no temporary file is left")

	// A report replaces an earlier one atomically.
	require.NoError(t, os.WriteFile(out, []byte("old"), 0o644))
	code, _, stderr := runCLI("report", "--output", out, "--", good)
	require.Equal(t, 0, code, stderr)
	data, err := os.ReadFile(out)
	require.NoError(t, err)
	assert.True(t, strings.HasPrefix(string(data), "<!DOCTYPE html>"))
}

func TestReportUsage(t *testing.T) {
	code, stdout, _ := runCLI("report", "--help")
	assert.Equal(t, 0, code)
	for _, s := range []string{"Usage: mtlrank report", "--output", "--labels", "self-contained HTML page"} {
		assert.Contains(t, stdout, s)
	}
	code, stdout, _ = runCLI("--help")
	assert.Equal(t, 0, code)
	assert.Contains(t, stdout, "report ")
}

func TestLossCurveEvery(t *testing.T) {
	for _, tc := range []struct {
		rows                       int64
		batch, stepsPerEpoch, want int
	}{
		{2048, 256, 0, 1},      // 8 steps: every step
		{100 * 512, 512, 0, 1}, // 100 steps
		{101 * 512, 512, 0, 2}, // 101 steps: about 51 points
		{200000, 512, 0, 4},    // 391 steps: 98 points
		{200000, 512, 50, 1},   // capped at 50 steps
		{10, 1024, 0, 1},       // one short batch
	} {
		assert.Equal(t, tc.want, lossCurveEvery(tc.rows, tc.batch, tc.stepsPerEpoch), "%+v", tc)
	}
}
