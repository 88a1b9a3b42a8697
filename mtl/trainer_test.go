package mtl_test

import (
	"bytes"
	"context"
	"encoding/csv"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/mtlrank/mtlrank/loader"
	"github.com/mtlrank/mtlrank/mtl"
	"github.com/mtlrank/mtlrank/mtl/metrics"
	"github.com/mtlrank/mtlrank/schema"
)

func TestFitLearnsAndReports(t *testing.T) {
	trainDir, evalDir := trData(t, 8192, 4096)
	train := trOpen(t, trainDir, 256, true)
	val := trOpen(t, evalDir, 512, false)
	m, err := mtl.NewModel(trSchema(), trConfig("mmoe"), trDev(), 512)
	require.NoError(t, err)
	defer m.Release()

	var logBuf bytes.Buffer
	var reports []mtl.Progress
	tr, err := mtl.NewTrainer(m, mtl.TrainerOptions{
		Epochs: 3, TrainMetricsSteps: 4, LogEvery: 10,
		Logger:     slog.New(slog.NewTextHandler(&logBuf, nil)),
		OnProgress: func(p mtl.Progress) { reports = append(reports, p) },
	})
	require.NoError(t, err)

	before, err := tr.Evaluate(context.Background(), val)
	require.NoError(t, err)
	h, err := tr.Fit(context.Background(), train, val)
	require.NoError(t, err)
	require.Len(t, h.Epochs, 3)
	assert.False(t, h.StoppedEarly)
	assert.Equal(t, 3, h.State.Epoch)
	assert.Equal(t, 3*32, h.State.Step, "8192 rows / 256 per batch = 32 steps per epoch")
	assert.Equal(t, 3*32, m.Step())

	for i, e := range h.Epochs {
		assert.Equal(t, i+1, e.Epoch)
		assert.Equal(t, 32, e.Steps)
		assert.Equal(t, int64(8192), e.Examples)
		assert.Greater(t, e.ExamplesPerSec, 0.0)
		assert.Contains(t, e.TaskLoss, "click/binary_output")
		assert.Contains(t, e.Train, "click/binary_output/auc", "training metrics")
		assert.Contains(t, e.Validation, "auc_avg")
		assert.Contains(t, e.Validation, "gate/click/expert_0", "MMoE gate weights")
		assert.Contains(t, e.Validation, "watching_times/regression_output/rmse")
		assert.Contains(t, e.Validation, "click/binary_output/loss")
	}
	assert.Less(t, h.Epochs[2].Loss, h.Epochs[0].Loss, "training loss decreases")
	last := h.Epochs[2].Validation
	assert.Less(t, last["loss"], before["loss"], "validation loss decreases")
	assert.Greater(t, last["click/binary_output/auc"], 0.6, "click is learned")
	// Gate weights of one gate sum to 1.
	var sum float64
	for i := 0; i < 3; i++ {
		sum += last[metrics.GateKey("click", i)]
	}
	assert.InDelta(t, 1, sum, 1e-5)

	assert.Contains(t, logBuf.String(), "epoch done")
	assert.Contains(t, logBuf.String(), "val_auc_avg")
	passes := progressPasses(t, reports)
	assert.Equal(t, []string{"evaluate", "epoch 1/3", "validation 1/3", "epoch 2/3", "validation 2/3", "epoch 3/3", "validation 3/3"}, passes.order)
	for i, e := range h.Epochs {
		last := passes.last[fmt.Sprintf("epoch %d/3", i+1)]
		assert.Equal(t, mtl.Progress{Phase: fmt.Sprintf("epoch %d/3", i+1), Train: true, Steps: 32, Done: 8192, Total: 8192, Loss: e.Loss, Finished: true}, last,
			"the last report of an epoch carries its loss")
		assert.Equal(t, mtl.Progress{Phase: fmt.Sprintf("validation %d/3", i+1), Steps: 8, Done: 4096, Total: 4096, Finished: true}, passes.last[fmt.Sprintf("validation %d/3", i+1)])
	}
}

// progressReports are a trainer's progress reports grouped by pass.
type progressReports struct {
	order []string                // the passes in the order they started
	last  map[string]mtl.Progress // each pass's last report
}

