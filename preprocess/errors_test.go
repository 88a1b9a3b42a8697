package preprocess

import (
	"errors"
	"math"
	"os"
	"path/filepath"
	"testing"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestSpecValidate(t *testing.T) {
	base := func() Spec {
		return Spec{CSVHeader: true, Categorical: []string{"a", "b"}, Continuous: []string{"x"},
			BinaryTargets: []string{"y"}, RegressionTargets: []string{"r"}, UserID: "u"}
	}
	cases := []struct {
		name   string
		modify func(*Spec)
		want   string
	}{
		{"categorical and continuous", func(s *Spec) { s.Continuous = append(s.Continuous, "a") }, `column "a" is both categorical and continuous`},
		{"listed twice", func(s *Spec) { s.Categorical = append(s.Categorical, "b") }, `column "b" is listed twice as categorical`},
		{"target also feature", func(s *Spec) { s.BinaryTargets = append(s.BinaryTargets, "x") }, `column "x" is both continuous and binary target`},
		{"binary and regression", func(s *Spec) { s.RegressionTargets = append(s.RegressionTargets, "y") }, `column "y" is both binary target and regression target`},
		{"target source is feature", func(s *Spec) { s.TargetSource = map[string]string{"y": "a"} }, `column "a" is the source of target "y" and also categorical`},
		{"source for non-target", func(s *Spec) { s.TargetSource = map[string]string{"zz": "a"} }, `target source given for "zz"`},
		{"derived from target", func(s *Spec) { s.TargetSource = map[string]string{"y": "r"} }, `target "y" is derived from target "r"`},
		{"map for non-binary", func(s *Spec) { s.BinaryTargetMap = map[string]string{"r": "1"} }, `binary target map given for "r"`},
		{"empty positive label", func(s *Spec) { s.BinaryTargetMap = map[string]string{"y": " | "} }, `binary target "y": empty positive label`},
		{"user id continuous", func(s *Spec) { s.UserID = "x" }, `column "x" is both user id and continuous`},
		{"same user and item id", func(s *Spec) { s.ItemID = "u" }, `both the user id and the item id`},
		{"unknown user feature", func(s *Spec) { s.UserFeatures = []string{"nope"} }, `user feature "nope" is not a categorical or continuous feature`},
		{"user and item feature", func(s *Spec) { s.UserFeatures = []string{"a"}; s.ItemFeatures = []string{"a"} }, `column "a" is both a user and an item feature`},
		{"negative min freq", func(s *Spec) { s.CategMinFreq = -1 }, "categ min freq -1"},
		{"hash non-categorical", func(s *Spec) { s.HashBuckets = map[string]int{"x": 10} }, `hash buckets given for "x"`},
		{"hash zero buckets", func(s *Spec) { s.HashBuckets = map[string]int{"a": 0} }, `hash buckets for "a": 0 must be positive`},
		{"log non-continuous", func(s *Spec) { s.LogContinuous = []string{"a"} }, `log transform given for "a"`},
		{"clip inverted", func(s *Spec) { s.Clip = map[string]ClipRange{"x": {5, 1}} }, `clip range for "x": [5, 1]`},
		{"clip NaN", func(s *Spec) { s.Clip = map[string]ClipRange{"x": {math.NaN(), 1}} }, `clip range for "x"`},
		{"bad fill", func(s *Spec) { s.ContinuousFillNA = "zero" }, `continuous fillna "zero"`},
		{"eval perc zero", func(s *Spec) { s.SplitStrategy = SplitRandom }, "eval fraction 0 must lie in (0, 1)"},
		{"eval perc one", func(s *Spec) { s.SplitStrategy = SplitRandom; s.EvalPerc = 1 }, "eval fraction 1 must lie in (0, 1)"},
		{"by user without user", func(s *Spec) { s.SplitStrategy = SplitRandomByUser; s.EvalPerc = 0.2; s.UserID = "" }, "needs the user id column"},
		{"holdout without user", func(s *Spec) { s.SplitStrategy = SplitByUserHoldout; s.EvalPerc = 0.2; s.UserID = "" }, `split "by_user_holdout" needs the user id column`},
		{"by user eval perc", func(s *Spec) { s.SplitStrategy = SplitRandomByUser; s.EvalPerc = 1.5 }, `split "random_by_user": eval fraction 1.5 must lie in (0, 1)`},
		{"unknown split", func(s *Spec) { s.SplitStrategy = "chronological"; s.EvalPerc = 0.2 }, `split strategy "chronological": want "random", "random_by_user", "by_user_holdout" or "temporal"`},
		{"temporal without timestamp", func(s *Spec) { s.SplitStrategy = SplitTemporal; s.SplitTemporalTimestamp = 5 }, `split "temporal" needs the timestamp column`},
		{"cut without temporal", func(s *Spec) { s.SplitTemporalTimestamp = 5 }, `a temporal split timestamp is given without the "temporal" split`},
		{"session id not categorical", func(s *Spec) { s.SessionIDFeature = "nowhere" }, `session id column "nowhere" must be a categorical feature`},
		{"negative frequency", func(s *Spec) { s.MinItemFreq = -1 }, `item frequency bounds must not be negative (min -1, max 0)`},
		{"min above max", func(s *Spec) { s.MinUserFreq = 5; s.MaxUserFreq = 2 }, `min user frequency 5 exceeds the max 2`},
		{"user frequency without user", func(s *Spec) { s.UserID = ""; s.SplitStrategy = ""; s.MinUserFreq = 2 }, `user frequency filtering needs the user id column`},
		{"negative rounds", func(s *Spec) { s.FilterRounds = -1 }, `filter rounds -1 must not be negative`},
		{"bad query", func(s *Spec) { s.FilterQuery = "a + 1 > 2" }, `filter query "a + 1 > 2": at offset 2: arithmetic (+) is not supported (supported: comparisons`},
		{"format", func(s *Spec) { s.InputFormat = "json" }, `input format "json"`},
		{"separator", func(s *Spec) { s.CSVSep = "::" }, `csv separator "::"`},
		{"duplicate names", func(s *Spec) { s.CSVColumnNames = []string{"a", "a"} }, `csv column names: "a" appears twice`},
		{"nothing", func(s *Spec) { *s = Spec{} }, "no categorical, continuous or target columns"},
		{"empty name", func(s *Spec) { s.Continuous = []string{""} }, "continuous: empty column name"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s := base()
			require.NoError(t, s.Validate())
			tc.modify(&s)
			err := s.Validate()
			require.Error(t, err)
			assert.Contains(t, err.Error(), tc.want)
			// Fit and Run refuse the same spec before reading anything.
			_, err = Fit(s, []string{"/nonexistent.csv"})
			require.Error(t, err)
			assert.Contains(t, err.Error(), tc.want)
		})
	}
	s := base()
	s.TargetSource = map[string]string{"y": "label", "r": "label"} // two targets from one column is fine
	require.NoError(t, s.Validate())
	s.Clip = map[string]ClipRange{"x": {0, math.Inf(1)}}
	require.NoError(t, s.Validate())
}

