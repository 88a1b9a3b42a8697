package synth

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"runtime"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/mtlrank/mtlrank/loader"
	"github.com/mtlrank/mtlrank/schema"
)

func TestWriteDatasetRoundTrip(t *testing.T) {
	for _, tc := range []struct {
		name              string
		rows              int64
		rowGroup, perFile int
		wantFiles         int
		wantGroupsPerFile []int
		lastGroupRows     int64
	}{
		{"exact multiple", 8000, 1000, 4, 2, []int{4, 4}, 1000},
		{"ragged", 10_500, 1000, 4, 3, []int{4, 4, 3}, 500},
		{"single group", 700, 1000, 4, 1, []int{1}, 700},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			cfg := DefaultConfig(tc.rows, 31)
			cfg.RowGroupRows, cfg.RowGroupsPerFile = tc.rowGroup, tc.perFile
			var progress []int64
			cfg.Progress = func(n int64) { progress = append(progress, n) }
			o, err := WriteDataset(dir, schema.Tenrec(), cfg)
			require.NoError(t, err)

			files := partFiles(t, dir)
			require.Len(t, files, tc.wantFiles)
			for i, f := range files {
				assert.Equal(t, PartFile(i), filepath.Base(f))
			}
			// Nothing else but the schema and the oracle; no temporary files.
			names := dirNames(t, dir)
			assert.Len(t, names, tc.wantFiles+2, "%v", names)
			assert.Contains(t, names, "schema.pbtxt")
			assert.Contains(t, names, "oracle.json")

			// A plain arrow-go reader gets the rows Batch() gives.
			g := newTenrec(t, cfg)
			want, truth := g.BatchWithTruth(int(tc.rows))
			groups := 0
			start := 0
			for i, f := range files {
				pf := readParquet(t, f)
				assert.Equal(t, tc.wantGroupsPerFile[i], pf.rowGroups, "file %d", i)
				groups += pf.rowGroups
				for _, n := range pf.rowGroupN[:len(pf.rowGroupN)-1] {
					assert.Equal(t, int64(tc.rowGroup), n)
				}
				if i == len(files)-1 {
					assert.Equal(t, tc.lastGroupRows, pf.rowGroupN[len(pf.rowGroupN)-1])
				}
				require.Len(t, pf.cols, len(schema.Tenrec().Features))
				for name, c := range want.Columns {
					requireSameColumn(t, sliceColumn(c, start, start+pf.rows), pf.cols[name], name)
				}
				start += pf.rows
			}
			assert.Equal(t, int(tc.rows), start)
			assert.Equal(t, int((tc.rows+int64(tc.rowGroup)-1)/int64(tc.rowGroup)), groups)
			require.Len(t, progress, groups)
			assert.Equal(t, tc.rows, progress[len(progress)-1])

			// schema.pbtxt reads back as the schema written.
			s, err := schema.Load(dir)
			require.NoError(t, err)
			require.Len(t, s.Features, len(schema.Tenrec().Features))
			for i, f := range schema.Tenrec().Features {
				assert.Equal(t, f.Name, s.Features[i].Name)
				assert.Equal(t, f.DType, s.Features[i].DType)
			}

			// oracle.json holds the returned oracle, which equals the oracle
			// of the same rows in memory.
			read, err := ReadOracle(dir)
			require.NoError(t, err)
			assert.Equal(t, o.AUC, read.AUC)
			assert.Equal(t, o.RMSE, read.RMSE)
			assert.Equal(t, tc.rows, read.Rows)
			assert.Equal(t, cfg.Seed, read.Config.Seed)
			mem, err := g.OracleOf(want, truth)
			require.NoError(t, err)
			assert.Equal(t, mem.AUC, o.AUC)
			assert.Equal(t, mem.BaseRate, o.BaseRate)
			for name, v := range mem.RMSE {
				assert.InDelta(t, v, o.RMSE[name], 1e-12)
			}
		})
	}
}

