package preprocess

import (
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// FuzzRunCSV feeds arbitrary bytes to preprocessing as a CSV file. Run must
// return an error or a dataset, never panic; when it succeeds, every output
// row is accounted for, categorical ids lie in [0, cardinality), continuous
// values and targets are finite, and binary targets are 0 or 1 — the
// promises a model built on the output relies on.
func FuzzRunCSV(f *testing.F) {
	for _, seed := range []string{
		"cat,num,y,r\na,1.5,yes,2\nb,?,no,3\na,-2,yes,0.5\n",
		"cat,num,y,r\n",
		"cat,num,y,r\na,1e300,yes,1\nb,-1e300,no,1\n",
		"cat,num,y,r\n\"a,b\",2,yes,1\n\"unterminated,3,no,1\n",
		"cat,num,y,r\na,NaN,yes,1\n",
		"cat,num,y,r\na,1,yes,Inf\n",
		"cat,num\na,1\n",
		"cat,num,y,r\na,1,yes,1,extra\n",
		"cat,num,y,r\n?,?,?,?\n?,?,?,?\n",
		"\xff\xfe,\x00\n\x01,\x02\n",
		"",
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		dir := t.TempDir()
		in := filepath.Join(dir, "in.csv")
		require.NoError(t, os.WriteFile(in, data, 0o644))
		spec := Spec{
			InputFormat: FormatCSV, CSVSep: ",", CSVHeader: true, CSVNAValues: []string{"?"},
			Categorical: []string{"cat"}, Continuous: []string{"num"}, ContinuousFillNA: "median", Normalize: true,
			BinaryTargets: []string{"y"}, BinaryTargetMap: map[string]string{"y": "yes"},
			RegressionTargets: []string{"r"},
		}
		rep, err := Run(spec, []string{in}, nil, filepath.Join(dir, "out"))
		if err != nil {
			require.NotEmpty(t, err.Error())
			return
		}
		lines := strings.Count(string(data), "\n")
		require.LessOrEqual(t, rep.Train.Rows, int64(lines), "more rows than lines")
		if rep.Train.Rows == 0 {
			return
		}
		ds := readDataset(t, rep.Train.Dir)
		require.Equal(t, int(rep.Train.Rows), ds.rows)
		card := rep.Cardinalities["cat"]
		for _, id := range ds.cols["cat"] {
			require.True(t, id >= 0 && int64(id) < card, "cat id %v outside [0, %d)", id, card)
		}
		for _, c := range []string{"num", "r"} {
			for _, v := range ds.cols[c] {
				require.False(t, math.IsNaN(v) || math.IsInf(v, 0), "%s holds %v", c, v)
			}
		}
		for _, v := range ds.cols["y"] {
			require.True(t, v == 0 || v == 1, "binary target %v", v)
		}
	})
}

// FuzzParseWorkflow feeds arbitrary bytes to ParseWorkflow, as a workflow
// file edited by hand or damaged would reach a server. It must return an
// error or a workflow whose every op can be applied without a panic and
// that saves and loads back.
func FuzzParseWorkflow(f *testing.F) {
	dir := f.TempDir()
	in := filepath.Join(dir, "small.csv")
	require.NoError(f, os.WriteFile(in, []byte(smallCSV), 0o644))
	spec := smallSpec()
	spec.HashBuckets = map[string]int{"item": 7}
	spec.Clip = map[string]ClipRange{"qty": {0, 3}}
	spec.LogContinuous = []string{"price"}
	w, err := Fit(spec, []string{in})
	require.NoError(f, err)
	good, err := w.encode()
	require.NoError(f, err)
	f.Add(good)
	f.Add([]byte(`{"format": "mtlrank.preprocess.workflow", "version": 1}`))
	f.Add([]byte(`{"format": "mtlrank.preprocess.workflow", "version": 1, "categorical": [{"name": "a", "op": "hash_bucket", "num_buckets": 0}]}`))
	f.Add([]byte(`{"format": "mtlrank.preprocess.workflow", "version": 1, "continuous": [{"name": "x", "normalize": true, "std": 0}]}`))
	f.Add([]byte("{"))
	f.Fuzz(func(t *testing.T, data []byte) {
		w, err := ParseWorkflow(data)
		if err != nil {
			require.NotEmpty(t, err.Error())
			return
		}
		for _, c := range w.Categorical {
			for _, v := range []string{"", "u1", "red", "\x00", "9999999999999999999"} {
				id := c.Encode(v)
				require.True(t, id >= 0 && (id <= c.Max() || v == ""), "%s: id %d for %q, max %d", c.Name, id, v, c.Max())
			}
			_ = c.DType()
		}
		for _, c := range w.Continuous {
			_ = c.Apply(1.5)
			_, _ = c.ApplyNull()
		}
		_ = w.Schema(true)
		_ = w.Schema(false)
		path := filepath.Join(t.TempDir(), "w.json")
		require.NoError(t, w.Save(path))
		_, err = LoadWorkflow(path)
		require.NoError(t, err, "a parsed workflow saves and loads back")
	})
}
