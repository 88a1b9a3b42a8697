package loader

import (
	"context"
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/apache/arrow-go/v18/parquet/file"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/mtlrank/mtlrank/schema"
)

// TestWriterRowGroups checks the row-group layout through arrow-go's own
// reader, independently of the loader.
func TestWriterRowGroups(t *testing.T) {
	cases := []struct {
		writes   []int
		rgRows   int
		wantRGs  []int64
		wantRows int64
	}{
		{writes: []int{100}, rgRows: 30, wantRGs: []int64{30, 30, 30, 10}, wantRows: 100},
		{writes: []int{10, 25}, rgRows: 20, wantRGs: []int64{10, 20, 5}, wantRows: 35},
		{writes: []int{0, 7, 0}, rgRows: 0, wantRGs: []int64{7}, wantRows: 7},
		{writes: nil, rgRows: 5, wantRGs: nil, wantRows: 0},
	}
	for _, c := range cases {
		p := filepath.Join(t.TempDir(), "x.parquet")
		w, err := NewWriter(p, testSchema(), WriterOptions{RowGroupRows: c.rgRows})
		require.NoError(t, err)
		var from int64
		for _, n := range c.writes {
			require.NoError(t, w.Write(testCols(from, n)))
			from += int64(n)
		}
		assert.Equal(t, c.wantRows, w.Rows())
		_, err = os.Stat(p)
		assert.ErrorIs(t, err, os.ErrNotExist, "nothing at the final path before Close")
		require.NoError(t, w.Close())
		require.NoError(t, w.Close(), "Close twice")

		rdr, err := file.OpenParquetFile(p, false)
		require.NoError(t, err)
		var got []int64
		for i := 0; i < rdr.NumRowGroups(); i++ {
			got = append(got, rdr.MetaData().RowGroup(i).NumRows())
		}
		assert.Equal(t, c.wantRGs, got)
		assert.Equal(t, c.wantRows, rdr.NumRows())
		require.NoError(t, rdr.Close())

		d, err := Open(p, testSchema(), DefaultOptions())
		require.NoError(t, err)
		_, rids := readAll(t, d, 0)
		assert.Equal(t, seq(int(c.wantRows)), append([]int64{}, rids...))
		entries, err := os.ReadDir(filepath.Dir(p))
		require.NoError(t, err)
		assert.Len(t, entries, 1, "no temporary file left")
	}
}

func TestWriterInputs(t *testing.T) {
	s := &schema.Schema{Features: []*schema.Feature{
		{Name: "a", DType: schema.Int32, Tags: []schema.Tag{schema.TagCategorical}},
		{Name: "b", DType: schema.Int64, Tags: []schema.Tag{schema.TagCategorical}, ValueCount: &schema.ValueCount{Max: 3}},
		{Name: "c", DType: schema.Float32, Tags: []schema.Tag{schema.TagContinuous}},
		{Name: "d", DType: schema.Float64, Tags: []schema.Tag{schema.TagContinuous}},
		{Name: "e", DType: schema.Bool, Tags: []schema.Tag{schema.TagBinaryClassification}},
		{Name: "f", DType: schema.Int16, Tags: []schema.Tag{schema.TagCategorical}},
		{Name: "g", DType: schema.Int8, Tags: []schema.Tag{schema.TagCategorical}},
		{Name: "h", DType: schema.Float32, Tags: []schema.Tag{schema.TagContinuous, schema.TagList}},
	}}
	good := func() map[string]any {
		return map[string]any{
			"a": Column{I32: []int32{1, 2, 3}},
			"b": &Column{I64: []int64{5, 6, 7, 8}, Offsets: []int32{0, 2, 2, 4}},
			"c": []float32{0.5, 1.5, 2.5},
			"d": []float64{1, 2, 3},
			"e": []bool{true, false, true},
			"f": []int16{1, 2, 3},
			"g": []int8{4, 5, 6},
			"h": [][]float32{{1}, {}, {2, 3}},
		}
	}
	p := filepath.Join(t.TempDir(), "in.parquet")
	require.NoError(t, WriteParquet(p, s, good(), 2))
	opt := DefaultOptions()
	opt.BatchSize = 10
	d, err := Open(p, s, opt)
	require.NoError(t, err)
	it := d.Epoch(context.Background(), 0)
	b, err := it.Next()
	require.NoError(t, err)
	assert.Equal(t, []int32{1, 2, 3}, b.Column("a").I32)
	assert.Equal(t, []int64{5, 6, 7, 8}, b.Column("b").I64)
	assert.Equal(t, []int32{0, 2, 2, 4}, b.Column("b").Offsets)
	assert.Equal(t, []float32{0.5, 1.5, 2.5}, b.Column("c").F32)
	assert.Equal(t, []float32{1, 2, 3}, b.Column("d").F32)
	assert.Equal(t, []float32{1, 0, 1}, b.Column("e").F32)
	assert.Equal(t, []int32{1, 2, 3}, b.Column("f").I32)
	assert.Equal(t, []int32{4, 5, 6}, b.Column("g").I32)
	assert.Equal(t, []float32{1, 2, 3}, b.Column("h").F32)
	assert.Equal(t, []int32{0, 1, 1, 3}, b.Column("h").Offsets)
	b.Release()
	require.NoError(t, it.Close())

	bad := []struct {
		name string
		mod  func(map[string]any)
		want string
	}{
		{"missing", func(m map[string]any) { delete(m, "c") }, `column "c" missing`},
		{"extra", func(m map[string]any) { m["zz"] = []int32{1, 2, 3} }, `column "zz" is not in the schema`},
		{"wrong type", func(m map[string]any) { m["a"] = []int64{1, 2, 3} }, `column "a": got []int64 for a int32 column`},
		{"wrong column type", func(m map[string]any) { m["a"] = Column{F32: []float32{1, 2, 3}} }, `column "a": got []float32`},
		{"rows differ", func(m map[string]any) { m["c"] = []float32{1} }, `column "c" has 1 rows`},
		{"list as scalar", func(m map[string]any) { m["b"] = []int64{1, 2, 3} }, `column "b": got []int64`},
		{"scalar as list", func(m map[string]any) { m["a"] = Column{I32: []int32{1}, Offsets: []int32{0, 1, 1, 1}} }, "Offsets (list data) for a scalar"},
		{"offsets decrease", func(m map[string]any) { m["b"] = Column{I64: []int64{1, 2}, Offsets: []int32{0, 2, 1, 2}} }, "decrease at row 1"},
		{"offsets past values", func(m map[string]any) { m["b"] = Column{I64: []int64{1, 2}, Offsets: []int32{0, 1, 2, 3}} }, "end at 3 but there are 2 values"},
		{"no offsets", func(m map[string]any) { m["b"] = Column{I64: []int64{1, 2}} }, "without Offsets"},
	}
	for _, c := range bad {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			p := filepath.Join(dir, "bad.parquet")
			w, err := NewWriter(p, s, WriterOptions{})
			require.NoError(t, err)
			m := good()
			c.mod(m)
			err = w.Write(m)
			require.Error(t, err)
			assert.Contains(t, err.Error(), c.want)
			assert.Contains(t, err.Error(), "bad.parquet")
			// An argument error leaves the writer usable.
			require.NoError(t, w.Write(good()))
			require.NoError(t, w.Abort())
			entries, err := os.ReadDir(dir)
			require.NoError(t, err)
			assert.Empty(t, entries, "Abort removes the temporary file")
		})
	}
}

