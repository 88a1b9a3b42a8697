package mtl_test

import (
	"context"
	"errors"
	"math"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/mtlrank/mtlrank/loader"
	"github.com/mtlrank/mtlrank/mtl"
	"github.com/mtlrank/mtlrank/mtl/safetensors"
	"github.com/mtlrank/mtlrank/schema"
)

// saveSmall saves a small model of the given architecture to a new folder.
func saveSmall(t *testing.T, model string) string {
	t.Helper()
	m, err := mtl.NewModel(trSchema(), trConfig(model), trDev(), 16)
	require.NoError(t, err)
	defer m.Release()
	dir := filepath.Join(t.TempDir(), "ck")
	require.NoError(t, mtl.SaveCheckpoint(dir, m, nil))
	return dir
}

// loaders are every library entry point that reads a checkpoint.
var loaders = []struct {
	name string
	load func(dir string) error
}{
	{"LoadModel", func(dir string) error {
		m, err := mtl.LoadModel(dir, trDev())
		if err == nil {
			m.Release()
		}
		return err
	}},
	{"LoadInference", func(dir string) error {
		m, err := mtl.LoadInference(dir, trDev(), 0)
		if err == nil {
			m.Release()
		}
		return err
	}},
	{"LoadScorer", func(dir string) error {
		s, err := mtl.LoadScorer(dir, trDev(), mtl.ScorerOptions{MaxBatch: 8, Workers: 1})
		if err == nil {
			s.Close()
		}
		return err
	}},
	{"ReadCheckpointModel", func(dir string) error {
		_, _, err := mtl.ReadCheckpointModel(dir)
		return err
	}},
}

// TestCorruptCheckpointMemoryBombs: sizes in a corrupt checkpoint that
// would allocate terabytes, or files padded to a terabyte, are errors from
// every loader, never a panic or the runtime's fatal out-of-memory (which
// would end the test binary).
func TestCorruptCheckpointMemoryBombs(t *testing.T) {
	setDomain := func(max int64) func(t *testing.T, dir string) {
		return func(t *testing.T, dir string) {
			s, err := schema.Load(filepath.Join(dir, "schema.pbtxt"))
			require.NoError(t, err)
			s.Feature("user_id").IntDomain.Max = max
			require.NoError(t, schema.Save(filepath.Join(dir, "schema.pbtxt"), s))
		}
	}
	sparse := func(name string) func(t *testing.T, dir string) {
		return func(t *testing.T, dir string) {
			require.NoError(t, os.Truncate(filepath.Join(dir, name), 1<<40))
		}
	}
	cases := []struct {
		name, model string
		corrupt     func(t *testing.T, dir string)
		want        string // in every loader's error that reaches it
		metaOnly    bool   // ReadCheckpointModel reads it too
	}{
		{"int_domain.max 1e12", "mlp", setDomain(1e12), "cannot fit in this machine's memory", false},
		{"int_domain.max 2e9", "mlp", setDomain(2e9), "cannot fit in this machine's memory", false},
		{"max_batch 1e12", "mlp", func(t *testing.T, dir string) {
			mtl.EditJSON(t, filepath.Join(dir, "config.json"), func(v map[string]any) { v["max_batch"] = 1e12 })
		}, "", false},
		{"100000 experts", "mmoe", func(t *testing.T, dir string) {
			mtl.EditJSON(t, filepath.Join(dir, "config.json"), func(v map[string]any) {
				v["config"].(map[string]any)["mmoe_num_mlp_experts"] = 100000
				v["config"].(map[string]any)["expert_mlp_layers"] = []int{4096, 4096}
			})
		}, "cannot fit in this machine's memory", false},
		{"layers 1e6,1e6", "mlp", func(t *testing.T, dir string) {
			mtl.EditJSON(t, filepath.Join(dir, "config.json"), func(v map[string]any) {
				v["config"].(map[string]any)["mlp_layers"] = []int{1000000, 1000000}
			})
		}, "cannot fit in this machine's memory", false},
		{"1 TB model.safetensors", "mlp", sparse("model.safetensors"), "model.safetensors", false},
		{"1 TB optimizer.safetensors", "mlp", sparse("optimizer.safetensors"), "optimizer.safetensors", false},
		{"1 TB schema.pbtxt", "mlp", sparse("schema.pbtxt"), "more than the", true},
		{"1 TB config.json", "mlp", sparse("config.json"), "more than the", true},
		{"1 TB state.json", "mlp", sparse("state.json"), "more than the", false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dir := saveSmall(t, tc.model)
			tc.corrupt(t, dir)
			for _, l := range loaders {
				err := l.load(dir)
				if l.name == "ReadCheckpointModel" && !tc.metaOnly {
					continue // reads config.json and schema.pbtxt only
				}
				if l.name == "LoadInference" && strings.HasPrefix(tc.name, "1 TB optimizer") ||
					l.name == "LoadScorer" && (strings.HasPrefix(tc.name, "1 TB optimizer") || tc.name == "max_batch 1e12") {
					// not read (the scorer sizes its own batches)
					require.NoError(t, err, l.name)
					continue
				}
				require.Error(t, err, l.name)
				assert.Contains(t, err.Error(), tc.want, l.name)
			}
		})
	}
}

