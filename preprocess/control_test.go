package preprocess

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/apache/arrow-go/v18/parquet/file"
	"github.com/apache/arrow-go/v18/parquet/pqarrow"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/mtlrank/mtlrank/schema"
)

// readRaw reads the named columns of the part files of dir, in order, as Go
// values (nil for nulls), with their Arrow types; independent of the
// package's reader.
func readRaw(t *testing.T, dir string, names ...string) (map[string][]any, map[string]arrow.DataType) {
	t.Helper()
	parts, err := filepath.Glob(filepath.Join(dir, "part_*.parquet"))
	require.NoError(t, err)
	require.NotEmpty(t, parts)
	vals, types := map[string][]any{}, map[string]arrow.DataType{}
	for _, p := range parts {
		pf, err := file.OpenParquetFile(p, false)
		require.NoError(t, err)
		fr, err := pqarrow.NewFileReader(pf, pqarrow.ArrowReadProperties{}, memory.DefaultAllocator)
		require.NoError(t, err)
		tbl, err := fr.ReadTable(context.Background())
		require.NoError(t, err)
		for _, name := range names {
			idx := tbl.Schema().FieldIndices(name)
			require.Len(t, idx, 1, "column %s in %s", name, p)
			c := tbl.Column(idx[0])
			types[name] = c.DataType()
			for _, ch := range c.Data().Chunks() {
				for i := 0; i < ch.Len(); i++ {
					if ch.IsNull(i) {
						vals[name] = append(vals[name], nil)
						continue
					}
					switch a := ch.(type) {
					case *array.String:
						vals[name] = append(vals[name], a.Value(i))
					case *array.Int64:
						vals[name] = append(vals[name], a.Value(i))
					case *array.Float64:
						vals[name] = append(vals[name], a.Value(i))
					default:
						t.Fatalf("column %s: type %s", name, ch.DataType())
					}
				}
			}
		}
		tbl.Release()
		require.NoError(t, pf.Close())
	}
	return vals, types
}

// TestControlFeatures: pass-through columns reach every output unchanged,
// nulls included, row by row with the encoded columns, and the schema lists
// them without tags (so no model takes them as inputs).
func TestControlFeatures(t *testing.T) {
	dir := t.TempDir()
	const n = 40
	var raw, items, seq, score, click []any
	for i := 0; i < n; i++ {
		raw = append(raw, fmt.Sprintf("user-%03d", i))
		items = append(items, fmt.Sprintf("i%d", i%3))
		seq = append(seq, i)
		score = append(score, float64(i)/4)
		click = append(click, i%2)
	}
	raw[5], seq[7], score[9] = nil, nil, nil
	in := filepath.Join(dir, "in.parquet")
	writeParquet(t, in, 7,
		parquetColumn{name: "user_raw", typ: arrow.BinaryTypes.String, vals: raw},
		parquetColumn{name: "item", typ: arrow.BinaryTypes.String, vals: items},
		parquetColumn{name: "seq", typ: arrow.PrimitiveTypes.Int32, vals: seq},
		parquetColumn{name: "score", typ: arrow.PrimitiveTypes.Float64, vals: score},
		parquetColumn{name: "click", typ: arrow.PrimitiveTypes.Int64, vals: click})

	for _, split := range []string{"", SplitRandom} {
		t.Run("split="+split, func(t *testing.T) {
			spec := Spec{Categorical: []string{"item"}, BinaryTargets: []string{"click"},
				ControlFeatures: []string{"user_raw", "seq", "score"}, SplitStrategy: split, Seed: 3}
			if split != "" {
				spec.EvalPerc = 0.3
			}
			out := filepath.Join(dir, "out"+split)
			rep, err := Run(spec, []string{in}, nil, out)
			require.NoError(t, err)
			sides := []*Result{rep.Train}
			if rep.Eval != nil {
				sides = append(sides, rep.Eval)
			}
			seen := 0
			for _, r := range sides {
				got, types := readRaw(t, r.Dir, "user_raw", "seq", "score")
				assert.Equal(t, arrow.BinaryTypes.String, types["user_raw"])
				assert.Equal(t, arrow.PrimitiveTypes.Int64, types["seq"])
				assert.Equal(t, arrow.PrimitiveTypes.Float64, types["score"])
				// Rows keep input order within a side; the row index is
				// recovered from the score (i/4) or, where that is null,
				// from seq.
				for k := range got["user_raw"] {
					i := -1
					if v := got["score"][k]; v != nil {
						i = int(v.(float64) * 4)
					} else {
						i = int(got["seq"][k].(int64))
					}
					want := []any{raw[i], seq[i], score[i]}
					if want[1] != nil {
						want[1] = int64(want[1].(int))
					}
					assert.Equal(t, want, []any{got["user_raw"][k], got["seq"][k], got["score"][k]}, "output row %d (input row %d)", k, i)
				}
				seen += len(got["user_raw"])
				s, err := schema.Load(r.Dir)
				require.NoError(t, err)
				for name, dt := range map[string]schema.DType{"user_raw": schema.String, "seq": schema.Int64, "score": schema.Float64} {
					f := s.Feature(name)
					require.NotNil(t, f, name)
					assert.Equal(t, dt, f.DType, name)
					assert.Empty(t, f.Tags, name)
				}
				for _, f := range s.Categorical() {
					assert.Equal(t, "item", f.Name)
				}
				assert.Empty(t, s.Continuous())
			}
			assert.Equal(t, n, seen)

			// The saved workflow passes the control features through too.
			w, err := LoadWorkflow(rep.WorkflowPath)
			require.NoError(t, err)
			again := filepath.Join(dir, "again"+split)
			_, err = w.Transform([]string{in}, again)
			require.NoError(t, err)
			got, _ := readRaw(t, again, "user_raw")
			assert.Equal(t, raw, got["user_raw"])
		})
	}
}

