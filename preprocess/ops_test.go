package preprocess

import (
	"compress/gzip"
	"fmt"
	"hash/fnv"
	"math"
	"math/rand"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestCategorifyOrderAndThreshold(t *testing.T) {
	// Counts: b 3, a 3, c 2, 10 2, 9 2, d 1, 007 1, 7 1; ties by value with
	// integers first in numeric order (9 before 10; 007 and 7 are both 7,
	// then bytewise: "007" first), then strings bytewise.
	vals := []string{"b", "a", "c", "10", "b", "9", "d", "a", "c", "10", "9", "b", "a", "007", "7"}
	cases := []struct {
		minFreq    int
		vocab      []string
		infrequent int64
	}{
		{0, []string{"a", "b", "9", "10", "c", "007", "7", "d"}, 0},
		{1, []string{"a", "b", "9", "10", "c", "007", "7", "d"}, 0},
		{2, []string{"a", "b", "9", "10", "c"}, 3},
		{3, []string{"a", "b"}, 9},
		{4, []string{}, 15},
	}
	dir := t.TempDir()
	in := writeFile(t, dir, "v.csv", "v\n"+strings.Join(vals, "\n")+"\n\"\"\n")
	for _, tc := range cases {
		t.Run(fmt.Sprint("minfreq", tc.minFreq), func(t *testing.T) {
			w, err := Fit(Spec{CSVHeader: true, Categorical: []string{"v"}, CategMinFreq: tc.minFreq}, []string{in})
			require.NoError(t, err)
			c := w.Categ("v")
			assert.Equal(t, tc.vocab, c.Vocab)
			assert.Equal(t, tc.infrequent, c.InfrequentRows)
			assert.EqualValues(t, 1, c.NullRows) // the quoted empty field
			assert.EqualValues(t, 8, c.Distinct)
			assert.EqualValues(t, len(tc.vocab)+1, c.Max())

			out := filepath.Join(dir, fmt.Sprint("out", tc.minFreq))
			_, err = w.Transform([]string{in}, out)
			require.NoError(t, err)
			ds := readDataset(t, out)
			// Expected ids by the rule, computed from the expected vocabulary.
			want := make([]float64, 0, len(vals)+1)
			for _, v := range vals {
				id := float64(OOVID)
				for i, x := range tc.vocab {
					if x == v {
						id = float64(FirstVocabID + i)
					}
				}
				want = append(want, id)
			}
			want = append(want, NullID)
			assert.Equal(t, want, ds.cols["v"])
		})
	}
}

func TestHashBucket(t *testing.T) {
	dir := t.TempDir()
	vals := []string{"alpha", "beta", "gamma", "alpha", "δέλτα", "12345"}
	in := writeFile(t, dir, "h.csv", "v,w\n"+strings.Join(vals, ",x\n")+",x\n,x\n")
	const buckets = 7
	w, err := Fit(Spec{CSVHeader: true, Categorical: []string{"v"}, HashBuckets: map[string]int{"v": buckets}}, []string{in})
	require.NoError(t, err)
	c := w.Categ("v")
	assert.Equal(t, OpHashBucket, c.Op)
	assert.Empty(t, c.Vocab, "hashing keeps no vocabulary")
	assert.EqualValues(t, buckets+1, c.Max())
	out := filepath.Join(dir, "out")
	_, err = w.Transform([]string{in}, out)
	require.NoError(t, err)
	ds := readDataset(t, out)
	want := make([]float64, 0, len(vals)+1)
	for _, v := range vals {
		h := fnv.New64a() // the standard library's FNV-1a as the reference
		h.Write([]byte(v))
		want = append(want, float64(2+h.Sum64()%buckets))
	}
	want = append(want, NullID)
	assert.Equal(t, want, ds.cols["v"])
	assert.Equal(t, ds.cols["v"][0], ds.cols["v"][3])
}

func TestContinuousOps(t *testing.T) {
	dir := t.TempDir()
	e1 := math.E - 1
	in := writeFile(t, dir, "c.csv", fmt.Sprintf("x,y\n-1,1\n0,2\n%v,\n100,6\n", e1))
	cases := []struct {
		name string
		spec Spec
		x, y []float64
	}{
		{
			// clip to [0, 50] then log1p: -1 -> 0 -> 0; e-1 -> 1; 100 -> 50 -> ln 51
			name: "clip and log, constant fill",
			spec: Spec{Continuous: []string{"x", "y"}, Clip: map[string]ClipRange{"x": {0, 50}},
				LogContinuous: []string{"x"}, ContinuousFillNA: "-4"},
			x: []float64{0, 0, 1, math.Log(51)},
			y: []float64{1, 2, -4, 6},
		},
		{
			// log of a negative value is log1p(0) = 0 (values clipped at 0)
			name: "log without clip, mean fill",
			spec: Spec{Continuous: []string{"x", "y"}, LogContinuous: []string{"x"}, ContinuousFillNA: "mean"},
			x:    []float64{0, 0, 1, math.Log(101)},
			y:    []float64{1, 2, 3, 6}, // mean of 1, 2, 6
		},
		{
			// one-sided clip: only values above 10 change
			name: "one-sided clip, median fill",
			spec: Spec{Continuous: []string{"x", "y"}, Clip: map[string]ClipRange{"x": {math.Inf(-1), 10}}, ContinuousFillNA: "median"},
			x:    []float64{-1, 0, e1, 10},
			y:    []float64{1, 2, 2, 6}, // median of 1, 2, 6
		},
		{
			// normalize after log: log values 0, 0, 1, ln 101
			name: "log then normalize",
			spec: Spec{Continuous: []string{"x", "y"}, LogContinuous: []string{"x"}, ContinuousFillNA: "median", Normalize: true},
			x:    zscore([]float64{0, 0, 1, math.Log(101)}),
			y:    zscore([]float64{1, 2, 2, 6}),
		},
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			tc.spec.CSVHeader = true
			w, err := Fit(tc.spec, []string{in})
			require.NoError(t, err)
			out := filepath.Join(dir, fmt.Sprint("out", i))
			_, err = w.Transform([]string{in}, out)
			require.NoError(t, err)
			ds := readDataset(t, out)
			assertClose(t, tc.x, ds.cols["x"], "x")
			assertClose(t, tc.y, ds.cols["y"], "y")
			// The JSON round trip keeps one-sided clip ranges.
			p := filepath.Join(dir, fmt.Sprint("wf", i, ".json"))
			require.NoError(t, w.Save(p))
			l, err := LoadWorkflow(p)
			require.NoError(t, err)
			assert.Equal(t, w.Cont("x").Clip, l.Cont("x").Clip)
			assert.Equal(t, w.Spec.Clip, l.Spec.Clip)
		})
	}
}

