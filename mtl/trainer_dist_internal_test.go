package mtl

import (
	"context"
	"crypto/sha256"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/mtlrank/mtlrank/dist"
	"github.com/mtlrank/mtlrank/loader"
	"github.com/mtlrank/mtlrank/mtl/metrics"
)

// writeGradData writes the rows of gradBatch into a folder of Parquet
// files, file i holding files[i][0] rows in row groups of files[i][1]:
// uneven row groups, so that the ranks' parts are uneven and batches of
// one process straddle row groups where the ranks' do not.
func writeGradData(t testing.TB, seed uint64, files [][2]int) string {
	t.Helper()
	dir := t.TempDir()
	rng := rand.New(rand.NewPCG(seed, 1))
	for i, f := range files {
		b := gradBatch(rng, f[0])
		cols := map[string]any{}
		for name, c := range b.Columns {
			cols[name] = c
		}
		// The schema's item column is int32; gradBatch gives int64 ids.
		items := make([]int32, b.Rows)
		for j, v := range b.Column("item").I64 {
			items[j] = int32(v)
		}
		cols["item"] = items
		require.NoError(t, loader.WriteParquet(filepath.Join(dir, fmt.Sprintf("part_%d.parquet", i)), gradSchema(), cols, f[1]))
	}
	return dir
}

func openGrad(t testing.TB, path string, batch int, shuffle bool) *loader.Dataset {
	t.Helper()
	opt := loader.DefaultOptions()
	opt.BatchSize, opt.Shuffle, opt.Seed, opt.Prefetch = batch, shuffle, 3, 0
	ds, err := loader.Open(path, gradSchema(), opt)
	require.NoError(t, err)
	return ds
}

// evalDatasets are the evaluation sets of the distributed evaluation test:
// uneven row groups (200, 200, 100 | 130; 3 ranks get 200, 200, 230 rows)
// and a set of two row groups, where the third of 3 ranks has no rows.
var evalDatasets = []struct {
	name  string
	files [][2]int
}{
	{"uneven", [][2]int{{500, 200}, {130, 200}}},
	{"rank without rows", [][2]int{{300, 200}}},
}

// batchTolerance gives the evaluation keys that are sums of per-batch
// means, and so depend on where batches are cut (in one process too: a
// different batch size changes them), a relative tolerance: the task
// losses and gate weights differ by rounding; "loss" holds the L2 term of
// each batch's embedding rows, a sum over the batch's rows, which changes
// with the batches beyond rounding.
func batchTolerance(key string) (float64, bool) {
	switch {
	case key == LossKey:
		return 1e-3, true
	case strings.HasSuffix(key, "/"+LossKey) || strings.HasPrefix(key, "gate/"):
		return 1e-6, true
	}
	return 0, false
}

// compareResults checks got against one process's want: the same keys,
// every per-row metric (AUC, PR-AUC, logloss, RMSE, ...) the same bits,
// the batch-dependent ones within batchTolerance.
func compareResults(want, got metrics.Results) error {
	if !slices.Equal(want.Keys(), got.Keys()) {
		return fmt.Errorf("keys %v, one process %v", got.Keys(), want.Keys())
	}
	for _, k := range want.Keys() {
		w, g := want[k], got[k]
		if tol, ok := batchTolerance(k); ok {
			if math.Abs(w-g) > tol*math.Abs(w) {
				return fmt.Errorf("%s = %v, one process %v", k, g, w)
			}
			continue
		}
		if math.Float64bits(w) != math.Float64bits(g) && !(math.IsNaN(w) && math.IsNaN(g)) {
			return fmt.Errorf("%s = %v, one process %v (not the same bits)", k, g, w)
		}
	}
	return nil
}