// progressPasses checks the contract of the reports of every pass (a
// start with nothing done, then one report per batch, one more example
// count each, then a Finished report with every example done) and groups
// them.
func progressPasses(t *testing.T, reports []mtl.Progress) progressReports {
	t.Helper()
	out := progressReports{last: map[string]mtl.Progress{}}
	var cur *mtl.Progress
	for _, r := range reports {
		if cur == nil {
			require.Equal(t, mtl.Progress{Phase: r.Phase, Train: r.Train, Total: r.Total}, r, "a pass starts with nothing done")
			out.order = append(out.order, r.Phase)
			cur = &r
			continue
		}
		require.Equal(t, cur.Phase, r.Phase, "one pass at a time")
		require.Equal(t, cur.Total, r.Total)
		if r.Finished {
			require.Equal(t, cur.Steps, r.Steps, "the end is no batch")
			require.Equal(t, r.Total, r.Done, "%s ends with every example done", r.Phase)
			out.last[r.Phase] = r
			cur = nil
			continue
		}
		require.Equal(t, cur.Steps+1, r.Steps, "one report per batch")
		require.Greater(t, r.Done, cur.Done)
		cur = &r
	}
	require.Nil(t, cur, "every pass finished")
	return out
}

func TestEvaluateMatchesDirectComputation(t *testing.T) {
	_, evalDir := trData(t, 1024, 3000)
	val := trOpen(t, evalDir, 1000, false)
	cfg := trConfig("cgc")
	cfg.SampleSpace = map[string]string{"like": "click"}
	m, err := mtl.NewModel(trSchema(), cfg, trDev(), 1000)
	require.NoError(t, err)
	defer m.Release()
	tr, err := mtl.NewTrainer(m, mtl.TrainerOptions{})
	require.NoError(t, err)
	got, err := tr.Evaluate(context.Background(), val)
	require.NoError(t, err)

	// Independent pass: predict every batch, collect scores and labels,
	// and compute the AUC with the pairwise definition.
	tasks := m.Tasks()
	it := val.Epoch(context.Background(), 0)
	defer it.Close()
	scores := make([][]float32, len(tasks))
	labels := make([][]bool, len(tasks))
	var rows int
	out := make([][]float32, len(tasks))
	for i := range out {
		out[i] = make([]float32, 1000)
	}
	var likeRows int
	for {
		b, err := it.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		require.NoError(t, err)
		require.NoError(t, m.Predict(b, out))
		click := b.Column("click").F32
		for ti, task := range tasks {
			y := b.Column(task.Target).F32
			for i := 0; i < b.Rows; i++ {
				if task.Target == "like" && click[i] != 1 {
					continue // outside the sample space
				}
				scores[ti] = append(scores[ti], out[ti][i])
				labels[ti] = append(labels[ti], y[i] == 1)
			}
		}
		for i := 0; i < b.Rows; i++ {
			if click[i] == 1 {
				likeRows++
			}
		}
		rows += b.Rows
		b.Release()
	}
	require.Equal(t, 3000, rows)
	for ti, task := range tasks {
		if task.Kind != mtl.Binary {
			continue
		}
		want := pairwiseAUC(scores[ti], labels[ti])
		assert.InDelta(t, want, got[task.Name+"/auc"], 1e-9, task.Name)
	}
	assert.Equal(t, float64(likeRows), got["like/binary_output/count"], "like is scored inside its sample space only")
	assert.Equal(t, 3000.0, got["click/binary_output/count"])
	assert.Contains(t, got, "loss")
}

func pairwiseAUC(s []float32, y []bool) float64 {
	var num, den float64
	for i := range s {
		for j := range s {
			if y[i] && !y[j] {
				den++
				if s[i] > s[j] {
					num++
				} else if s[i] == s[j] {
					num += 0.5
				}
			}
		}
	}
	return num / den
}

func TestEarlyStoppingRestoresBest(t *testing.T) {
	trainDir, evalDir := trData(t, 2048, 1024)
	train := trOpen(t, trainDir, 256, true)
	val := trOpen(t, evalDir, 512, false)
	m, err := mtl.NewModel(trSchema(), trConfig("mlp"), trDev(), 512)
	require.NoError(t, err)
	defer m.Release()
	// The validation loss falls every epoch, so with mode "max" epoch 1 is
	// the best and the next epoch exhausts a patience of 1.
	tr, err := mtl.NewTrainer(m, mtl.TrainerOptions{Epochs: 5,
		EarlyStopping: mtl.EarlyStopping{Metric: "loss", Mode: "max", Patience: 1, RestoreBest: true}})
	require.NoError(t, err)
	h, err := tr.Fit(context.Background(), train, val)
	require.NoError(t, err)
	require.Len(t, h.Epochs, 2)
	assert.True(t, h.StoppedEarly)
	assert.Equal(t, 1, h.BestEpoch)
	assert.Equal(t, h.Epochs[0].Validation["loss"], h.BestValue)
	assert.Less(t, h.Epochs[1].Validation["loss"], h.Epochs[0].Validation["loss"])
	// The parameters are those of epoch 1 again.
	res, err := tr.Evaluate(context.Background(), val)
	require.NoError(t, err)
	assert.InDelta(t, h.Epochs[0].Validation["loss"], res["loss"], 1e-9)

	// An unknown metric fails clearly, before any training step.
	_, err = mtl.NewTrainer(m, mtl.TrainerOptions{Epochs: 1, EarlyStopping: mtl.EarlyStopping{Metric: "nope"}})
	require.ErrorContains(t, err, `"nope" is not a validation metric of this model`)
	require.ErrorContains(t, err, "click/binary_output/auc")
	tr2, err := mtl.NewTrainer(m, mtl.TrainerOptions{Epochs: 1, EarlyStopping: mtl.EarlyStopping{Metric: "click/binary_output/loss"}})
	require.NoError(t, err)
	_, err = tr2.Fit(context.Background(), train, nil)
	require.ErrorContains(t, err, "needs a validation dataset")
}

