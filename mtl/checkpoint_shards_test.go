package mtl

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/mtlrank/mtlrank/dist"
	"github.com/mtlrank/mtlrank/layers"
	"github.com/mtlrank/mtlrank/schema"
)

// saveShardedRanks saves, per shard, the model of cfg sharded among n
// ranks (dist.LocalGroup) after step steps (no training: the step counter
// only), and returns every rank's error.
func saveShardedRanks(s *schema.Schema, cfg Config, n, step int, dir string) []error {
	_, errs := runRanks(n, func(c dist.Comm) (struct{}, error) {
		m, err := NewShardedModel(s, cfg, testDev(), 16, c)
		if err != nil {
			return struct{}{}, err
		}
		defer m.Release()
		m.SetStep(step)
		return struct{}{}, SaveCheckpoint(dir, m, nil)
	})
	return errs
}

// loadShardedRanks loads dir on n ranks sharded by rows and returns every
// rank's error.
func loadShardedRanks(dir string, n int) []error {
	_, errs := runRanks(n, func(c dist.Comm) (struct{}, error) {
		m, _, err := LoadShardedCheckpoint(dir, testDev(), 16, c)
		if err == nil {
			m.Release()
		}
		return struct{}{}, err
	})
	return errs
}

func copyDir(t *testing.T, from, to string) {
	t.Helper()
	require.NoError(t, os.MkdirAll(to, 0o755))
	entries, err := os.ReadDir(from)
	require.NoError(t, err)
	for _, e := range entries {
		data, err := os.ReadFile(filepath.Join(from, e.Name()))
		require.NoError(t, err)
		require.NoError(t, os.WriteFile(filepath.Join(to, e.Name()), data, 0o644))
	}
}

// EditJSON rewrites the JSON object in the file at path through edit
// (for the tests of package mtl_test too).
func EditJSON(t *testing.T, path string, edit func(map[string]any)) {
	t.Helper()
	raw, err := os.ReadFile(path)
	require.NoError(t, err)
	var v map[string]any
	require.NoError(t, json.Unmarshal(raw, &v))
	edit(v)
	raw, err = json.Marshal(v)
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(path, raw, 0o644))
}

// editManifest rewrites dir's shards.json through edit.
func editManifest(t *testing.T, dir string, edit func(m map[string]any)) {
	t.Helper()
	EditJSON(t, filepath.Join(dir, manifestFile), edit)
}