func TestRunEvalAndSplitContradict(t *testing.T) {
	dir := t.TempDir()
	in := writeFile(t, dir, "train.csv", smallCSV)
	spec := smallSpec()
	spec.SplitStrategy, spec.EvalPerc = SplitRandom, 0.2
	_, err := Run(spec, []string{in}, []string{in}, filepath.Join(dir, "out"))
	require.Error(t, err)
	assert.Contains(t, err.Error(), "eval inputs and the \"random\" split strategy are both given")
}

// TestBadInput checks that every kind of bad data gives an error naming
// the file, the column and the line (CSV) or row (Parquet).
func TestBadInput(t *testing.T) {
	dir := t.TempDir()
	header := "user, item, color, price, qty, clicked, rating\n"
	cases := []struct {
		name    string
		csv     string
		modify  func(*Spec)
		want    []string
		errIsNA bool
	}{
		{"missing column", "user, item, colour, price, qty, clicked, rating\nu1, i1, red, 1, 1, yes, 1\n", nil,
			[]string{`column "color"`, "column not found", "colour"}, false},
		{"non-numeric continuous", header + "u1, i1, red, 1, 1, yes, 1\nu1, i1, red, abc, 1, yes, 1\n", nil,
			[]string{`column "price"`, "line 3", `value "abc" is not a number`}, false},
		{"infinite continuous", header + "u1, i1, red, inf, 1, yes, 1\n", nil,
			[]string{`column "price"`, "line 2", "not finite"}, false},
		{"out of range continuous", header + "u1, i1, red, 1e999, 1, yes, 1\n", nil,
			[]string{`column "price"`, "line 2", "out of range"}, false},
		{"null without fill", header + "u1, i1, red, , 1, yes, 1\n", func(s *Spec) { s.ContinuousFillNA = "" },
			[]string{`column "price"`, "line 2", "no fill", "--continuous_features_fillna", "Spec.ContinuousFillNA"}, false},
		{"unparseable binary target", header + "u1, i1, red, 1, 1, 1, 1\nu1, i1, red, 1, 1, maybe, 1\n",
			func(s *Spec) { s.BinaryTargetMap = nil }, []string{`column "clicked"`, "line 3", `value "maybe" is not 0/1`,
				"--binary_target_map clicked=LABEL", "Spec.BinaryTargetMap"}, false},
		{"binary target 2", header + "u1, i1, red, 1, 1, 2, 1\n",
			func(s *Spec) { s.BinaryTargetMap = nil }, []string{`column "clicked"`, "line 2", "value 2 is not 0/1", "--binary_target_map clicked=LABEL"}, false},
		{"missing target", header + "u1, i1, red, 1, 1, yes, 1\nu1, i1, red, 1, 1, ?, 1\n", nil,
			[]string{`column "clicked"`, "line 3", "missing value of target"}, false},
		{"unparseable regression target", header + "u1, i1, red, 1, 1, yes, high\n", nil,
			[]string{`column "rating"`, "line 2", `value "high" is not a number`}, false},
		{"positive label never seen", header + "u1, i1, red, 1, 1, no, 1\n", nil,
			[]string{`binary target "clicked"`, `positive label "yes"`, `"no"`}, false},
		{"wrong field count", header + "u1, i1, red, 1, 1, yes, 1\nu1, i1, red, 1, 1, yes\n", nil,
			[]string{"line 3", "wrong number of fields"}, false},
		{"bad quotes", header + "u1, i1, \"red, 1, 1, yes, 1\n", nil,
			[]string{"line 2"}, false},
		{"header only", header, nil, []string{"no data rows"}, true},
		{"empty file", "", nil, []string{"empty file: expected a header row"}, false},
		{"no header and no names", "u1, i1, red, 1, 1, yes, 1\n", func(s *Spec) { s.CSVHeader = false },
			[]string{"needs the column names"}, false},
		{"duplicate header", "user, user, color, price, qty, clicked, rating\n", nil,
			[]string{`header names column "user" twice`}, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			in := writeFile(t, dir, "bad.csv", tc.csv)
			spec := smallSpec()
			if tc.modify != nil {
				tc.modify(&spec)
			}
			_, err := Fit(spec, []string{in})
			require.Error(t, err)
			assert.Contains(t, err.Error(), in)
			for _, w := range tc.want {
				assert.Contains(t, err.Error(), w)
			}
			if tc.errIsNA {
				assert.ErrorIs(t, err, ErrEmptyInput)
			}
		})
	}
}

