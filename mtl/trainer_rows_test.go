package mtl_test

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/mtlrank/mtlrank/dist"
	"github.com/mtlrank/mtlrank/kernels"
	"github.com/mtlrank/mtlrank/mtl"
)

// rowJob is one distributed Fit in TestFitRowShardedResumes: n ranks with
// their tables replicated or sharded by rows, from a new model or from
// the checkpoint in load, writing their checkpoint to save.
type rowJob struct {
	n          int
	sharding   string
	load, save string
	epochs     int
	// trainMetrics is TrainMetricsSteps
	trainMetrics int
	// gather is GatherCheckpoint
	gather bool
	// dev opens a rank's device (nil: trDev)
	dev func() kernels.Device
}

// run runs the job on a dist.LocalGroup and returns every rank's history.
func (j rowJob) run(t *testing.T, trainPath, evalPath string) []*mtl.History {
	comms := dist.LocalGroup(j.n)
	hists := make([]*mtl.History, j.n)
	errs := make([]error, j.n)
	devs := make([]kernels.Device, j.n)
	for r := range devs {
		devs[r] = trDev()
		if j.dev != nil {
			devs[r] = j.dev()
		}
	}
	var wg sync.WaitGroup
	for r := range j.n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[r] = func() error {
				row := j.sharding == mtl.ShardRow
				var m *mtl.Model
				var st *mtl.TrainState
				var err error
				switch {
				case j.load != "" && row:
					m, st, err = mtl.LoadShardedCheckpoint(j.load, devs[r], 256, comms[r])
				case j.load != "":
					m, st, err = mtl.LoadCheckpoint(j.load, devs[r], 256)
				case row:
					m, err = mtl.NewShardedModel(trSchema(), trConfig("mlp"), devs[r], 256, comms[r])
				default:
					m, err = mtl.NewModel(trSchema(), trConfig("mlp"), devs[r], 256)
				}
				if err != nil {
					return err
				}
				defer m.Release()
				if got := m.RowSharded(); got != row {
					return fmt.Errorf("RowSharded() = %v", got)
				}
				tr, err := mtl.NewTrainer(m, mtl.TrainerOptions{Epochs: j.epochs, Comm: comms[r], EmbeddingSharding: j.sharding, CheckpointDir: j.save, TrainMetricsSteps: j.trainMetrics, GatherCheckpoint: j.gather})
				if err != nil {
					return err
				}
				tr.Resume(st)
				hists[r], err = tr.Fit(context.Background(), trOpen(t, trainPath, 128, true), trOpen(t, evalPath, 256, false))
				return err
			}()
		}()
	}
	wg.Wait()
	for r, err := range errs {
		require.NoError(t, err, "rank %d of %d (%s)", r, j.n, j.sharding)
	}
	for r := range j.n {
		for e := range hists[0].Epochs {
			want, got := hists[0].Epochs[e], hists[r].Epochs[e]
			require.Equal(t, want.Loss, got.Loss, "rank %d's loss", r)
			require.Equal(t, want.Validation, got.Validation, "rank %d's validation metrics", r)
			require.Equal(t, want.Train, got.Train, "rank %d's training metrics", r)
		}
	}
	return hists
}

// sameCheckpoint checks that two checkpoints hold the same tensors, bit
// for bit: the bytes of the safetensors files of their one-process form
// (canonical).
func sameCheckpoint(t *testing.T, a, b string) {
	t.Helper()
	a, b = canonical(t, a), canonical(t, b)
	for _, f := range []string{"model.safetensors", "optimizer.safetensors"} {
		x, err := os.ReadFile(filepath.Join(a, f))
		require.NoError(t, err)
		y, err := os.ReadFile(filepath.Join(b, f))
		require.NoError(t, err)
		require.True(t, bytes.Equal(x, y), "%s differs between %s and %s", f, a, b)
	}
}

// canonical returns a one-process checkpoint of the checkpoint in dir:
// dir itself if it is one, else the per-shard checkpoint loaded in one
// process (its shards assembled) and saved beside it.
func canonical(t *testing.T, dir string) string {
	t.Helper()
	if _, err := os.Stat(filepath.Join(dir, "shards.json")); os.IsNotExist(err) {
		return dir
	}
	m, st, err := mtl.LoadCheckpoint(dir, trDev(), 0)
	require.NoError(t, err)
	defer m.Release()
	require.False(t, m.RowSharded())
	out := dir + "-canon"
	require.NoError(t, mtl.SaveCheckpoint(out, m, st))
	return out
}

// shardFiles lists the shard files of a checkpoint folder.
func shardFiles(t *testing.T, dir string) []string {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(dir, "shard-*"))
	require.NoError(t, err)
	for i, f := range files {
		files[i] = filepath.Base(f)
	}
	return files
}

