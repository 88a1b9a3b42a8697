package synth

import (
	"fmt"
	"math"
	"sort"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/mtlrank/mtlrank/internal/rankkey"
	"github.com/mtlrank/mtlrank/loader"
	"github.com/mtlrank/mtlrank/schema"
)

func newTenrec(t *testing.T, cfg Config) *Generator {
	t.Helper()
	g, err := NewGenerator(schema.Tenrec(), cfg)
	require.NoError(t, err)
	return g
}

// requireSameColumn compares two columns value by value (nil and empty
// slices are the same).
func requireSameColumn(t *testing.T, want, got *loader.Column, what string) {
	t.Helper()
	require.NotNil(t, got, what)
	require.Equal(t, len(want.I32), len(got.I32), "%s: int values", what)
	require.Equal(t, len(want.F32), len(got.F32), "%s: float values", what)
	for i := range want.I32 {
		if want.I32[i] != got.I32[i] {
			require.Failf(t, "values differ", "%s: value %d: %d vs %d", what, i, want.I32[i], got.I32[i])
		}
	}
	for i := range want.F32 {
		if want.F32[i] != got.F32[i] {
			require.Failf(t, "values differ", "%s: value %d: %v vs %v", what, i, want.F32[i], got.F32[i])
		}
	}
	require.Equal(t, want.Offsets == nil, got.Offsets == nil, "%s: list or scalar", what)
	require.Equal(t, want.Offsets, got.Offsets, "%s: offsets", what)
}

func requireSameBatch(t *testing.T, want, got *loader.Batch) {
	t.Helper()
	require.Equal(t, want.Rows, got.Rows)
	require.Equal(t, len(want.Columns), len(got.Columns))
	for name, c := range want.Columns {
		requireSameColumn(t, c, got.Column(name), name)
	}
}

func TestBaseRatesMatchConfig(t *testing.T) {
	const n = 200_000
	g := newTenrec(t, DefaultConfig(0, 7))
	b := g.Batch(n)
	for name, rate := range TenrecBaseRates() {
		col := b.Column(name)
		require.NotNil(t, col, name)
		var pos float64
		for _, y := range col.F32 {
			require.True(t, y == 0 || y == 1, "%s label %v", name, y)
			pos += float64(y)
		}
		// Labels are Bernoulli with mean probability = rate; their count
		// varies less than a binomial's, so 4 binomial deviations (plus a
		// 2% allowance for the calibration sample) is a generous bound
		// that still catches a wrong bias.
		sd := math.Sqrt(n * rate * (1 - rate))
		assert.InDelta(t, n*rate, pos, 4*sd+0.02*n*rate, "%s: %v positives, want %v", name, pos, n*rate)
	}
}

func TestCustomBaseRates(t *testing.T) {
	cfg := DefaultConfig(0, 3)
	cfg.BaseRates = map[string]float64{"click": 0.6, "share": 0.05}
	g := newTenrec(t, cfg)
	const n = 100_000
	b := g.Batch(n)
	want := map[string]float64{"click": 0.6, "share": 0.05, "like": 0.011, "follow": 0.001}
	for name, rate := range want {
		var pos float64
		for _, y := range b.Column(name).F32 {
			pos += float64(y)
		}
		sd := math.Sqrt(n * rate * (1 - rate))
		assert.InDelta(t, n*rate, pos, 4*sd+0.02*n*rate, name)
	}
	// The caller's map is copied: changing it does not change the generator.
	cfg.BaseRates["click"] = 0.1
	assert.Equal(t, 0.6, g.Config().BaseRates["click"])
}

func TestOracleAUC(t *testing.T) {
	g := newTenrec(t, DefaultConfig(0, 11))
	b, truth := g.BatchWithTruth(200_000)
	o, err := g.OracleOf(b, truth)
	require.NoError(t, err)
	for _, name := range []string{"click", "like", "share", "follow"} {
		auc, ok := o.AUC[name]
		require.True(t, ok, name)
		assert.Greater(t, auc, 0.7, "%s oracle AUC", name)
		assert.Less(t, auc, 0.99, "%s oracle AUC: the task should not be trivial", name)
	}
	// The default scale aims at a realistic click AUC.
	assert.InDelta(t, 0.8, o.AUC["click"], 0.05)
	// Rare tasks stay rare.
	assert.Less(t, o.BaseRate["share"], 0.002)
	assert.Less(t, o.BaseRate["follow"], 0.002)
	assert.Less(t, o.BaseRate["like"], 0.015)
	// The oracle's logloss beats the best constant's (the entropy of the
	// base rate).
	for name, p := range o.BaseRate {
		constLL := -(p*math.Log(p) + (1-p)*math.Log(1-p))
		assert.Less(t, o.LogLoss[name], constLL, name)
	}
	// Regression: E[y|x] beats the best constant clearly.
	assert.Less(t, o.RMSE["watching_times"], 0.6*o.ConstantRMSE["watching_times"])
}