func TestWriterOptionsErrors(t *testing.T) {
	dir := t.TempDir()
	_, err := NewWriter(filepath.Join(dir, "a.parquet"), testSchema(), WriterOptions{Compression: "lzma"})
	assert.ErrorContains(t, err, `unknown compression "lzma"`)
	_, err = NewWriter(filepath.Join(dir, "a.parquet"), nil, WriterOptions{})
	assert.ErrorContains(t, err, "empty schema")
	_, err = NewWriter(filepath.Join(dir, "a.parquet"), &schema.Schema{Features: []*schema.Feature{{Name: "s", DType: "decimal"}}}, WriterOptions{})
	assert.ErrorContains(t, err, `feature "s": dtype "decimal" cannot be written`)
	_, err = NewWriter(filepath.Join(dir, "missing", "a.parquet"), testSchema(), WriterOptions{})
	assert.ErrorIs(t, err, os.ErrNotExist)
	entries, err := os.ReadDir(dir)
	require.NoError(t, err)
	assert.Empty(t, entries)

	for _, comp := range []string{"", "snappy", "zstd", "gzip", "lz4", "none"} {
		p := filepath.Join(dir, "c"+comp+".parquet")
		w, err := NewWriter(p, testSchema(), WriterOptions{Compression: comp, Dictionary: comp == "zstd"})
		require.NoError(t, err, comp)
		require.NoError(t, w.Write(testCols(0, 50)))
		require.NoError(t, w.Close())
		d, err := Open(p, testSchema(), DefaultOptions())
		require.NoError(t, err)
		_, rids := readAll(t, d, 0)
		assert.Len(t, rids, 50, comp)
	}
}

// TestWriteBatchRoundTrip writes batches read from one file into another.
func TestWriteBatchRoundTrip(t *testing.T) {
	src := writeTestDataset(t, []int{123}, 50)
	opt := DefaultOptions()
	opt.BatchSize = 40
	d, err := Open(src, testSchema(), opt)
	require.NoError(t, err)
	p := filepath.Join(t.TempDir(), "copy.parquet")
	w, err := NewWriter(p, testSchema(), WriterOptions{})
	require.NoError(t, err)
	it := d.Epoch(context.Background(), 0)
	for {
		b, err := it.Next()
		if err != nil {
			break
		}
		require.NoError(t, w.WriteBatch(b))
		b.Release()
	}
	require.NoError(t, it.Close())
	require.NoError(t, w.Close())
	d2, err := Open(p, testSchema(), opt)
	require.NoError(t, err)
	assert.Equal(t, 4, d2.RowGroups())
	_, rids := readAll(t, d2, 0)
	assert.Equal(t, seq(123), rids)

	w, err = NewWriter(filepath.Join(t.TempDir(), "x.parquet"), testSchema(), WriterOptions{})
	require.NoError(t, err)
	defer w.Abort()
	assert.ErrorContains(t, w.WriteBatch(NewBatch(0, map[string]*Column{}, "", nil)), `batch has no column "rid"`)
}

// TestWriterFileMode: the renamed file has the mode os.Create would give
// (0666 minus the umask), not the 0600 of a temporary file.
func TestWriterFileMode(t *testing.T) {
	for _, c := range []struct {
		umask int
		want  os.FileMode
	}{{0o022, 0o644}, {0o002, 0o664}} {
		old := syscall.Umask(c.umask)
		p := filepath.Join(t.TempDir(), "x.parquet")
		err := WriteParquet(p, testSchema(), testCols(0, 10), 0)
		syscall.Umask(old)
		require.NoError(t, err)
		st, err := os.Stat(p)
		require.NoError(t, err)
		assert.Equal(t, c.want, st.Mode().Perm(), "umask %03o", c.umask)
	}
}