// evalCase is one rank's side of the distributed evaluation test on comm:
// it trains a model a few steps (the same bits on every rank: one process
// each), evaluates each dataset in one process and as a rank of comm with
// the tables held as sharding says (ShardRow: the trained model's
// checkpoint loaded sharded by rows, every lookup collective), checks the
// rank's metrics against one process's, and returns a digest of its
// metrics (the same on every rank).
func evalCase(comm dist.Comm, dirs []string, sharding string) (string, error) {
	cfg := gradConfig("mmoe")
	m, err := NewModel(gradSchema(), cfg, testDev(), 64)
	if err != nil {
		return "", err
	}
	defer m.Release()
	rng := rand.New(rand.NewPCG(9, 9))
	for range 5 {
		if _, err := m.TrainStep(gradBatch(rng, 64)); err != nil {
			return "", err
		}
	}
	one, err := NewTrainer(m, TrainerOptions{})
	if err != nil {
		return "", err
	}
	evaluate := func(tr *Trainer, dir string) (metrics.Results, error) {
		ds, err := loader.Open(dir, gradSchema(), evalOptions())
		if err != nil {
			return nil, err
		}
		return tr.Evaluate(context.Background(), ds)
	}
	var want []metrics.Results
	for _, dir := range dirs {
		r, err := evaluate(one, dir)
		if err != nil {
			return "", err
		}
		want = append(want, r)
	}
	if sharding == ShardRow {
		dir, err := os.MkdirTemp("", "mtl-evalcase-")
		if err != nil {
			return "", err
		}
		defer os.RemoveAll(dir)
		if err := SaveCheckpoint(filepath.Join(dir, "model"), m, &TrainState{}); err != nil {
			return "", err
		}
		if m, _, err = LoadShardedCheckpoint(filepath.Join(dir, "model"), testDev(), 64, comm); err != nil {
			return "", err
		}
		defer m.Release()
	}
	tr, err := NewTrainer(m, TrainerOptions{Comm: comm, EmbeddingSharding: sharding})
	if err != nil {
		return "", err
	}
	h := sha256.New()
	for i, dir := range dirs {
		got, err := evaluate(tr, dir)
		if err != nil {
			return "", fmt.Errorf("rank %d, %s: %w", comm.Rank(), dir, err)
		}
		if err := compareResults(want[i], got); err != nil {
			return "", fmt.Errorf("rank %d of %d, %s: %w", comm.Rank(), comm.Size(), filepath.Base(dir), err)
		}
		b, _ := got.MarshalJSON()
		h.Write(b)
	}
	return fmt.Sprintf("%x", h.Sum(nil)), nil
}

func evalOptions() loader.Options {
	opt := loader.DefaultOptions()
	opt.BatchSize, opt.Prefetch = 64, 0
	return opt
}

// TestDistributedEvaluate: a partitioned evaluation on 1, 2 and 3 ranks
// (each rank scores its part, the scores and labels are gathered) gives
// every rank the metrics one process computes on the whole set, AUC,
// logloss and RMSE bit for bit, with uneven parts and with a rank that has
// no rows, in both sharding modes (with the tables sharded by rows, the
// ranks whose part has run out join the others' lookups). TestMPITrain
// runs the same under mpirun.
func TestDistributedEvaluate(t *testing.T) {
	var dirs []string
	for i, d := range evalDatasets {
		dirs = append(dirs, writeGradData(t, uint64(i+1), d.files))
	}
	for _, sharding := range []string{ShardReplicate, ShardRow} {
		for _, n := range []int{1, 2, 3} {
			t.Run(fmt.Sprintf("%s/%d", sharding, n), func(t *testing.T) {
				digests, errs := runRanks(n, func(c dist.Comm) (string, error) { return evalCase(c, dirs, sharding) })
				for r := range n {
					require.NoError(t, errs[r], "rank %d", r)
					require.Equal(t, digests[0], digests[r], "rank %d's metrics differ from rank 0's", r)
				}
			})
		}
	}
}