func TestNoSignalGivesCoinFlips(t *testing.T) {
	cfg := DefaultConfig(0, 5)
	cfg.NoSignal = true
	g := newTenrec(t, cfg)
	b, truth := g.BatchWithTruth(100_000)
	o, err := g.OracleOf(b, truth)
	require.NoError(t, err)
	// Every true probability is the base rate, so every pair ties.
	assert.InDelta(t, 0.5, o.AUC["click"], 1e-9)
	for _, p := range truth.Prob["click"][:100] {
		assert.InDelta(t, 0.29, p, 1e-6)
	}
	assert.InDelta(t, 0.29, o.BaseRate["click"], 4*math.Sqrt(0.29*0.71/100_000))
}

func TestSignalScaleRaisesOracleAUC(t *testing.T) {
	if testing.Short() {
		t.Skip("generates three large samples")
	}
	var prev float64
	for _, scale := range []float64{0.5, 1.5, 3} {
		cfg := DefaultConfig(0, 2)
		cfg.SignalScale = scale
		g := newTenrec(t, cfg)
		b, truth := g.BatchWithTruth(50_000)
		o, err := g.OracleOf(b, truth)
		require.NoError(t, err)
		assert.Greater(t, o.AUC["click"], prev+0.03, "scale %v", scale)
		prev = o.AUC["click"]
	}
}

// latentFeatures concatenates the true latents of every categorical feature
// of a row: what a model with perfect embeddings would see.
func latentFeatures(t *testing.T, g *Generator, b *loader.Batch, names []string) [][]float64 {
	t.Helper()
	x := make([][]float64, b.Rows)
	for i := range x {
		for _, name := range names {
			l, err := g.Latent(name, int64(b.Column(name).I32[i]))
			require.NoError(t, err)
			for _, v := range l {
				x[i] = append(x[i], float64(v))
			}
		}
	}
	return x
}

// fitLogistic fits a logistic regression by plain SGD.
func fitLogistic(x [][]float64, y []float32, epochs int, lr float64) []float64 {
	w := make([]float64, len(x[0])+1) // last: bias
	for e := 0; e < epochs; e++ {
		for i, row := range x {
			z := w[len(w)-1]
			for j, v := range row {
				z += w[j] * v
			}
			grad := sigmoid(z) - float64(y[i])
			for j, v := range row {
				w[j] -= lr * grad * v
			}
			w[len(w)-1] -= lr * grad
		}
	}
	return w
}

func logisticAUC(w []float64, x [][]float64, y []float32) float64 {
	pairs := make([]uint64, len(x))
	for i, row := range x {
		z := w[len(w)-1]
		for j, v := range row {
			z += w[j] * v
		}
		pairs[i] = rankkey.Pack(float32(z), y[i] > 0.5)
	}
	return exactAUC(pairs, make([]uint64, len(pairs)))
}

func TestLogisticRegressionOnLatentsRecoversSignal(t *testing.T) {
	if testing.Short() {
		t.Skip("fits logistic regressions on large samples")
	}
	names := []string{"user_id", "item_id", "video_category", "gender", "age"}
	for _, tc := range []struct {
		name        string
		interaction float64
		zipf        float64
		check       func(t *testing.T, auc, oracle float64)
	}{
		// Half first-order signal: a linear model on the true latents
		// learns much of it, but not all (the pairwise half is missing).
		{"default", DefaultInteraction, DefaultZipf, func(t *testing.T, auc, oracle float64) {
			assert.Greater(t, auc, 0.6)
			assert.Less(t, auc, oracle-0.02)
		}},
		// Pairwise signal only: the latents carry the signal, yet a linear
		// model on them misses most of it; a model that combines features
		// is needed. It does not miss all of it: pairs with a popular id,
		// or with a small domain's few values, are partly linear in the
		// other feature's latent.
		{"pairwise only, flat popularity", 1, 0.3, func(t *testing.T, auc, oracle float64) {
			assert.Greater(t, oracle, 0.75)
			assert.Less(t, auc, oracle-0.12)
		}},
		{"pairwise only, steep popularity", 1, DefaultZipf, func(t *testing.T, auc, oracle float64) {
			assert.Less(t, auc, oracle-0.07)
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := DefaultConfig(0, 21)
			cfg.Interaction = tc.interaction
			cfg.Zipf = tc.zipf
			g := newTenrec(t, cfg)
			train := g.Batch(30_000)
			test, truth := g.BatchWithTruth(20_000)
			w := fitLogistic(latentFeatures(t, g, train, names), train.Column("click").F32, 3, 0.01)
			auc := logisticAUC(w, latentFeatures(t, g, test, names), test.Column("click").F32)
			o, err := g.OracleOf(test, truth)
			require.NoError(t, err)
			t.Logf("logistic regression AUC %.4f, oracle %.4f", auc, o.AUC["click"])
			tc.check(t, auc, o.AUC["click"])
		})
	}
}