func TestTrainerOptionErrors(t *testing.T) {
	m, err := mtl.NewModel(trSchema(), trConfig("mlp"), trDev(), 16)
	require.NoError(t, err)
	defer m.Release()
	for _, o := range []mtl.TrainerOptions{
		{Epochs: -1}, {StepsPerEpoch: -1}, {ValidationSteps: -2}, {TrainMetricsSteps: -1}, {LossCurveEvery: -1},
		{EarlyStopping: mtl.EarlyStopping{Metric: "auc_avg", Mode: "up"}},
		{EarlyStopping: mtl.EarlyStopping{Metric: "auc_avg", Patience: -1}},
	} {
		_, err := mtl.NewTrainer(m, o)
		assert.Error(t, err, "%+v", o)
	}
	_, err = mtl.NewTrainer(nil, mtl.TrainerOptions{})
	assert.Error(t, err)
}

func TestFitStopsOnNonFiniteLoss(t *testing.T) {
	dir := t.TempDir()
	s := trSchema()
	n := 64
	cols := map[string]any{}
	for _, f := range s.Features {
		if f.DType == schema.Int32 {
			cols[f.Name] = make([]int32, n)
		} else {
			cols[f.Name] = make([]float32, n)
		}
	}
	// A finite but huge regression label overflows the squared error.
	w := cols["watching_times"].([]float32)
	for i := range w {
		w[i] = 3e38
	}
	require.NoError(t, loader.WriteParquet(filepath.Join(dir, "part.parquet"), s, cols, 0))
	ds := trOpen(t, dir, 32, false)
	cfg := trConfig("mlp")
	// Zero biases: a bias started at the label mean would predict the
	// label exactly and the squared error would not overflow.
	cfg.InitOutputBias = false
	m, err := mtl.NewModel(s, cfg, trDev(), 32)
	require.NoError(t, err)
	defer m.Release()
	tr, err := mtl.NewTrainer(m, mtl.TrainerOptions{})
	require.NoError(t, err)
	_, err = tr.Fit(context.Background(), ds, nil)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "watching_times/regression_output")
	assert.Contains(t, err.Error(), "step 0")
	assert.Contains(t, err.Error(), "epoch 1")
}

func TestFitResumeEqualsUninterrupted(t *testing.T) {
	trainDir, evalDir := trData(t, 2048, 512)
	cfg := trConfig("ple")
	cfg.Dropout = 0.1
	open := func() (*loader.Dataset, *loader.Dataset) {
		return trOpen(t, trainDir, 256, true), trOpen(t, evalDir, 512, false)
	}
	opts := mtl.TrainerOptions{Epochs: 2}

	full, err := mtl.NewModel(trSchema(), cfg, trDev(), 512)
	require.NoError(t, err)
	defer full.Release()
	tr, err := mtl.NewTrainer(full, opts)
	require.NoError(t, err)
	train, val := open()
	hFull, err := tr.Fit(context.Background(), train, val)
	require.NoError(t, err)

	// One epoch, checkpoint, then resume to two epochs.
	first, err := mtl.NewModel(trSchema(), cfg, trDev(), 512)
	require.NoError(t, err)
	o1 := opts
	o1.Epochs = 1
	o1.CheckpointDir = filepath.Join(t.TempDir(), "ckpt")
	tr1, err := mtl.NewTrainer(first, o1)
	require.NoError(t, err)
	train, val = open()
	_, err = tr1.Fit(context.Background(), train, val)
	require.NoError(t, err)
	first.Release()

	resumed, st, err := mtl.LoadCheckpoint(o1.CheckpointDir, trDev(), 0)
	require.NoError(t, err)
	defer resumed.Release()
	require.Equal(t, 1, st.Epoch)
	tr2, err := mtl.NewTrainer(resumed, opts)
	require.NoError(t, err)
	tr2.Resume(st)
	train, val = open()
	h2, err := tr2.Fit(context.Background(), train, val)
	require.NoError(t, err)
	require.Len(t, h2.Epochs, 1, "only the second epoch runs")
	assert.Equal(t, 2, h2.Epochs[0].Epoch)
	assert.InDelta(t, hFull.Epochs[1].Loss, h2.Epochs[0].Loss, 1e-6)
	assert.InDelta(t, hFull.Epochs[1].Validation["loss"], h2.Epochs[0].Validation["loss"], 1e-6)
	assert.Equal(t, full.Step(), resumed.Step())
}

