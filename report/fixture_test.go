package report

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strconv"
	"testing"

	"github.com/stretchr/testify/require"
)

// fixture describes a run as 'mtlrank train' writes it; metricsJSON turns
// it into the bytes of a metrics.json with the key names of the format,
// built as plain maps so that the test does not share the decoder's types.
type fixture struct {
	binary      []string // task names of binary tasks ("<target>/binary_output")
	regression  []string
	epochs      int
	validation  bool
	train       bool
	gates       map[string]int // gate name -> experts
	stepLoss    bool
	oracle      bool
	withTasks   bool // the "tasks" list (newer files)
	withConfig  bool
	model       string
	args        []string
	configExtra map[string]any
	noEval      bool // no evaluation after training
}

func defaultFixture() fixture {
	return fixture{
		binary:     []string{"click/binary_output", "like/binary_output"},
		regression: []string{"watching_times/regression_output"},
		epochs:     3, validation: true, train: true,
		gates:    map[string]int{"click": 3, "like": 3},
		stepLoss: true, oracle: true, withTasks: true, withConfig: true,
		model: "model=mmoe experts=3", args: []string{"--model", "mmoe", "--epochs", "3"},
	}
}

// Values are chosen so that a test computes what the page must show:
// loss of task i at epoch e is 0.5/(e+1) + 0.1*i, AUC of binary task i at
// epoch e is 0.6 + 0.05*e + 0.01*i, RMSE 1.5 - 0.1*e, gate weight of expert
// j is (j+1)/sum over experts (constant over epochs), oracle AUC 0.8 + 0.01*i.
func taskLoss(i, e int) float64 { return 0.5/float64(e+1) + 0.1*float64(i) }
func aucAt(i, e int) float64    { return 0.6 + 0.05*float64(e) + 0.01*float64(i) }
func rmseAt(e int) float64      { return 1.5 - 0.1*float64(e) }
func oracleAUC(i int) float64   { return 0.8 + 0.01*float64(i) }

func gateWeight(j, experts int) float64 {
	return float64(j+1) / float64(experts*(experts+1)/2)
}

func (f fixture) results(e int) map[string]any {
	m := map[string]any{}
	loss := 0.0
	for i, t := range f.binary {
		m[t+"/auc"] = aucAt(i, e)
		m[t+"/pr_auc"] = 0.3
		m[t+"/logloss"] = 0.4
		m[t+"/precision"] = 0.5
		m[t+"/recall"] = 0.25
		m[t+"/binary_accuracy"] = 0.9
		m[t+"/positive_rate"] = 0.1
		m[t+"/count"] = 1000
		m[t+"/loss"] = taskLoss(i, e)
		loss += taskLoss(i, e)
	}
	for _, t := range f.regression {
		m[t+"/rmse"] = rmseAt(e)
		m[t+"/mae"] = 0.7
		m[t+"/count"] = 1000
		m[t+"/loss"] = rmseAt(e) * rmseAt(e)
	}
	if len(f.binary) > 0 {
		m["auc_avg"] = 0.65
	}
	m["loss"] = loss
	for g, n := range f.gates {
		for j := range n {
			m["gate/"+g+"/expert_"+strconv.Itoa(j)] = gateWeight(j, n)
		}
	}
	return m
}

func (f fixture) tasks() []string { return append(append([]string{}, f.binary...), f.regression...) }

func (f fixture) metricsJSON(t testing.TB) []byte {
	t.Helper()
	var epochs []any
	step := 0
	for e := 1; e <= f.epochs; e++ {
		tl := map[string]any{}
		for i, task := range f.tasks() {
			tl[task] = taskLoss(i, e)
		}
		ep := map[string]any{"epoch": e, "steps": 10, "examples": 5120, "loss": 1.0 / float64(e), "task_loss": tl,
			"seconds": 2.0, "examples_per_s": 2560.0}
		if f.validation {
			ep["validation"] = f.results(e)
		}
		if f.train {
			ep["train"] = f.results(e)
		}
		if f.stepLoss {
			var pts []any
			for k := 0; k < 5; k++ {
				step += 2
				pts = append(pts, map[string]any{"step": step, "steps": 2, "loss": 1.0/float64(e) + 0.01*float64(k), "task_loss": tl})
			}
			ep["step_loss"] = pts
		}
		epochs = append(epochs, ep)
	}
	doc := map[string]any{"command": "train", "model": f.model, "device": "cpu", "train_data": "data/train",
		"epochs": epochs, "steps": step, "seconds": 7.5}
	if !f.noEval {
		doc["eval"] = f.results(f.epochs)
	}
	if f.validation {
		doc["eval_data"] = "data/eval"
	}
	if f.oracle {
		auc, rmse := map[string]any{}, map[string]any{}
		for i, t := range f.binary {
			auc[target(t)] = oracleAUC(i)
		}
		for _, t := range f.regression {
			rmse[target(t)] = 0.5
		}
		doc["oracle"] = map[string]any{"rows": 1000, "auc": auc, "logloss": map[string]any{}, "rmse": rmse,
			"constant_rmse": map[string]any{}, "config": map[string]any{"rows": 1000}}
	}
	if f.withTasks {
		var ts []any
		for _, t := range f.binary {
			ts = append(ts, map[string]any{"name": t, "target": target(t), "kind": "binary"})
		}
		for _, t := range f.regression {
			ts = append(ts, map[string]any{"name": t, "target": target(t), "kind": "regression"})
		}
		doc["tasks"] = ts
	}
	if f.withConfig {
		cfg := map[string]any{"model": "mmoe", "mlp_layers": []int{128, 64}, "lr": 0.002, "activation": "relu"}
		for k, v := range f.configExtra {
			cfg[k] = v
		}
		doc["config"] = cfg
		doc["args"] = f.args
		doc["train_batch_size"] = 512
	}
	data, err := json.MarshalIndent(doc, "", "  ")
	require.NoError(t, err)
	return data
}

func target(task string) string {
	for _, s := range []string{"/binary_output", "/regression_output"} {
		if len(task) > len(s) && task[len(task)-len(s):] == s {
			return task[:len(task)-len(s)]
		}
	}
	return task
}

// writeRun writes the fixture as dir/<name>/metrics.json and loads it.
func writeRun(t testing.TB, dir, name string, f fixture) *Run {
	t.Helper()
	p := filepath.Join(dir, name, "metrics.json")
	require.NoError(t, os.MkdirAll(filepath.Dir(p), 0o755))
	require.NoError(t, os.WriteFile(p, f.metricsJSON(t), 0o644))
	r, err := Load(p)
	require.NoError(t, err)
	return r
}