func TestWriteDatasetIsDeterministic(t *testing.T) {
	// Same bytes whatever the number of workers.
	a, b := t.TempDir(), t.TempDir()
	cfg := DefaultConfig(5000, 3)
	cfg.RowGroupRows, cfg.RowGroupsPerFile = 512, 3
	cfg.Workers = 1
	_, err := WriteDataset(a, schema.Tenrec(), cfg)
	require.NoError(t, err)
	cfg.Workers = 4
	_, err = WriteDataset(b, schema.Tenrec(), cfg)
	require.NoError(t, err)
	fa, fb := partFiles(t, a), partFiles(t, b)
	require.Equal(t, len(fa), len(fb))
	for i := range fa {
		x, err := os.ReadFile(fa[i])
		require.NoError(t, err)
		y, err := os.ReadFile(fb[i])
		require.NoError(t, err)
		assert.True(t, bytes.Equal(x, y), "%s differs", filepath.Base(fa[i]))
	}
}

func TestWriteDatasetSplits(t *testing.T) {
	// Train and evaluation splits: same world, disjoint rows.
	dir := t.TempDir()
	cfg := DefaultConfig(3000, 8)
	cfg.RowGroupRows = 1000
	_, err := WriteDataset(filepath.Join(dir, "train"), schema.Tenrec(), cfg)
	require.NoError(t, err)
	cfg.StartRow, cfg.Rows = 3000, 1000
	o, err := WriteDataset(filepath.Join(dir, "eval"), schema.Tenrec(), cfg)
	require.NoError(t, err)
	assert.Equal(t, int64(3000), o.Config.StartRow)
	g := newTenrec(t, DefaultConfig(0, 8))
	want, _ := g.Generate(3000, 1000)
	pf := readParquet(t, filepath.Join(dir, "eval", PartFile(0)))
	for name, c := range want.Columns {
		requireSameColumn(t, c, pf.cols[name], name)
	}
}

func TestWriteDatasetReplacesStaleParts(t *testing.T) {
	dir := t.TempDir()
	cfg := DefaultConfig(4000, 1)
	cfg.RowGroupRows, cfg.RowGroupsPerFile = 1000, 1
	_, err := WriteDataset(dir, schema.Tenrec(), cfg)
	require.NoError(t, err)
	require.Len(t, partFiles(t, dir), 4)
	cfg.Rows = 1500
	_, err = WriteDataset(dir, schema.Tenrec(), cfg)
	require.NoError(t, err)
	files := partFiles(t, dir)
	require.Len(t, files, 2)
	assert.Equal(t, 1500, readParquet(t, files[0]).rows+readParquet(t, files[1]).rows)
}