// zscore is the reference normalisation: mean and sample standard deviation
// computed directly.
func zscore(xs []float64) []float64 {
	var sum float64
	for _, x := range xs {
		sum += x
	}
	mean := sum / float64(len(xs))
	var ss float64
	for _, x := range xs {
		ss += (x - mean) * (x - mean)
	}
	std := math.Sqrt(ss / float64(len(xs)-1))
	return mapf(xs, func(x float64) float64 { return (x - mean) / std })
}

func TestNormalizeDegenerate(t *testing.T) {
	dir := t.TempDir()
	// Constant column: std 0 -> 1 (centred only); one row: std undefined -> 1.
	in := writeFile(t, dir, "c.csv", "x\n5\n5\n5\n")
	w, err := Fit(Spec{CSVHeader: true, Continuous: []string{"x"}, Normalize: true}, []string{in})
	require.NoError(t, err)
	assert.Equal(t, 1.0, w.Cont("x").Std)
	assert.Equal(t, 5.0, w.Cont("x").Mean)
	assert.Equal(t, float32(2), w.Cont("x").Apply(7))
	one := writeFile(t, dir, "one.csv", "x\n3\n")
	w, err = Fit(Spec{CSVHeader: true, Continuous: []string{"x"}, Normalize: true}, []string{one})
	require.NoError(t, err)
	assert.Equal(t, 1.0, w.Cont("x").Std)
	// A fill needs at least one value.
	nulls := writeFile(t, dir, "nulls.csv", "x,y\n,1\n,2\n")
	_, err = Fit(Spec{CSVHeader: true, Continuous: []string{"x"}, ContinuousFillNA: "median"}, []string{nulls})
	require.Error(t, err)
	assert.Contains(t, err.Error(), `continuous column "x" has no non-null value to compute its median`)
	// Large offset: the chunk-merged moments stay exact where a naive
	// sum of squares would lose every digit.
	var b strings.Builder
	b.WriteString("x\n")
	for i := 0; i < 1000; i++ {
		fmt.Fprintf(&b, "%d\n", 1_000_000_000+i%2)
	}
	big := writeFile(t, dir, "big.csv", b.String())
	w, err = Fit(Spec{CSVHeader: true, Continuous: []string{"x"}, Normalize: true, ChunkRows: 37}, []string{big})
	require.NoError(t, err)
	assert.InDelta(t, 1_000_000_000.5, w.Cont("x").Mean, 1e-6)
	assert.InDelta(t, math.Sqrt(0.25*1000/999), w.Cont("x").Std, 1e-7)
}

