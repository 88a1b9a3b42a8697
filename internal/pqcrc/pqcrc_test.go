package pqcrc_test

import (
	"bytes"
	"encoding/binary"
	"os"
	"path/filepath"
	"testing"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/apache/arrow-go/v18/parquet/file"
	"github.com/apache/arrow-go/v18/parquet/pqarrow"
	"github.com/stretchr/testify/require"

	"github.com/mtlrank/mtlrank/internal/pqcrc"
)

// writePlain writes a small Parquet file with pqarrow (no checksums).
func writePlain(t *testing.T, path string) {
	t.Helper()
	sc := arrow.NewSchema([]arrow.Field{{Name: "x", Type: arrow.PrimitiveTypes.Int64}}, nil)
	b := array.NewInt64Builder(memory.DefaultAllocator)
	defer b.Release()
	for i := range 1000 {
		b.Append(int64(i * i))
	}
	col := b.NewArray()
	defer col.Release()
	rec := array.NewRecordBatch(sc, []arrow.Array{col}, 1000)
	defer rec.Release()
	f, err := os.Create(path)
	require.NoError(t, err)
	w, err := pqarrow.NewFileWriter(sc, f, nil, pqarrow.DefaultWriterProps())
	require.NoError(t, err)
	require.NoError(t, w.Write(rec))
	require.NoError(t, w.Close())
}

// TestSealVerify: a sealed file still reads with arrow-go (other readers
// ignore the entry) and verifies; every single-byte change fails
// verification; an unsealed file passes.
func TestSealVerify(t *testing.T) {
	path := filepath.Join(t.TempDir(), "x.parquet")
	writePlain(t, path)
	require.NoError(t, pqcrc.Verify(path), "no checksums: not checked")
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	require.NoError(t, err)
	require.NoError(t, pqcrc.Seal(f))
	require.NoError(t, f.Close())
	require.NoError(t, pqcrc.Verify(path))

	r, err := file.OpenParquetFile(path, false)
	require.NoError(t, err)
	require.Equal(t, int64(1000), r.NumRows())
	require.NotNil(t, r.MetaData().KeyValueMetadata().FindValue(pqcrc.Key))
	require.NoError(t, r.Close())

	sealed, err := os.ReadFile(path)
	require.NoError(t, err)
	orig := filepath.Join(t.TempDir(), "orig.parquet")
	require.NoError(t, os.WriteFile(orig, sealed, 0o644))
	or, err := file.OpenParquetFile(orig, false)
	require.NoError(t, err)
	defer or.Close()
	equivalent := 0
	// Every byte of the footer, every 11th byte of the data.
	footerStart := len(sealed) - 8 - int(binary.LittleEndian.Uint32(sealed[len(sealed)-8:]))
	for pos := 0; pos < len(sealed); pos++ {
		if pos < footerStart && pos%11 != 0 {
			continue
		}
		b := bytes.Clone(sealed)
		b[pos] ^= 0x01
		require.NoError(t, os.WriteFile(path, b, 0o644))
		if pqcrc.Verify(path) != nil {
			continue
		}
		// Undetected only where the change means nothing: the footer
		// decodes to the very same metadata (a thrift list header whose
		// element type the decoder does not look at, say) and the data
		// section is untouched.
		r, err := file.OpenParquetFile(path, false)
		require.NoError(t, err, "flip at byte %d passed Verify but does not open", pos)
		require.True(t, r.MetaData().Equals(or.MetaData()), "flip at byte %d changed the metadata undetected", pos)
		require.GreaterOrEqual(t, pos, footerStart, "flip at byte %d in the data section passed", pos)
		require.NoError(t, r.Close())
		equivalent++
	}
	t.Logf("%d single-bit flips undetected, all of them meaningless", equivalent)
	require.Less(t, equivalent, 10)
}