// TestWriteDatasetKeepsForeignFolders: files are replaced only in an empty
// folder or one holding an earlier synthetic dataset; a user's own folder
// (even one laid out like a dataset) is an error and stays untouched.
func TestWriteDatasetKeepsForeignFolders(t *testing.T) {
	cfg := DefaultConfig(200, 1)
	cases := []struct {
		name  string
		files map[string]string
		want  []string
	}{
		{"user dataset", map[string]string{PartFile(0): "my data", schema.PbtxtFile: "my schema"},
			[]string{"not empty", PartFile(0), "no oracle.json", "empty or new folder"}},
		{"unrelated file", map[string]string{"notes.txt": "x"}, []string{"notes.txt", "not empty"}},
		{"oracle.json of something else", map[string]string{OracleFile: `{"accuracy": 0.9}`, PartFile(0): "mine"},
			[]string{"no oracle.json"}},
		{"foreign parquet", map[string]string{"data.parquet": "x"}, []string{"data.parquet"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			for name, content := range c.files {
				require.NoError(t, os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644))
			}
			_, err := WriteDataset(dir, schema.Tenrec(), cfg)
			require.Error(t, err)
			assert.Contains(t, err.Error(), dir)
			for _, w := range c.want {
				assert.Contains(t, err.Error(), w)
			}
			var names []string
			for name, content := range c.files {
				got, err := os.ReadFile(filepath.Join(dir, name))
				require.NoError(t, err)
				assert.Equal(t, content, string(got), "%s is untouched", name)
				names = append(names, name)
			}
			assert.ElementsMatch(t, names, dirNames(t, dir), "nothing added")
		})
	}

	t.Run("missing, empty and earlier synthetic folders are written", func(t *testing.T) {
		parent := t.TempDir()
		dir := filepath.Join(parent, "new", "data")
		_, err := WriteDataset(dir, schema.Tenrec(), cfg)
		require.NoError(t, err)
		_, err = WriteDataset(dir, schema.Tenrec(), cfg)
		require.NoError(t, err, "an earlier synthetic dataset is replaced")
		empty := filepath.Join(parent, "empty")
		require.NoError(t, os.Mkdir(empty, 0o755))
		_, err = WriteDataset(empty, schema.Tenrec(), cfg)
		require.NoError(t, err)
		assert.Equal(t, []string{OracleFile, PartFile(0), schema.PbtxtFile}, dirNames(t, empty), "no marker left after success")
	})

	t.Run("interrupted run is replaced", func(t *testing.T) {
		dir := t.TempDir()
		ctx, cancel := context.WithCancel(context.Background())
		icfg := DefaultConfig(6000, 1)
		icfg.RowGroupRows, icfg.RowGroupsPerFile = 1000, 1
		icfg.Progress = func(n int64) {
			if n >= 2000 {
				cancel()
			}
		}
		_, err := WriteDatasetContext(ctx, dir, schema.Tenrec(), icfg)
		require.ErrorIs(t, err, context.Canceled)
		assert.Empty(t, dirNames(t, dir), "nothing of the failed run is left in the folder")

		// An older version wrote in place: its interrupted run left part
		// files and the marker, which the loader refuses and a new run
		// replaces.
		require.NoError(t, os.WriteFile(filepath.Join(dir, PartFile(3)), []byte("stale"), 0o644))
		require.NoError(t, os.WriteFile(filepath.Join(dir, IncompleteMarker), nil, 0o644))
		_, err = loader.CountRows(dir)
		require.ErrorIs(t, err, loader.ErrIncomplete)
		_, err = WriteDataset(dir, schema.Tenrec(), cfg)
		require.NoError(t, err, "the leftovers of an interrupted run may be replaced")
		assert.Equal(t, []string{OracleFile, PartFile(0), schema.PbtxtFile}, dirNames(t, dir))
	})
}

// TestWrittenFilesAreReadable: the part files, schema and oracle get the
// mode of a plain os.Create (0666 minus the umask), not CreateTemp's 0600.
func TestWrittenFilesAreReadable(t *testing.T) {
	old := syscall.Umask(0o022)
	defer syscall.Umask(old)
	dir := t.TempDir()
	_, err := WriteDataset(dir, schema.Tenrec(), DefaultConfig(100, 1))
	require.NoError(t, err)
	mdir := filepath.Join(t.TempDir(), "mmoe")
	_, err = WriteMMoEPaper(context.Background(), mdir, 0.5, 1, MMoEPaperConfig{Rows: 100})
	require.NoError(t, err)
	for _, d := range []string{dir, mdir} {
		for _, name := range []string{OracleFile, PartFile(0), schema.PbtxtFile} {
			st, err := os.Stat(filepath.Join(d, name))
			require.NoError(t, err)
			assert.Equal(t, os.FileMode(0o644), st.Mode().Perm(), "%s/%s", d, name)
		}
	}
}