// TestDistributedEvaluateFails: a rank whose part cannot be scored (here:
// its dataset lacks a column the model reads) fails the evaluation on
// every rank, instead of leaving the others waiting in a collective (with
// the tables sharded by rows, in a lookup).
func TestDistributedEvaluateFails(t *testing.T) {
	dir := writeGradData(t, 4, [][2]int{{300, 100}})
	for _, sharding := range []string{ShardReplicate, ShardRow} {
		t.Run(sharding, func(t *testing.T) { evaluateFails(t, dir, sharding) })
	}
}

func evaluateFails(t *testing.T, dir, sharding string) {
	_, errs := runRanks(3, func(c dist.Comm) (string, error) {
		m, err := rankModel(gradConfig("mlp"), 64, c, sharding)
		if err != nil {
			return "", err
		}
		defer m.Release()
		tr, err := NewTrainer(m, TrainerOptions{Comm: c, EmbeddingSharding: sharding})
		if err != nil {
			return "", err
		}
		ds, err := loader.Open(dir, gradSchema(), evalOptions())
		if err != nil {
			return "", err
		}
		if c.Rank() == 1 {
			// Rank 1's dataset lacks the weight column: its passes fail.
			ds, err = loader.Open(dir, gradSchema(), func() loader.Options {
				o := evalOptions()
				o.Columns = []string{"user", "item", "hist", "tags", "price", "click", "like", "watch"}
				return o
			}())
			if err != nil {
				return "", err
			}
		}
		_, err = tr.Evaluate(context.Background(), ds)
		return "", err
	})
	require.ErrorContains(t, errs[1], `column "w" is missing`)
	for _, r := range []int{0, 2} {
		require.ErrorContains(t, errs[r], "1 of the 3 ranks failed", "rank %d", r)
	}
}

// TestDistributedTrainMetrics: the training metrics of a distributed step
// are those of the step's global batch: N ranks scoring their batches
// (uneven, one empty) with the same parameters give every rank the
// metrics one process computes on the concatenated batches, per-row
// metrics bit for bit, in both sharding modes (with the tables sharded by
// rows, the rank without rows joins the others' lookups).
func TestDistributedTrainMetrics(t *testing.T) {
	for _, tc := range []struct {
		sharding string
		rows     []int
	}{
		{ShardReplicate, []int{40}}, {ShardReplicate, []int{20, 33}}, {ShardReplicate, []int{7, 0, 30}},
		{ShardRow, []int{20, 33}}, {ShardRow, []int{7, 0, 30}}, {ShardRow, []int{0, 12, 0}},
	} {
		sharding, rows := tc.sharding, tc.rows
		t.Run(fmt.Sprint(sharding, rows), func(t *testing.T) {
			n := len(rows)
			rng := rand.New(rand.NewPCG(5, 6))
			var parts [][]*loader.Batch
			for range 3 {
				step := make([]*loader.Batch, n)
				for r := range step {
					step[r] = gradBatch(rng, rows[r])
				}
				parts = append(parts, step)
			}
			cfg := gradConfig("mmoe")
			one, err := NewModel(gradSchema(), cfg, testDev(), 128)
			require.NoError(t, err)
			defer one.Release()
			tr, err := NewTrainer(one, TrainerOptions{})
			require.NoError(t, err)
			e := metrics.NewEvaluator(tr.taskSpecs())
			for _, step := range parts {
				require.NoError(t, tr.score(concatBatches(step), e))
			}
			want := e.Results()
			digests, errs := runRanks(n, func(c dist.Comm) (string, error) {
				m, err := rankModel(cfg, 128, c, sharding)
				if err != nil {
					return "", err
				}
				defer m.Release()
				tr, err := NewTrainer(m, TrainerOptions{Comm: c, EmbeddingSharding: sharding})
				if err != nil {
					return "", err
				}
				e := metrics.NewEvaluator(tr.taskSpecs())
				s := newScored(len(m.tasks))
				for _, step := range parts {
					if err := tr.scoreDist(step[c.Rank()], e, s); err != nil {
						return "", err
					}
				}
				got := e.Results()
				if err := compareResults(want, got); err != nil {
					return "", err
				}
				b, _ := got.MarshalJSON()
				return string(b), nil
			})
			for r := range n {
				require.NoError(t, errs[r], "rank %d", r)
				require.Equal(t, digests[0], digests[r], "rank %d", r)
			}
		})
	}
}

