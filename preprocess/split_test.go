package preprocess

import (
	"encoding/json"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/mtlrank/mtlrank/schema"
)

// Reference implementation of the documented split rule, written apart
// from the package's code.
func refSplitmix(z uint64) uint64 {
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9
	z = (z ^ (z >> 27)) * 0x94d049bb133111eb
	return z ^ (z >> 31)
}

func refUnit(h uint64) float64 { return float64(h>>11) * math.Pow(2, -53) }

func refFNV(s string) uint64 {
	h := uint64(0xcbf29ce484222325)
	for _, c := range []byte(s) {
		h = (h ^ uint64(c)) * 0x100000001b3
	}
	return h
}

func refRowIsEval(seed int64, row int, perc float64) bool {
	return refUnit(refSplitmix(uint64(seed)+uint64(row+1)*0x9e3779b97f4a7c15)) < perc
}

func refHoldoutIsEval(seed int64, user string, perc float64) bool {
	return refUnit(refSplitmix(refFNV(user)^refSplitmix(uint64(seed)))) < perc
}

// writeSplitData writes rows 0..n-1 over two CSV files; row r has user
// u<r%97>, item i<r%13>, rid r.
func writeSplitData(t *testing.T, dir string, n int) []string {
	var files []string
	for part, rng := range [][2]int{{0, n / 2}, {n / 2, n}} {
		var b strings.Builder
		b.WriteString("rid,user,item,click\n")
		for r := rng[0]; r < rng[1]; r++ {
			fmt.Fprintf(&b, "%d,u%d,i%d,%d\n", r, r%97, r%13, r%2)
		}
		files = append(files, writeFile(t, dir, fmt.Sprintf("part%d.csv", part), b.String()))
	}
	return files
}

func splitSpec(strategy string, seed int64) Spec {
	return Spec{CSVHeader: true, UserID: "user", ItemID: "item", Continuous: []string{"rid"},
		BinaryTargets: []string{"click"}, SplitStrategy: strategy, EvalPerc: 0.25, Seed: seed, ChunkRows: 128}
}

func ridSet(ds dataset) map[int]bool {
	m := map[int]bool{}
	for _, v := range ds.cols["rid"] {
		m[int(v)] = true
	}
	return m
}

func TestSplitRandom(t *testing.T) {
	const n = 2000
	dir := t.TempDir()
	files := writeSplitData(t, dir, n)
	for _, seed := range []int64{11, 12} {
		out := filepath.Join(dir, fmt.Sprint("out", seed))
		rep, err := Run(splitSpec(SplitRandom, seed), files, nil, out)
		require.NoError(t, err)
		train, eval := readDataset(t, filepath.Join(out, "train")), readDataset(t, filepath.Join(out, "eval"))
		wantEval := map[int]bool{}
		for r := 0; r < n; r++ {
			if refRowIsEval(seed, r, 0.25) {
				wantEval[r] = true
			}
		}
		gotEval, gotTrain := ridSet(eval), ridSet(train)
		assert.Equal(t, wantEval, gotEval, "seed %d", seed)
		assert.Len(t, gotTrain, n-len(wantEval))
		for r := range gotTrain {
			assert.False(t, wantEval[r], "row %d on both sides", r)
		}
		assert.Equal(t, n, train.rows+eval.rows)
		assert.InDelta(t, 0.25*n, float64(eval.rows), 4*math.Sqrt(n*0.25*0.75))
		// The workflow is fitted on the train side only.
		assert.EqualValues(t, train.rows, rep.FitRows)
		assert.EqualValues(t, train.rows, rep.Train.Rows)
		assert.EqualValues(t, eval.rows, rep.Eval.Rows)
		w, err := LoadWorkflow(rep.WorkflowPath)
		require.NoError(t, err)
		assert.EqualValues(t, train.rows, w.FitRows)
		// Each input file gives one part per side.
		assert.Len(t, rep.Train.Files, 2)
		assert.Len(t, rep.Eval.Files, 2)
	}
}

