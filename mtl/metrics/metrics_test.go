package metrics

import (
	"encoding/json"
	"math"
	"math/rand/v2"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// pairwiseAUC is the O(n^2) definition: the fraction of (positive, negative)
// pairs ordered correctly, ties counting one half.
func pairwiseAUC(scores []float32, labels []bool) float64 {
	var num, den float64
	for i := range scores {
		if !labels[i] {
			continue
		}
		for j := range scores {
			if labels[j] {
				continue
			}
			den++
			switch {
			case scores[i] > scores[j]:
				num++
			case scores[i] == scores[j]:
				num += 0.5
			}
		}
	}
	return num / den
}

// naiveAP computes average precision by trying every distinct score as a
// threshold, in decreasing order, without any sort-based grouping.
func naiveAP(scores []float32, labels []bool) float64 {
	var distinct []float32
	seen := map[float32]bool{}
	for _, s := range scores {
		if !seen[s] {
			seen[s] = true
			distinct = append(distinct, s)
		}
	}
	// selection order, decreasing
	for i := range distinct {
		for j := i + 1; j < len(distinct); j++ {
			if distinct[j] > distinct[i] {
				distinct[i], distinct[j] = distinct[j], distinct[i]
			}
		}
	}
	var pos float64
	for _, l := range labels {
		if l {
			pos++
		}
	}
	var ap, prevRecall float64
	for _, th := range distinct {
		var tp, fp float64
		for i, s := range scores {
			if s >= th {
				if labels[i] {
					tp++
				} else {
					fp++
				}
			}
		}
		recall := tp / pos
		ap += (recall - prevRecall) * tp / (tp + fp)
		prevRecall = recall
	}
	return ap
}

func bools(v ...int) []bool {
	out := make([]bool, len(v))
	for i, x := range v {
		out[i] = x == 1
	}
	return out
}

func TestROCAUCAndAPHandComputed(t *testing.T) {
	cases := []struct {
		name      string
		scores    []float32
		labels    []bool
		auc, ap   float64
		undefined bool
	}{
		{name: "perfect", scores: []float32{0.1, 0.2, 0.8, 0.9}, labels: bools(0, 0, 1, 1), auc: 1, ap: 1},
		{name: "inverted", scores: []float32{0.9, 0.8, 0.2, 0.1}, labels: bools(0, 0, 1, 1), auc: 0, ap: 0.5*(1.0/3) + 0.5*(2.0/4)},
		{name: "all tied", scores: []float32{0.5, 0.5, 0.5, 0.5}, labels: bools(0, 1, 0, 1), auc: 0.5, ap: 0.5},
		// pos {0.9, 0.8, 0.1}, neg {0.8, 0.3}: 2 + 1.5 + 0 = 3.5 of 6 pairs.
		// AP: thresholds 0.9 (P=1, dR=1/3), 0.8 (P=2/3, dR=1/3), 0.3 (dR=0), 0.1 (P=3/5, dR=1/3).
		{name: "ties", scores: []float32{0.9, 0.8, 0.8, 0.3, 0.1}, labels: bools(1, 0, 1, 0, 1), auc: 3.5 / 6, ap: 34.0 / 45},
		{name: "negative scores and zeros", scores: []float32{-2, float32(math.Copysign(0, -1)), 0, 3}, labels: bools(0, 1, 0, 1), auc: (1 + 0.5 + 1 + 1) / 4, ap: 1.0*0.5 + 0.5*2.0/3},
		{name: "one class", scores: []float32{0.1, 0.2}, labels: bools(1, 1), undefined: true},
		{name: "empty", scores: nil, labels: nil, undefined: true},
		{name: "nan score", scores: []float32{0.1, float32(math.NaN())}, labels: bools(0, 1), undefined: true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			auc := ROCAUC(tc.scores, tc.labels)
			ap := AveragePrecision(tc.scores, tc.labels)
			if tc.undefined {
				assert.True(t, math.IsNaN(auc), "auc %v", auc)
				assert.True(t, math.IsNaN(ap), "ap %v", ap)
				return
			}
			assert.InDelta(t, tc.auc, auc, 1e-12)
			assert.InDelta(t, tc.ap, ap, 1e-12)
		})
	}
}

func TestROCAUCMatchesPairwiseRandom(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	// Sizes on both sides of the radix-sort cutoff; few distinct scores so
	// that ties are frequent, and also continuous scores with both signs.
	for _, n := range []int{1, 2, 7, 100, 511, 512, 3000} {
		for _, levels := range []int{3, 50, 0} {
			scores := make([]float32, n)
			labels := make([]bool, n)
			for i := range scores {
				if levels > 0 {
					scores[i] = float32(rng.IntN(levels)) / float32(levels)
				} else {
					scores[i] = float32(rng.NormFloat64() * 100)
				}
				pr := 0.3
				if scores[i] > 0.5 {
					pr = 0.7
				}
				labels[i] = rng.Float64() < pr
			}
			want := pairwiseAUC(scores, labels)
			got := ROCAUC(scores, labels)
			if math.IsNaN(want) {
				assert.True(t, math.IsNaN(got), "n=%d levels=%d", n, levels)
				continue
			}
			assert.InDelta(t, want, got, 1e-12, "n=%d levels=%d", n, levels)
			assert.InDelta(t, naiveAP(scores, labels), AveragePrecision(scores, labels), 1e-9, "n=%d levels=%d", n, levels)
		}
	}
}

