package tests

import (
	"context"
	"encoding/csv"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/apache/arrow-go/v18/parquet/pqarrow"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestControlFeaturesRawIDs: a raw string user id passed through preprocess
// with --control_features comes back beside the scores, row by row as in the
// raw file (empty fields as nulls), and training ignores it: models trained
// on data that differ only in that column have identical parameters.
func TestControlFeaturesRawIDs(t *testing.T) {
	dir := t.TempDir()
	const n = 1500
	rawIDs := func(prefix string) []string {
		ids := make([]string, n)
		for i := range ids {
			if i%97 != 5 {
				ids[i] = fmt.Sprintf("%s-%04x", prefix, (i*7919)%4099)
			}
		}
		return ids
	}
	// Two input files, so that the outputs have two parts and prediction
	// batches of 100 rows straddle them (the first file has 730 rows).
	writeCSV := func(name string, ids []string) string {
		folder := filepath.Join(dir, name)
		require.NoError(t, os.Mkdir(folder, 0o755))
		var b strings.Builder
		flush := func(file string) {
			require.NoError(t, os.WriteFile(filepath.Join(folder, file), []byte(b.String()), 0o644))
			b.Reset()
		}
		for i, id := range ids {
			if i == 730 {
				flush("a.csv")
			}
			if i == 0 || i == 730 {
				b.WriteString("user_raw,user,item,click\n")
			}
			u, it := i%29, (i*5)%17
			click := 0
			if u%3 == 0 || it%4 == 0 {
				click = 1
			}
			fmt.Fprintf(&b, "%s,u%d,i%d,%d\n", id, u, it, click)
		}
		flush("b.csv")
		return folder
	}
	idsA, idsB := rawIDs("alice"), rawIDs("bob")
	models := map[string]string{}
	for name, ids := range map[string][]string{"a": idsA, "b": idsB} {
		data := writeCSV("raw-"+name, ids)
		prep := filepath.Join(dir, "prep-"+name)
		mustRun(t, "preprocess", "--data_path", data, "--output_path", prep, "--categorical_features", "user,item",
			"--binary_classif_targets", "click", "--user_id_feature", "user", "--control_features", "user_raw", "--quiet")
		parts, err := filepath.Glob(filepath.Join(prep, "train", "part_*.parquet"))
		require.NoError(t, err)
		require.Len(t, parts, 2)
		s := schemaOf(t, filepath.Join(prep, "train"))
		require.NotNil(t, s.Feature("user_raw"))
		assert.Empty(t, s.Feature("user_raw").Tags)
		models[name] = filepath.Join(dir, "model-"+name)
		mustRun(t, "train", "--train_data_path", filepath.Join(prep, "train"), "--model", "mlp", "--epochs", "2",
			"--train_batch_size", "64", "--save_model_path", models[name], "--output_path", filepath.Join(dir, "run-"+name),
			"--threads", "1", "--quiet")
	}
	pa, err := os.ReadFile(filepath.Join(models["a"], "model.safetensors"))
	require.NoError(t, err)
	pb, err := os.ReadFile(filepath.Join(models["b"], "model.safetensors"))
	require.NoError(t, err)
	assert.Equal(t, pa, pb, "the control column's values do not reach the model")

	train := filepath.Join(dir, "prep-a", "train")
	for _, format := range []string{"parquet", "csv"} {
		t.Run(format, func(t *testing.T) {
			out := filepath.Join(dir, "preds."+format)
			mustRun(t, "predict", "--load_model_path", models["a"], "--predict_data_path", train,
				"--predict_output_path", out, "--predict_output_keep_cols", "user_raw,user", "--eval_batch_size", "100",
				"--threads", "1", "--quiet")
			var got []any
			if format == "parquet" {
				got = readStringColumn(t, out, "user_raw")
			} else {
				f, err := os.Open(out)
				require.NoError(t, err)
				defer f.Close()
				recs, err := csv.NewReader(f).ReadAll()
				require.NoError(t, err)
				require.Equal(t, []string{"user_raw", "user", "click/binary_output"}, recs[0])
				for _, r := range recs[1:] {
					got = append(got, r[0])
				}
			}
			require.Len(t, got, n)
			for i, id := range idsA {
				var want any = id
				if id == "" && format == "parquet" {
					want = nil // an empty CSV field is a null
				}
				require.Equal(t, want, got[i], "row %d", i)
			}
		})
	}
	// By default every schema column of the data is kept, the raw id too.
	out := filepath.Join(dir, "all.parquet")
	mustRun(t, "predict", "--load_model_path", models["a"], "--predict_data_path", train,
		"--predict_output_path", out, "--threads", "1", "--quiet")
	assert.Len(t, readStringColumn(t, out, "user_raw"), n)
}

// readStringColumn reads a string column of a Parquet file, nil for nulls.
func readStringColumn(t *testing.T, path, name string) []any {
	t.Helper()
	f, err := os.Open(path)
	require.NoError(t, err)
	defer f.Close()
	tbl, err := pqarrow.ReadTable(context.Background(), f, nil, pqarrow.ArrowReadProperties{}, memory.DefaultAllocator)
	require.NoError(t, err)
	defer tbl.Release()
	idx := tbl.Schema().FieldIndices(name)
	require.Len(t, idx, 1)
	col := tbl.Column(idx[0])
	require.Equal(t, arrow.BinaryTypes.String, col.DataType())
	var out []any
	for _, ch := range col.Data().Chunks() {
		a := ch.(*array.String)
		for i := 0; i < a.Len(); i++ {
			if a.IsNull(i) {
				out = append(out, nil)
			} else {
				out = append(out, a.Value(i))
			}
		}
	}
	return out
}
