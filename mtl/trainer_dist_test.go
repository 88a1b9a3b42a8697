package mtl_test

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/mtlrank/mtlrank/dist"
	"github.com/mtlrank/mtlrank/kernels"
	"github.com/mtlrank/mtlrank/mtl"
)

// TestFitDistributed runs Fit on 2 and 3 ranks (dist.LocalGroup) over one
// dataset: each rank trains on its part, all take the same steps, the
// epoch counts every row of the dataset once, the ranks end with the same
// parameter bits and the same validation metrics, and only rank 0 writes
// its checkpoint.
func TestFitDistributed(t *testing.T) {
	checkFitDistributed(t, []int{2, 3}, func(*testing.T) kernels.Device { return trDev() })
}

// checkFitDistributed is TestFitDistributed's body on n ranks each, every
// rank's device opened by dev (and closed by the test's cleanup).
func checkFitDistributed(t *testing.T, ns []int, dev func(*testing.T) kernels.Device) {
	trainPath, evalPath := trData(t, 5000, 1500) // row groups of 1024: 5 of them
	for _, n := range ns {
		t.Run(string(rune('0'+n)), func(t *testing.T) {
			comms := dist.LocalGroup(n)
			hists := make([]*mtl.History, n)
			params := make([]map[string][]float32, n)
			dirs := make([]string, n)
			errs := make([]error, n)
			devs := make([]kernels.Device, n)
			for r := range devs {
				devs[r] = dev(t)
			}
			var wg sync.WaitGroup
			for r := range n {
				dirs[r] = filepath.Join(t.TempDir(), "ckpt")
				wg.Add(1)
				go func() {
					defer wg.Done()
					errs[r] = func() error {
						cfg := trConfig("mmoe")
						m, err := mtl.NewModel(trSchema(), cfg, devs[r], 256)
						if err != nil {
							return err
						}
						defer m.Release()
						tr, err := mtl.NewTrainer(m, mtl.TrainerOptions{Epochs: 2, CheckpointDir: dirs[r], Comm: comms[r]})
						if err != nil {
							return err
						}
						train := trOpen(t, trainPath, 256, true)
						eval := trOpen(t, evalPath, 256, false)
						hists[r], err = tr.Fit(context.Background(), train, eval)
						params[r] = hostParams(m)
						return err
					}()
				}()
			}
			wg.Wait()
			for r, err := range errs {
				require.NoError(t, err, "rank %d", r)
			}
			for r := range n {
				require.Len(t, hists[r].Epochs, 2)
				for _, ep := range hists[r].Epochs {
					require.EqualValues(t, 5000, ep.Examples, "rank %d counts the rows of all ranks", r)
				}
				require.Equal(t, hists[0].Epochs[1].Steps, hists[r].Epochs[1].Steps, "rank %d's steps", r)
				require.Equal(t, hists[0].Epochs[1].Validation, hists[r].Epochs[1].Validation, "rank %d's validation metrics", r)
				require.Equal(t, hists[0].Epochs[1].Loss, hists[r].Epochs[1].Loss, "rank %d's loss", r)
				for name, v := range params[0] {
					require.True(t, slices.Equal(v, params[r][name]), "rank %d's %s", r, name)
				}
				_, err := os.Stat(dirs[r])
				if r == 0 {
					require.NoError(t, err, "rank 0 writes the checkpoint")
				} else {
					require.True(t, os.IsNotExist(err), "rank %d must not write: %v", r, err)
				}
			}
			require.Greater(t, hists[0].Epochs[1].Validation["auc_avg"], 0.5)
		})
	}
}

// TestFitDistributedResumesOnOtherRanks: a checkpoint written by rank 0 of
// a 2-rank job (replicated tables: the one-process format) resumes on 3
// ranks, which continue from its epoch with the same bits on every rank.
func TestFitDistributedResumesOnOtherRanks(t *testing.T) {
	trainPath, _ := trData(t, 3000, 10)
	ckpt := filepath.Join(t.TempDir(), "ckpt")
	fit := func(n int, load bool) ([]*mtl.History, []map[string][]float32) {
		comms := dist.LocalGroup(n)
		hists := make([]*mtl.History, n)
		params := make([]map[string][]float32, n)
		errs := make([]error, n)
		var wg sync.WaitGroup
		for r := range n {
			wg.Add(1)
			go func() {
				defer wg.Done()
				errs[r] = func() error {
					var m *mtl.Model
					var st *mtl.TrainState
					var err error
					if load {
						m, st, err = mtl.LoadCheckpoint(ckpt, trDev(), 256)
					} else {
						m, err = mtl.NewModel(trSchema(), trConfig("mlp"), trDev(), 256)
					}
					if err != nil {
						return err
					}
					defer m.Release()
					opts := mtl.TrainerOptions{Epochs: 1, Comm: comms[r]}
					if load {
						opts.Epochs = 2
					} else {
						opts.CheckpointDir = ckpt
					}
					tr, err := mtl.NewTrainer(m, opts)
					if err != nil {
						return err
					}
					tr.Resume(st)
					hists[r], err = tr.Fit(context.Background(), trOpen(t, trainPath, 128, true), nil)
					params[r] = hostParams(m)
					return err
				}()
			}()
		}
		wg.Wait()
		for r, err := range errs {
			require.NoError(t, err, "rank %d of %d", r, n)
		}
		return hists, params
	}
	first, _ := fit(2, false)
	require.Len(t, first[0].Epochs, 1)
	hists, params := fit(3, true)
	for r := range 3 {
		require.Len(t, hists[r].Epochs, 1, "rank %d runs the second epoch only", r)
		require.Equal(t, 2, hists[r].Epochs[0].Epoch)
		require.EqualValues(t, 3000, hists[r].Epochs[0].Examples)
		require.Equal(t, 2, hists[r].State.Epoch)
		for name, v := range params[0] {
			require.True(t, slices.Equal(v, params[r][name]), "rank %d's %s", r, name)
		}
	}
}
