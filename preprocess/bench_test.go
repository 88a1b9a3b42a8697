package preprocess

import (
	"bufio"
	"fmt"
	"math/rand"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
)

// writeBenchCSV writes n rows of a TenRec-like log: Zipf user and item ids,
// three small categoricals, three continuous columns (some missing) and two
// targets.
func writeBenchCSV(b *testing.B, path string, n int) {
	f, err := os.Create(path)
	require.NoError(b, err)
	w := bufio.NewWriter(f)
	rng := rand.New(rand.NewSource(1))
	users := rand.NewZipf(rng, 1.1, 1, 100_000)
	items := rand.NewZipf(rng, 1.1, 1, 200_000)
	fmt.Fprintln(w, "user_id,item_id,category,gender,age,watch,price,ctr,click,like")
	for i := 0; i < n; i++ {
		price := fmt.Sprintf("%.2f", rng.ExpFloat64()*20)
		if rng.Intn(50) == 0 {
			price = ""
		}
		fmt.Fprintf(w, "u%d,%d,cat%d,%d,%d,%.3f,%s,%.5f,%d,%d\n",
			users.Uint64(), items.Uint64(), rng.Intn(40), rng.Intn(3), 15+rng.Intn(60),
			rng.Float64()*100, price, rng.Float64(), rng.Intn(2), rng.Intn(2))
	}
	require.NoError(b, w.Flush())
	require.NoError(b, f.Close())
}

// BenchmarkFitTransformCSV measures rows/s of Fit + Transform on a generated
// 200k-row CSV (each row is read twice: fit and transform).
func BenchmarkFitTransformCSV(b *testing.B) {
	dir := b.TempDir()
	const rows = 200_000
	in := filepath.Join(dir, "bench.csv")
	writeBenchCSV(b, in, rows)
	spec := Spec{
		CSVHeader: true, UserID: "user_id", ItemID: "item_id",
		Categorical: []string{"category", "gender", "age"}, Continuous: []string{"watch", "price", "ctr"},
		ContinuousFillNA: "median", Normalize: true, LogContinuous: []string{"price"},
		BinaryTargets: []string{"click", "like"}, UserFeatures: []string{"gender", "age"}, ItemFeatures: []string{"category"},
	}
	out := filepath.Join(dir, "out")
	cpu0 := cpuSeconds()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		w, err := Fit(spec, []string{in})
		if err != nil {
			b.Fatal(err)
		}
		if _, err := w.Transform([]string{in}, out); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(rows)*float64(b.N)/b.Elapsed().Seconds(), "rows/s")
	if cpu := cpuSeconds() - cpu0; cpu > 0 {
		// Fit + Transform use up to two cores (reading overlaps processing).
		b.ReportMetric(float64(rows)*float64(b.N)/cpu, "rows/cpu-s")
	}
}

// BenchmarkRunSplit measures Run with each split strategy on the generated
// 200k-row CSV; random_by_user adds a counting pass over the user ids.
func BenchmarkRunSplit(b *testing.B) {
	dir := b.TempDir()
	const rows = 200_000
	in := filepath.Join(dir, "bench.csv")
	writeBenchCSV(b, in, rows)
	for _, strategy := range []string{SplitRandom, SplitRandomByUser, SplitByUserHoldout} {
		b.Run(strategy, func(b *testing.B) {
			spec := Spec{
				CSVHeader: true, UserID: "user_id", ItemID: "item_id",
				Categorical: []string{"category", "gender", "age"}, Continuous: []string{"watch", "price", "ctr"},
				ContinuousFillNA: "median", Normalize: true, BinaryTargets: []string{"click", "like"},
				SplitStrategy: strategy, EvalPerc: 0.2, Seed: 1,
			}
			out := filepath.Join(dir, "out")
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				if _, err := Run(spec, []string{in}, nil, out); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(rows)*float64(b.N)/b.Elapsed().Seconds(), "rows/s")
		})
	}
}