func TestBinaryLogLoss(t *testing.T) {
	got := BinaryLogLoss([]float32{0.9, 0.2}, bools(1, 0))
	assert.InDelta(t, -(math.Log(0.9)+math.Log(0.8))/2, got, 1e-7)
	// A confident mistake is clipped at -log(Eps).
	got = BinaryLogLoss([]float32{0, 1}, bools(1, 0))
	assert.InDelta(t, -math.Log(Eps), got, 1e-6)
	assert.InDelta(t, 16.118095651, got, 1e-6)
	assert.True(t, math.IsNaN(BinaryLogLoss(nil, nil)))
}

func TestBinaryAccumulator(t *testing.T) {
	var b Binary
	// Two batches; the second has a masked row that must be ignored.
	require.NoError(t, b.Add([]float32{0.6, 0.5}, []float32{1, 1}, nil))
	require.NoError(t, b.Add([]float32{0.4, 0.7, 0.99}, []float32{0, 0, 1}, []float32{1, 1, 0}))
	r := b.Result()
	// preds > 0.5: 0.6 (TP), 0.7 (FP); 0.5 is not above the threshold (FN); 0.4 (TN).
	assert.Equal(t, int64(4), r.Count)
	assert.Equal(t, int64(2), r.Positives)
	assert.InDelta(t, 0.5, r.Precision, 1e-12)
	assert.InDelta(t, 0.5, r.Recall, 1e-12)
	assert.InDelta(t, 0.5, r.Accuracy, 1e-12)
	// pos {0.6, 0.5} vs neg {0.4, 0.7}: 0.6>0.4, 0.5>0.4 -> 2 of 4.
	assert.InDelta(t, 0.5, r.AUC, 1e-12)
	wantLL := -(math.Log(0.6) + math.Log(0.5) + math.Log(0.6) + math.Log(0.3)) / 4
	assert.InDelta(t, wantLL, r.LogLoss, 1e-6)
	assert.True(t, r.Defined)

	// Result does not consume: more data can be added and the result is
	// that of the union.
	require.NoError(t, b.Add([]float32{0.8}, []float32{1}, nil))
	r = b.Result()
	assert.Equal(t, int64(5), r.Count)
	assert.InDelta(t, pairwiseAUC([]float32{0.6, 0.5, 0.4, 0.7, 0.8}, bools(1, 1, 0, 0, 1)), r.AUC, 1e-12)

	b.Reset()
	r = b.Result()
	assert.Equal(t, int64(0), r.Count)
	assert.True(t, math.IsNaN(r.AUC))
	assert.False(t, r.Defined)
}

func TestBinaryAccumulatorLargeMatchesPairwise(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 8))
	var b Binary
	var all []float32
	var labels []bool
	for batch := 0; batch < 5; batch++ {
		p := make([]float32, 400)
		y := make([]float32, 400)
		for i := range p {
			p[i] = float32(rng.IntN(100)) / 100
			if rng.Float32() < p[i] {
				y[i] = 1
			}
			all = append(all, p[i])
			labels = append(labels, y[i] == 1)
		}
		require.NoError(t, b.Add(p, y, nil))
	}
	r := b.Result()
	assert.InDelta(t, pairwiseAUC(all, labels), r.AUC, 1e-12)
	assert.InDelta(t, naiveAP(all, labels), r.PRAUC, 1e-9)
	// A second Result (on already sorted keys) gives the same.
	assert.InDelta(t, r.AUC, b.Result().AUC, 0)
}

func TestBinaryEdgeCases(t *testing.T) {
	t.Run("one class", func(t *testing.T) {
		var b Binary
		require.NoError(t, b.Add([]float32{0.2, 0.9}, []float32{0, 0}, nil))
		r := b.Result()
		assert.False(t, r.Defined)
		assert.True(t, math.IsNaN(r.AUC))
		assert.True(t, math.IsNaN(r.PRAUC))
		assert.InDelta(t, 0.5, r.Accuracy, 1e-12)
		assert.Equal(t, 0.0, r.Recall) // no positive label
	})
	t.Run("bad label", func(t *testing.T) {
		var b Binary
		err := b.Add([]float32{0.2, 0.9}, []float32{0, 2}, nil)
		require.Error(t, err)
		assert.Contains(t, err.Error(), "index 1")
	})
	t.Run("length mismatch", func(t *testing.T) {
		var b Binary
		require.Error(t, b.Add([]float32{0.2}, []float32{0, 1}, nil))
		require.Error(t, b.Add([]float32{0.2}, []float32{0}, []float32{1, 1}))
	})
	t.Run("nan prediction", func(t *testing.T) {
		var b Binary
		require.NoError(t, b.Add([]float32{float32(math.NaN()), 0.3}, []float32{1, 0}, nil))
		r := b.Result()
		assert.False(t, r.Defined)
		assert.True(t, math.IsNaN(r.AUC))
		assert.True(t, math.IsNaN(r.LogLoss))
	})
}