func TestTaskCorrelation(t *testing.T) {
	for _, tc := range []struct {
		rho    float64
		lo, hi float64
	}{
		{1, 0.999, 1.0001},
		{0, -0.05, 0.05},
		{0.5, 0.42, 0.58},
	} {
		t.Run(fmt.Sprint(tc.rho), func(t *testing.T) {
			cfg := DefaultConfig(0, 9)
			cfg.TaskCorrelation = tc.rho
			g := newTenrec(t, cfg)
			_, truth := g.BatchWithTruth(50_000)
			names := []string{"click", "like", "share", "follow"}
			for i, a := range names {
				for _, b := range names[i+1:] {
					c := pearson(truth.Logit[a], truth.Logit[b])
					assert.True(t, c >= tc.lo && c <= tc.hi, "corr(%s, %s) = %.4f, want [%v, %v]", a, b, c, tc.lo, tc.hi)
				}
				// Scores have unit variance whatever rho.
				assert.InDelta(t, 1, stddev(truth.Score[a]), 0.05, a)
			}
			// The regression target shares the signal the same way.
			c := pearson(truth.Score["click"], truth.Score["watching_times"])
			assert.True(t, c >= tc.lo && c <= tc.hi, "corr(click, watching_times) = %.4f", c)
		})
	}
}

func stddev(x []float32) float64 {
	var m, s float64
	for _, v := range x {
		m += float64(v)
	}
	m /= float64(len(x))
	for _, v := range x {
		s += (float64(v) - m) * (float64(v) - m)
	}
	return math.Sqrt(s / float64(len(x)))
}

func TestDeterminism(t *testing.T) {
	cfg := DefaultConfig(0, 42)
	a := newTenrec(t, cfg).Batch(3000)
	b := newTenrec(t, cfg).Batch(3000)
	requireSameBatch(t, a, b)

	// Rows depend on their index only: batches of any size concatenate to
	// the same stream, and Generate addresses any range.
	g := newTenrec(t, cfg)
	first, second := g.Batch(1000), g.Batch(2000)
	for name, c := range a.Columns {
		requireSameColumn(t, sliceColumn(c, 0, 1000), first.Column(name), name)
		requireSameColumn(t, sliceColumn(c, 1000, 3000), second.Column(name), name)
	}
	mid, _ := g.Generate(1500, 700)
	for name, c := range a.Columns {
		requireSameColumn(t, sliceColumn(c, 1500, 2200), mid.Column(name), name)
	}

	// StartRow starts the stream later in the same world.
	cfg2 := cfg
	cfg2.StartRow = 2500
	late := newTenrec(t, cfg2).Batch(500)
	for name, c := range a.Columns {
		requireSameColumn(t, sliceColumn(c, 2500, 3000), late.Column(name), name)
	}

	// Another seed gives other rows and another world.
	other := newTenrec(t, DefaultConfig(0, 43)).Batch(3000)
	assert.NotEqual(t, a.Column("item_id").I32, other.Column("item_id").I32)
	l1, err := newTenrec(t, cfg).Latent("item_id", 17)
	require.NoError(t, err)
	l2, err := newTenrec(t, DefaultConfig(0, 43)).Latent("item_id", 17)
	require.NoError(t, err)
	assert.NotEqual(t, l1, l2)
}