func TestBadInputAtTransform(t *testing.T) {
	dir := t.TempDir()
	in := writeFile(t, dir, "train.csv", smallCSV)
	w, err := Fit(smallSpec(), []string{in})
	require.NoError(t, err)
	bad := writeFile(t, dir, "bad.csv", "user, item, color, price, qty, clicked, rating\nu1, i1, red, 1, 1, yes, 1\nu1, i1, red, 1, x, yes, 1\n")
	out := filepath.Join(dir, "out")
	_, err = w.Transform([]string{bad}, out)
	require.Error(t, err)
	for _, want := range []string{bad, `column "qty"`, "line 3", `"x" is not a number`} {
		assert.Contains(t, err.Error(), want)
	}
	var ie *InputError
	require.True(t, errors.As(err, &ie))
	assert.Equal(t, bad, ie.File)
	assert.Equal(t, "qty", ie.Column)
	assert.EqualValues(t, 3, ie.Line)
	assert.EqualValues(t, 1, ie.Row)
	// Nothing is left behind: no output directory, no temporary directory.
	entries, err := os.ReadDir(dir)
	require.NoError(t, err)
	for _, e := range entries {
		assert.NotContains(t, e.Name(), "out", "left over: %s", e.Name())
	}
	// A missing target column at transform time names file and column.
	noTarget := writeFile(t, dir, "nt.csv", "user, item, color, price, qty\nu1, i1, red, 1, 1\n")
	_, err = w.Transform([]string{noTarget}, out)
	require.Error(t, err)
	assert.Contains(t, err.Error(), noTarget)
	assert.Contains(t, err.Error(), `column "clicked"`)
}