// TestShardedCheckpointBadInput: a per-shard checkpoint of 2 ranks,
// damaged in one way per case, fails to load in one process and on 3
// ranks (every rank) with an error naming the file and the defect; the
// undamaged one loads both ways.
func TestShardedCheckpointBadInput(t *testing.T) {
	cfg := gradConfig("mlp")
	cfg.Optimizer = "adam"
	root := t.TempDir()
	good, again, other := filepath.Join(root, "good"), filepath.Join(root, "again"), filepath.Join(root, "other")
	for _, err := range saveShardedRanks(gradSchema(), cfg, 2, 5, good) {
		require.NoError(t, err)
	}
	// The same model saved again: the same bytes but for the save id.
	for _, err := range saveShardedRanks(gradSchema(), cfg, 2, 5, again) {
		require.NoError(t, err)
	}
	// Another optimizer: other tensors in the shards.
	adagrad := gradConfig("mlp")
	adagrad.Optimizer = "adagrad"
	for _, err := range saveShardedRanks(gradSchema(), adagrad, 2, 5, other) {
		require.NoError(t, err)
	}
	shard0, shard1 := shardFileName(0, 2), shardFileName(1, 2)
	flip := func(name string, at func(size int) int) func(t *testing.T, dir string) {
		return func(t *testing.T, dir string) {
			p := filepath.Join(dir, name)
			data, err := os.ReadFile(p)
			require.NoError(t, err)
			data[at(len(data))] ^= 0x10
			require.NoError(t, os.WriteFile(p, data, 0o644))
		}
	}
	cases := []struct {
		name   string
		damage func(t *testing.T, dir string)
		want   []string
	}{
		{"missing shard", func(t *testing.T, dir string) { require.NoError(t, os.Remove(filepath.Join(dir, shard1))) },
			[]string{"shard file " + shard1 + " is missing"}},
		{"truncated shard", func(t *testing.T, dir string) {
			p := filepath.Join(dir, shard0)
			st, err := os.Stat(p)
			require.NoError(t, err)
			require.NoError(t, os.Truncate(p, st.Size()-12))
		}, []string{"shard file " + shard0 + " is ", "truncated"}},
		{"flipped data byte", flip(shard1, func(n int) int { return n - 3 }),
			[]string{"shard file " + shard1 + ": checksum mismatch"}},
		{"flipped header byte", flip(shard0, func(int) int { return 20 }),
			[]string{"shard file " + shard0 + ": "}},
		{"shard of another save", func(t *testing.T, dir string) {
			data, err := os.ReadFile(filepath.Join(again, shard1))
			require.NoError(t, err)
			require.NoError(t, os.WriteFile(filepath.Join(dir, shard1), data, 0o644))
		}, []string{"shard file " + shard1 + ": save id", "a shard of another save"}},
		{"manifest of another save", func(t *testing.T, dir string) {
			data, err := os.ReadFile(filepath.Join(again, manifestFile))
			require.NoError(t, err)
			require.NoError(t, os.WriteFile(filepath.Join(dir, manifestFile), data, 0o644))
		}, []string{"model.safetensors: save id", "files of two saves"}},
		{"manifest of another model", func(t *testing.T, dir string) {
			data, err := os.ReadFile(filepath.Join(other, manifestFile))
			require.NoError(t, err)
			require.NoError(t, os.WriteFile(filepath.Join(dir, manifestFile), data, 0o644))
		}, []string{"shards.json: table \"input/emb/item\" has tensors"}},
		{"another vocabulary", func(t *testing.T, dir string) {
			editManifest(t, dir, func(m map[string]any) {
				m["tables"].([]any)[0].(map[string]any)["rows"] = 44.0
			})
		}, []string{"shards.json: table 0 is \"input/emb/item\" of 44 rows x 8", "another model or vocabulary"}},
		{"manifest of another step", func(t *testing.T, dir string) {
			editManifest(t, dir, func(m map[string]any) { m["step"] = 6.0 })
		}, []string{"shards.json: is of step 6, state.json of step 5"}},
		{"more ranks than shards", func(t *testing.T, dir string) {
			editManifest(t, dir, func(m map[string]any) { m["ranks"] = 3.0 })
		}, []string{"shards.json: lists 2 shard files for 3 ranks"}},
		{"a file outside the folder", func(t *testing.T, dir string) {
			editManifest(t, dir, func(m map[string]any) { m["shards"].([]any)[1].(map[string]any)["file"] = "../" + shard1 })
		}, []string{`shards.json: shard 1 is rank 1 in "../` + shard1}},
		{"unknown manifest version", func(t *testing.T, dir string) {
			editManifest(t, dir, func(m map[string]any) { m["format_version"] = 2.0 })
		}, []string{"shards.json: format version 2 is not supported"}},
		{"missing manifest", func(t *testing.T, dir string) { require.NoError(t, os.Remove(filepath.Join(dir, manifestFile))) },
			[]string{"shards.json is missing"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "ck")
			copyDir(t, good, dir)
			tc.damage(t, dir)
			check := func(err error, how string) {
				t.Helper()
				require.Error(t, err, how)
				for _, w := range tc.want {
					assert.Contains(t, err.Error(), w, how)
				}
			}
			_, _, err := LoadCheckpoint(dir, testDev(), 0)
			check(err, "one process")
			_, err = LoadInference(dir, testDev(), 0)
			check(err, "inference")
			errs := loadShardedRanks(dir, 3)
			for r, err := range errs {
				require.Error(t, err, "rank %d of 3", r)
			}
			// The ranks that read the damaged file say what it is, the
			// others that a rank failed.
			said := false
			for _, err := range errs {
				if strings.Contains(err.Error(), tc.want[0]) {
					said = true
					check(err, "3 ranks")
				} else {
					assert.Contains(t, err.Error(), "of the 3 ranks failed")
				}
			}
			assert.True(t, said, "no rank names the defect: %v", errs)
		})
	}
	// The undamaged checkpoint loads, in one process and on 3 ranks.
	m, st, err := LoadCheckpoint(good, testDev(), 0)
	require.NoError(t, err)
	assert.Equal(t, 5, st.Step)
	m.Release()
	for r, err := range loadShardedRanks(good, 3) {
		require.NoError(t, err, "rank %d", r)
	}
}