// TestControlFeaturesErrors: a control feature that is also a feature or a
// target, listed twice or missing from the data is refused, naming it.
func TestControlFeaturesErrors(t *testing.T) {
	dir := t.TempDir()
	in := writeFile(t, dir, "in.csv", "user,item,click\nu1,a,1\nu2,b,0\n")
	for _, tc := range []struct {
		name    string
		control []string
		want    string
	}{
		{"categorical", []string{"item"}, `column "item" is both categorical and control feature`},
		{"target", []string{"click"}, `column "click" is both binary target and control feature`},
		{"twice", []string{"user", "user"}, `column "user" is listed twice as control feature`},
		{"missing", []string{"nope"}, `nope`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			spec := Spec{CSVHeader: true, Categorical: []string{"item"}, BinaryTargets: []string{"click"},
				ControlFeatures: tc.control}
			_, err := Run(spec, []string{in}, nil, filepath.Join(dir, "out"))
			require.Error(t, err)
			assert.Contains(t, err.Error(), tc.want)
		})
	}
}

// TestControlFeaturesOneType: a control feature read as text from a CSV file
// and as integers from a Parquet file has no single output type: refused,
// naming the file and the column.
func TestControlFeaturesOneType(t *testing.T) {
	dir := t.TempDir()
	csvIn := writeFile(t, dir, "a.csv", "user,item,click\nu1,a,1\nu2,b,0\n")
	pqIn := filepath.Join(dir, "b.parquet")
	writeParquet(t, pqIn, 2,
		parquetColumn{name: "user", typ: arrow.PrimitiveTypes.Int64, vals: []any{7, 8}},
		parquetColumn{name: "item", typ: arrow.BinaryTypes.String, vals: []any{"a", "c"}},
		parquetColumn{name: "click", typ: arrow.PrimitiveTypes.Int64, vals: []any{1, 0}})
	spec := Spec{CSVHeader: true, Categorical: []string{"item"}, BinaryTargets: []string{"click"}, ControlFeatures: []string{"user"}}
	_, err := Run(spec, []string{csvIn, pqIn}, nil, filepath.Join(dir, "out"))
	require.Error(t, err)
	assert.Contains(t, err.Error(), "b.parquet")
	assert.Contains(t, err.Error(), `"user"`)
	assert.Contains(t, err.Error(), "control feature holds integer values here but string values in the rows before")
}