func TestWriteDatasetErrors(t *testing.T) {
	t.Run("foreign parquet", func(t *testing.T) {
		dir := t.TempDir()
		require.NoError(t, os.WriteFile(filepath.Join(dir, "data.parquet"), []byte("x"), 0o644))
		_, err := WriteDataset(dir, schema.Tenrec(), DefaultConfig(100, 1))
		require.Error(t, err)
		assert.Contains(t, err.Error(), "data.parquet")
	})
	t.Run("no rows", func(t *testing.T) {
		_, err := WriteDataset(t.TempDir(), schema.Tenrec(), DefaultConfig(0, 1))
		assert.ErrorContains(t, err, "Rows is 0")
	})
	t.Run("bad schema", func(t *testing.T) {
		_, err := WriteDataset(t.TempDir(), &schema.Schema{}, DefaultConfig(10, 1))
		assert.ErrorContains(t, err, "empty schema")
	})
	t.Run("dir is a file", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "file")
		require.NoError(t, os.WriteFile(path, nil, 0o644))
		_, err := WriteDataset(path, schema.Tenrec(), DefaultConfig(10, 1))
		assert.Error(t, err)
	})
	t.Run("cancelled", func(t *testing.T) {
		dir := t.TempDir()
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		cfg := DefaultConfig(10_000, 1)
		cfg.RowGroupRows = 1000
		_, err := WriteDatasetContext(ctx, dir, schema.Tenrec(), cfg)
		require.Error(t, err)
		assert.True(t, errors.Is(err, context.Canceled), "%v", err)
		// No oracle and no temporary files are left behind.
		for _, name := range dirNames(t, dir) {
			assert.NotContains(t, name, "tmp", name)
			assert.NotEqual(t, OracleFile, name)
		}
	})
	t.Run("cancelled midway", func(t *testing.T) {
		dir := t.TempDir()
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		cfg := DefaultConfig(20_000, 1)
		cfg.RowGroupRows, cfg.RowGroupsPerFile = 1000, 3
		cfg.Progress = func(n int64) {
			if n >= 4000 {
				cancel()
			}
		}
		// A complete dataset was there before: it survives the failed
		// rewrite whole.
		_, err := WriteDataset(dir, schema.Tenrec(), DefaultConfig(100, 1))
		require.NoError(t, err)
		snapshot := func() map[string]string {
			out := map[string]string{}
			for _, name := range dirNames(t, dir) {
				b, err := os.ReadFile(filepath.Join(dir, name))
				require.NoError(t, err)
				out[name] = string(b)
			}
			return out
		}
		prev := snapshot()
		before := runtime.NumGoroutine()
		_, err = WriteDatasetContext(ctx, dir, schema.Tenrec(), cfg)
		require.ErrorIs(t, err, context.Canceled)
		// Generators and the producer have stopped.
		// (Polled by hand: assert.Eventually runs goroutines of its own.)
		deadline := time.Now().Add(2 * time.Second)
		for runtime.NumGoroutine() > before && time.Now().Before(deadline) {
			time.Sleep(10 * time.Millisecond)
		}
		assert.LessOrEqual(t, runtime.NumGoroutine(), before, "goroutines left running")
		assert.Equal(t, prev, snapshot(), "the previous dataset is intact")
		for _, name := range dirNames(t, filepath.Dir(dir)) {
			assert.NotContains(t, name, "tmp", name)
		}
		_, err = loader.CountRows(dir)
		require.NoError(t, err)
	})
}

func TestWriteMixedDtypes(t *testing.T) {
	s := &schema.Schema{Features: []*schema.Feature{
		{Name: "user", DType: schema.Int64, Tags: []schema.Tag{schema.TagCategorical},
			IntDomain: &schema.IntDomain{Min: 1, Max: 5000}},
		{Name: "history", DType: schema.Int16, Tags: []schema.Tag{schema.TagCategorical, schema.TagList},
			IntDomain: &schema.IntDomain{Min: 0, Max: 999}, ValueCount: &schema.ValueCount{Min: 0, Max: 4}},
		{Name: "tags", DType: schema.Int64, Tags: []schema.Tag{schema.TagCategorical, schema.TagList},
			IntDomain: &schema.IntDomain{Min: 0, Max: 20}, ValueCount: &schema.ValueCount{Min: 1, Max: 3}},
		{Name: "price", DType: schema.Float64, Tags: []schema.Tag{schema.TagContinuous}},
		{Name: "emb", DType: schema.Float64, Tags: []schema.Tag{schema.TagContinuous, schema.TagList},
			ValueCount: &schema.ValueCount{Min: 2, Max: 2}},
		{Name: "stars", DType: schema.Int8, Tags: []schema.Tag{schema.TagContinuous},
			IntDomain: &schema.IntDomain{Min: 1, Max: 5}},
		{Name: "bought", DType: schema.Bool, Tags: []schema.Tag{schema.TagBinaryClassification}},
		{Name: "quantity", DType: schema.Int32, Tags: []schema.Tag{schema.TagRegression},
			IntDomain: &schema.IntDomain{Min: 0, Max: 10}},
	}}
	dir := t.TempDir()
	cfg := DefaultConfig(2500, 6)
	cfg.RowGroupRows = 1000
	_, err := WriteDataset(dir, s, cfg)
	require.NoError(t, err)
	g, err := NewGenerator(s, cfg)
	require.NoError(t, err)
	want := g.Batch(2500)
	pf := readParquet(t, filepath.Join(dir, PartFile(0)))
	require.Equal(t, 3, pf.rowGroups)
	for name, c := range want.Columns {
		got := pf.cols[name]
		if c.F32 != nil && got.I32 != nil {
			// An integer continuous column: the batch holds its values as
			// floats.
			got = &loader.Column{Name: name, F32: convertSlice[int32, float32](got.I32), Offsets: got.Offsets}
		}
		requireSameColumn(t, c, got, name)
	}
}