// TestFitDistributedPlannedRows: Fit with the steps' row counts taken
// from the partition gives the bits of Fit with them summed over the ranks
// (the fallback), on 2 and 3 ranks with uneven parts, training metrics on;
// and the training metrics and epoch loss are the same on every rank.
func TestFitDistributedPlannedRows(t *testing.T) {
	dir := writeGradData(t, 7, [][2]int{{700, 160}, {250, 100}})
	for _, n := range []int{2, 3} {
		t.Run(fmt.Sprint(n), func(t *testing.T) {
			fit := func(noPlan bool) ([]*History, []map[string][]float32) {
				type out struct {
					h *History
					p map[string][]float32
				}
				res, errs := runRanks(n, func(c dist.Comm) (out, error) {
					m, err := NewModel(gradSchema(), gradConfig("mmoe"), testDev(), 64)
					if err != nil {
						return out{}, err
					}
					defer m.Release()
					tr, err := NewTrainer(m, TrainerOptions{Epochs: 2, Comm: c, TrainMetricsSteps: 4})
					if err != nil {
						return out{}, err
					}
					tr.noPlan = noPlan
					h, err := tr.Fit(context.Background(), openGrad(t, dir, 64, true), nil)
					return out{h, hostParamsOf(m)}, err
				})
				hs, ps := make([]*History, n), make([]map[string][]float32, n)
				for r := range n {
					require.NoError(t, errs[r], "rank %d, noPlan %v", r, noPlan)
					hs[r], ps[r] = res[r].h, res[r].p
				}
				return hs, ps
			}
			planned, pp := fit(false)
			summed, sp := fit(true)
			for r := range n {
				for name, v := range sp[0] {
					require.True(t, slices.Equal(v, pp[r][name]), "rank %d's %s", r, name)
				}
				for e := range planned[r].Epochs {
					pe, se := planned[r].Epochs[e], summed[0].Epochs[e]
					require.EqualValues(t, 950, pe.Examples)
					require.Equal(t, se.Loss, pe.Loss)
					require.Equal(t, se.Train, pe.Train)
					require.NotEmpty(t, pe.Train)
				}
			}
		})
	}
}

// TestPlannedRowsMismatch: a rank whose batch does not have the rows the
// plan says fails the step on every rank, with no update, in both
// sharding modes (with the tables sharded by rows, in the lookup, before
// any row moves).
func TestPlannedRowsMismatch(t *testing.T) {
	for _, sharding := range []string{ShardReplicate, ShardRow} {
		t.Run(sharding, func(t *testing.T) { plannedRowsMismatch(t, sharding) })
	}
}

func plannedRowsMismatch(t *testing.T, sharding string) {
	_, errs := runRanks(2, func(c dist.Comm) (string, error) {
		m, err := rankModel(gradConfig("mlp"), 64, c, sharding)
		if err == nil && sharding == ShardReplicate {
			if err = m.setComm(c); err != nil {
				m.Release()
			}
		}
		if err != nil {
			return "", err
		}
		defer m.Release()
		rng := rand.New(rand.NewPCG(1, uint64(c.Rank())))
		m.exec.PlanRows(64, 32)
		rows := 32
		if c.Rank() == 1 {
			rows = 30
		}
		_, err = m.TrainStep(gradBatch(rng, rows))
		if m.Step() != 0 {
			return "", fmt.Errorf("rank %d stepped", c.Rank())
		}
		return "", err
	})
	require.ErrorContains(t, errs[1], "rank 1's batch has 30 rows where the data's partition says 32")
	require.ErrorContains(t, errs[0], "1 of the 2 ranks failed")
}