// TestShardedSaveFailure: a save that fails on one rank, or on rank 0
// before it starts, is an error on every rank and leaves the previous
// checkpoint as it was, with nothing left beside it.
func TestShardedSaveFailure(t *testing.T) {
	cfg := gradConfig("mlp")
	cfg.Optimizer = "adagrad"
	root := t.TempDir()
	dir := filepath.Join(root, "ck")
	for _, err := range saveShardedRanks(gradSchema(), cfg, 3, 4, dir) {
		require.NoError(t, err)
	}
	before := dirContents(t, dir)

	testShardWriteFault = func(rank int) error {
		if rank == 1 {
			return errors.New("disk full (planted)")
		}
		return nil
	}
	errs := saveShardedRanks(gradSchema(), cfg, 2, 9, dir)
	testShardWriteFault = nil
	require.Len(t, errs, 2)
	assert.ErrorContains(t, errs[1], "disk full (planted)")
	assert.ErrorContains(t, errs[0], "1 of the 2 ranks failed (rank 1: disk full (planted))")
	assert.Equal(t, before, dirContents(t, dir), "the previous checkpoint is untouched")
	entries, err := os.ReadDir(root)
	require.NoError(t, err)
	require.Len(t, entries, 1, "no temporary folder is left")

	// Rank 0 cannot start: the folder is not a checkpoint.
	notes := filepath.Join(root, "notes")
	require.NoError(t, os.MkdirAll(notes, 0o755))
	require.NoError(t, os.WriteFile(filepath.Join(notes, "todo.txt"), []byte("mine"), 0o644))
	errs = saveShardedRanks(gradSchema(), cfg, 3, 9, notes)
	assert.ErrorContains(t, errs[0], "refusing to replace it")
	for r := 1; r < 3; r++ {
		assert.ErrorContains(t, errs[r], "rank 0 of 3 failed", "rank %d", r)
		assert.ErrorContains(t, errs[r], "refusing to replace it", "rank %d", r)
	}

	// A 2-rank save replaces the 3-rank checkpoint whole: no third shard
	// is left, the user's file beside it is kept.
	require.NoError(t, os.WriteFile(filepath.Join(dir, "notes.txt"), []byte("mine"), 0o644))
	for _, err := range saveShardedRanks(gradSchema(), cfg, 2, 9, dir) {
		require.NoError(t, err)
	}
	files := slices.Sorted(func(yield func(string) bool) {
		for name := range dirContents(t, dir) {
			if !yield(name) {
				return
			}
		}
	})
	assert.Equal(t, []string{"config.json", "model.safetensors", "notes.txt", "optimizer.safetensors", "schema.pbtxt",
		shardFileName(0, 2), shardFileName(1, 2), "shards.json", "state.json"}, files)
}

// dirContents maps the files of dir to their bytes.
func dirContents(t *testing.T, dir string) map[string]string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	require.NoError(t, err)
	out := map[string]string{}
	for _, e := range entries {
		data, err := os.ReadFile(filepath.Join(dir, e.Name()))
		require.NoError(t, err)
		out[e.Name()] = string(data)
	}
	return out
}

// allocated returns the bytes f allocates on the heap.
func allocated(f func()) uint64 {
	var a, b runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&a)
	f()
	runtime.ReadMemStats(&b)
	return b.TotalAlloc - a.TotalAlloc
}

