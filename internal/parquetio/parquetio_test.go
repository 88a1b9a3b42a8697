package parquetio

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/apache/arrow-go/v18/parquet/file"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/mtlrank/mtlrank/internal/pqcrc"
)

func TestListLinksAndFile(t *testing.T) {
	dir := t.TempDir()
	for _, name := range []string{"b.parquet", "a.PARQUET"} {
		require.NoError(t, os.WriteFile(filepath.Join(dir, name), []byte("x"), 0o644))
	}
	require.NoError(t, os.Mkdir(filepath.Join(dir, "dir.parquet"), 0o755)) // a folder, not a file
	require.NoError(t, os.Symlink(filepath.Join(dir, "b.parquet"), filepath.Join(dir, "link.pq")))
	require.NoError(t, os.Symlink(filepath.Join(dir, "gone"), filepath.Join(dir, "broken.parquet")))

	got, err := List(dir)
	require.NoError(t, err)
	assert.Equal(t, []string{filepath.Join(dir, "a.PARQUET"), filepath.Join(dir, "b.parquet"), filepath.Join(dir, "link.pq")}, got)

	// A file is the dataset whatever its name.
	one := filepath.Join(dir, "data.bin")
	require.NoError(t, os.WriteFile(one, []byte("x"), 0o644))
	got, err = List(one)
	require.NoError(t, err)
	assert.Equal(t, []string{one}, got)

	_, err = List(filepath.Join(dir, "missing"))
	assert.ErrorIs(t, err, os.ErrNotExist)
}

func TestIsDataName(t *testing.T) {
	for name, want := range map[string]bool{
		"part_0.parquet": true, "x.pq": true, "X.Pq": true, "y.PARQUET": true,
		"_SUCCESS": false, "_metadata.parquet": false, ".hidden.parquet": false,
		".x.parquet.tmp-1a2b": false, "x.parquet.tmp": false, "notes.txt": false, "": false,
	} {
		assert.Equal(t, want, IsDataName(name), name)
	}
}

func TestWriterCloseAndAbort(t *testing.T) {
	dir := t.TempDir()
	sch := arrow.NewSchema([]arrow.Field{{Name: "v", Type: arrow.PrimitiveTypes.Int64}}, nil)
	b := array.NewInt64Builder(memory.DefaultAllocator)
	b.AppendValues([]int64{4, 5, 6}, nil)
	col := b.NewArray()
	defer col.Release()
	rec := array.NewRecordBatch(sch, []arrow.Array{col}, 3)
	defer rec.Release()

	path := filepath.Join(dir, "out.parquet")
	w, err := Create(path, sch, WriterOptions{RowGroupRows: 2})
	require.NoError(t, err)
	require.NoError(t, w.Write(rec))
	_, err = os.Stat(path)
	assert.True(t, errors.Is(err, os.ErrNotExist), "nothing at the final path before Close")
	require.NoError(t, w.Close())
	assert.ErrorContains(t, w.Write(rec), "writer is closed")
	require.NoError(t, pqcrc.Verify(path), "the file is sealed with checksums")
	r, err := file.OpenParquetFile(path, false)
	require.NoError(t, err)
	assert.Equal(t, int64(3), r.NumRows())
	assert.Equal(t, 2, r.NumRowGroups(), "RowGroupRows caps the row groups")
	require.NoError(t, r.Close())

	aborted := filepath.Join(dir, "aborted.parquet")
	w, err = Create(aborted, sch, WriterOptions{})
	require.NoError(t, err)
	require.NoError(t, w.Write(rec))
	require.NoError(t, w.Abort())
	entries, err := os.ReadDir(dir)
	require.NoError(t, err)
	require.Len(t, entries, 1, "Abort leaves no file, temporary or final")

	_, err = Create(filepath.Join(dir, "x.parquet"), sch, WriterOptions{Compression: "lzma"})
	assert.ErrorContains(t, err, `unknown compression "lzma"`)
}
