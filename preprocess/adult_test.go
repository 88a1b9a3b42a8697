package preprocess

import (
	"math"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// adultDir holds the UCI Adult files when the machine has them; the data is
// not part of the repository.
const adultDir = "/work/shared/data/adult"

var adultColumns = []string{"age", "workclass", "fnlwgt", "education", "education_num", "marital_status",
	"occupation", "relationship", "race", "sex", "capital_gain", "capital_loss", "hours_per_week",
	"native_country", "income"}

// AdultSpec is the classic two-task census setup: income > 50K and
// never-married (derived from marital_status, which is then not an input).
func adultSpec() Spec {
	return Spec{
		InputFormat: FormatCSV, CSVSep: ", ", CSVNAValues: []string{"?"}, CSVColumnNames: adultColumns,
		Categorical:      []string{"workclass", "education", "occupation", "relationship", "race", "sex", "native_country"},
		Continuous:       []string{"age", "fnlwgt", "education_num", "capital_gain", "capital_loss", "hours_per_week"},
		ContinuousFillNA: "median", Normalize: true, LogContinuous: []string{"capital_gain", "capital_loss"},
		BinaryTargets:   []string{"income", "never_married"},
		BinaryTargetMap: map[string]string{"income": ">50K|>50K.", "never_married": "Never-married"},
		TargetSource:    map[string]string{"never_married": "marital_status"},
	}
}

func TestAdult(t *testing.T) {
	train, test := filepath.Join(adultDir, "adult.data"), filepath.Join(adultDir, "adult.test")
	for _, p := range []string{train, test} {
		if _, err := os.Stat(p); err != nil {
			t.Skipf("UCI Adult data not available: %v", err)
		}
	}
	out := t.TempDir()
	rep, err := Run(adultSpec(), []string{train}, []string{test}, out)
	require.NoError(t, err)

	// Reference figures counted with awk over the raw files.
	assert.EqualValues(t, 32561, rep.FitRows)
	assert.EqualValues(t, 32561, rep.Train.Rows)
	assert.EqualValues(t, 16281, rep.Eval.Rows)
	assert.Equal(t, map[string]int64{
		"workclass": 8 + 2, "education": 16 + 2, "occupation": 14 + 2, "relationship": 6 + 2,
		"race": 5 + 2, "sex": 2 + 2, "native_country": 41 + 2,
	}, rep.Cardinalities)
	assert.EqualValues(t, 1836, rep.Train.NullRows["workclass"])
	assert.EqualValues(t, 1843, rep.Train.NullRows["occupation"])
	assert.EqualValues(t, 583, rep.Train.NullRows["native_country"])
	assert.EqualValues(t, 7841, rep.Train.Positives["income"])
	assert.EqualValues(t, 10683, rep.Train.Positives["never_married"])
	assert.EqualValues(t, 3846, rep.Eval.Positives["income"])
	assert.EqualValues(t, 5434, rep.Eval.Positives["never_married"])
	for c, n := range rep.Eval.OOVRows {
		assert.Zero(t, n, "test categories of %s are all seen in train", c)
	}
	// "<=50K." only appears in the test file: reported, encoded 0.
	assert.EqualValues(t, 16281-3846, rep.Eval.UnseenLabels["income"])
	assert.NotEmpty(t, rep.Warnings)

	w, err := LoadWorkflow(rep.WorkflowPath)
	require.NoError(t, err)
	assert.Equal(t, 37.0, w.Cont("age").FillValue)
	assert.Equal(t, 178356.0, w.Cont("fnlwgt").FillValue)
	assert.Equal(t, "Private", w.Categ("workclass").Vocab[0], "the most frequent workclass gets id 2")
	assert.Nil(t, w.Categ("marital_status"), "the source of a derived target is not a feature")

	ds := readDataset(t, filepath.Join(out, "train"))
	assert.Equal(t, []string{"workclass", "education", "occupation", "relationship", "race", "sex", "native_country",
		"age", "fnlwgt", "education_num", "capital_gain", "capital_loss", "hours_per_week", "income", "never_married"}, ds.order)
	for _, c := range []string{"age", "fnlwgt", "capital_gain", "hours_per_week"} {
		mean, std := meanStd(ds.cols[c])
		assert.InDelta(t, 0, mean, 1e-4, "%s mean", c)
		assert.InDelta(t, 1, std, 1e-4, "%s std", c)
	}
	for _, c := range []string{"workclass", "native_country"} {
		for _, id := range ds.cols[c] {
			require.True(t, id >= 0 && id < float64(rep.Cardinalities[c]), "%s id %v", c, id)
		}
	}
}

func meanStd(xs []float64) (float64, float64) {
	var sum float64
	for _, x := range xs {
		sum += x
	}
	mean := sum / float64(len(xs))
	var ss float64
	for _, x := range xs {
		ss += (x - mean) * (x - mean)
	}
	return mean, math.Sqrt(ss / float64(len(xs)-1))
}