func TestBadInputFiles(t *testing.T) {
	dir := t.TempDir()
	spec := smallSpec()

	_, err := Fit(spec, nil)
	require.ErrorIs(t, err, ErrEmptyInput)

	_, err = Fit(spec, []string{filepath.Join(dir, "nope.csv")})
	require.ErrorIs(t, err, os.ErrNotExist)

	_, err = Fit(spec, []string{filepath.Join(dir, "*.nomatch")})
	require.Error(t, err)
	assert.Contains(t, err.Error(), "matches no file")

	emptyDir := filepath.Join(dir, "empty")
	require.NoError(t, os.Mkdir(emptyDir, 0o755))
	_, err = Fit(spec, []string{emptyDir})
	require.Error(t, err)
	assert.Contains(t, err.Error(), "holds no csv files")

	// A Parquet file read as CSV says so.
	pqAsCSV := writeFile(t, dir, "data.bin", "PAR1\x15\x04 binary footer PAR1")
	_, err = Fit(Spec{InputFormat: FormatCSV, CSVHeader: true, Continuous: []string{"x"}}, []string{pqAsCSV})
	require.Error(t, err)
	assert.Contains(t, err.Error(), pqAsCSV)
	assert.Contains(t, err.Error(), "this is a Parquet file, read as CSV")

	// Garbage with a .parquet name: an error naming the file, not a panic.
	corrupt := writeFile(t, dir, "corrupt.parquet", "PAR1 this is not a parquet file at all PAR1")
	_, err = Fit(spec, []string{corrupt})
	require.Error(t, err)
	assert.Contains(t, err.Error(), corrupt)

	// A valid Parquet file that lacks a column.
	pq := filepath.Join(dir, "missing.parquet")
	writeParquet(t, pq, 10,
		parquetColumn{name: "user", typ: arrow.BinaryTypes.String, vals: []any{"u1"}},
		parquetColumn{name: "item", typ: arrow.BinaryTypes.String, vals: []any{"i1"}},
	)
	pqSpec := spec
	pqSpec.InputFormat = FormatParquet
	_, err = Fit(pqSpec, []string{pq})
	require.Error(t, err)
	assert.Contains(t, err.Error(), pq)
	assert.Contains(t, err.Error(), `column "color"`)
	assert.Contains(t, err.Error(), "column not found")
	// The same file under a CSV spec is named as Parquet.
	_, err = Fit(spec, []string{pq})
	require.ErrorContains(t, err, "this is a Parquet file, read as CSV")

	// Truncated Parquet file.
	good := filepath.Join(dir, "good.parquet")
	writeParquet(t, good, 10, parquetColumn{name: "x", typ: arrow.PrimitiveTypes.Float64, vals: []any{1.0, 2.0, 3.0}})
	b, err := os.ReadFile(good)
	require.NoError(t, err)
	trunc := writeFile(t, dir, "trunc.parquet", string(b[:len(b)/2]))
	_, err = Fit(Spec{Continuous: []string{"x"}}, []string{trunc})
	require.Error(t, err)
	assert.Contains(t, err.Error(), trunc)

	// A non-numeric string in a continuous Parquet column names the row.
	strs := filepath.Join(dir, "strs.parquet")
	writeParquet(t, strs, 2, parquetColumn{name: "x", typ: arrow.BinaryTypes.String, vals: []any{"1", "2.5", "oops"}})
	_, err = Fit(Spec{Continuous: []string{"x"}}, []string{strs})
	require.Error(t, err)
	for _, want := range []string{strs, `column "x"`, "row 2", `"oops" is not a number`} {
		assert.Contains(t, err.Error(), want)
	}
}

func TestOutputDirSafety(t *testing.T) {
	dir := t.TempDir()
	in := writeFile(t, dir, "train.csv", smallCSV)
	w, err := Fit(smallSpec(), []string{in})
	require.NoError(t, err)

	out := filepath.Join(dir, "out")
	require.NoError(t, os.Mkdir(out, 0o755))
	keep := writeFile(t, out, "notes.txt", "mine")
	_, err = w.Transform([]string{in}, out)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "notes.txt")
	_, err = os.Stat(keep)
	require.NoError(t, err, "a foreign file must never be deleted")

	// A previous dataset is replaced, stale parts included.
	out2 := filepath.Join(dir, "out2")
	require.NoError(t, os.Mkdir(out2, 0o755))
	writeFile(t, out2, "part_7.parquet", "stale")
	res, err := w.Transform([]string{in}, out2)
	require.NoError(t, err)
	assert.EqualValues(t, 6, res.Rows)
	_, err = os.Stat(filepath.Join(out2, "part_7.parquet"))
	require.ErrorIs(t, err, os.ErrNotExist)
	ds := readDataset(t, out2)
	assert.Equal(t, 6, ds.rows)

	// Run checks its output before fitting.
	out3 := filepath.Join(dir, "out3")
	require.NoError(t, os.MkdirAll(filepath.Join(out3, "train"), 0o755))
	writeFile(t, filepath.Join(out3, "train"), "data.csv", "x")
	_, err = Run(smallSpec(), []string{in}, nil, out3)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "data.csv")
}

