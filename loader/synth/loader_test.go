package synth

import (
	"context"
	"io"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/mtlrank/mtlrank/loader"
	"github.com/mtlrank/mtlrank/schema"
)

// The project's own loader reads a written dataset back as Batch() makes it.
func TestLoaderReadsDataset(t *testing.T) {
	dir := t.TempDir()
	cfg := DefaultConfig(10000, 1)
	cfg.RowGroupRows, cfg.RowGroupsPerFile = 1000, 3
	_, err := WriteDataset(dir, schema.Tenrec(), cfg)
	require.NoError(t, err)
	s, err := schema.Load(dir)
	require.NoError(t, err)
	opt := loader.DefaultOptions()
	opt.BatchSize = 1000
	ds, err := loader.Open(dir, s, opt)
	require.NoError(t, err)
	require.Equal(t, int64(10000), ds.Rows())
	want := newTenrec(t, cfg).Batch(10000)
	it := ds.Epoch(context.Background(), 0)
	defer it.Close()
	start := 0
	for {
		b, err := it.Next()
		if err == io.EOF {
			break
		}
		require.NoError(t, err)
		for name, c := range want.Columns {
			requireSameColumn(t, sliceColumn(c, start, start+b.Rows), b.Column(name), name)
		}
		start += b.Rows
		b.Release()
	}
	require.Equal(t, 10000, start)
}
