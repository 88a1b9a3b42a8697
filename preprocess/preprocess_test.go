package preprocess

import (
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/mtlrank/mtlrank/schema"
)

// smallCSV is the hand-checked example: ", "-separated with a header, "?"
// and empty fields as nulls, a quoted field.
const smallCSV = `user, item, color, price, qty, clicked, rating
u1, i1, red, 10, 1, yes, 4.5
u2, i2, blue, , 2, no, 3.0
u1, i3, red, 30, ?, yes, 5
u3, i1, green, 20, 4, no, 1
u2, i1, "blue", 40, 3, no, 2.5
u1, i2, ?, 50, 2, yes, 4
`

func smallSpec() Spec {
	return Spec{
		InputFormat: FormatCSV, CSVSep: ", ", CSVNAValues: []string{"?"}, CSVHeader: true,
		Categorical: []string{"color"}, UserID: "user", ItemID: "item",
		Continuous: []string{"price", "qty"}, ContinuousFillNA: "median", Normalize: true,
		BinaryTargets: []string{"clicked"}, BinaryTargetMap: map[string]string{"clicked": "yes"},
		RegressionTargets: []string{"rating"},
		ItemFeatures:      []string{"color"}, UserFeatures: []string{"qty"},
	}
}

// Hand computation for smallCSV:
//
//	color: red 2, blue 2, green 1, one null -> blue 2, red 3 (tie by value), green 4
//	user:  u1 3, u2 2, u3 1 -> 2, 3, 4;  item: i1 3, i2 2, i3 1 -> 2, 3, 4
//	price: 10 _ 30 20 40 50, median of 10 20 30 40 50 = 30 -> filled
//	       10 30 30 20 40 50, mean 30, sample var (400+0+0+100+100+400)/5 = 200
//	qty:   1 2 _ 4 3 2, median of 1 2 2 3 4 = 2 -> filled 1 2 2 4 3 2,
//	       mean 14/6 = 7/3, sum of squared deviations 16/3, sample var 16/15
var (
	priceNorm = func(x float64) float64 { return (x - 30) / math.Sqrt(200) }
	qtyNorm   = func(x float64) float64 { return (x - 7.0/3) / math.Sqrt(16.0/15) }
)