func TestMedianExact(t *testing.T) {
	savedCollect, savedKeep := medianCollectMax, medianKeepMax
	t.Cleanup(func() { medianCollectMax, medianKeepMax = savedCollect, savedKeep })
	rng := rand.New(rand.NewSource(3))
	gens := map[string]func() float64{
		"normal":     func() float64 { return rng.NormFloat64() * 1e3 },
		"duplicates": func() float64 { return float64(rng.Intn(5)) },
		"close":      func() float64 { return 1 + float64(rng.Intn(1000))*1e-15 },
		"mixed sign": func() float64 { return (rng.Float64() - 0.7) * math.Pow(10, float64(rng.Intn(20)-10)) },
	}
	dir := t.TempDir()
	for name, gen := range gens {
		for _, n := range []int{1, 2, 7, 500, 501} {
			// Values kept in the fit pass; else collected after one pass, after
			// two levels, or never (histograms down to all 64 bits).
			for _, collect := range []int64{-1, 1 << 20, 3, 0} {
				medianKeepMax, medianCollectMax = 0, collect
				if collect < 0 {
					medianKeepMax = 1 << 20
				}
				vals := make([]float64, n)
				var b strings.Builder
				b.WriteString("x,y\n")
				for i := range vals {
					vals[i] = gen()
					fmt.Fprintf(&b, "%v,1\n", vals[i])
				}
				b.WriteString(",1\n") // a null, filled with the median
				in := writeFile(t, dir, "m.csv", b.String())
				w, err := Fit(Spec{CSVHeader: true, Continuous: []string{"x"}, ContinuousFillNA: "median", ChunkRows: 64}, []string{in})
				require.NoError(t, err)
				sort.Float64s(vals)
				want := (vals[(n-1)/2] + vals[n/2]) / 2
				assert.Equal(t, want, w.Cont("x").FillValue, "%s n=%d collect=%d", name, n, collect)
			}
		}
	}
}

func TestSortKeyOrder(t *testing.T) {
	vals := []float64{math.Inf(-1), -1e300, -2, -1, -1e-300, 0, 1e-300, 1, 2, 1e300, math.Inf(1)}
	for i := 1; i < len(vals); i++ {
		assert.Less(t, sortKey(vals[i-1]), sortKey(vals[i]), "%v < %v", vals[i-1], vals[i])
	}
	for _, v := range vals {
		assert.Equal(t, v, fromSortKey(sortKey(v)))
	}
}

