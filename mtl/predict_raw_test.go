package mtl_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/mtlrank/mtlrank/loader"
	"github.com/mtlrank/mtlrank/mtl"
	"github.com/mtlrank/mtlrank/schema"
)

// TestPredictKeepsUnreadColumns: a kept column the dataset does not read is
// taken from the files in row order (across files and batches), equal to
// the same column read through the loader; with a shuffling dataset it is
// refused.
func TestPredictKeepsUnreadColumns(t *testing.T) {
	train, eval := trData(t, 700, 1500)
	m, err := mtl.NewModel(trSchema(), trConfig("mlp"), trDev(), 128)
	require.NoError(t, err)
	defer m.Release()
	tr, err := mtl.NewTrainer(m, mtl.TrainerOptions{})
	require.NoError(t, err)
	open := func(path string, shuffle bool) *loader.Dataset {
		opt := loader.DefaultOptions()
		opt.BatchSize, opt.Shuffle, opt.Prefetch, opt.Columns = 128, shuffle, 0, m.InputColumns()
		ds, err := loader.Open(path, trSchema(), opt)
		require.NoError(t, err)
		return ds
	}
	dir := t.TempDir()
	// Two data files: the train and eval files together.
	both := filepath.Join(dir, "both")
	files := append(open(train, false).Files(), open(eval, false).Files()...)
	require.NoError(t, linkAll(both, files))

	keep := []string{"user_id", "click"} // user_id read by the loader, click not
	raw := filepath.Join(dir, "raw.parquet")
	_, err = tr.Predict(context.Background(), open(both, false), raw, mtl.PredictOptions{KeepColumns: keep})
	require.NoError(t, err)
	viaLoader := filepath.Join(dir, "loader.parquet")
	_, err = tr.Predict(context.Background(), trOpen(t, both, 128, false), viaLoader, mtl.PredictOptions{KeepColumns: keep})
	require.NoError(t, err)
	out := &schema.Schema{Features: []*schema.Feature{
		{Name: "user_id", DType: schema.Int32, Tags: []schema.Tag{schema.TagCategorical}},
		{Name: "click", DType: schema.Float32}}}
	a, b := readAllRows(t, raw, out), readAllRows(t, viaLoader, out)
	assert.Equal(t, int64(2200), int64(len(a.Column("click").F32)))
	assert.Equal(t, b.Column("click").F32, a.Column("click").F32)
	assert.Equal(t, b.Column("user_id").I32, a.Column("user_id").I32)

	_, err = tr.Predict(context.Background(), open(both, true), filepath.Join(dir, "s.parquet"), mtl.PredictOptions{KeepColumns: keep})
	assert.ErrorContains(t, err, `kept column "click" is read from the files, in file order: the dataset must not shuffle`)
}

func readAllRows(t *testing.T, path string, s *schema.Schema) *loader.Batch {
	opt := loader.DefaultOptions()
	opt.BatchSize, opt.CheckDomains = 1<<20, false
	ds, err := loader.Open(path, s, opt)
	require.NoError(t, err)
	b, err := ds.Epoch(context.Background(), 0).Next()
	require.NoError(t, err)
	t.Cleanup(b.Release)
	return b
}

// linkAll makes dir hold the files, numbered in their order.
func linkAll(dir string, files []string) error {
	if err := os.Mkdir(dir, 0o755); err != nil {
		return err
	}
	for i, f := range files {
		if err := os.Symlink(f, filepath.Join(dir, fmt.Sprintf("part_%02d.parquet", i))); err != nil {
			return err
		}
	}
	return nil
}
