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