func TestFitCancelled(t *testing.T) {
	trainDir, _ := trData(t, 1024, 256)
	m, err := mtl.NewModel(trSchema(), trConfig("mlp"), trDev(), 256)
	require.NoError(t, err)
	defer m.Release()
	tr, err := mtl.NewTrainer(m, mtl.TrainerOptions{})
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err = tr.Fit(ctx, trOpen(t, trainDir, 256, false), nil)
	require.ErrorIs(t, err, context.Canceled)
}

func TestPredictWritesParquet(t *testing.T) {
	_, evalDir := trData(t, 256, 1500)
	ds := trOpen(t, evalDir, 512, false)
	m, err := mtl.NewModel(trSchema(), trConfig("mmoe"), trDev(), 512)
	require.NoError(t, err)
	defer m.Release()
	tr, err := mtl.NewTrainer(m, mtl.TrainerOptions{})
	require.NoError(t, err)
	outDir := filepath.Join(t.TempDir(), "preds")
	n, err := tr.Predict(context.Background(), ds, outDir, mtl.PredictOptions{KeepColumns: []string{"user_id", "click"}})
	require.NoError(t, err)
	assert.Equal(t, int64(1500), n)
	path := filepath.Join(outDir, "predictions.parquet")
	require.FileExists(t, path)

	// Read the file back with its own schema and compare with Predict.
	outSchema := &schema.Schema{Features: []*schema.Feature{
		{Name: "user_id", DType: schema.Int32, Tags: []schema.Tag{schema.TagCategorical}, IntDomain: &schema.IntDomain{Max: trTableRows - 1}},
		{Name: "click", DType: schema.Float32},
	}}
	for _, task := range m.Tasks() {
		outSchema.Features = append(outSchema.Features, &schema.Feature{Name: task.Name, DType: schema.Float32})
	}
	opt := loader.DefaultOptions()
	opt.BatchSize = 1500
	got, err := loader.Open(path, outSchema, opt)
	require.NoError(t, err)
	require.Equal(t, int64(1500), got.Rows())
	gb, err := got.Epoch(context.Background(), 0).Next()
	require.NoError(t, err)
	defer gb.Release()

	in := trOpen(t, evalDir, 1500, false)
	ib, err := in.Epoch(context.Background(), 0).Next()
	require.NoError(t, err)
	defer ib.Release()
	want := make([][]float32, len(m.Tasks()))
	for i := range want {
		want[i] = make([]float32, 1500)
	}
	m2, err := mtl.NewModel(trSchema(), trConfig("mmoe"), trDev(), 1500)
	require.NoError(t, err)
	defer m2.Release()
	require.NoError(t, m2.Predict(ib, want))
	for i, task := range m.Tasks() {
		assert.InDeltaSlice(t, want[i], gb.Column(task.Name).F32[:1500], 1e-6, task.Name)
	}
	assert.Equal(t, ib.Column("user_id").I32[:1500], gb.Column("user_id").I32[:1500])
	assert.Equal(t, ib.Column("click").F32[:1500], gb.Column("click").F32[:1500])

	// A single-file path, and a kept column that is not in the schema.
	file := filepath.Join(t.TempDir(), "p.parquet")
	_, err = tr.Predict(context.Background(), trOpen(t, evalDir, 512, false), file, mtl.PredictOptions{})
	require.NoError(t, err)
	require.FileExists(t, file)
	_, err = tr.Predict(context.Background(), trOpen(t, evalDir, 512, false), file, mtl.PredictOptions{KeepColumns: []string{"zzz"}})
	require.ErrorContains(t, err, `"zzz"`)
	entries, err := os.ReadDir(filepath.Dir(file))
	require.NoError(t, err)
	assert.Len(t, entries, 1, "no temporary file is left")
}