func TestParquetInput(t *testing.T) {
	dir := t.TempDir()
	mem := memory.NewCheckedAllocator(memory.NewGoAllocator())
	defer mem.AssertSize(t, 0)

	// Two files, several row groups, dictionary strings, int ids with ties
	// ("9" before "10" numerically), NaN and null floats, a bool target.
	p1 := filepath.Join(dir, "a.parquet")
	writeParquet(t, p1, 2,
		parquetColumn{name: "city", typ: arrow.BinaryTypes.String, dict: true, vals: []any{"paris", "rome", "paris", nil, "oslo"}},
		parquetColumn{name: "shop", typ: arrow.PrimitiveTypes.Int64, vals: []any{10, 9, 10, 9, 3}},
		parquetColumn{name: "age", typ: arrow.PrimitiveTypes.Int8, vals: []any{20, 30, nil, 40, 50}},
		parquetColumn{name: "score", typ: arrow.PrimitiveTypes.Float64, vals: []any{1.0, math.NaN(), 3.0, nil, 5.0}},
		parquetColumn{name: "buy", typ: arrow.FixedWidthTypes.Boolean, vals: []any{true, false, false, true, false}},
		parquetColumn{name: "amount", typ: arrow.PrimitiveTypes.Float32, vals: []any{1.5, 0.0, 0.0, 2.5, 0.0}},
	)
	p2 := filepath.Join(dir, "b.parquet")
	writeParquet(t, p2, 10,
		parquetColumn{name: "amount", typ: arrow.PrimitiveTypes.Float32, vals: []any{4.0, 0.0}},
		parquetColumn{name: "buy", typ: arrow.FixedWidthTypes.Boolean, vals: []any{true, false}},
		parquetColumn{name: "score", typ: arrow.PrimitiveTypes.Float64, vals: []any{7.0, 9.0}},
		parquetColumn{name: "age", typ: arrow.PrimitiveTypes.Int8, vals: []any{60, 70}},
		parquetColumn{name: "shop", typ: arrow.PrimitiveTypes.Int64, vals: []any{3, 11}},
		parquetColumn{name: "city", typ: arrow.BinaryTypes.String, vals: []any{"rome", "lima"}},
	)
	spec := Spec{
		Categorical: []string{"city", "shop", "age"}, Continuous: []string{"score"}, ContinuousFillNA: "median",
		BinaryTargets: []string{"buy"}, RegressionTargets: []string{"amount"}, Allocator: mem, ChunkRows: 3,
	}
	w, err := Fit(spec, []string{dir}) // a directory of Parquet files
	require.NoError(t, err)
	assert.EqualValues(t, 7, w.FitRows)
	// city: paris 2, rome 2, oslo 1, lima 1, null 1
	assert.Equal(t, []string{"paris", "rome", "lima", "oslo"}, w.Categ("city").Vocab)
	// shop: 10 2, 9 2, 3 2, 11 1 -> ties numerically: 3, 9, 10
	assert.Equal(t, []string{"3", "9", "10", "11"}, w.Categ("shop").Vocab)
	// score: 1 3 5 7 9 non-null (NaN is null) -> median 5
	assert.Equal(t, 5.0, w.Cont("score").FillValue)
	assert.EqualValues(t, 2, w.Cont("score").NullRows)
	assert.EqualValues(t, 3, w.Target("buy").Positives)

	out := filepath.Join(dir, "out")
	res, err := w.Transform([]string{p1, p2}, out)
	require.NoError(t, err)
	assert.Len(t, res.Files, 2, "one part per input file")
	ds := readDataset(t, out)
	assert.Equal(t, 7, ds.rows)
	assert.Equal(t, []float64{2, 3, 2, 0, 5, 3, 4}, ds.cols["city"])
	assert.Equal(t, []float64{4, 3, 4, 3, 2, 2, 5}, ds.cols["shop"])
	assert.Equal(t, []float64{1, 5, 3, 5, 5, 7, 9}, ds.cols["score"])
	assert.Equal(t, []float64{1, 0, 0, 1, 0, 1, 0}, ds.cols["buy"])
	assert.Equal(t, []float64{1.5, 0, 0, 2.5, 0, 4, 0}, ds.cols["amount"])
	assert.Equal(t, float64(NullID), ds.cols["age"][2])
}