func TestZipfTopShareAndDomains(t *testing.T) {
	const n = 200_000
	cfg := DefaultConfig(0, 13)
	g := newTenrec(t, cfg)
	b := g.Batch(n)
	s := schema.Tenrec()
	for _, f := range s.Select(schema.TagCategorical) {
		ids := b.Column(f.Name).I32
		counts := map[int32]int{}
		for _, id := range ids {
			require.True(t, int64(id) >= f.IntDomain.Min && int64(id) <= f.IntDomain.Max,
				"%s id %d outside [%d, %d]", f.Name, id, f.IntDomain.Min, f.IntDomain.Max)
			counts[id]++
		}
		// Expected share of the most popular id: 1 / H(K, s), computed here
		// directly from the definition.
		k := int(min(f.Cardinality(), int64(cfg.ZipfCap)))
		var h float64
		for r := 1; r <= k; r++ {
			h += math.Pow(float64(r), -cfg.Zipf)
		}
		top := 0
		for _, c := range counts {
			top = max(top, c)
		}
		want := 1 / h
		got := float64(top) / n
		assert.InDelta(t, want, got, 0.05*want+4*math.Sqrt(want*(1-want)/n), "%s: top share", f.Name)
		// Popular ids are spread over a large domain, not packed at its
		// start: the ten most frequent ids span much of the range.
		if f.Cardinality() > 1000 {
			ids := make([]int32, 0, len(counts))
			for id := range counts {
				ids = append(ids, id)
			}
			sort.Slice(ids, func(i, j int) bool { return counts[ids[i]] > counts[ids[j]] })
			top10 := append([]int32(nil), ids[:10]...)
			sort.Slice(top10, func(i, j int) bool { return top10[i] < top10[j] })
			assert.Greater(t, int64(top10[9]-top10[0]), f.Cardinality()/4, "%s: top ids %v", f.Name, top10)
			t.Logf("%s: top ids %v, top share %.4f (want %.4f), %d distinct", f.Name, top10, got, want, len(counts))
		}
	}
}

func TestZipfCapLimitsDistinctIDs(t *testing.T) {
	cfg := DefaultConfig(0, 1)
	cfg.ZipfCap = 50
	g := newTenrec(t, cfg)
	b := g.Batch(20_000)
	distinct := map[int32]bool{}
	for _, id := range b.Column("item_id").I32 {
		distinct[id] = true
	}
	assert.LessOrEqual(t, len(distinct), 50)
	assert.Greater(t, len(distinct), 40)
}

func TestAliasTableIsExact(t *testing.T) {
	// The alias table's sampling probabilities, computed from its
	// thresholds, must equal the Zipf probabilities.
	for _, tc := range []struct {
		k int
		s float64
	}{{1, 1.1}, {2, 1.1}, {6, 1.1}, {1000, 1.1}, {1000, 0.5}, {300, 2.5}} {
		z := newZipfTable(tc.k, tc.s)
		p := make([]float64, tc.k)
		for i := 0; i < tc.k; i++ {
			accept := float64(z.thresh[i]) / (1 << 32)
			if z.thresh[i] == math.MaxUint32 {
				accept = 1
			}
			p[i] += accept / float64(tc.k)
			p[z.alias[i]] += (1 - accept) / float64(tc.k)
		}
		var h float64
		for r := 1; r <= tc.k; r++ {
			h += math.Pow(float64(r), -tc.s)
		}
		for i := range p {
			want := math.Pow(float64(i+1), -tc.s) / h
			require.InDelta(t, want, p[i], 1e-8, "k %d s %v rank %d", tc.k, tc.s, i)
		}
		assert.InDelta(t, 1/h, z.top, 1e-12)
	}
}

func TestPermutationIsBijection(t *testing.T) {
	for _, n := range []uint64{1, 2, 6, 11, 100, 4096, 10007} {
		p := newPermutation(n, uint64(n)*7919)
		seen := make([]bool, n)
		for r := uint64(0); r < n; r++ {
			v := p.apply(r)
			require.Less(t, v, n)
			require.False(t, seen[v], "n %d: %d hit twice", n, v)
			seen[v] = true
		}
	}
}

func TestHistogramAUCWithinBound(t *testing.T) {
	g := newTenrec(t, DefaultConfig(0, 4))
	b, truth := g.BatchWithTruth(50_000)
	exact := newOracleAcc(g.targetInfos(), 50_000, 50_000)
	binned := newOracleAcc(g.targetInfos(), 50_000, 10)
	require.True(t, exact.exact)
	require.False(t, binned.exact)
	require.NoError(t, exact.add(b, truth))
	require.NoError(t, binned.add(b, truth))
	oe, ob := exact.result(), binned.result()
	for name, auc := range oe.AUC {
		bound := ob.AUCMaxError[name]
		assert.Less(t, bound, 1e-3, name)
		assert.InDelta(t, auc, ob.AUC[name], bound+1e-12, name)
	}
	assert.Equal(t, oe.RMSE, ob.RMSE)
	assert.Equal(t, oe.BaseRate, ob.BaseRate)
}

