package loader

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/mtlrank/mtlrank/schema"
)

// fuzzSchema is the schema of the fuzz seeds: an id, a list of ids and a
// target, so that every reader path is exercised.
func fuzzSchema() *schema.Schema {
	return &schema.Schema{Features: []*schema.Feature{
		{Name: "id", DType: schema.Int32, Tags: []schema.Tag{schema.TagCategorical}, IntDomain: &schema.IntDomain{Max: 9}},
		{Name: "ls", DType: schema.Int64, Tags: []schema.Tag{schema.TagCategorical, schema.TagList}, IntDomain: &schema.IntDomain{Max: 9}},
		{Name: "y", DType: schema.Float32, Tags: []schema.Tag{schema.TagBinaryClassification}},
	}}
}

// fuzzSeeds returns small valid Parquet files (and a few broken variants) to
// start the fuzzer from.
func fuzzSeeds(t testing.TB) map[string][]byte {
	dir := t.TempDir()
	out := map[string][]byte{}
	for _, comp := range []string{"none", "snappy"} {
		for _, dict := range []bool{false, true} {
			if dict && comp == "none" {
				continue // the same bytes as without: a 5-row column gains nothing from a dictionary
			}
			p := filepath.Join(dir, "seed.parquet")
			w, err := NewWriter(p, fuzzSchema(), WriterOptions{RowGroupRows: 3, Compression: comp, Dictionary: dict})
			require.NoError(t, err)
			require.NoError(t, w.Write(map[string]any{
				"id": []int32{1, 2, 3, 9, 0},
				"ls": [][]int64{{1}, {}, {2, 3}, {9, 9, 9}, {0}},
				"y":  []float32{0, 1, 0, 1, 1},
			}))
			require.NoError(t, w.Close())
			data, err := os.ReadFile(p)
			require.NoError(t, err)
			name := fmt.Sprintf("valid_%s_dict%v", comp, dict)
			out[name] = data
			if comp == "none" && !dict {
				out["truncated_half"] = data[:len(data)/2]
				cut := append([]byte{}, data[:len(data)-12]...)
				out["footer_cut"] = append(cut, data[len(data)-8:]...)
				flipped := append([]byte{}, data...)
				for i := 4; i < len(flipped)/3; i += 7 {
					flipped[i] ^= 0x5a
				}
				out["pages_flipped"] = flipped
			}
		}
	}
	return out
}

// TestWriteFuzzSeeds regenerates testdata/fuzz/FuzzOpenCorrupt when
// MTLRANK_WRITE_FUZZ_SEEDS=1 (run it after changing the writer or the seeds).
func TestWriteFuzzSeeds(t *testing.T) {
	if os.Getenv("MTLRANK_WRITE_FUZZ_SEEDS") != "1" {
		t.Skip("set MTLRANK_WRITE_FUZZ_SEEDS=1 to regenerate the fuzz seeds")
	}
	dir := filepath.Join("testdata", "fuzz", "FuzzOpenCorrupt")
	require.NoError(t, os.MkdirAll(dir, 0o755))
	for name, data := range fuzzSeeds(t) {
		body := fmt.Sprintf("go test fuzz v1\n[]byte(%q)\n", data)
		require.NoError(t, os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644))
	}
}

// FuzzOpenCorrupt feeds mutated Parquet files to Open and a full epoch: any
// outcome but a panic (or a hang) is fine.
func FuzzOpenCorrupt(f *testing.F) {
	for _, data := range fuzzSeeds(f) {
		f.Add(data)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		p := filepath.Join(t.TempDir(), "f.parquet")
		if err := os.WriteFile(p, data, 0o644); err != nil {
			t.Fatal(err)
		}
		for _, shuffle := range []bool{false, true} {
			opt := DefaultOptions()
			opt.BatchSize, opt.Prefetch, opt.Shuffle, opt.ShuffleBuffer = 2, 0, shuffle, 4
			d, err := Open(p, fuzzSchema(), opt)
			if err != nil {
				return
			}
			it := d.Epoch(context.Background(), 0)
			for {
				b, err := it.Next()
				if err != nil {
					break
				}
				b.Release()
			}
			it.Close()
		}
	})
}