// TestNonFiniteWeightsRefused: a NaN or infinite parameter is an error
// naming the tensor, not a model whose every score is the same.
func TestNonFiniteWeightsRefused(t *testing.T) {
	for _, bad := range []float32{float32(math.NaN()), float32(math.Inf(1)), float32(math.Inf(-1))} {
		for _, file := range []string{"model.safetensors", "optimizer.safetensors"} {
			dir := saveSmall(t, "mlp")
			var name string
			rewriteTensors(t, filepath.Join(dir, file), func(ts []safetensors.Tensor) []safetensors.Tensor {
				x := ts[len(ts)-1]
				name = x.Name
				v, err := x.F32()
				require.NoError(t, err)
				v[len(v)-1] = bad
				ts[len(ts)-1] = safetensors.FromF32(x.Name, x.Shape, v)
				return ts
			})
			_, err := mtl.LoadModel(dir, trDev())
			require.Error(t, err, "%v in %s", bad, file)
			assert.Contains(t, err.Error(), file)
			assert.Contains(t, err.Error(), `tensor "`+name+`"`)
		}
	}
}

// TestTaskCountMessage: the message counts the tasks the config and schema
// give (it was formatted after the model was released, which cleared them).
func TestTaskCountMessage(t *testing.T) {
	dir := saveSmall(t, "mlp")
	mtl.EditJSON(t, filepath.Join(dir, "config.json"), func(v map[string]any) {
		v["tasks"] = v["tasks"].([]any)[:1]
	})
	_, err := mtl.LoadModel(dir, trDev())
	require.ErrorContains(t, err, "lists 1 tasks, the config and schema give 5")
}

// TestInferenceWithoutOptimizerState: scoring needs no optimizer state;
// resuming training does.
func TestInferenceWithoutOptimizerState(t *testing.T) {
	dir := saveSmall(t, "mlp")
	require.NoError(t, os.Remove(filepath.Join(dir, "optimizer.safetensors")))
	m, err := mtl.LoadInference(dir, trDev(), 4)
	require.NoError(t, err)
	m.Release()
	s, err := mtl.LoadScorer(dir, trDev(), mtl.ScorerOptions{MaxBatch: 4, Workers: 1})
	require.NoError(t, err)
	s.Close()
	_, err = mtl.LoadModel(dir, trDev())
	require.ErrorContains(t, err, "optimizer.safetensors")
}

// TestScoreEmptyBatch: an empty candidate list scores nothing; a negative
// row count stays an error.
func TestScoreEmptyBatch(t *testing.T) {
	m, err := mtl.NewModel(trSchema(), trConfig("mlp"), trDev(), 8)
	require.NoError(t, err)
	defer m.Release()
	s, err := mtl.NewScorer(m, mtl.ScorerOptions{MaxBatch: 8, Workers: 1})
	require.NoError(t, err)
	defer s.Close()
	out := make([][]float32, len(s.Tasks()))
	b := loader.NewBatch(0, map[string]*loader.Column{}, "empty", nil)
	require.NoError(t, s.Score(b, out))
	got, err := s.ScoreMap(b)
	require.NoError(t, err)
	for _, v := range got {
		assert.Empty(t, v)
	}
	b.Rows = -1
	require.ErrorContains(t, s.Score(b, out), "-1 rows")
}