// integrate is E[h(mu + s Z)] by the trapezoid rule over +-12 deviations,
// independent of the closed forms in expectObserved.
func integrate(mu, s float64, h func(float64) float64) float64 {
	const steps = 200_000
	lo, hi := mu-12*s, mu+12*s
	dx := (hi - lo) / steps
	var sum float64
	for i := 0; i <= steps; i++ {
		x := lo + float64(i)*dx
		w := 1.0
		if i == 0 || i == steps {
			w = 0.5
		}
		z := (x - mu) / s
		sum += w * h(x) * math.Exp(-0.5*z*z) / (s * math.Sqrt(2*math.Pi))
	}
	return sum * dx
}

func TestExpectObserved(t *testing.T) {
	clip := func(lo, hi float64) func(float64) float64 {
		return func(x float64) float64 { return math.Min(math.Max(x, lo), hi) }
	}
	for _, tc := range []struct {
		name string
		c    column
		mu   float64
		h    func(float64) float64
	}{
		{"unbounded", column{noise: 0.5}, 1.3, func(x float64) float64 { return x }},
		{"clip inside", column{noise: 0.5, clipBound: true, clipLo: 0, clipHi: 5}, 2.5, clip(0, 5)},
		{"clip near low", column{noise: 0.5, clipBound: true, clipLo: 0, clipHi: 5}, 0.2, clip(0, 5)},
		{"clip beyond high", column{noise: 0.5, clipBound: true, clipLo: 0, clipHi: 5}, 5.7, clip(0, 5)},
		{"round clip", column{noise: 0.7, clipBound: true, clipLo: 0, clipHi: 5, roundInt: true}, 0.9,
			func(x float64) float64 { return clip(0, 5)(math.Round(x)) }},
		{"round clip high", column{noise: 0.3, clipBound: true, clipLo: 0, clipHi: 5, roundInt: true}, 4.8,
			func(x float64) float64 { return clip(0, 5)(math.Round(x)) }},
		{"round unbounded", column{noise: 0.4, roundInt: true}, -2.3, math.Round},
		{"round far above", column{noise: 0.3, clipBound: true, clipLo: 0, clipHi: 5, roundInt: true}, 20,
			func(x float64) float64 { return clip(0, 5)(math.Round(x)) }},
		{"round far below", column{noise: 0.3, clipBound: true, clipLo: 0, clipHi: 5, roundInt: true}, -9,
			func(x float64) float64 { return clip(0, 5)(math.Round(x)) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			want := integrate(tc.mu, tc.c.noise, tc.h)
			assert.InDelta(t, want, expectObserved(tc.mu, &tc.c), 1e-5)
		})
	}
}

func TestRegressionTruthIsConditionalMean(t *testing.T) {
	g := newTenrec(t, DefaultConfig(0, 17))
	b, truth := g.BatchWithTruth(100_000)
	y, m := b.Column("watching_times").F32, truth.Mean["watching_times"]
	// Residuals of the conditional mean average to zero, overall and within
	// bins of the prediction (calibration), and labels stay in the domain.
	bins := make([][2]float64, 5)
	for i := range y {
		require.True(t, y[i] >= 0 && y[i] <= 5, "label %v outside [0, 5]", y[i])
		k := min(int(m[i]), 4)
		bins[k][0] += float64(y[i] - m[i])
		bins[k][1]++
	}
	for k, bin := range bins {
		if bin[1] < 1000 {
			continue
		}
		assert.InDelta(t, 0, bin[0]/bin[1], 0.02, "prediction bin %d", k)
	}
	o, err := g.OracleOf(b, truth)
	require.NoError(t, err)
	// Noise 0.1*5 = 0.5 before clipping; clipping only shrinks it.
	assert.InDelta(t, 0.47, o.RMSE["watching_times"], 0.05)
}

