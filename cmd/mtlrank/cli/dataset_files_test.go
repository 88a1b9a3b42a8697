package cli

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/mtlrank/mtlrank/loader"
	"github.com/mtlrank/mtlrank/preprocess"
	"github.com/mtlrank/mtlrank/schema"
)

// TestDatasetFilesSameForEveryConsumer lays out dataset folders and checks
// that every reader of a dataset (the loader's Open and CountRows, schema
// inference, preprocess and the CLI's checks) takes exactly the files of
// the documented rule (loader.ListFiles): *.parquet and *.pq in any case,
// no hidden or "_" files, no sub-folders, sorted by name.
//
// Data file i (in name order) has 2^i rows whose x is i; every file that
// must be skipped has 64 rows, x = ±50 and an extra column, so that a
// skipped file read by any consumer changes its row count (which encodes
// the set of files read), its inferred range of x, or its column set.
func TestDatasetFilesSameForEveryConsumer(t *testing.T) {
	data := &schema.Schema{Features: []*schema.Feature{
		{Name: "x", DType: schema.Float64, Tags: []schema.Tag{schema.TagContinuous}},
		{Name: "click", DType: schema.Int64, Tags: []schema.Tag{schema.TagBinaryClassification, schema.TagTarget}, IntDomain: &schema.IntDomain{Max: 1}},
	}}
	skipped := &schema.Schema{Features: append(data.Clone().Features,
		&schema.Feature{Name: "skipped", DType: schema.Int64, Tags: []schema.Tag{schema.TagContinuous}})}
	write := func(t *testing.T, path string, s *schema.Schema, rows int, x float64) {
		t.Helper()
		require.NoError(t, os.MkdirAll(filepath.Dir(path), 0o755))
		cols := map[string]any{"x": make([]float64, rows), "click": make([]int64, rows)}
		for i := range rows {
			cols["x"].([]float64)[i] = x
			cols["click"].([]int64)[i] = int64(i % 2)
		}
		if s == skipped {
			cols["skipped"] = make([]int64, rows)
		}
		require.NoError(t, loader.WriteParquet(path, s, cols, 0))
	}

	cases := []struct {
		name  string
		data  []string // data files, in the order they must be read
		skip  []string // Parquet files that are not part of the dataset
		other []string // other files (not Parquet)
		err   error    // want this error from every consumer (data empty)
		hint  string   // and this in the loader's message
	}{
		{name: "parquet and pq", data: []string{"a.pq", "b.parquet", "c.PQ"}, other: []string{"notes.txt", "schema.pbtxt"}},
		{name: "hidden files", data: []string{"part_0.parquet"}, skip: []string{".part_1.parquet", ".part_0.parquet.tmp-abc"}},
		{name: "underscore files", data: []string{"x.parquet", "y.parquet"}, skip: []string{"_metadata.parquet", "_common_metadata"}, other: []string{"_SUCCESS"}},
		{name: "nested folders", data: []string{"top.parquet"}, skip: []string{"sub/part_0.parquet", "sub/deeper/part_0.pq"}},
		{name: "folder with none", other: []string{"_SUCCESS", "readme.md"}, skip: []string{".hidden.parquet"}, err: loader.ErrNoParquetFiles},
		{name: "only sub-folders", skip: []string{"train/part_0.parquet", "valid/part_0.parquet"}, err: loader.ErrNoParquetFiles, hint: "sub-folders train, valid hold some"},
		{name: "interrupted writer", data: nil, skip: []string{"part_0000.parquet"}, other: []string{loader.IncompleteMarker}, err: loader.ErrIncomplete},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			var want []string
			var rows int64
			for i, name := range tc.data {
				write(t, filepath.Join(dir, name), data, 1<<i, float64(i))
				want = append(want, filepath.Join(dir, name))
				rows += 1 << i
			}
			for i, name := range tc.skip {
				write(t, filepath.Join(dir, name), skipped, 64, float64(100*(i%2)-50))
			}
			for _, name := range tc.other {
				require.NoError(t, os.WriteFile(filepath.Join(dir, name), []byte("x,click\n7,1\n"), 0o644))
			}

			// Every consumer, with what it tells of the files it read.
			files, listErr := loader.ListFiles(dir)
			ds, openErr := loader.Open(dir, data, loader.DefaultOptions())
			count, countErr := loader.CountRows(dir)
			inferred, inferErr := loader.InferSchema(dir, loader.InferOptions{Targets: map[string]schema.Tag{"click": schema.TagBinary}})
			rep, ppErr := preprocess.Run(preprocess.Spec{InputFormat: preprocess.FormatParquet, Continuous: []string{"x"}, BinaryTargets: []string{"click"}},
				[]string{dir}, nil, filepath.Join(t.TempDir(), "out"))
			cols, colsErr := parquetColumns(dir)
			// preprocess guesses the format of a folder without Parquet
			// files: a folder of sub-folders is neither kind.
			_, autoErr := preprocess.Run(preprocess.Spec{Continuous: []string{"x"}, BinaryTargets: []string{"click"}},
				[]string{dir}, nil, filepath.Join(t.TempDir(), "out"))
			if tc.name == "only sub-folders" {
				assert.ErrorIs(t, autoErr, loader.ErrNoParquetFiles)
				assert.ErrorContains(t, autoErr, tc.hint)
			}

			if tc.err != nil {
				for what, err := range map[string]error{"ListFiles": listErr, "Open": openErr, "CountRows": countErr,
					"InferSchema": inferErr, "preprocess": ppErr, "parquetColumns": colsErr} {
					require.Error(t, err, what)
					assert.True(t, errors.Is(err, tc.err), "%s: %v", what, err)
					assert.ErrorContains(t, err, dir, what)
					if tc.hint != "" {
						assert.ErrorContains(t, err, tc.hint, what)
					}
				}
				assert.False(t, looksLikeParquet(dir))
				return
			}
			for what, err := range map[string]error{"ListFiles": listErr, "Open": openErr, "CountRows": countErr,
				"InferSchema": inferErr, "preprocess": ppErr, "parquetColumns": colsErr} {
				require.NoError(t, err, what)
			}
			assert.Equal(t, want, files, "ListFiles")
			assert.Equal(t, want, ds.Files(), "Open")
			assert.Equal(t, rows, ds.Rows(), "Open")
			assert.Equal(t, rows, count, "CountRows")
			assert.Equal(t, &schema.FloatDomain{Min: 0, Max: float64(len(tc.data) - 1)}, inferred.Feature("x").FloatDomain, "InferSchema")
			assert.Equal(t, rows, rep.FitRows, "preprocess fit")
			assert.Equal(t, rows, rep.Train.Rows, "preprocess output")
			assert.Equal(t, map[string]bool{"x": true, "click": true}, cols, "parquetColumns")
			assert.True(t, looksLikeParquet(dir))
		})
	}
}