func TestFitTransformHandComputed(t *testing.T) {
	for _, chunkRows := range []int{0, 1, 4} { // one chunk, one row per chunk, a partial last chunk
		t.Run("chunk"+itoa(chunkRows), func(t *testing.T) {
			dir := t.TempDir()
			in := writeFile(t, dir, "train.csv", smallCSV)
			spec := smallSpec()
			spec.ChunkRows = chunkRows
			w, err := Fit(spec, []string{in})
			require.NoError(t, err)

			assert.EqualValues(t, 6, w.FitRows)
			color := w.Categ("color")
			require.NotNil(t, color)
			assert.Equal(t, []string{"blue", "red", "green"}, color.Vocab)
			assert.Equal(t, []int64{2, 2, 1}, color.Counts)
			assert.EqualValues(t, 1, color.NullRows)
			assert.EqualValues(t, 4, color.Max())
			assert.Equal(t, []string{"u1", "u2", "u3"}, w.Categ("user").Vocab)
			assert.Equal(t, []string{"i1", "i2", "i3"}, w.Categ("item").Vocab)

			price := w.Cont("price")
			assert.Equal(t, FillMedian, price.Fill)
			assert.InDelta(t, 30, price.FillValue, 1e-12)
			assert.InDelta(t, 30, price.Mean, 1e-12)
			assert.InDelta(t, math.Sqrt(200), price.Std, 1e-12)
			assert.EqualValues(t, 5, price.Count)
			assert.EqualValues(t, 1, price.NullRows)
			assert.Equal(t, 10.0, price.Min)
			assert.Equal(t, 50.0, price.Max)
			qty := w.Cont("qty")
			assert.InDelta(t, 2, qty.FillValue, 1e-12)
			assert.InDelta(t, 7.0/3, qty.Mean, 1e-12)
			assert.InDelta(t, math.Sqrt(16.0/15), qty.Std, 1e-12)
			clicked := w.Target("clicked")
			assert.EqualValues(t, 3, clicked.Positives)
			assert.InDelta(t, 0.5, clicked.Mean, 1e-12)
			assert.Equal(t, []string{"no"}, clicked.NegativeSeen)

			out := filepath.Join(dir, "out")
			res, err := w.Transform([]string{in}, out)
			require.NoError(t, err)
			assert.EqualValues(t, 6, res.Rows)
			assert.Equal(t, []string{filepath.Join(out, "part_0.parquet")}, res.Files)
			assert.EqualValues(t, 1, res.NullRows["color"])
			assert.EqualValues(t, 0, res.OOVRows["color"])
			assert.EqualValues(t, 1, res.FilledRows["price"])
			assert.EqualValues(t, 1, res.FilledRows["qty"])
			assert.EqualValues(t, 3, res.Positives["clicked"])
			assert.Empty(t, res.Warnings)

			ds := readDataset(t, out)
			assert.Equal(t, 6, ds.rows)
			assert.Equal(t, []string{"color", "user", "item", "price", "qty", "clicked", "rating"}, ds.order)
			for _, c := range []string{"color", "user", "item"} {
				assert.Equal(t, arrow.PrimitiveTypes.Int32, ds.types[c], c)
			}
			for _, c := range []string{"price", "qty", "clicked", "rating"} {
				assert.Equal(t, arrow.PrimitiveTypes.Float32, ds.types[c], c)
			}
			assert.Equal(t, []float64{3, 2, 3, 4, 2, 0}, ds.cols["color"])
			assert.Equal(t, []float64{2, 3, 2, 4, 3, 2}, ds.cols["user"])
			assert.Equal(t, []float64{2, 3, 4, 2, 2, 3}, ds.cols["item"])
			assertClose(t, mapf([]float64{10, 30, 30, 20, 40, 50}, priceNorm), ds.cols["price"], "price")
			assertClose(t, mapf([]float64{1, 2, 2, 4, 3, 2}, qtyNorm), ds.cols["qty"], "qty")
			assert.Equal(t, []float64{1, 0, 1, 0, 0, 1}, ds.cols["clicked"])
			assert.Equal(t, []float64{4.5, 3, 5, 1, 2.5, 4}, ds.cols["rating"])
		})
	}
}

func TestSchemaFiles(t *testing.T) {
	dir := t.TempDir()
	in := writeFile(t, dir, "train.csv", smallCSV)
	w, err := Fit(smallSpec(), []string{in})
	require.NoError(t, err)
	out := filepath.Join(dir, "out")
	_, err = w.Transform([]string{in}, out)
	require.NoError(t, err)

	pb, err := os.ReadFile(filepath.Join(out, "schema.pbtxt"))
	require.NoError(t, err)
	fromPbtxt, err := schema.ParsePbtxt(strings.NewReader(string(pb)))
	require.NoError(t, err)
	js, err := os.Open(filepath.Join(out, "schema.json"))
	require.NoError(t, err)
	defer js.Close()
	fromJSON, err := schema.ParseJSON(js)
	require.NoError(t, err)

	type want struct {
		dtype  schema.DType
		tags   []schema.Tag
		domain *schema.IntDomain
	}
	wants := map[string]want{
		"color":   {schema.Int32, []schema.Tag{"categorical", "item"}, &schema.IntDomain{Name: "color", Min: 0, Max: 4, IsCategorical: true}},
		"user":    {schema.Int32, []schema.Tag{"categorical", "user_id", "user", "id"}, &schema.IntDomain{Name: "user", Min: 0, Max: 4, IsCategorical: true}},
		"item":    {schema.Int32, []schema.Tag{"categorical", "item_id", "item", "id"}, &schema.IntDomain{Name: "item", Min: 0, Max: 4, IsCategorical: true}},
		"price":   {schema.Float32, []schema.Tag{"continuous"}, nil},
		"qty":     {schema.Float32, []schema.Tag{"continuous", "user"}, nil},
		"clicked": {schema.Float32, []schema.Tag{"binary_classification", "target"}, &schema.IntDomain{Min: 0, Max: 1}},
		"rating":  {schema.Float32, []schema.Tag{"regression", "target"}, nil},
	}
	for name, s := range map[string]*schema.Schema{"pbtxt": fromPbtxt, "json": fromJSON} {
		require.Len(t, s.Features, len(wants), name)
		for fname, wnt := range wants {
			f := s.Feature(fname)
			require.NotNil(t, f, "%s: feature %s", name, fname)
			assert.Equal(t, wnt.dtype, f.DType, "%s: %s dtype", name, fname)
			assert.ElementsMatch(t, wnt.tags, f.Tags, "%s: %s tags", name, fname)
			assert.Equal(t, wnt.domain, f.IntDomain, "%s: %s int_domain", name, fname)
		}
		assert.True(t, s.Feature("user").HasTag(schema.TagUserID))
		assert.True(t, s.Feature("clicked").IsTarget())
	}
	require.NoError(t, fromPbtxt.Validate())
	require.NoError(t, w.Schema(true).Validate())
	loaded, err := schema.Load(out) // the directory form finds schema.pbtxt
	require.NoError(t, err)
	assert.Len(t, loaded.Features, len(wants))
	assert.Contains(t, string(pb), `name: "color"`)
	assert.Contains(t, string(pb), "is_categorical: true")
}