func TestListAndMixedDtypes(t *testing.T) {
	s := &schema.Schema{Features: []*schema.Feature{
		{Name: "user", DType: schema.Int64, Tags: []schema.Tag{schema.TagCategorical, schema.TagUserID},
			IntDomain: &schema.IntDomain{Min: 1, Max: 5000}},
		{Name: "history", DType: schema.Int32, Tags: []schema.Tag{schema.TagCategorical, schema.TagList},
			IntDomain: &schema.IntDomain{Name: "item", Min: 0, Max: 999}, ValueCount: &schema.ValueCount{Min: 0, Max: 4}},
		{Name: "item", DType: schema.Int32, Tags: []schema.Tag{schema.TagCategorical, schema.TagItemID},
			IntDomain: &schema.IntDomain{Name: "item", Min: 0, Max: 999}},
		{Name: "small", DType: schema.Int8, Tags: []schema.Tag{schema.TagCategorical},
			IntDomain: &schema.IntDomain{Min: 0, Max: 100}},
		{Name: "price", DType: schema.Float64, Tags: []schema.Tag{schema.TagContinuous},
			FloatDomain: &schema.FloatDomain{Min: 10, Max: 20}},
		{Name: "score", DType: schema.Float32, Tags: []schema.Tag{schema.TagContinuous}},
		{Name: "stars", DType: schema.Int16, Tags: []schema.Tag{schema.TagContinuous},
			IntDomain: &schema.IntDomain{Min: 1, Max: 5}},
		{Name: "emb", DType: schema.Float32, Tags: []schema.Tag{schema.TagContinuous, schema.TagList},
			ValueCount: &schema.ValueCount{Min: 3, Max: 3}},
		{Name: "row_id", DType: schema.Int64, IntDomain: &schema.IntDomain{Min: 0, Max: 1 << 30}},
		{Name: "bought", DType: schema.Bool, Tags: []schema.Tag{schema.TagBinaryClassification}},
		{Name: "quantity", DType: schema.Int32, Tags: []schema.Tag{schema.TagRegression},
			IntDomain: &schema.IntDomain{Min: 0, Max: 10}},
		{Name: "revenue", DType: schema.Float64, Tags: []schema.Tag{schema.TagRegression}},
	}}
	g, err := NewGenerator(s, DefaultConfig(0, 8))
	require.NoError(t, err)
	const n = 20_000
	b, truth := g.BatchWithTruth(n)
	require.Len(t, b.Columns, len(s.Features))

	hist := b.Column("history")
	require.Len(t, hist.Offsets, n+1)
	lengths := map[int32]int{}
	for i := 0; i < n; i++ {
		l := hist.Offsets[i+1] - hist.Offsets[i]
		require.True(t, l >= 0 && l <= 4, "row %d: list length %d", i, l)
		lengths[l]++
	}
	assert.Len(t, lengths, 5, "every length 0..4 occurs")
	require.Equal(t, int(hist.Offsets[n]), len(hist.I32))
	for _, id := range hist.I32 {
		require.True(t, id >= 0 && id <= 999)
	}
	emb := b.Column("emb")
	require.Len(t, emb.F32, 3*n)
	for _, id := range b.Column("user").I32 {
		require.True(t, id >= 1 && id <= 5000)
	}
	for _, x := range b.Column("price").F32 {
		require.True(t, x >= 10 && x <= 20)
	}
	for _, x := range b.Column("stars").F32 {
		require.True(t, x == float32(math.Round(float64(x))) && x >= 1 && x <= 5, "stars %v", x)
	}
	for _, x := range b.Column("quantity").F32 {
		require.True(t, x == float32(math.Round(float64(x))) && x >= 0 && x <= 10, "quantity %v", x)
	}
	// The untagged column is generated but carries no signal: only the eight
	// tagged inputs form signal groups.
	assert.Equal(t, 8, g.groups)
	o, err := g.OracleOf(b, truth)
	require.NoError(t, err)
	assert.Greater(t, o.AUC["bought"], 0.7)
	assert.InDelta(t, DefaultBaseRate, o.BaseRate["bought"], 0.02)
	assert.Less(t, o.RMSE["quantity"], o.ConstantRMSE["quantity"])
	assert.Less(t, o.RMSE["revenue"], 0.5*o.ConstantRMSE["revenue"])

	// Shared domains share latents.
	l1, err := g.Latent("history", 5)
	require.NoError(t, err)
	l2, err := g.Latent("item", 5)
	require.NoError(t, err)
	assert.Equal(t, l1, l2)
	_, err = g.Latent("item", 1000)
	assert.ErrorContains(t, err, "outside int_domain")
	_, err = g.Latent("price", 1)
	assert.ErrorContains(t, err, "not categorical")
}

