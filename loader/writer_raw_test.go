package loader

import (
	"context"
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

// TestWriterArrowColumns: an untagged (pass-through) column takes an Arrow
// array of its type, strings included, and keeps its nulls; an array of
// another type is refused naming the column.
func TestWriterArrowColumns(t *testing.T) {
	mem := memory.DefaultAllocator
	sb := array.NewStringBuilder(mem)
	sb.AppendValues([]string{"alice", "", "carol"}, []bool{true, false, true})
	raw := sb.NewArray()
	defer raw.Release()
	sb.Release()
	s := &schema.Schema{Features: []*schema.Feature{
		{Name: "user_raw", DType: schema.String},
		{Name: "score", DType: schema.Float32},
	}}
	path := filepath.Join(t.TempDir(), "p.parquet")
	w, err := NewWriter(path, s, WriterOptions{})
	require.NoError(t, err)
	i64 := array.NewInt64Builder(mem)
	i64.AppendValues([]int64{1, 2, 3}, nil)
	wrong := i64.NewArray()
	defer wrong.Release()
	i64.Release()
	err = w.Write(map[string]any{"user_raw": wrong, "score": []float32{1, 2, 3}})
	assert.ErrorContains(t, err, `column "user_raw": got an Arrow int64 array for a utf8 column`)
	require.NoError(t, w.Write(map[string]any{"user_raw": raw, "score": []float32{0.5, 1.5, 2.5}}))
	require.NoError(t, w.Close())

	pf, err := file.OpenParquetFile(path, false)
	require.NoError(t, err)
	defer pf.Close()
	fr, err := pqarrow.NewFileReader(pf, pqarrow.ArrowReadProperties{}, mem)
	require.NoError(t, err)
	tbl, err := fr.ReadTable(context.Background())
	require.NoError(t, err)
	defer tbl.Release()
	col := tbl.Column(0)
	require.Equal(t, arrow.BinaryTypes.String, col.DataType())
	got := col.Data().Chunk(0).(*array.String)
	assert.Equal(t, []any{"alice", nil, "carol"}, []any{got.Value(0), nilIf(got, 1), got.Value(2)})
}

func nilIf(a *array.String, i int) any {
	if a.IsNull(i) {
		return nil
	}
	return a.Value(i)
}
