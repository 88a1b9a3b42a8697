package tests

import (
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"

	"github.com/mtlrank/mtlrank/loader/synth"
)

// TestWideDeepModelsBeatConstant trains DeepFM and Wide&Deep through the
// CLI on one task and on four, and requires every task's held-out AUC to
// beat a constant predictor's (0.5) by a clear margin. Both models feed
// every task head the same summed logit (Merlin's architecture), so with
// several tasks they reach less than the multi-task models do
// (TestArchitecturesBeatConstant); Wide&Deep's deep part, as in Merlin's
// script, reads no continuous feature.
func TestWideDeepModelsBeatConstant(t *testing.T) {
	if testing.Short() {
		t.Skip("trains four models")
	}
	data := sharedData(t)
	oracle, err := synth.ReadOracle(filepath.Join(data, "eval"))
	if err != nil {
		t.Fatal(err)
	}
	for _, model := range []string{"deepfm", "wide_n_deep"} {
		for _, tasks := range [][]string{{"click"}, {"click", "like", "share", "follow"}} {
			t.Run(model+"/"+strings.Join(tasks, ","), func(t *testing.T) {
				out := t.TempDir()
				args := []string{"train", "--train_data_path", filepath.Join(data, "train"), "--eval_data_path", filepath.Join(data, "eval"),
					"--model", model, "--tasks", strings.Join(tasks, ","), "--epochs", "3", "--lr", "0.003", "--lr_decay_rate", "1",
					"--lr_decay_steps", "0", "--train_batch_size", "256", "--eval_batch_size", "2048", "--validation_steps", "0",
					"--train_metrics_steps", "0", "--output_path", out, "--threads", "1", "--quiet", "--random_seed", "3",
					"--mlp_layers", "64,32", "--tower_layers", "16"}
				if model == "deepfm" {
					args = append(args, "--embeddings_dim", "16")
				} else {
					args = append(args, "--wnd_hashed_cross_num_bins", "1000")
				}
				mustRun(t, args...)
				m := readMetrics(t, filepath.Join(out, "metrics.json"))
				for _, target := range tasks {
					auc := metric(t, m, target+"/binary_output/auc")
					t.Logf("%s: auc %.4f (oracle %.4f)", target, auc, oracle.AUC[target])
					assert.GreaterOrEqual(t, auc, 0.65, "%s AUC (oracle %.3f)", target, oracle.AUC[target])
				}
			})
		}
	}
}