// TestSaveCheckpointKeepsUserFiles: saving over a checkpoint replaces its
// own files only; notes, metrics and folders beside them stay; a
// checkpoint may not be saved inside another one.
func TestSaveCheckpointKeepsUserFiles(t *testing.T) {
	m, err := mtl.NewModel(trSchema(), trConfig("mlp"), trDev(), 16)
	require.NoError(t, err)
	defer m.Release()
	dir := filepath.Join(t.TempDir(), "ck")
	require.NoError(t, mtl.SaveCheckpoint(dir, m, &mtl.TrainState{Epoch: 1, BestValue: math.NaN()}))
	notes := filepath.Join(dir, "notes.txt")
	require.NoError(t, os.WriteFile(notes, []byte("lr sweep 3"), 0o644))
	require.NoError(t, os.MkdirAll(filepath.Join(dir, "eval"), 0o755))
	metrics := filepath.Join(dir, "eval", "metrics.json")
	require.NoError(t, os.WriteFile(metrics, []byte("{}"), 0o644))

	require.NoError(t, mtl.SaveCheckpoint(dir, m, &mtl.TrainState{Epoch: 2, BestValue: math.NaN()}))
	st, err := mtl.ReadTrainState(dir)
	require.NoError(t, err)
	assert.Equal(t, 2, st.Epoch, "the checkpoint is replaced")
	b, err := os.ReadFile(notes)
	require.NoError(t, err)
	assert.Equal(t, "lr sweep 3", string(b))
	assert.FileExists(t, metrics)

	nested := filepath.Join(dir, "eval", "best")
	err = mtl.SaveCheckpoint(nested, m, nil)
	require.ErrorContains(t, err, "lies inside the checkpoint folder")
	assert.NoDirExists(t, nested)
	require.ErrorContains(t, mtl.CheckOutsideCheckpoint("--output_path", filepath.Join(dir, "out"), false), "lies inside the checkpoint folder")
	require.NoError(t, mtl.CheckOutsideCheckpoint("--save_model_path", dir, true))
	require.NoError(t, mtl.CheckOutsideCheckpoint("--output_path", filepath.Dir(dir), false))
}

// TestSaveCheckpointRemovesStaleTemps: the next save removes the hidden
// folders a killed save left, when they are ours and hold only checkpoint
// files; a folder holding anything else, or locked by a save in progress,
// stays.
func TestSaveCheckpointRemovesStaleTemps(t *testing.T) {
	m, err := mtl.NewModel(trSchema(), trConfig("mlp"), trDev(), 16)
	require.NoError(t, err)
	defer m.Release()
	parent := t.TempDir()
	dir := filepath.Join(parent, "ck")
	require.NoError(t, mtl.SaveCheckpoint(dir, m, nil))
	mk := func(name string, files ...string) string {
		p := filepath.Join(parent, name)
		require.NoError(t, os.Mkdir(p, 0o755))
		for _, f := range files {
			require.NoError(t, os.WriteFile(filepath.Join(p, f), []byte("x"), 0o644))
		}
		return p
	}
	killed := mk(".ck.tmp-0123456789ab", "config.json", "model.safetensors", ".optimizer.safetensors.tmp-aaaaaaaaaaaa")
	old := mk(".ck.old-00000000000f", "config.json", "schema.pbtxt", "model.safetensors", "optimizer.safetensors", "state.json")
	withUserFile := mk(".ck.tmp-bbbbbbbbbbbb", "model.safetensors", "notes.txt")
	otherName := mk(".ck2.tmp-cccccccccccc", "model.safetensors")
	notOurs := mk(".ck.tmp-backup", "model.safetensors")
	locked := mk(".ck.tmp-dddddddddddd", "model.safetensors")
	f, err := os.Open(locked)
	require.NoError(t, err)
	defer f.Close()
	require.NoError(t, syscall.Flock(int(f.Fd()), syscall.LOCK_EX))

	require.NoError(t, mtl.SaveCheckpoint(dir, m, nil))
	assert.NoDirExists(t, killed)
	assert.NoDirExists(t, old)
	for _, kept := range []string{withUserFile, otherName, notOurs, locked} {
		assert.DirExists(t, kept)
	}
	_, err = mtl.LoadModel(dir, trDev())
	require.NoError(t, err)
}