// TestShardedCheckpointRankMemory: what one rank allocates while it writes
// its shard, and while it reads its rows from the shard files of another
// number of ranks, stays below one full table (the user table of 200,000
// rows x 48, 38.4 MB, with Adam's two moments): about one tensor of its
// rows (38.4 MB / N). Gathering the table to
// rank 0, or assembling it while reading, takes at least a full table.
// The ranks' parts run one after the other (their models are built
// without a communicator), so that the process's allocations are one
// rank's.
func TestShardedCheckpointRankMemory(t *testing.T) {
	s := gradSchema()
	s.Feature("user").IntDomain.Max = 199_999
	cfg := gradConfig("mlp")
	cfg.Optimizer = "adam"
	one, err := NewModel(s, cfg, testDev(), 16)
	require.NoError(t, err)
	var full uint64
	for _, nt := range one.Params() {
		if nt.Name == "input/emb/user" {
			full = uint64(4 * nt.Tensor.Len())
		}
	}
	one.Release()
	require.EqualValues(t, 200_000*48*4, full)
	dir := t.TempDir()
	const n = 4
	man := shardManifest{
		Format: ShardManifestFormat, FormatVersion: shardManifestVersion, SaveID: strings.Repeat("ab", 16),
		Ranks: n, Sharding: ShardRow, Rule: shardRule, Step: 0,
	}
	for r := range n {
		m, err := newModel(s, cfg, testDev(), 16, layers.RowShard{Rank: r, Size: n})
		require.NoError(t, err)
		man.Tables = m.manifestTables()
		var shard manifestShard
		got := allocated(func() { shard, err = m.writeShard(dir, man.SaveID, 0) })
		require.NoError(t, err)
		man.Shards = append(man.Shards, shard)
		m.Release()
		t.Logf("rank %d of %d writes its shard allocating %.1f MB (a full table: %.1f MB)", r, n, float64(got)/1e6, float64(full)/1e6)
		assert.Less(t, got, full, "rank %d of %d writing its shard", r, n)
		// The floats of its largest tensor, and buffers.
		assert.Less(t, got, full/n+(6<<20), "rank %d of %d writing its shard", r, n)
	}
	for _, to := range []int{3, 2} {
		for r := range to {
			m, err := newModel(s, cfg, testDev(), 16, layers.RowShard{Rank: r, Size: to})
			require.NoError(t, err)
			got := allocated(func() { err = m.readShards(dir, &man, true) })
			require.NoError(t, err)
			m.Release()
			t.Logf("rank %d of %d reads its rows allocating %.1f MB", r, to, float64(got)/1e6)
			assert.Less(t, got, uint64(full), "rank %d of %d reading", r, to)
			// About one tensor of its rows (1/to of a table) and the read
			// buffers of the n files.
			assert.Less(t, got, full/uint64(to)+n*(256<<10)+(1<<20), "rank %d of %d reading", r, to)
		}
	}
}

// TestShardedCheckpointLoadsAnywhere: a per-shard checkpoint of 3 ranks
// holds, once put together, the tables of the model, and every rank of 2
// and 5 ranks, and one process, loads exactly its rows of them.
func TestShardedCheckpointLoadsAnywhere(t *testing.T) {
	cfg := gradConfig("mlp")
	cfg.Optimizer = "adam"
	dir := filepath.Join(t.TempDir(), "ck")
	for _, err := range saveShardedRanks(gradSchema(), cfg, 3, 2, dir) {
		require.NoError(t, err)
	}
	one, err := NewModel(gradSchema(), cfg, testDev(), 16)
	require.NoError(t, err)
	defer one.Release()
	want := hostParamsOf(one)
	loaded, _, err := LoadCheckpoint(dir, testDev(), 0)
	require.NoError(t, err)
	defer loaded.Release()
	got := hostParamsOf(loaded)
	for name, v := range want {
		require.Equal(t, v, got[name], "%s in one process", name)
	}
	for _, n := range []int{2, 5} {
		_, errs := runRanks(n, func(c dist.Comm) (struct{}, error) {
			m, _, err := LoadShardedCheckpoint(dir, testDev(), 16, c)
			if err != nil {
				return struct{}{}, err
			}
			defer m.Release()
			for _, nt := range m.Params() {
				if _, ok := m.tableOf(nt.Name); !ok {
					continue
				}
				h := make([]float32, nt.Tensor.Len())
				m.dev.CopyToHostF32(h, nt.Tensor)
				d := nt.Tensor.Cols()
				for k := range nt.Tensor.Rows() {
					id := k*n + c.Rank()
					if !slices.Equal(h[k*d:(k+1)*d], want[nt.Name][id*d:(id+1)*d]) {
						return struct{}{}, fmt.Errorf("rank %d of %d: %s local row %d is not row %d of the table", c.Rank(), n, nt.Name, k, id)
					}
				}
			}
			return struct{}{}, nil
		})
		for r, err := range errs {
			require.NoError(t, err, "rank %d of %d", r, n)
		}
	}
}