// TestFitDistributedEpochLoss: a distributed Fit's epoch loss and training
// metrics are those of one process stepping on the concatenation of the
// ranks' batches of each step (rebuilt here from the partition): the loss
// within 1e-5 relative, the metrics within 1e-4 (the parameters differ by
// the split of the sums, about 1e-6 relative).
func TestFitDistributedEpochLoss(t *testing.T) {
	dir := writeGradData(t, 8, [][2]int{{700, 160}, {250, 100}})
	const n, batch, every = 3, 64, 3
	cfg := gradConfig("mmoe")
	cfg.Optimizer = "adagrad"
	opts := func(c dist.Comm) TrainerOptions {
		return TrainerOptions{Epochs: 2, Comm: c, TrainMetricsSteps: every}
	}
	hists, errs := runRanks(n, func(c dist.Comm) (*History, error) {
		m, err := NewModel(gradSchema(), cfg, testDev(), batch)
		if err != nil {
			return nil, err
		}
		defer m.Release()
		tr, err := NewTrainer(m, opts(c))
		if err != nil {
			return nil, err
		}
		return tr.Fit(context.Background(), openGrad(t, dir, batch, true), nil)
	})
	for r := range n {
		require.NoError(t, errs[r], "rank %d", r)
	}

	// One process on the global batches.
	ds := openGrad(t, dir, batch, true)
	p, err := dist.NewPartition(ds.RowGroupRows(), n)
	require.NoError(t, err)
	m, err := NewModel(gradSchema(), cfg, testDev(), n*batch)
	require.NoError(t, err)
	defer m.Release()
	tr, err := NewTrainer(m, TrainerOptions{})
	require.NoError(t, err)
	steps, err := p.StepsPerEpoch(batch, false)
	require.NoError(t, err)
	for epoch := range 2 {
		its := make([]*loader.Iterator, n)
		for r := range n {
			part, err := ds.Select(p.Parts[r])
			require.NoError(t, err)
			its[r] = part.Epoch(context.Background(), epoch)
			defer its[r].Close()
		}
		e := metrics.NewEvaluator(tr.taskSpecs())
		var lossSum, rows float64
		for s := range steps {
			parts := make([]*loader.Batch, n)
			for r := range n {
				b, err := its[r].Next()
				if err != nil {
					b = &loader.Batch{}
				}
				parts[r] = b
			}
			g := concatBatches(parts)
			st, err := m.TrainStep(g)
			require.NoError(t, err)
			lossSum += st.Loss * float64(g.Rows)
			rows += float64(g.Rows)
			if (s+1)%every == 0 {
				require.NoError(t, tr.score(g, e))
			}
		}
		want := e.Results()
		for r := range n {
			got := hists[r].Epochs[epoch]
			require.EqualValues(t, rows, got.Examples)
			require.InEpsilon(t, lossSum/rows, got.Loss, 1e-5, "rank %d, epoch %d", r, epoch+1)
			require.Equal(t, want.Keys(), got.Train.Keys())
			for _, k := range want.Keys() {
				if math.IsNaN(want[k]) {
					require.True(t, math.IsNaN(got.Train[k]), k)
					continue
				}
				require.InDelta(t, want[k], got.Train[k], 1e-4*max(1, math.Abs(want[k])), "rank %d, epoch %d, %s", r, epoch+1, k)
			}
		}
	}
}

// rankModel builds one rank's test model (schema gradSchema, batches of up
// to rows): only the rank's rows of every table when the tables are sharded
// by rows, every table otherwise. Building one kind and replacing it with the
// other would leave the first unreleased.
func rankModel(cfg Config, rows int, c dist.Comm, sharding string) (*Model, error) {
	if sharding == ShardRow {
		return NewShardedModel(gradSchema(), cfg, testDev(), rows, c)
	}
	return NewModel(gradSchema(), cfg, testDev(), rows)
}
