package mtl_test

import (
	"fmt"
	"path/filepath"
	"sync"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/mtlrank/mtlrank/kernels"
	"github.com/mtlrank/mtlrank/loader"
	"github.com/mtlrank/mtlrank/mtl"
)

func trainedCheckpoint(t *testing.T, model string) string {
	m, err := mtl.NewModel(trSchema(), trConfig(model), trDev(), 256)
	require.NoError(t, err)
	defer m.Release()
	for _, b := range trBatches(t, 4, 256) {
		_, err := m.TrainStep(b)
		require.NoError(t, err)
	}
	dir := filepath.Join(t.TempDir(), "ckpt")
	require.NoError(t, mtl.SaveCheckpoint(dir, m, nil))
	return dir
}

func newOut(tasks, rows int) [][]float32 {
	out := make([][]float32, tasks)
	for i := range out {
		out[i] = make([]float32, rows)
	}
	return out
}

// TestScorerConcurrent scores different batches from many goroutines at
// once and compares every result with a sequential Predict of the same
// model (run with -race to check the sharing of the weights).
func TestScorerConcurrent(t *testing.T) {
	for _, threads := range []int{1, 2} {
		t.Run(fmt.Sprintf("threads=%d", threads), func(t *testing.T) { testScorerConcurrent(t, threads, "ple") })
	}
	// every predictor computes its own wide inputs (crosses) from its batch
	for _, model := range []string{"deepfm", "wide_n_deep"} {
		t.Run(model, func(t *testing.T) { testScorerConcurrent(t, 2, model) })
	}
}

// testScorerConcurrent runs on a device with the given threads: with more
// than one, the device's own worker pool and OpenBLAS are entered from
// several goroutines at once.
func testScorerConcurrent(t *testing.T, threads int, model string) {
	const rows = 700 // large enough for the device to split element-wise work
	dir := trainedCheckpoint(t, model)
	s, err := mtl.LoadScorer(dir, kernels.NewCPU(threads), mtl.ScorerOptions{MaxBatch: rows, Workers: 3})
	require.NoError(t, err)
	defer s.Close()
	nt := len(s.Tasks())

	batches := trBatches(t, 8, rows)
	ref, _, err := mtl.LoadCheckpoint(dir, trDev(), rows)
	require.NoError(t, err)
	defer ref.Release()
	want := make([][][]float32, len(batches))
	for i, b := range batches {
		want[i] = newOut(nt, rows)
		require.NoError(t, ref.Predict(b, want[i]))
	}

	var wg sync.WaitGroup
	errs := make(chan error, 64)
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			out := newOut(nt, rows)
			for r := 0; r < 4; r++ {
				i := (g + r) % len(batches)
				if err := s.Score(batches[i], out); err != nil {
					errs <- err
					return
				}
				for ti := range out {
					for j := range out[ti] {
						if out[ti][j] != want[i][ti][j] {
							t.Errorf("goroutine %d batch %d task %d row %d: %v != %v", g, i, ti, j, out[ti][j], want[i][ti][j])
							return
						}
					}
				}
			}
		}(g)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}

	// Oversized requests and use after Close fail clearly.
	big := trBatches(t, 1, rows+1)[0]
	require.ErrorContains(t, s.Score(big, newOut(nt, rows+1)), fmt.Sprintf("exceeds the scorer's MaxBatch %d", rows))
	m, err := s.ScoreMap(batches[0])
	require.NoError(t, err)
	assert.Equal(t, want[0][0], m[s.Tasks()[0].Name])
	s.Close()
	require.ErrorContains(t, s.Score(batches[0], newOut(nt, rows)), "closed")
}

// TestScoreCandidatesNoAlloc: one user x 500 items is scored without any
// allocation per call.
func TestScoreCandidatesNoAlloc(t *testing.T) {
	dir := trainedCheckpoint(t, "mmoe")
	s, err := mtl.LoadScorer(dir, trDev(), mtl.ScorerOptions{MaxBatch: 500, Workers: 1})
	require.NoError(t, err)
	defer s.Close()

	req := mtl.NewCandidates(500, []string{"user_id", "gender", "age", "item_id", "video_category"}, nil)
	require.NoError(t, req.Reset(500))
	require.NoError(t, req.FillID("user_id", 17))
	require.NoError(t, req.FillID("gender", 1))
	require.NoError(t, req.FillID("age", 3))
	items, cats := req.IDs("item_id"), req.IDs("video_category")
	for i := range items {
		items[i] = int32(i % trTableRows)
		cats[i] = int32(i % 6)
	}
	out := newOut(len(s.Tasks()), 500)
	require.NoError(t, s.Score(req.Batch(), out))
	allocs := testing.AllocsPerRun(20, func() {
		if err := s.Score(req.Batch(), out); err != nil {
			t.Fatal(err)
		}
	})
	assert.Zero(t, allocs, "allocations per Score call")

	// The scores agree with the model's own Predict on the same rows.
	m := s.Model()
	want := newOut(len(s.Tasks()), 500)
	p := m.NewPredictor(500)
	defer p.Release()
	require.NoError(t, p.Predict(req.Batch(), want))
	assert.Equal(t, want, out)
	for _, v := range out[0] {
		assert.True(t, v > 0 && v < 1, "click probability %v", v)
	}

	// Fewer rows on the same request.
	require.NoError(t, req.Reset(3))
	require.NoError(t, s.Score(req.Batch(), out))
	require.Error(t, req.Reset(501))
	require.Error(t, req.FillID("nope", 1))
	require.Error(t, req.FillFloat("user_id", 1))
}

func TestScorerMissingColumn(t *testing.T) {
	dir := trainedCheckpoint(t, "mlp")
	s, err := mtl.LoadScorer(dir, trDev(), mtl.ScorerOptions{MaxBatch: 10, Workers: 1})
	require.NoError(t, err)
	defer s.Close()
	b := loader.NewBatch(2, map[string]*loader.Column{"user_id": {Name: "user_id", I32: []int32{1, 2}}}, "request", nil)
	err = s.Score(b, newOut(len(s.Tasks()), 2))
	require.Error(t, err)
	assert.Contains(t, err.Error(), "is missing")
	assert.Contains(t, err.Error(), "request")
}