// TestPredictWritesText: CSV and TSV predictions hold the kept columns and
// the scores of the Parquet output, as text that reads back to the same
// float32 values, with a header line.
func TestPredictWritesText(t *testing.T) {
	_, evalDir := trData(t, 256, 700)
	m, err := mtl.NewModel(trSchema(), trConfig("cgc"), trDev(), 256)
	require.NoError(t, err)
	defer m.Release()
	tr, err := mtl.NewTrainer(m, mtl.TrainerOptions{})
	require.NoError(t, err)
	dir := t.TempDir()
	keep := []string{"user_id", "click"}
	_, err = tr.Predict(context.Background(), trOpen(t, evalDir, 256, false), filepath.Join(dir, "pq"), mtl.PredictOptions{KeepColumns: keep})
	require.NoError(t, err)
	sch := &schema.Schema{Features: []*schema.Feature{{Name: "user_id", DType: schema.Int32}, {Name: "click", DType: schema.Float32}}}
	for _, task := range m.Tasks() {
		sch.Features = append(sch.Features, &schema.Feature{Name: task.Name, DType: schema.Float32})
	}
	opt := loader.DefaultOptions()
	opt.BatchSize, opt.CheckDomains = 700, false
	pq, err := loader.Open(filepath.Join(dir, "pq", "predictions.parquet"), sch, opt)
	require.NoError(t, err)
	want, err := pq.Epoch(context.Background(), 0).Next()
	require.NoError(t, err)
	defer want.Release()

	for _, tc := range []struct {
		format string
		sep    rune
	}{{"csv", ','}, {"tsv", '\t'}} {
		n, err := tr.Predict(context.Background(), trOpen(t, evalDir, 256, false), filepath.Join(dir, tc.format),
			mtl.PredictOptions{KeepColumns: keep, Format: tc.format})
		require.NoError(t, err)
		require.Equal(t, int64(700), n)
		f, err := os.Open(filepath.Join(dir, tc.format, "predictions."+tc.format))
		require.NoError(t, err)
		r := csv.NewReader(f)
		r.Comma = tc.sep
		recs, err := r.ReadAll()
		f.Close()
		require.NoError(t, err)
		require.Len(t, recs, 701)
		require.Equal(t, sch.Names(), recs[0])
		for i, rec := range recs[1:] {
			id, err := strconv.Atoi(rec[0])
			require.NoError(t, err)
			require.Equal(t, want.Column("user_id").I32[i], int32(id), "row %d", i)
			for j, name := range sch.Names()[1:] {
				v, err := strconv.ParseFloat(rec[j+1], 32)
				require.NoError(t, err)
				require.Equal(t, want.Column(name).F32[i], float32(v), "%s row %d", name, i)
			}
		}
	}
	_, err = tr.Predict(context.Background(), trOpen(t, evalDir, 256, false), filepath.Join(dir, "x"), mtl.PredictOptions{Format: "json"})
	require.ErrorContains(t, err, `format "json"`)
}

// TestPredictionFile: without a format, the path's extension picks it (a
// file scores.csv is CSV, not a folder named scores.csv); a path without
// one of the extensions is a folder; a format contradicting the extension
// is an error rather than a folder named like a file.
func TestPredictionFile(t *testing.T) {
	cases := []struct {
		path, format      string
		wantFile, wantFmt string
		wantErr           string
	}{
		{"out/scores.csv", "", "out/scores.csv", "csv", ""},
		{"out/scores.tsv", "", "out/scores.tsv", "tsv", ""},
		{"out/scores.parquet", "", "out/scores.parquet", "parquet", ""},
		{"out/SCORES.CSV", "", "out/SCORES.CSV", "csv", ""},
		{"out/scores.csv", "csv", "out/scores.csv", "csv", ""},
		{"out/preds", "", "out/preds/predictions.parquet", "parquet", ""},
		{"out/preds", "tsv", "out/preds/predictions.tsv", "tsv", ""},
		{"out/v1.2", "csv", "out/v1.2/predictions.csv", "csv", ""},
		{"out/scores.csv", "parquet", "", "", `out/scores.csv has the extension of csv but the format is parquet`},
		{"out/scores.parquet", "tsv", "", "", `out/scores.parquet has the extension of parquet but the format is tsv`},
		{"out/scores.csv", "json", "", "", `format "json": want parquet, csv or tsv`},
	}
	for _, tc := range cases {
		t.Run(tc.path+"/"+tc.format, func(t *testing.T) {
			file, format, err := mtl.PredictionFile(tc.path, tc.format)
			if tc.wantErr != "" {
				require.ErrorContains(t, err, tc.wantErr)
				return
			}
			require.NoError(t, err)
			assert.Equal(t, filepath.FromSlash(tc.wantFile), file)
			assert.Equal(t, tc.wantFmt, format)
		})
	}

	// Predict writes what PredictionFile names, creating missing folders.
	_, evalDir := trData(t, 256, 300)
	m, err := mtl.NewModel(trSchema(), trConfig("mlp"), trDev(), 256)
	require.NoError(t, err)
	defer m.Release()
	tr, err := mtl.NewTrainer(m, mtl.TrainerOptions{})
	require.NoError(t, err)
	dir := t.TempDir()
	for _, name := range []string{"scores.csv", "scores.tsv", "scores.parquet"} {
		path := filepath.Join(dir, "new", name)
		n, err := tr.Predict(context.Background(), trOpen(t, evalDir, 256, false), path, mtl.PredictOptions{})
		require.NoError(t, err)
		require.Equal(t, int64(300), n)
		st, err := os.Stat(path)
		require.NoError(t, err)
		require.True(t, st.Mode().IsRegular(), "%s is a file", path)
		head := make([]byte, 4)
		f, err := os.Open(path)
		require.NoError(t, err)
		_, err = io.ReadFull(f, head)
		f.Close()
		require.NoError(t, err)
		if filepath.Ext(name) == ".parquet" {
			assert.Equal(t, "PAR1", string(head))
		} else {
			assert.Equal(t, "clic", string(head), "a header line: the first score column")
		}
	}
	_, err = tr.Predict(context.Background(), trOpen(t, evalDir, 256, false), filepath.Join(dir, "x.csv"), mtl.PredictOptions{Format: "parquet"})
	require.ErrorContains(t, err, "has the extension of csv but the format is parquet")
	assert.NoFileExists(t, filepath.Join(dir, "x.csv"))
	assert.NoDirExists(t, filepath.Join(dir, "x.csv"))
}