func TestMMoEPaper(t *testing.T) {
	const n = 20_000
	corr := map[float64]float64{}
	for _, rho := range []float64{0.1, 0.5, 0.9} {
		g, err := NewMMoEPaper(rho, 1, MMoEPaperConfig{})
		require.NoError(t, err)
		w1, w2 := g.Weights()
		require.Len(t, w1, 100)
		// |w1| = |w2| = c = 1 and their cosine is rho.
		assert.InDelta(t, 1, dot(w1, w1), 1e-12)
		assert.InDelta(t, 1, dot(w2, w2), 1e-12)
		assert.InDelta(t, rho, dot(w1, w2), 1e-12)

		b, truth := g.Generate(0, n)
		require.Equal(t, n, b.Rows)
		require.Len(t, b.Columns, 102)
		y1, y2 := b.Column("y1").F32, b.Column("y2").F32
		corr[rho] = pearson(y1, y2)
		// The label is the formula applied to the row's own inputs, plus
		// noise of standard deviation 0.1.
		x := make([]float64, 100)
		var sse float64
		for i := 0; i < n; i++ {
			for j := range x {
				x[j] = float64(b.Column(g.names[j]).F32[i])
			}
			wx := dot(w1, x)
			m := wx
			for k := range g.alpha {
				m += sin(g.alpha[k]*wx + g.beta[k])
			}
			require.InDelta(t, m, float64(truth.Mean["y1"][i]), 1e-4)
			d := float64(y1[i]) - m
			sse += d * d
		}
		assert.InDelta(t, 0.1, sqrt(sse/n), 0.005)
	}
	t.Logf("label correlations: %v", corr)
	// As in the paper, the label correlation grows with the cosine.
	assert.Greater(t, corr[0.9], corr[0.5]+0.1)
	assert.Greater(t, corr[0.5], corr[0.1]+0.1)

	b, s, err := MMoEPaper(100, 0.5, 1, MMoEPaperConfig{Dim: 8, M: 3})
	require.NoError(t, err)
	assert.Equal(t, 100, b.Rows)
	assert.Len(t, s.Features, 10)
	assert.Len(t, s.Select(schema.TagRegression), 2)
	assert.Len(t, s.Select(schema.TagContinuous), 8)

	_, _, err = MMoEPaper(10, 1.5, 1, MMoEPaperConfig{})
	assert.ErrorContains(t, err, "rho is 1.5")
	_, _, err = MMoEPaper(10, 0.5, 1, MMoEPaperConfig{Dim: 1})
	assert.ErrorContains(t, err, "Dim is 1")
}

func TestWriteMMoEPaper(t *testing.T) {
	dir := t.TempDir()
	o, err := WriteMMoEPaper(context.Background(), dir, 0.7, 2,
		MMoEPaperConfig{Dim: 10, Rows: 3000, RowGroupRows: 1000})
	require.NoError(t, err)
	assert.InDelta(t, 0.1, o.RMSE["y1"], 0.01)
	require.NotNil(t, o.MMoEPaper)
	assert.Equal(t, 0.7, o.MMoEPaper.Rho)
	g, err := NewMMoEPaper(0.7, 2, MMoEPaperConfig{Dim: 10})
	require.NoError(t, err)
	want, _ := g.Generate(0, 3000)
	pf := readParquet(t, filepath.Join(dir, PartFile(0)))
	assert.Equal(t, 3, pf.rowGroups)
	for name, c := range want.Columns {
		requireSameColumn(t, c, pf.cols[name], name)
	}
	read, err := ReadOracle(filepath.Join(dir, OracleFile))
	require.NoError(t, err)
	assert.Equal(t, o.RMSE, read.RMSE)
}
