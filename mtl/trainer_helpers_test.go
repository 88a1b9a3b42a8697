package mtl_test

import (
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/mtlrank/mtlrank/kernels"
	"github.com/mtlrank/mtlrank/loader"
	"github.com/mtlrank/mtlrank/loader/synth"
	"github.com/mtlrank/mtlrank/mtl"
	"github.com/mtlrank/mtlrank/schema"
)

// The tests of the product layer (checkpoints, Trainer, Scorer) run on a
// small TenRec-like schema so that they stay fast on two cores.

const trTableRows = 300

func trSchema() *schema.Schema { return schema.TenrecWithRows(trTableRows) }

func trDev() kernels.Device { return kernels.NewCPU(1) }

// trConfig is a small model of the given architecture.
func trConfig(model string) mtl.Config {
	c := mtl.DefaultConfig()
	c.Model = model
	c.MLPLayers = []int{32, 16}
	c.ExpertMLPLayers = []int{16}
	c.MMoENumExperts = 3
	c.CGCTaskExperts, c.CGCSharedExperts = 1, 2
	c.PLELayers = 2
	c.GateDim = 8
	c.TowerLayers = []int{8}
	c.LR = 3e-3
	c.Seed = 11
	return c
}

func trSynthConfig(rows, start int64) synth.Config {
	c := synth.DefaultConfig(rows, 5)
	c.StartRow = start
	c.RowGroupRows = 1024
	c.CalibrationRows = 8192
	c.Workers = 1
	// Denser rare tasks than TenRec so that every task has positives in
	// a few thousand rows.
	c.BaseRates = map[string]float64{"click": 0.3, "like": 0.1, "share": 0.05, "follow": 0.05}
	return c
}

// trBatches returns n in-memory batches of rows rows from the generator.
func trBatches(t testing.TB, n, rows int) []*loader.Batch {
	g, err := synth.NewGenerator(trSchema(), trSynthConfig(0, 0))
	require.NoError(t, err)
	out := make([]*loader.Batch, n)
	for i := range out {
		out[i] = g.Batch(rows)
	}
	return out
}

// trData writes a train and an eval dataset and returns their folders.
func trData(t testing.TB, trainRows, evalRows int64) (train, eval string) {
	dir := t.TempDir()
	train, eval = filepath.Join(dir, "train"), filepath.Join(dir, "eval")
	_, err := synth.WriteDataset(train, trSchema(), trSynthConfig(trainRows, 0))
	require.NoError(t, err)
	_, err = synth.WriteDataset(eval, trSchema(), trSynthConfig(evalRows, trainRows))
	require.NoError(t, err)
	return train, eval
}

func trOpen(t testing.TB, path string, batch int, shuffle bool) *loader.Dataset {
	opt := loader.DefaultOptions()
	opt.BatchSize = batch
	opt.Shuffle = shuffle
	opt.Seed = 3
	opt.Prefetch = 0
	ds, err := loader.Open(path, trSchema(), opt)
	require.NoError(t, err)
	return ds
}

// hostParams copies every parameter and optimizer tensor of m to the host.
func hostParams(m *mtl.Model) map[string][]float32 {
	out := map[string][]float32{}
	for _, list := range [][]mtl.NamedTensor{m.Params(), m.OptimizerState()} {
		for _, nt := range list {
			h := make([]float32, nt.Tensor.Len())
			m.Device().CopyToHostF32(h, nt.Tensor)
			out[nt.Name] = h
		}
	}
	return out
}