func TestResultsNaNInJSON(t *testing.T) {
	r := metrics.Results{"x": math.NaN()}
	b, err := r.MarshalJSON()
	require.NoError(t, err)
	assert.Equal(t, `{"x":null}`, string(b))
}

// TestTrainMetricsMatchIndependentReplica checks the training metrics that
// Fit reports ("every TrainMetricsSteps-th batch, scored after its update,
// and the epoch's last batch when no other was scored") against a replica
// computed outside the Trainer: a second model with the same seed is
// stepped by hand over an identical shuffled, prefetched dataset, the
// batches the rule names are predicted, and deep copies of the scores and
// labels give the AUC by the pairwise definition, the logloss and the
// RMSE. Scores paired with the wrong rows (labels of a batch the loader has
// already recycled, a prefetch race, shuffled rows against unshuffled
// labels, the wrong task column, scores taken before the update) move these
// numbers. An epoch shorter than TrainMetricsSteps (Merlin's default of 10
// on a small dataset) still has training metrics.
func TestTrainMetricsMatchIndependentReplica(t *testing.T) {
	const batch, epochs = 256, 2
	cases := []struct {
		name         string
		rows         int64
		every, limit int
		steps        int   // per epoch: ceil(rows/batch), at most limit
		scored       []int // the 1-based steps of an epoch that are scored
	}{
		{"every 3rd of 16", 4096, 3, 0, 16, []int{3, 6, 9, 12, 15}},
		{"every 4th of 9", 2200, 4, 0, 9, []int{4, 8}},
		{"9 steps, every 10th: the last", 2200, 10, 0, 9, []int{9}},
		{"5 steps by the limit, every 20th: the last", 4096, 20, 5, 5, []int{5}},
		{"one short step", 100, 10, 0, 1, []int{1}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			testTrainMetricsReplica(t, tc.rows, batch, epochs, tc.every, tc.limit, tc.steps, tc.scored)
		})
	}
}