// TestFitRowShardedResumes: Fit with the tables sharded by rows on 2 ranks
// writes one shard file per rank and a manifest, or (GatherCheckpoint)
// the checkpoint a job with replicated tables writes, bit for bit, every
// rank with the same losses, validation and training metrics as that
// job's. Both resume the same, bit for bit: on 3 ranks with the tables
// sharded by rows (saving per shard or gathered) or replicated, in one
// process, and from 3 ranks back on 2.
func TestFitRowShardedResumes(t *testing.T) {
	trainPath, evalPath := trData(t, 3000, 700)
	dir := t.TempDir()
	ck := func(name string) string { return filepath.Join(dir, name) }
	rep := rowJob{n: 2, sharding: mtl.ShardReplicate, save: ck("rep2"), epochs: 1, trainMetrics: 4}.run(t, trainPath, evalPath)
	row := rowJob{n: 2, sharding: mtl.ShardRow, save: ck("row2s"), epochs: 1, trainMetrics: 4}.run(t, trainPath, evalPath)
	rowJob{n: 2, sharding: mtl.ShardRow, save: ck("row2g"), epochs: 1, gather: true}.run(t, trainPath, evalPath)
	require.Equal(t, rep[0].Epochs[0].Loss, row[0].Epochs[0].Loss)
	require.Equal(t, rep[0].Epochs[0].Validation, row[0].Epochs[0].Validation)
	require.NotEmpty(t, row[0].Epochs[0].Train)
	require.Equal(t, rep[0].Epochs[0].Train, row[0].Epochs[0].Train)
	require.Equal(t, []string{"shard-00000-of-00002.safetensors", "shard-00001-of-00002.safetensors"}, shardFiles(t, ck("row2s")))
	require.FileExists(t, filepath.Join(ck("row2s"), "shards.json"))
	require.Empty(t, shardFiles(t, ck("row2g")))
	require.NoFileExists(t, filepath.Join(ck("row2g"), "shards.json"))
	sameCheckpoint(t, ck("rep2"), ck("row2g"))
	sameCheckpoint(t, ck("rep2"), ck("row2s"))
	for _, src := range []string{"row2s", "row2g"} {
		for _, j := range []rowJob{
			{n: 3, sharding: mtl.ShardRow, load: ck(src), save: ck(src + "-row3s"), epochs: 2},
			{n: 3, sharding: mtl.ShardRow, load: ck(src), save: ck(src + "-row3g"), epochs: 2, gather: true},
			{n: 3, sharding: mtl.ShardReplicate, load: ck(src), save: ck(src + "-rep3"), epochs: 2},
			{n: 1, sharding: mtl.ShardReplicate, load: ck(src), save: ck(src + "-one"), epochs: 2},
		} {
			h := j.run(t, trainPath, evalPath)
			require.Len(t, h[0].Epochs, 1, "the second epoch only")
			require.Equal(t, 2, h[0].Epochs[0].Epoch)
			require.EqualValues(t, 3000, h[0].Epochs[0].Examples)
		}
		require.Len(t, shardFiles(t, ck(src+"-row3s")), 3)
		// 3 -> 2 ranks, from the 3-rank checkpoint of each form.
		for _, from := range []string{"-row3s", "-row3g"} {
			rowJob{n: 2, sharding: mtl.ShardRow, load: ck(src + from), save: ck(src + from + "-row2"), epochs: 3}.run(t, trainPath, evalPath)
		}
	}
	for _, name := range []string{"row2g-row3s", "row2s-row3g", "row2s-rep3", "row2g-rep3", "row2g-row3g"} {
		sameCheckpoint(t, ck("row2s-row3s"), ck(name))
	}
	sameCheckpoint(t, ck("row2s-one"), ck("row2g-one"))
	for _, name := range []string{"row2s-row3g-row2", "row2g-row3s-row2", "row2g-row3g-row2"} {
		sameCheckpoint(t, ck("row2s-row3s-row2"), ck(name))
	}
}

// TestTrainerShardingChecks: the trainer refuses a sharding mode that does
// not fit the model, and another communicator than the model's.
func TestTrainerShardingChecks(t *testing.T) {
	comms := dist.LocalGroup(2)
	errs := make([]error, 2)
	var wg sync.WaitGroup
	for r := range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[r] = func() error {
				sharded, err := mtl.NewShardedModel(trSchema(), trConfig("mlp"), trDev(), 64, comms[r])
				if err != nil {
					return err
				}
				defer sharded.Release()
				plain, err := mtl.NewModel(trSchema(), trConfig("mlp"), trDev(), 64)
				if err != nil {
					return err
				}
				defer plain.Release()
				for _, tc := range []struct {
					m    *mtl.Model
					opts mtl.TrainerOptions
					want string
				}{
					{sharded, mtl.TrainerOptions{Comm: comms[r]}, `set TrainerOptions.EmbeddingSharding to "row"`},
					{plain, mtl.TrainerOptions{Comm: comms[r], EmbeddingSharding: "row"}, "needs a model built sharded by rows"},
					{plain, mtl.TrainerOptions{Comm: comms[r], EmbeddingSharding: "rows"}, `unknown embedding sharding "rows"`},
					{sharded, mtl.TrainerOptions{Comm: dist.LocalGroup(2)[r], EmbeddingSharding: "row"}, "another communicator"},
				} {
					_, err := mtl.NewTrainer(tc.m, tc.opts)
					if err == nil || !bytes.Contains([]byte(err.Error()), []byte(tc.want)) {
						return fmt.Errorf("%+v: error %v, want %q", tc.opts, err, tc.want)
					}
				}
				return nil
			}()
		}()
	}
	wg.Wait()
	for r, err := range errs {
		require.NoError(t, err, "rank %d", r)
	}
}