func TestWorkflowRoundTrip(t *testing.T) {
	dir := t.TempDir()
	in := writeFile(t, dir, "train.csv", smallCSV)
	w, err := Fit(smallSpec(), []string{in})
	require.NoError(t, err)
	wfPath := filepath.Join(dir, "wf", "workflow.json")
	require.NoError(t, w.Save(wfPath))

	raw, err := os.ReadFile(wfPath)
	require.NoError(t, err)
	var head struct {
		Format  string `json:"format"`
		Version int    `json:"version"`
	}
	require.NoError(t, json.Unmarshal(raw, &head))
	assert.Equal(t, WorkflowFormat, head.Format)
	assert.Equal(t, WorkflowVersion, head.Version)

	loaded, err := LoadWorkflow(wfPath)
	require.NoError(t, err)
	assert.Equal(t, w.Categorical[0].Vocab, loaded.Categorical[0].Vocab)
	assert.Equal(t, w.Spec.CSVNAValues, loaded.Spec.CSVNAValues)

	// New data: unseen user / colour, null user, null price and qty.
	newCSV := `user, item, color, price, qty, clicked, rating
u9, i1, purple, 15, , no, 2
, i2, red, ?, 3, yes, 3
u2, i4, blue, 30, 7, no, 1.5
`
	in2 := writeFile(t, dir, "new.csv", newCSV)
	wantCols := map[string][]float64{
		"user":    {OOVID, NullID, 3},
		"item":    {2, 3, OOVID},
		"color":   {OOVID, 3, 2},
		"price":   mapf([]float64{15, 30, 30}, priceNorm),
		"qty":     mapf([]float64{2, 3, 7}, qtyNorm),
		"clicked": {0, 1, 0},
		"rating":  {2, 3, 1.5},
	}
	var outputs []dataset
	for i, wf := range []*Workflow{w, loaded} {
		out := filepath.Join(dir, "out"+itoa(i))
		res, err := wf.Transform([]string{in2}, out)
		require.NoError(t, err)
		assert.EqualValues(t, 1, res.OOVRows["user"])
		assert.EqualValues(t, 1, res.NullRows["user"])
		assert.EqualValues(t, 1, res.OOVRows["color"])
		ds := readDataset(t, out)
		for c, want := range wantCols {
			assertClose(t, want, ds.cols[c], c)
		}
		outputs = append(outputs, ds)
	}
	assert.Equal(t, outputs[0].cols, outputs[1].cols)

	// The per-value API agrees with the files.
	assert.EqualValues(t, OOVID, loaded.Categ("user").Encode("u9"))
	assert.EqualValues(t, 3, loaded.Categ("user").Encode("u2"))
	assert.InDelta(t, priceNorm(15), float64(loaded.Cont("price").Apply(15)), 1e-6)
	v, err := loaded.Cont("price").ApplyNull()
	require.NoError(t, err)
	assert.InDelta(t, 0, float64(v), 1e-6)

	// Without targets (data to score).
	out := filepath.Join(dir, "notargets")
	noTarget := writeFile(t, dir, "score.csv", "user, item, color, price, qty\nu1, i2, red, 10, 1\n")
	res, err := loaded.TransformWith([]string{noTarget}, out, TransformOptions{SkipTargets: true})
	require.NoError(t, err)
	assert.Nil(t, res.Schema.Feature("clicked"))
	ds := readDataset(t, out)
	assert.Equal(t, []string{"color", "user", "item", "price", "qty"}, ds.order)
	assert.Equal(t, []float64{2}, ds.cols["user"])
}

