//go:build cuda

package tests

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/mtlrank/mtlrank/cublas"
)

// trainReport runs mtlrank train on the synthetic preset with the given
// extra flags and returns its metrics.json.
func trainReport(t *testing.T, extra ...string) map[string]any {
	t.Helper()
	out := t.TempDir()
	args := append([]string{"train", "--output_path", out, "--synth_rows", "5000", "--synth_eval_rows", "2000",
		"--table_rows", "300", "--model", "mmoe", "--epochs", "2", "--quiet", "--threads", "1"}, extra...)
	stdout := mustRun(t, args...)
	raw, err := os.ReadFile(filepath.Join(out, "metrics.json"))
	require.NoError(t, err)
	var doc map[string]any
	require.NoError(t, json.Unmarshal(raw, &doc))
	doc["stdout"] = stdout
	return doc
}

// The CLI's training on the GPU (the emulated device in CI) reaches the
// CPU's evaluation metrics: every task's AUC within 1e-4 (the devices
// differ only in float32 rounding: GEMM and reduction orders). With
// --cuda_graph the captured steps engage (the synthetic preset's training
// batch is smaller than its evaluation batch, which sizes the model) and
// give bit-identical metrics.
func TestCUDATrainMatchesCPU(t *testing.T) {
	if n, err := cublas.DeviceCount(); err != nil || n == 0 {
		t.Skipf("no CUDA device (%v)", err)
	}
	cpu := trainReport(t, "--device", "cpu")
	gpu := trainReport(t, "--device", "cuda")
	graph := trainReport(t, "--device", "cuda", "--cuda_graph", "true")

	evalOf := func(doc map[string]any) map[string]float64 {
		m := map[string]float64{}
		for k, v := range doc["eval"].(map[string]any) {
			if f, ok := v.(float64); ok {
				m[k] = f
			}
		}
		return m
	}
	ce, ge, gre := evalOf(cpu), evalOf(gpu), evalOf(graph)
	aucs := 0
	for k, want := range ce {
		if !strings.HasSuffix(k, "/auc") {
			continue
		}
		aucs++
		assert.InDelta(t, want, ge[k], 1e-4, "%s: cpu %.6f, cuda %.6f", k, want, ge[k])
	}
	assert.GreaterOrEqual(t, aucs, 4, "per-task AUCs in the report")
	assert.Equal(t, ge, gre, "--cuda_graph changes no metric")
	steps := graph["steps"].(float64)
	assert.Equal(t, steps-1, graph["cuda_graph_steps"], "every step after the first replayed a graph")
	assert.Nil(t, graph["cuda_graph_error"])
	assert.Contains(t, graph["stdout"], "CUDA graphs: ")
}
