package mtl_test

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/mtlrank/mtlrank/internal/sysmem"
	"github.com/mtlrank/mtlrank/loader"
	"github.com/mtlrank/mtlrank/mtl"
)

// fuzzMemoryLimit plays the part of a server's memory check: inputs whose
// estimate exceeds it are refused before loading, as the CLI refuses a
// model above --max_memory. (Models far beyond the machine are refused by
// the library itself; the fuzzer must not allocate gigabytes below that.)
const fuzzMemoryLimit = 256 << 20

// checkpointNames are the files of a checkpoint, in the fuzz arguments'
// order.
var checkpointNames = []string{"config.json", "state.json", "schema.pbtxt", "model.safetensors", "optimizer.safetensors"}

// FuzzLoadCheckpoint: a checkpoint folder with any content in its five
// files loads or fails with an error from every loader; it never panics,
// and a model that loads scores a batch (even an empty one).
func FuzzLoadCheckpoint(f *testing.F) {
	seeds := 0
	for _, model := range []string{"mlp", "mmoe", "ple"} {
		dir := filepath.Join(f.TempDir(), model)
		m, err := mtl.NewModel(trSchema(), trConfig(model), trDev(), 4)
		if err != nil {
			f.Fatal(err)
		}
		if err := mtl.SaveCheckpoint(dir, m, nil); err != nil {
			f.Fatal(err)
		}
		m.Release()
		files := make([][]byte, len(checkpointNames))
		for i, n := range checkpointNames {
			if files[i], err = os.ReadFile(filepath.Join(dir, n)); err != nil {
				f.Fatal(err)
			}
		}
		f.Add(files[0], files[1], files[2], files[3], files[4])
		// The memory bombs of issue reports, and truncations.
		for _, edit := range []func([][]byte) [][]byte{
			replaceIn(0, `"max_batch": 4`, `"max_batch": 1000000000000`),
			replaceIn(2, "max: 99", "max: 1000000000000"),
			replaceIn(2, "max: 99", "max: -5"),
			replaceIn(0, `"mlp_layers": [`, `"mlp_layers": [1000000, 1000000, `),
			replaceIn(0, `"mmoe_num_mlp_experts": 3`, `"mmoe_num_mlp_experts": 100000`),
			func(fs [][]byte) [][]byte { fs[3] = fs[3][:len(fs[3])/2]; return fs },
			func(fs [][]byte) [][]byte { fs[1] = nil; return fs },
			func(fs [][]byte) [][]byte { fs[4] = []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f}; return fs },
		} {
			c := make([][]byte, len(files))
			edited := false
			for i := range files {
				c[i] = bytes.Clone(files[i])
			}
			c = edit(c)
			for i := range c {
				edited = edited || !bytes.Equal(c[i], files[i])
			}
			if !edited {
				continue // the field is not in this architecture's files
			}
			f.Add(c[0], c[1], c[2], c[3], c[4])
			seeds++
		}
	}
	if seeds < 15 {
		f.Fatalf("only %d edited seeds: the edits no longer match the files", seeds)
	}
	f.Fuzz(func(t *testing.T, config, state, schemaFile, model, optimizer []byte) {
		dir := t.TempDir()
		for i, b := range [][]byte{config, state, schemaFile, model, optimizer} {
			if err := os.WriteFile(filepath.Join(dir, checkpointNames[i]), b, 0o644); err != nil {
				t.Fatal(err)
			}
		}
		s, cfg, err := mtl.ReadCheckpointModel(dir)
		if err != nil {
			return
		}
		est, err := mtl.EstimateMemory(s, cfg, trDev(), 64)
		if err != nil {
			return
		}
		if est.Total > fuzzMemoryLimit {
			// Beyond the machine, the library refuses by itself.
			if ceiling, ok := sysmem.Ceiling(); ok && est.Total > ceiling {
				if m, err := mtl.LoadInference(dir, trDev(), 64); err == nil {
					m.Release()
					t.Fatalf("a model of %s loaded", est)
				}
			}
			return
		}
		if m, err := mtl.LoadInference(dir, trDev(), 64); err == nil {
			m.Release()
		}
		if m, _, err := mtl.LoadCheckpoint(dir, trDev(), 64); err == nil {
			m.Release()
		}
		sc, err := mtl.LoadScorer(dir, trDev(), mtl.ScorerOptions{MaxBatch: 8, Workers: 1})
		if err != nil {
			return
		}
		defer sc.Close()
		out := make([][]float32, len(sc.Tasks()))
		if err := sc.Score(loader.NewBatch(0, map[string]*loader.Column{}, "empty", nil), out); err != nil {
			t.Fatalf("empty batch: %v", err)
		}
	})
}

// replaceIn returns an edit replacing old by new in file i.
func replaceIn(i int, old, new string) func([][]byte) [][]byte {
	return func(fs [][]byte) [][]byte {
		fs[i] = []byte(strings.Replace(string(fs[i]), old, new, 1))
		return fs
	}
}