func TestCSVDialects(t *testing.T) {
	dir := t.TempDir()
	cases := []struct {
		name    string
		file    string
		content string
		spec    Spec
		want    []string // expected vocabulary of column "v"
	}{
		{"quoted separators", "q.csv", "v,x\n\"a, b\",1\n\"say \"\"hi\"\"\",2\n\"a, b\",3\n",
			Spec{CSVHeader: true}, []string{"a, b", `say "hi"`}},
		{"tab separated", "t.tsv", "v\tx\n a \t1\nb\t2\nb\t3\n",
			Spec{CSVHeader: true, CSVSep: `\t`}, []string{"b", "a"}},
		{"semicolon with spaces", "s.csv", "v ; x\nq ; 1\nq ; 2\n",
			Spec{CSVHeader: true, CSVSep: " ; "}, []string{"q"}},
		{"names without header", "n.csv", "z,1\ny,2\nz,3\n",
			Spec{CSVColumnNames: []string{"v", "x"}}, []string{"z", "y"}},
		{"names replacing header", "r.csv", "A,B\nk,1\n",
			Spec{CSVHeader: true, CSVColumnNames: []string{"v", "x"}}, []string{"k"}},
		{"byte order mark", "bom.csv", "\xef\xbb\xbfv,x\nm,1\n", Spec{CSVHeader: true}, []string{"m"}},
		{"NA values and blank lines", "na.csv", "v,x\nNA,1\n\nu,2\nnull,3\n",
			Spec{CSVHeader: true, CSVNAValues: []string{"NA", "null"}}, []string{"u"}},
		{"windows line ends", "crlf.csv", "v,x\r\nw,1\r\nw,2\r\n", Spec{CSVHeader: true}, []string{"w"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			in := writeFile(t, dir, tc.file, tc.content)
			tc.spec.Categorical = []string{"v"}
			tc.spec.Continuous = []string{"x"}
			w, err := Fit(tc.spec, []string{in})
			require.NoError(t, err)
			assert.Equal(t, tc.want, w.Categ("v").Vocab)
		})
	}

	// gzip-compressed CSV and glob patterns.
	gz := filepath.Join(dir, "g.csv.gz")
	f, err := os.Create(gz)
	require.NoError(t, err)
	zw := gzip.NewWriter(f)
	_, err = zw.Write([]byte("v,x\ng1,1\ng1,2\ng2,3\n"))
	require.NoError(t, err)
	require.NoError(t, zw.Close())
	require.NoError(t, f.Close())
	w, err := Fit(Spec{CSVHeader: true, Categorical: []string{"v"}}, []string{filepath.Join(dir, "*.gz")})
	require.NoError(t, err)
	assert.Equal(t, []string{"g1", "g2"}, w.Categ("v").Vocab)
	assert.EqualValues(t, 3, w.FitRows)
}

