package mtl_test

import (
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/mtlrank/mtlrank/mtl"
)

// TestCheckpointRoundTripDCNDLRM: dcn and dlrm go through the generic
// checkpoint code: after a save and a load the configuration (the cross
// depth, embeddings_dim), every parameter and optimizer tensor and the
// predictions are identical, for one task and for every task, and a
// Predictor of the loaded model scores like the model.
func TestCheckpointRoundTripDCNDLRM(t *testing.T) {
	batches := trBatches(t, 3, 64)
	for _, c := range []struct {
		name   string
		model  string
		tasks  []string
		mutate func(*mtl.Config)
	}{
		{"dcn/all_tasks", "dcn", nil, func(c *mtl.Config) { c.DCNInteractedLayerNum = 3 }},
		{"dcn/one_task", "dcn", []string{"click"}, nil},
		{"dlrm/all_tasks", "dlrm", nil, func(c *mtl.Config) { c.EmbeddingsDim = 12 }},
		{"dlrm/one_task", "dlrm", []string{"like"}, func(c *mtl.Config) { c.EmbeddingsDim = 8 }},
	} {
		t.Run(c.name, func(t *testing.T) {
			cfg := trConfig(c.model)
			cfg.Tasks = c.tasks
			if c.mutate != nil {
				c.mutate(&cfg)
			}
			m, err := mtl.NewModel(trSchema(), cfg, trDev(), 64)
			require.NoError(t, err)
			defer m.Release()
			for _, b := range batches[:2] {
				_, err := m.TrainStep(b)
				require.NoError(t, err)
			}
			dir := filepath.Join(t.TempDir(), "ckpt")
			require.NoError(t, mtl.SaveCheckpoint(dir, m, nil))
			m2, _, err := mtl.LoadCheckpoint(dir, trDev(), 0)
			require.NoError(t, err)
			defer m2.Release()
			assert.Equal(t, m.Config(), m2.Config())
			assert.Equal(t, cfg.DCNInteractedLayerNum, m2.Config().DCNInteractedLayerNum)
			assert.Equal(t, cfg.EmbeddingsDim, m2.Config().EmbeddingsDim)
			assert.Equal(t, hostParams(m), hostParams(m2))

			n := len(m.Tasks())
			if c.tasks != nil {
				require.Equal(t, len(c.tasks), n)
			}
			outs := func() [][]float32 {
				o := make([][]float32, n)
				for i := range o {
					o[i] = make([]float32, 64)
				}
				return o
			}
			out1, out2, out3 := outs(), outs(), outs()
			require.NoError(t, m.Predict(batches[2], out1))
			require.NoError(t, m2.Predict(batches[2], out2))
			assert.Equal(t, out1, out2)
			p := m2.NewPredictor(64)
			defer p.Release()
			require.NoError(t, p.Predict(batches[2], out3))
			assert.Equal(t, out1, out3)
			for i, task := range m.Tasks() {
				for _, v := range out1[i] {
					if task.Kind == mtl.Binary {
						require.True(t, v > 0 && v < 1, "%s: a probability, got %g", task.Name, v)
					}
				}
			}
		})
	}
}