func TestNewGeneratorErrors(t *testing.T) {
	cat := func(name string, max int64) *schema.Feature {
		return &schema.Feature{Name: name, DType: schema.Int32, Tags: []schema.Tag{schema.TagCategorical},
			IntDomain: &schema.IntDomain{Max: max}}
	}
	click := &schema.Feature{Name: "click", DType: schema.Float32, Tags: []schema.Tag{schema.TagBinaryClassification}}
	with := func(fs ...*schema.Feature) *schema.Schema { return &schema.Schema{Features: fs} }
	for _, tc := range []struct {
		name string
		s    *schema.Schema
		cfg  Config
		want string
	}{
		{"empty schema", &schema.Schema{}, Config{}, "empty schema"},
		{"nil schema", nil, Config{}, "empty schema"},
		{"duplicate", with(cat("a", 3), cat("a", 3)), Config{}, `"a" appears twice`},
		{"no domain", with(&schema.Feature{Name: "u", DType: schema.Int32, Tags: []schema.Tag{schema.TagCategorical}}), Config{}, `"u": integer feature has no int_domain`},
		{"string ids", with(&schema.Feature{Name: "u", DType: schema.String, Tags: []schema.Tag{schema.TagCategorical}}), Config{}, `"u": dtype string`},
		{"unknown dtype", with(&schema.Feature{Name: "u", DType: "complex64"}), Config{}, `"u": unknown dtype`},
		{"float categorical", with(&schema.Feature{Name: "u", DType: schema.Float32, Tags: []schema.Tag{schema.TagCategorical}, IntDomain: &schema.IntDomain{Max: 3}}), Config{}, `"u": categorical feature has dtype float32`},
		{"negative min", with(&schema.Feature{Name: "u", DType: schema.Int32, Tags: []schema.Tag{schema.TagCategorical}, IntDomain: &schema.IntDomain{Min: -1, Max: 3}}), Config{}, `"u": int_domain [-1, 3]`},
		{"int8 overflow", with(&schema.Feature{Name: "u", DType: schema.Int8, Tags: []schema.Tag{schema.TagCategorical}, IntDomain: &schema.IntDomain{Max: 300}}), Config{}, `"u": int_domain max 300 does not fit dtype int8`},
		{"int64 above int32", with(&schema.Feature{Name: "u", DType: schema.Int64, Tags: []schema.Tag{schema.TagCategorical}, IntDomain: &schema.IntDomain{Max: 1 << 40}}), Config{}, `does not fit dtype int64`},
		{"shared domain disagrees", with(cat("a", 3), &schema.Feature{Name: "b", DType: schema.Int32, Tags: []schema.Tag{schema.TagCategorical}, IntDomain: &schema.IntDomain{Name: "a", Max: 4}}), Config{}, `"b": int_domain "a" is [0, 4] here but [0, 3]`},
		{"both tags", with(&schema.Feature{Name: "u", DType: schema.Int32, Tags: []schema.Tag{schema.TagCategorical, schema.TagContinuous}, IntDomain: &schema.IntDomain{Max: 3}}), Config{}, `"u": tagged both`},
		{"bad value count", with(&schema.Feature{Name: "u", DType: schema.Int32, Tags: []schema.Tag{schema.TagCategorical}, IntDomain: &schema.IntDomain{Max: 3}, ValueCount: &schema.ValueCount{Min: 5, Max: 2}}), Config{}, `"u": value_count min 5, max 2`},
		{"empty float domain", with(&schema.Feature{Name: "x", DType: schema.Float32, Tags: []schema.Tag{schema.TagContinuous}, FloatDomain: &schema.FloatDomain{Min: 2, Max: 1}}), Config{}, `"x": float_domain [2, 1]`},
		{"target kind", with(cat("a", 3), &schema.Feature{Name: "y", DType: schema.Float32, Tags: []schema.Tag{schema.TagTarget}}), Config{}, `"y": target is neither binary nor regression`},
		{"categorical target", with(&schema.Feature{Name: "y", DType: schema.Int32, Tags: []schema.Tag{schema.TagTarget, schema.TagCategorical}, IntDomain: &schema.IntDomain{Max: 3}}), Config{}, `"y": a target cannot also be`},
		{"binary and regression", with(&schema.Feature{Name: "y", DType: schema.Float32, Tags: []schema.Tag{schema.TagBinary, schema.TagRegression}}), Config{}, `"y": target tagged both`},
		{"bool untagged", with(&schema.Feature{Name: "flag", DType: schema.Bool}), Config{}, `"flag": dtype bool without a categorical or continuous tag`},
		{"base rate name", with(cat("a", 3), click), Config{BaseRates: map[string]float64{"clik": 0.1}}, `BaseRates names "clik"`},
		{"base rate value", with(cat("a", 3), click), Config{BaseRates: map[string]float64{"click": 1}}, `base rate of "click" is 1`},
		{"correlation", with(cat("a", 3), click), Config{TaskCorrelation: 1.5}, "TaskCorrelation is 1.5"},
		{"negative scale", with(cat("a", 3), click), Config{SignalScale: -1}, "SignalScale is -1"},
		{"nan zipf", with(cat("a", 3), click), Config{Zipf: math.NaN()}, "Zipf is NaN"},
		{"negative rows", with(cat("a", 3), click), Config{Rows: -1}, "Rows is -1"},
		{"latent dim", with(cat("a", 3), click), Config{LatentDim: -2}, "LatentDim is -2"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := NewGenerator(tc.s, tc.cfg)
			require.Error(t, err)
			assert.Contains(t, err.Error(), tc.want)
		})
	}
}