// TestSplitByUserHoldout checks the cold-start split: whole users go to
// one side.
func TestSplitByUserHoldout(t *testing.T) {
	const n = 2000
	dir := t.TempDir()
	files := writeSplitData(t, dir, n)
	out := filepath.Join(dir, "out")
	rep, err := Run(splitSpec(SplitByUserHoldout, 5), files, nil, out)
	require.NoError(t, err)
	train, eval := readDataset(t, filepath.Join(out, "train")), readDataset(t, filepath.Join(out, "eval"))
	evalUsers := 0
	for u := 0; u < 97; u++ {
		if refHoldoutIsEval(5, fmt.Sprintf("u%d", u), 0.25) {
			evalUsers++
		}
	}
	require.Greater(t, evalUsers, 5)
	require.Less(t, evalUsers, 50)
	for r := range ridSet(eval) {
		assert.True(t, refHoldoutIsEval(5, fmt.Sprintf("u%d", r%97), 0.25), "row %d (user u%d) should be in train", r, r%97)
	}
	for r := range ridSet(train) {
		assert.False(t, refHoldoutIsEval(5, fmt.Sprintf("u%d", r%97), 0.25), "row %d (user u%d) should be in eval", r, r%97)
	}
	assert.Equal(t, n, train.rows+eval.rows)
	// Eval users were never fitted: their ids are all out of vocabulary.
	w, err := LoadWorkflow(rep.WorkflowPath)
	require.NoError(t, err)
	assert.Len(t, w.Categ("user").Vocab, 97-evalUsers)
	for i, id := range eval.cols["user"] {
		require.Equal(t, float64(OOVID), id, "eval row %d", i)
	}
	assert.EqualValues(t, eval.rows, rep.Eval.OOVRows["user"])
	for _, id := range train.cols["user"] {
		require.GreaterOrEqual(t, id, float64(FirstVocabID))
	}
}

func TestRunWithEvalInputs(t *testing.T) {
	dir := t.TempDir()
	train := writeFile(t, dir, "train.csv", smallCSV)
	eval := writeFile(t, dir, "eval.csv", "user, item, color, price, qty, clicked, rating\nu7, i1, red, 20, 1, no, 2\n")
	out := filepath.Join(dir, "out")
	// A stale eval set is removed when a later run has none.
	rep, err := Run(smallSpec(), []string{train}, []string{eval}, out)
	require.NoError(t, err)
	assert.EqualValues(t, 6, rep.FitRows)
	assert.EqualValues(t, 1, rep.Eval.Rows)
	assert.EqualValues(t, 1, rep.Eval.OOVRows["user"])
	assert.Equal(t, map[string]int64{"color": 5, "user": 5, "item": 5}, rep.Cardinalities)
	assert.Contains(t, rep.Warnings, filepath.Join(out, "eval")+`: binary target "clicked" has no positive row`)
	for _, p := range []string{"train/part_0.parquet", "train/schema.pbtxt", "eval/part_0.parquet", "eval/schema.json", "workflow.json"} {
		_, err := os.Stat(filepath.Join(out, p))
		require.NoError(t, err, p)
	}
	rep, err = Run(smallSpec(), []string{train}, nil, out)
	require.NoError(t, err)
	assert.Nil(t, rep.Eval)
	_, err = os.Stat(filepath.Join(out, "eval"))
	require.ErrorIs(t, err, os.ErrNotExist)
	// No temporary files are left in the output.
	entries, err := os.ReadDir(out)
	require.NoError(t, err)
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	assert.ElementsMatch(t, []string{"train", "workflow.json", ReportFile}, names)
	// The report is swapped in with the data and names the final folders,
	// not the staging folder it was written in.
	data, err := os.ReadFile(filepath.Join(out, ReportFile))
	require.NoError(t, err)
	var saved Report
	require.NoError(t, json.Unmarshal(data, &saved))
	assert.Equal(t, filepath.Join(out, "train"), saved.Train.Dir)
	assert.Equal(t, filepath.Join(out, WorkflowFile), saved.WorkflowPath)
	assert.Nil(t, saved.Eval)
}