// TestFloat32Range: a value that parses but cannot be represented in the
// float32 output, directly or after the fitted transforms, is an error
// naming file, column and line, never an infinity in the dataset.
func TestFloat32Range(t *testing.T) {
	dir := t.TempDir()
	header := "user, item, color, price, qty, clicked, rating\n"
	// The spread of +-1e300 overflows the variance, so price is only
	// centred (std 1) and 1e300 stays out of float32's range.
	in := writeFile(t, dir, "huge.csv", header+"u1, i1, red, 1e300, 1, yes, 1\nu2, i2, blue, -1e300, 2, no, 2\n")
	_, err := Run(smallSpec(), []string{in}, nil, filepath.Join(dir, "out"))
	require.Error(t, err)
	for _, want := range []string{in, `column "price"`, "line 2", "outside float32's range", "--log_continuous"} {
		assert.Contains(t, err.Error(), want)
	}
	// Without normalisation a large raw value is out of range too.
	spec := smallSpec()
	spec.Normalize = false
	in = writeFile(t, dir, "big.csv", header+"u1, i1, red, 1, 1, yes, 1\nu2, i2, blue, 5e38, 2, no, 2\n")
	_, err = Run(spec, []string{in}, nil, filepath.Join(dir, "out"))
	require.Error(t, err)
	for _, want := range []string{`column "price"`, "line 3", "outside float32's range"} {
		assert.Contains(t, err.Error(), want)
	}
	// A regression target beyond float32.
	in = writeFile(t, dir, "target.csv", header+"u1, i1, red, 1, 1, yes, 1e39\n")
	_, err = Run(smallSpec(), []string{in}, nil, filepath.Join(dir, "out"))
	require.Error(t, err)
	for _, want := range []string{`column "rating"`, "line 2", "outside float32's range"} {
		assert.Contains(t, err.Error(), want)
	}
	_, err = os.Stat(filepath.Join(dir, "out"))
	require.ErrorIs(t, err, os.ErrNotExist, "a failed run leaves no output folder")
}

// TestRunFailureKeepsPreviousOutput: when a run fails after the training
// data was encoded (here: a bad row in the eval data), the previous
// output — datasets and workflow — is left exactly as it was, with no
// temporary folders beside it.
func TestRunFailureKeepsPreviousOutput(t *testing.T) {
	dir := t.TempDir()
	in := writeFile(t, dir, "train.csv", smallCSV)
	evalOK := writeFile(t, dir, "eval.csv", smallCSV)
	out := filepath.Join(dir, "out")
	_, err := Run(smallSpec(), []string{in}, []string{evalOK}, out)
	require.NoError(t, err)
	snapshot := func() map[string]string {
		files := map[string]string{}
		require.NoError(t, filepath.WalkDir(out, func(p string, d os.DirEntry, err error) error {
			require.NoError(t, err)
			if !d.IsDir() {
				b, err := os.ReadFile(p)
				require.NoError(t, err)
				files[p] = string(b)
			}
			return nil
		}))
		return files
	}
	before := snapshot()
	require.Contains(t, before, filepath.Join(out, "workflow.json"))

	// Another encoding (every value rarer than 3 becomes out-of-vocabulary)
	// and an eval row whose target is missing.
	spec := smallSpec()
	spec.CategMinFreq = 3
	evalBad := writeFile(t, dir, "eval-bad.csv", smallCSV+"u1, i1, red, 10, 1, ?, 4.5\n")
	_, err = Run(spec, []string{in}, []string{evalBad}, out)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "missing value of target")
	assert.Equal(t, before, snapshot(), "the previous output is untouched")
	entries, err := os.ReadDir(out)
	require.NoError(t, err)
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	assert.ElementsMatch(t, []string{"train", "eval", "workflow.json", ReportFile}, names, "no temporary folders left")
}