func testTrainMetricsReplica(t *testing.T, rows int64, batch, epochs, every, limit, steps int, scored []int) {
	trainDir, _ := trData(t, rows, 256)
	open := func() *loader.Dataset {
		opt := loader.DefaultOptions()
		opt.BatchSize = batch
		opt.Shuffle = true
		opt.Seed = 3
		opt.Prefetch = 2         // the batch after b is decoded while b is scored
		opt.ShuffleBuffer = 1000 // rows gathered into buffers recycled on Release
		ds, err := loader.Open(trainDir, trSchema(), opt)
		require.NoError(t, err)
		return ds
	}
	cfg := trConfig("mlp")
	cfg.SampleSpace = map[string]string{"like": "click"}

	m, err := mtl.NewModel(trSchema(), cfg, trDev(), batch)
	require.NoError(t, err)
	defer m.Release()
	tr, err := mtl.NewTrainer(m, mtl.TrainerOptions{Epochs: epochs, TrainMetricsSteps: every, StepsPerEpoch: limit})
	require.NoError(t, err)
	h, err := tr.Fit(context.Background(), open(), nil)
	require.NoError(t, err)
	require.Len(t, h.Epochs, epochs)

	ref, err := mtl.NewModel(trSchema(), cfg, trDev(), batch)
	require.NoError(t, err)
	defer ref.Release()
	tasks := ref.Tasks()
	out := make([][]float32, len(tasks))
	for i := range out {
		out[i] = make([]float32, batch)
	}
	ds := open()
	for epoch := 0; epoch < epochs; epoch++ {
		require.Equal(t, steps, h.Epochs[epoch].Steps, "epoch %d", epoch+1)
		scores := make([][]float32, len(tasks))
		labels := make([][]float32, len(tasks))
		it := ds.Epoch(context.Background(), epoch)
		for step := 1; step <= steps; step++ {
			b, err := it.Next()
			require.NoError(t, err)
			_, err = ref.TrainStep(b)
			require.NoError(t, err)
			if slices.Contains(scored, step) {
				require.NoError(t, ref.Predict(b, out))
				click := b.Column("click").F32
				for ti, task := range tasks {
					y := b.Column(task.Target).F32
					for i := 0; i < b.Rows; i++ {
						if task.Target == "like" && click[i] != 1 {
							continue
						}
						scores[ti] = append(scores[ti], out[ti][i])
						labels[ti] = append(labels[ti], y[i])
					}
				}
			}
			b.Release()
		}
		require.NoError(t, it.Close())

		got := h.Epochs[epoch].Train
		var aucSum float64
		var binary int
		for ti, task := range tasks {
			key := func(metric string) string { return metrics.Key(task.Name, metric) }
			assert.Equal(t, float64(len(scores[ti])), got[key(metrics.Count)], "epoch %d %s", epoch+1, task.Name)
			if task.Kind == mtl.Regression {
				var se float64
				for i, p := range scores[ti] {
					d := float64(p) - float64(labels[ti][i])
					se += d * d
				}
				assert.InDelta(t, math.Sqrt(se/float64(len(scores[ti]))), got[key(metrics.RMSE)], 1e-9, "epoch %d %s", epoch+1, task.Name)
				continue
			}
			y := make([]bool, len(labels[ti]))
			var ll float64
			for i, l := range labels[ti] {
				y[i] = l == 1
				p := math.Min(math.Max(float64(scores[ti][i]), 1e-7), 1-1e-7)
				if y[i] {
					ll -= math.Log(p)
				} else {
					ll -= math.Log(1 - p)
				}
			}
			auc := pairwiseAUC(scores[ti], y)
			aucSum += auc
			binary++
			assert.InDelta(t, auc, got[key(metrics.AUC)], 1e-9, "epoch %d %s", epoch+1, task.Name)
			assert.InDelta(t, ll/float64(len(y)), got[key(metrics.LogLoss)], 1e-6, "epoch %d %s", epoch+1, task.Name)
		}
		assert.InDelta(t, aucSum/float64(binary), got[metrics.AUCAvg], 1e-9, "epoch %d", epoch+1)
	}
	assert.Equal(t, hostParams(m), hostParams(ref), "the replica trained the same model")
}

// TestResultJSON: EpochResult and History marshal with snake_case keys
// (they end up in metrics.json) and NaN values as null.
func TestResultJSON(t *testing.T) {
	h := mtl.History{
		Epochs: []mtl.EpochResult{{Epoch: 1, Steps: 3, Examples: 300, Loss: 0.5,
			TaskLoss: map[string]float64{"click/binary_output": 0.5},
			Train:    metrics.Results{"train/auc_avg": 0.6}, Validation: metrics.Results{"auc_avg": math.NaN()},
			Seconds: 2, ExamplesPerSec: 150}},
		BestValue: math.NaN(),
	}
	raw, err := json.Marshal(h)
	require.NoError(t, err)
	var doc map[string]any
	require.NoError(t, json.Unmarshal(raw, &doc))
	assert.ElementsMatch(t, []string{"epochs", "best_epoch", "best_value", "stopped_early", "state"}, keys(doc))
	assert.Nil(t, doc["best_value"])
	epoch := doc["epochs"].([]any)[0].(map[string]any)
	assert.ElementsMatch(t, []string{"epoch", "steps", "examples", "loss", "task_loss", "train", "validation", "seconds", "examples_per_s"}, keys(epoch))
	assert.Equal(t, 150.0, epoch["examples_per_s"])
	assert.Nil(t, epoch["validation"].(map[string]any)["auc_avg"])

	h.BestValue = 0.75
	raw, err = json.Marshal(h)
	require.NoError(t, err)
	assert.Contains(t, string(raw), `"best_value":0.75`)
}

func keys(m map[string]any) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	return out
}

// recordSink keeps the scalars a trainer sends.
type recordSink struct {
	got map[string]map[string][]float64 // run -> tag -> values in order
	at  map[string][]int64              // run+"/"+tag -> steps
}