func TestRegression(t *testing.T) {
	var r Regression
	require.NoError(t, r.Add([]float32{1, 2, 3}, []float32{1, 4, 0}, []float32{1, 1, 1}))
	require.NoError(t, r.Add([]float32{5}, []float32{0}, []float32{0})) // masked
	res := r.Result()
	assert.Equal(t, int64(3), res.Count)
	assert.InDelta(t, math.Sqrt((0+4+9)/3.0), res.RMSE, 1e-12)
	assert.InDelta(t, (0+2+3)/3.0, res.MAE, 1e-12)
	r.Reset()
	assert.True(t, math.IsNaN(r.Result().RMSE))
	require.Error(t, r.Add([]float32{1}, nil, nil))
}

func TestEvaluatorKeysAndAverages(t *testing.T) {
	e := NewEvaluator([]TaskSpec{
		{"click/binary_output", KindBinary},
		{"like/binary_output", KindBinary},
		{"share/binary_output", KindBinary},
		{"watching_times/regression_output", KindRegression},
	})
	require.NoError(t, e.Add(0, []float32{0.9, 0.1, 0.8, 0.3}, []float32{1, 0, 0, 1}, nil)) // AUC 0.75
	require.NoError(t, e.Add(1, []float32{0.9, 0.1}, []float32{1, 0}, nil))                 // AUC 1
	require.NoError(t, e.Add(2, []float32{0.9, 0.1}, []float32{0, 0}, nil))                 // undefined
	require.NoError(t, e.Add(3, []float32{1, 3}, []float32{2, 3}, nil))
	err := e.Add(4, nil, nil, nil)
	require.Error(t, err)
	err = e.Add(0, []float32{0.5}, []float32{3}, nil)
	require.ErrorContains(t, err, "click/binary_output")

	e.AddGate("click", []float64{0.25, 0.75}, 10)
	e.AddGate("click", []float64{0.75, 0.25}, 30)

	r := e.Results()
	assert.InDelta(t, 0.75, r["click/binary_output/auc"], 1e-12)
	assert.InDelta(t, 1.0, r["like/binary_output/auc"], 1e-12)
	assert.True(t, math.IsNaN(r["share/binary_output/auc"]))
	assert.InDelta(t, (0.75+1.0)/2, r[AUCAvg], 1e-12, "auc_avg averages the defined AUCs")
	assert.InDelta(t, math.Sqrt(0.5), r["watching_times/regression_output/rmse"], 1e-12)
	assert.InDelta(t, 0.5, r["click/binary_output/positive_rate"], 1e-12)
	assert.Equal(t, 4.0, r["click/binary_output/count"])
	assert.InDelta(t, (0.25*10+0.75*30)/40, r["gate/click/expert_0"], 1e-12)
	assert.InDelta(t, (0.75*10+0.25*30)/40, r["gate/click/expert_1"], 1e-12)
	for _, k := range []string{"pr_auc", "logloss", "precision", "recall", "binary_accuracy"} {
		assert.Contains(t, r, "click/binary_output/"+k)
	}

	e.Reset()
	r = e.Results()
	assert.Equal(t, 0.0, r["click/binary_output/count"])
	assert.NotContains(t, r, "gate/click/expert_0")
	assert.True(t, math.IsNaN(r[AUCAvg]))
}

func TestResultsJSON(t *testing.T) {
	r := Results{"b": 0.5, "a": math.NaN(), "c": math.Inf(1)}
	data, err := json.Marshal(r)
	require.NoError(t, err)
	assert.Equal(t, `{"a":null,"b":0.5,"c":null}`, string(data))
	var back Results
	require.NoError(t, json.Unmarshal(data, &back))
	assert.Equal(t, 0.5, back["b"])
	assert.True(t, math.IsNaN(back["a"]))
	assert.Equal(t, []string{"a", "b", "c"}, back.Keys())
	assert.Equal(t, 0.5, r.WithPrefix("val/")["val/b"])
}

func BenchmarkBinaryResult(b *testing.B) {
	rng := rand.New(rand.NewPCG(1, 1))
	const n = 1 << 20
	p := make([]float32, n)
	y := make([]float32, n)
	for i := range p {
		p[i] = rng.Float32()
		if rng.Float32() < p[i] {
			y[i] = 1
		}
	}
	var acc Binary
	for b.Loop() {
		acc.Reset()
		_ = acc.Add(p, y, nil)
		_ = acc.Result()
	}
	b.ReportMetric(float64(n)*float64(b.N)/b.Elapsed().Seconds(), "rows/s")
}