func TestLoadWorkflowRejectsBadFiles(t *testing.T) {
	dir := t.TempDir()
	in := writeFile(t, dir, "train.csv", smallCSV)
	w, err := Fit(smallSpec(), []string{in})
	require.NoError(t, err)
	good, err := json.Marshal(w)
	require.NoError(t, err)

	cases := []struct {
		name, from, to, want string
	}{
		{"format", `"format":"` + WorkflowFormat + `"`, `"format":"something"`, "format"},
		{"version", `"version":1`, `"version":99`, "version 99"},
		{"duplicate vocab", `"vocab":["blue","red","green"]`, `"vocab":["blue","blue","green"]`, `"blue" appears twice`},
		{"counts", `"counts":[2,2,1]`, `"counts":[2,2]`, "2 counts for 3"},
		{"op", `"op":"categorify"`, `"op":"bogus"`, "unknown op"},
		{"unknown field", `"fit_rows":6`, `"fit_rows":6,"extra":1`, "unknown field"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s := string(good)
			require.Contains(t, s, tc.from)
			p := writeFile(t, dir, tc.name+".json", strings.Replace(s, tc.from, tc.to, 1))
			_, err := LoadWorkflow(p)
			require.Error(t, err)
			assert.Contains(t, err.Error(), tc.want)
			assert.Contains(t, err.Error(), p)
		})
	}
	_, err = LoadWorkflow(filepath.Join(dir, "missing.json"))
	require.ErrorIs(t, err, os.ErrNotExist)
}

func assertClose(t *testing.T, want, got []float64, msg string) {
	t.Helper()
	require.Len(t, got, len(want), msg)
	for i := range want {
		assert.InDelta(t, want[i], got[i], 1e-5+1e-5*math.Abs(want[i]), "%s[%d]", msg, i)
	}
}

func mapf(xs []float64, f func(float64) float64) []float64 {
	out := make([]float64, len(xs))
	for i, x := range xs {
		out[i] = f(x)
	}
	return out
}

func itoa(i int) string { return strconv.Itoa(i) }

// TestOutputModes: the outputs of Run (data folders, part files, schemas,
// workflow.json) get the modes of os.Create/os.Mkdir (0666/0777 minus the
// umask), not the 0600/0700 of temporary files; a replaced output too.
func TestOutputModes(t *testing.T) {
	old := syscall.Umask(0o022)
	defer syscall.Umask(old)
	dir := t.TempDir()
	in := writeFile(t, dir, "train.csv", smallCSV)
	out := filepath.Join(dir, "out")
	for range 2 { // the second run replaces the first one's output
		_, err := Run(smallSpec(), []string{in}, []string{in}, out)
		require.NoError(t, err)
	}
	want := map[string]os.FileMode{
		"workflow.json":        0o644,
		"train":                0o755,
		"train/part_0.parquet": 0o644,
		"train/schema.pbtxt":   0o644,
		"eval/schema.json":     0o644,
		"eval":                 0o755,
	}
	for name, mode := range want {
		st, err := os.Stat(filepath.Join(out, name))
		require.NoError(t, err)
		assert.Equal(t, mode, st.Mode().Perm(), name)
	}
}