func (r *recordSink) Scalar(run, tag string, step int64, v float64) error {
	if r.got == nil {
		r.got, r.at = map[string]map[string][]float64{}, map[string][]int64{}
	}
	if r.got[run] == nil {
		r.got[run] = map[string][]float64{}
	}
	r.got[run][tag] = append(r.got[run][tag], v)
	r.at[run+"/"+tag] = append(r.at[run+"/"+tag], step)
	return nil
}

// TestFitEvents: the event sink receives the running loss every EventEvery
// steps and, per epoch, exactly what EpochResult holds.
func TestFitEvents(t *testing.T) {
	trainDir, evalDir := trData(t, 2048, 1024)
	train := trOpen(t, trainDir, 256, true)
	val := trOpen(t, evalDir, 512, false)
	m, err := mtl.NewModel(trSchema(), trConfig("mmoe"), trDev(), 512)
	require.NoError(t, err)
	defer m.Release()
	var sink recordSink
	tr, err := mtl.NewTrainer(m, mtl.TrainerOptions{Epochs: 2, TrainMetricsSteps: 4, Events: &sink, EventEvery: 3})
	require.NoError(t, err)
	h, err := tr.Fit(context.Background(), train, val)
	require.NoError(t, err)
	// 8 steps per epoch: the running loss at steps 3, 6 of each epoch
	assert.Equal(t, []int64{3, 6, 11, 14}, sink.at["train/batch_loss"])
	assert.Equal(t, []int64{0, 1}, sink.at["train/epoch_loss"])
	for i, e := range h.Epochs {
		assert.Equal(t, e.Loss, sink.got["train"]["epoch_loss"][i])
		assert.Equal(t, e.TaskLoss["click/binary_output"], sink.got["train"]["epoch_click/binary_output/loss"][i])
		for k, v := range e.Train {
			assert.Equal(t, v, sink.got["train"]["epoch_"+k][i], k)
		}
		for k, v := range e.Validation {
			assert.Equal(t, v, sink.got["validation"]["epoch_"+k][i], k)
		}
	}
	assert.Len(t, sink.got["validation"]["epoch_"+metrics.GateKey("click", 0)], 2, "gate weights per epoch")
}

// TestFitLossCurve: the loss curve's points are the means of the batch
// losses in their windows, the last window of an epoch holding the rest.
// The batch losses are recovered independently from the running means the
// event sink receives at every step (equal batches: loss_k = k*r_k -
// (k-1)*r_(k-1)).
func TestFitLossCurve(t *testing.T) {
	trainDir, _ := trData(t, 2048, 1024)
	train := trOpen(t, trainDir, 256, true)
	m, err := mtl.NewModel(trSchema(), trConfig("mmoe"), trDev(), 256)
	require.NoError(t, err)
	defer m.Release()
	var sink recordSink
	tr, err := mtl.NewTrainer(m, mtl.TrainerOptions{Epochs: 2, LossCurveEvery: 3, Events: &sink, EventEvery: 1})
	require.NoError(t, err)
	h, err := tr.Fit(context.Background(), train, nil)
	require.NoError(t, err)
	running := sink.got["train"]["batch_loss"]
	require.Len(t, running, 16, "8 steps per epoch")
	for e, ep := range h.Epochs {
		r := running[8*e : 8*e+8]
		batch := make([]float64, 8)
		for k := range batch {
			batch[k] = float64(k+1) * r[k]
			if k > 0 {
				batch[k] -= float64(k) * r[k-1]
			}
		}
		// windows of 3, 3 and the last 2 steps
		windows := [][2]int{{0, 3}, {3, 6}, {6, 8}}
		require.Len(t, ep.StepLoss, len(windows), "epoch %d", ep.Epoch)
		for i, w := range windows {
			var want float64
			for _, l := range batch[w[0]:w[1]] {
				want += l
			}
			want /= float64(w[1] - w[0])
			p := ep.StepLoss[i]
			assert.Equal(t, 8*e+w[1], p.Step, "epoch %d point %d", ep.Epoch, i)
			assert.Equal(t, w[1]-w[0], p.Steps)
			assert.InDelta(t, want, p.Loss, 1e-9*math.Max(1, want), "epoch %d point %d", ep.Epoch, i)
			assert.Len(t, p.TaskLoss, len(ep.TaskLoss))
		}
		// the task losses of the windows average to the epoch's
		for task, l := range ep.TaskLoss {
			var sum float64
			for _, p := range ep.StepLoss {
				sum += p.TaskLoss[task] * float64(p.Steps)
			}
			assert.InDelta(t, l, sum/8, 1e-9, task)
		}
	}
}