func TestUnseenLabelWarning(t *testing.T) {
	dir := t.TempDir()
	train := writeFile(t, dir, "train.csv", "x,income\n1,>50K\n2,<=50K\n")
	test := writeFile(t, dir, "test.csv", "x,income\n1,>50K.\n2,<=50K.\n")
	spec := Spec{CSVHeader: true, Continuous: []string{"x"}, BinaryTargets: []string{"income"},
		BinaryTargetMap: map[string]string{"income": ">50K"}}
	rep, err := Run(spec, []string{train}, []string{test}, filepath.Join(dir, "out"))
	require.NoError(t, err)
	assert.EqualValues(t, 2, rep.Eval.UnseenLabels["income"])
	assert.EqualValues(t, 0, rep.Eval.Positives["income"])
	require.Len(t, rep.Eval.Warnings, 2)
	assert.Contains(t, rep.Eval.Warnings[0], `2 rows hold labels not seen when fitting (e.g. ">50K.")`)
	// With both spellings as positive labels the test labels are right.
	spec.BinaryTargetMap["income"] = ">50K|>50K."
	rep, err = Run(spec, []string{train}, []string{test}, filepath.Join(dir, "out"))
	require.NoError(t, err)
	assert.EqualValues(t, 1, rep.Eval.UnseenLabels["income"]) // "<=50K." is still new, and 0
	assert.EqualValues(t, 1, rep.Eval.Positives["income"])
	ds := readDataset(t, filepath.Join(dir, "out", "eval"))
	assert.Equal(t, []float64{1, 0}, ds.cols["income"])
}

// TestRunTestSet: test inputs are encoded like the training data but
// without targets (their target columns need not exist), and a rerun
// without test inputs removes the stale test set.
func TestRunTestSet(t *testing.T) {
	dir := t.TempDir()
	train := writeFile(t, dir, "train.csv", smallCSV)
	// the first three rows of smallCSV, without the target columns, and an unseen color
	test := writeFile(t, dir, "test.csv", "user, item, color, price, qty\nu1, i1, red, 10, 1\nu2, i2, blue, , 2\nu1, i3, red, 30, ?\nu9, i1, purple, 20, 4\n")
	out := filepath.Join(dir, "out")
	rep, err := RunInputs(smallSpec(), Inputs{Train: []string{train}, Test: []string{test}}, out)
	require.NoError(t, err)
	require.NotNil(t, rep.Test)
	assert.EqualValues(t, 4, rep.Test.Rows)
	assert.Equal(t, filepath.Join(out, "test"), rep.Test.Dir)
	assert.EqualValues(t, 1, rep.Test.OOVRows["color"], "purple was not seen when fitting")

	tr, te := readDataset(t, filepath.Join(out, "train")), readDataset(t, filepath.Join(out, "test"))
	assert.NotContains(t, te.order, "clicked")
	assert.NotContains(t, te.order, "rating")
	for _, c := range []string{"user", "item", "color", "price", "qty"} {
		assert.Equal(t, tr.cols[c][:3], te.cols[c][:3], c)
	}
	assert.EqualValues(t, OOVID, te.cols["color"][3])
	s, err := schema.Load(filepath.Join(out, "test"))
	require.NoError(t, err)
	assert.Nil(t, s.Feature("clicked"))

	rep, err = Run(smallSpec(), []string{train}, nil, out)
	require.NoError(t, err)
	assert.Nil(t, rep.Test)
	_, err = os.Stat(filepath.Join(out, "test"))
	assert.ErrorIs(t, err, os.ErrNotExist, "a stale test set is removed")
}