func TestDegenerateSchemas(t *testing.T) {
	// One input: no pairs, the first-order term carries all the signal.
	s := &schema.Schema{Features: []*schema.Feature{
		{Name: "item", DType: schema.Int32, Tags: []schema.Tag{schema.TagCategorical}, IntDomain: &schema.IntDomain{Max: 500}},
		{Name: "a", DType: schema.Float32, Tags: []schema.Tag{schema.TagBinaryClassification}},
		{Name: "b", DType: schema.Float32, Tags: []schema.Tag{schema.TagBinaryClassification}},
	}}
	g, err := NewGenerator(s, Config{Seed: 1})
	require.NoError(t, err)
	b, truth := g.BatchWithTruth(20_000)
	o, err := g.OracleOf(b, truth)
	require.NoError(t, err)
	assert.Greater(t, o.AUC["a"], 0.7)
	// TaskCorrelation 0 (the zero value): independent tasks.
	assert.InDelta(t, 0, pearson(truth.Score["a"], truth.Score["b"]), 0.06)

	// Targets only: nothing to learn, labels at the base rate.
	only := &schema.Schema{Features: []*schema.Feature{s.Features[1]}}
	g, err = NewGenerator(only, Config{Seed: 1})
	require.NoError(t, err)
	b, truth = g.BatchWithTruth(10_000)
	o, err = g.OracleOf(b, truth)
	require.NoError(t, err)
	assert.InDelta(t, 0.5, o.AUC["a"], 1e-9)
	assert.InDelta(t, DefaultBaseRate, o.BaseRate["a"], 0.02)
}

func TestBatchCursor(t *testing.T) {
	g := newTenrec(t, DefaultConfig(0, 1))
	assert.Equal(t, 0, g.Batch(0).Rows)
	assert.Equal(t, 0, g.Batch(-5).Rows)
	a := g.Batch(10)
	g.SetRow(0)
	b := g.Batch(10)
	requireSameBatch(t, a, b)
	assert.Contains(t, a.Source, "rows 0..10")
}

func TestBiasAndLatentAccessors(t *testing.T) {
	g := newTenrec(t, DefaultConfig(0, 1))
	b, err := g.Bias("click")
	require.NoError(t, err)
	assert.Less(t, b, 0.0)
	_, err = g.Bias("watching_times")
	assert.Error(t, err)
	l, err := g.Latent("user_id", 3)
	require.NoError(t, err)
	require.Len(t, l, DefaultLatentDim)
	for _, v := range l {
		assert.LessOrEqual(t, math.Abs(float64(v)), math.Sqrt(3))
	}
	_, err = g.Latent("nope", 1)
	assert.Error(t, err)
}

func TestLatentsAreUnitVariance(t *testing.T) {
	var vals []float64
	for id := 0; id < 5000; id++ {
		v := make([]float64, 8)
		uniformUnitVar(mix64(uint64(id)), v)
		vals = append(vals, v...)
	}
	sort.Float64s(vals)
	var m, s float64
	for _, v := range vals {
		m += v
	}
	m /= float64(len(vals))
	for _, v := range vals {
		s += (v - m) * (v - m)
	}
	assert.InDelta(t, 0, m, 0.02)
	assert.InDelta(t, 1, s/float64(len(vals)), 0.03)
	assert.GreaterOrEqual(t, vals[0], -math.Sqrt(3))
	assert.LessOrEqual(t, vals[len(vals)-1], math.Sqrt(3))
}

func TestRNGRanges(t *testing.T) {
	r := newRNG(5)
	for _, n := range []uint64{1, 7, 1 << 32, 1<<40 + 3} {
		var maxSeen uint64
		for i := 0; i < 2000; i++ {
			v := r.int63n(n)
			require.Less(t, v, n)
			maxSeen = max(maxSeen, v)
		}
		// Draws cover the range: the largest of 2000 is near the top.
		assert.GreaterOrEqual(t, float64(maxSeen), 0.99*float64(n-1), "n %d", n)
	}
	var sum, sq float64
	for i := 0; i < 100_000; i++ {
		u := r.float64()
		require.True(t, u > 0 && u < 1)
		z := r.normal()
		sum += z
		sq += z * z
	}
	assert.InDelta(t, 0, sum/100_000, 0.02)
	assert.InDelta(t, 1, sq/100_000, 0.02)
}
