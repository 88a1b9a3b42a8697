package tests

import (
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/mtlrank/mtlrank/loader/synth"
)

// TestMerlinModelsBeatConstant trains every architecture of Merlin's
// ranking script through the CLI, each with one task and with the four
// binary tasks (one head per task), and requires every task's held-out AUC to beat a
// constant predictor's 0.5 by a clear margin (the oracle's is about 0.82).
// DeepFM and Wide&Deep feed every task head the same summed logit
// (Merlin's architecture), so with several tasks they reach less than the
// multi-task models do (TestArchitecturesBeatConstant); Wide&Deep's deep
// part, as in Merlin's script, reads no continuous feature. The one-task
// runs also save the model, and eval of the reloaded checkpoint gives the
// training run's metrics.
func TestMerlinModelsBeatConstant(t *testing.T) {
	if testing.Short() {
		t.Skip("trains sixteen models")
	}
	data := sharedData(t)
	oracle, err := synth.ReadOracle(filepath.Join(data, "eval"))
	require.NoError(t, err)
	for _, c := range []struct {
		model  string
		flags  []string
		task   string  // of the one-task run
		minAUC float64 // every task's
	}{
		{"mlp", modelFlags("mlp"), "click", 0.65},
		{"mmoe", modelFlags("mmoe"), "like", 0.65},
		{"cgc", modelFlags("cgc"), "like", 0.65},
		{"ple", append(modelFlags("ple"), "--ple_num_layers", "2"), "click", 0.65},
		{"dcn", []string{"--dcn_interacted_layer_num", "2", "--mlp_layers", "64,32"}, "like", 0.6},
		// every categorical feature pairs with every other; the top MLP
		// reads the ten dot products (Tenrec has no continuous feature)
		{"dlrm", []string{"--embeddings_dim", "32", "--mlp_layers", "64,32"}, "like", 0.6},
		{"deepfm", []string{"--embeddings_dim", "16", "--mlp_layers", "64,32"}, "click", 0.65},
		{"wide_n_deep", []string{"--wnd_hashed_cross_num_bins", "1000", "--mlp_layers", "64,32"}, "click", 0.65},
	} {
		for _, tasks := range [][]string{{c.task}, {"click", "like", "share", "follow"}} {
			t.Run(c.model+"/"+strings.Join(tasks, ","), func(t *testing.T) {
				out := t.TempDir()
				args := []string{"train", "--train_data_path", filepath.Join(data, "train"), "--eval_data_path", filepath.Join(data, "eval"),
					"--model", c.model, "--tasks", strings.Join(tasks, ","), "--epochs", "3", "--lr", "0.003", "--lr_decay_rate", "1", "--lr_decay_steps", "0",
					"--train_batch_size", "256", "--eval_batch_size", "2048", "--validation_steps", "0", "--train_metrics_steps", "0",
					"--tower_layers", "16", "--output_path", out, "--threads", "1", "--quiet", "--random_seed", "3"}
				ckpt := filepath.Join(out, "model")
				if len(tasks) == 1 {
					args = append(args, "--save_model_path", ckpt)
				}
				stdout := mustRun(t, append(args, c.flags...)...)
				assert.Contains(t, stdout, "oracle_auc")
				m := readMetrics(t, filepath.Join(out, "metrics.json"))
				for _, target := range tasks {
					auc := metric(t, m, target+"/binary_output/auc")
					t.Logf("%s %s: auc %.4f (oracle %.4f)", c.model, target, auc, oracle.AUC[target])
					assert.GreaterOrEqual(t, auc, c.minAUC, "%s AUC (oracle %.3f)", target, oracle.AUC[target])
				}
				_, hasOther := m["share/binary_output/auc"]
				assert.Equal(t, len(tasks) > 1, hasOther, "one head per task given, no other")
				if len(tasks) > 1 {
					return
				}
				evalOut := filepath.Join(out, "eval")
				mustRun(t, "eval", "--load_model_path", ckpt, "--eval_data_path", filepath.Join(data, "eval"),
					"--output_path", evalOut, "--eval_batch_size", "2048", "--threads", "1", "--quiet")
				re := readMetrics(t, filepath.Join(evalOut, "metrics.json"))
				key := tasks[0] + "/binary_output/auc"
				assert.InDelta(t, metric(t, m, key), metric(t, re, key), 1e-6, "eval of the saved %s model", c.model)
			})
		}
	}
}