func TestEmptyTransformAndWideIDs(t *testing.T) {
	dir := t.TempDir()
	in := writeFile(t, dir, "h.csv", "v,x\nabc,1\nxyz,2\n")
	// More buckets than int32 holds: ids are written as int64.
	const buckets = 3_000_000_000
	w, err := Fit(Spec{CSVHeader: true, Categorical: []string{"v"}, Continuous: []string{"x"},
		HashBuckets: map[string]int{"v": buckets}}, []string{in})
	require.NoError(t, err)
	out := filepath.Join(dir, "wide")
	res, err := w.Transform([]string{in}, out)
	require.NoError(t, err)
	assert.Equal(t, "int64", string(res.Schema.Feature("v").DType))
	assert.EqualValues(t, buckets+1, res.Schema.Feature("v").IntDomain.Max)
	ds := readDataset(t, out)
	assert.Equal(t, arrow.PrimitiveTypes.Int64, ds.types["v"])
	for i, v := range []string{"abc", "xyz"} {
		h := fnv.New64a()
		h.Write([]byte(v))
		assert.Equal(t, float64(2+h.Sum64()%buckets), ds.cols["v"][i])
	}

	// Inputs without rows give a valid, empty dataset and a warning.
	empty := writeFile(t, dir, "empty.csv", "v,x\n")
	out = filepath.Join(dir, "empty")
	res, err = w.Transform([]string{empty}, out)
	require.NoError(t, err)
	assert.EqualValues(t, 0, res.Rows)
	assert.Equal(t, []string{filepath.Join(out, "part_0.parquet")}, res.Files)
	assert.Equal(t, []string{out + ": no rows"}, res.Warnings)
	assert.Equal(t, 0, readDataset(t, out).rows)
}

func TestProgressAndAllocatorOnError(t *testing.T) {
	dir := t.TempDir()
	mem := memory.NewCheckedAllocator(memory.NewGoAllocator())
	defer mem.AssertSize(t, 0)
	p := filepath.Join(dir, "a.parquet")
	vals := make([]any, 100)
	for i := range vals {
		vals[i] = fmt.Sprint(i)
	}
	writeParquet(t, p, 16, parquetColumn{name: "x", typ: arrow.BinaryTypes.String, vals: vals})
	savedKeep := medianKeepMax
	t.Cleanup(func() { medianKeepMax = savedKeep })
	medianKeepMax = 0 // force the median refinement pass
	var stages []string
	var last int64
	spec := Spec{Continuous: []string{"x"}, ContinuousFillNA: "median", ChunkRows: 10, Allocator: mem,
		Progress: func(stage string, rows int64) {
			if len(stages) == 0 || stages[len(stages)-1] != stage {
				stages = append(stages, stage)
			}
			last = rows
		}}
	w, err := Fit(spec, []string{p})
	require.NoError(t, err)
	assert.Equal(t, []string{"fit", "median"}, stages)
	assert.EqualValues(t, 100, last)
	assert.Equal(t, 49.5, w.Cont("x").FillValue)

	// An error in the middle of a transform frees every Arrow buffer.
	vals[57] = "not a number"
	bad := filepath.Join(dir, "bad.parquet")
	writeParquet(t, bad, 16, parquetColumn{name: "x", typ: arrow.BinaryTypes.String, vals: vals})
	_, err = w.Transform([]string{bad}, filepath.Join(dir, "out"))
	require.Error(t, err)
	assert.Contains(t, err.Error(), "row 57")
	_, err = Fit(spec, []string{bad})
	require.Error(t, err)
	assert.Contains(t, err.Error(), "row 57")
}

func TestSelectKth(t *testing.T) {
	rng := rand.New(rand.NewSource(9))
	for _, n := range []int{1, 2, 3, 10, 101, 1000} {
		for _, distinct := range []int{1, 3, 1 << 30} {
			vals := make([]float64, n)
			for i := range vals {
				vals[i] = float64(rng.Intn(distinct)) - float64(distinct)/2
			}
			sorted := append([]float64(nil), vals...)
			sort.Float64s(sorted)
			for _, k := range []int{0, n / 2, n - 1, rng.Intn(n)} {
				a := append([]float64(nil), vals...)
				got := selectKth(a, k)
				require.Equal(t, sorted[k], got, "n=%d distinct=%d k=%d", n, distinct, k)
				for i := range a {
					if i < k {
						require.LessOrEqual(t, a[i], got)
					} else if i > k {
						require.GreaterOrEqual(t, a[i], got)
					}
				}
			}
		}
	}
}