// TestSaveCheckpointFailureKeepsPrevious: a save that fails (here: the
// folder's parent is read-only for the rename, injected by making the
// checkpoint folder's name collide with a file) leaves the previous
// checkpoint and the user's files.
func TestSaveCheckpointRefusesFile(t *testing.T) {
	m, err := mtl.NewModel(trSchema(), trConfig("mlp"), trDev(), 16)
	require.NoError(t, err)
	defer m.Release()
	file := filepath.Join(t.TempDir(), "f")
	require.NoError(t, os.WriteFile(file, []byte("mine"), 0o644))
	err = mtl.SaveCheckpoint(filepath.Join(file, "ck"), m, nil)
	require.Error(t, err)
	err = mtl.SaveCheckpoint(file, m, nil)
	require.ErrorContains(t, err, "is not a folder")
	b, _ := os.ReadFile(file)
	assert.Equal(t, "mine", string(b))
	assert.False(t, errors.Is(err, os.ErrNotExist))
}

// TestScorerWorkspaceBomb: a MaxBatch no machine can hold is an error from
// NewScorer, not a panic while allocating the workspaces.
func TestScorerWorkspaceBomb(t *testing.T) {
	m, err := mtl.NewModel(trSchema(), trConfig("mlp"), trDev(), 8)
	require.NoError(t, err)
	defer m.Release()
	_, err = mtl.NewScorer(m, mtl.ScorerOptions{MaxBatch: 1e12, Workers: 2})
	require.ErrorIs(t, err, mtl.ErrTooLarge)
	dir := saveSmall(t, "mlp")
	_, err = mtl.LoadScorer(dir, trDev(), mtl.ScorerOptions{MaxBatch: 1e12, Workers: 1})
	require.ErrorIs(t, err, mtl.ErrTooLarge)
}

// TestPredictRefusesItsInput: Trainer.Predict never writes over the data
// it scores, nor into its folder (where the next read of the dataset would
// take the scores for data).
func TestPredictRefusesItsInput(t *testing.T) {
	_, eval := trData(t, 64, 64)
	m, err := mtl.NewModel(trSchema(), trConfig("mlp"), trDev(), 64)
	require.NoError(t, err)
	defer m.Release()
	tr, err := mtl.NewTrainer(m, mtl.TrainerOptions{})
	require.NoError(t, err)
	before, err := os.ReadDir(eval)
	require.NoError(t, err)
	part := filepath.Join(eval, "part_0000.parquet")
	for _, out := range []string{eval, part, filepath.Join(eval, "scores.parquet")} {
		ds := trOpen(t, eval, 64, false)
		_, err := tr.Predict(context.Background(), ds, out, mtl.PredictOptions{})
		require.Error(t, err, out)
		assert.Contains(t, err.Error(), "would overwrite an input", out)
	}
	// A dataset opened as one file: a Parquet file beside it would join
	// the folder the file lies in.
	one := trOpen(t, part, 64, false)
	_, err = tr.Predict(context.Background(), one, filepath.Join(eval, "beside.parquet"), mtl.PredictOptions{})
	require.Error(t, err)
	assert.Contains(t, err.Error(), "the dataset folder of the data")
	after, err := os.ReadDir(eval)
	require.NoError(t, err)
	assert.Equal(t, len(before), len(after), "nothing added to the dataset")
	ds := trOpen(t, eval, 64, false)
	n, err := tr.Predict(context.Background(), ds, filepath.Join(t.TempDir(), "p.parquet"), mtl.PredictOptions{})
	require.NoError(t, err)
	assert.Equal(t, int64(64), n)
}
