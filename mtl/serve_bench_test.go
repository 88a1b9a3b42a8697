package mtl

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mtlrank/mtlrank/kernels"
	"github.com/mtlrank/mtlrank/schema"
)

// BenchmarkScore measures serving: one user x N candidate items per
// request through a Scorer, on the tenrec schema with the benchmark model
// settings (DefaultConfig).
//
//   - latency: one caller, one Predictor on a device with benchThreads()
//     threads (a request's rows are shared out over them); reports the
//     median and 99th-percentile request time.
//   - throughput: benchThreads() callers at once (b.RunParallel), one
//     Predictor each on a shared device; reports requests and rows per
//     second.
func BenchmarkScore(b *testing.B) {
	s := schema.Tenrec()
	for _, model := range []string{"mlp", "mmoe", "ple"} {
		for _, rows := range []int{16, 128, 512} {
			b.Run(fmt.Sprintf("%s/latency/rows%d", model, rows), func(b *testing.B) {
				sc, reqs := benchScorer(b, s, model, rows, 1)
				defer sc.Close()
				out := newScores(sc, rows)
				times := make([]time.Duration, 0, b.N)
				b.ReportAllocs()
				b.ResetTimer()
				for i := 0; i < b.N; i++ {
					t0 := time.Now()
					if err := sc.Score(reqs[i%len(reqs)].Batch(), out); err != nil {
						b.Fatal(err)
					}
					times = append(times, time.Since(t0))
				}
				b.StopTimer()
				slices.Sort(times)
				b.ReportMetric(float64(times[len(times)/2].Nanoseconds())/1e3, "p50-us")
				b.ReportMetric(float64(times[len(times)*99/100].Nanoseconds())/1e3, "p99-us")
				b.ReportMetric(float64(b.N*rows)/b.Elapsed().Seconds(), "rows/s")
			})
			b.Run(fmt.Sprintf("%s/throughput/rows%d", model, rows), func(b *testing.B) {
				workers := benchThreads()
				sc, reqs := benchScorer(b, s, model, rows, workers)
				defer sc.Close()
				var next atomic.Int64
				b.ReportAllocs()
				b.ResetTimer()
				b.SetParallelism(1) // GOMAXPROCS callers: one per Predictor here
				b.RunParallel(func(pb *testing.PB) {
					out := newScores(sc, rows)
					for pb.Next() {
						req := reqs[int(next.Add(1))%len(reqs)]
						if err := sc.Score(req.Batch(), out); err != nil {
							b.Error(err)
							return
						}
					}
				})
				b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "requests/s")
				b.ReportMetric(float64(b.N*rows)/b.Elapsed().Seconds(), "rows/s")
			})
		}
	}
}

// benchScorer builds a Scorer with the given number of Predictors over a
// fresh model, and 16 requests of one random user and rows random items.
func benchScorer(b *testing.B, s *schema.Schema, model string, rows, workers int) (*Scorer, []*Candidates) {
	b.Helper()
	cfg := DefaultConfig()
	cfg.Model = model
	m, err := NewModel(s, cfg, kernels.NewCPU(benchThreads()), 1)
	if err != nil {
		b.Fatal(err)
	}
	sc, err := NewScorer(m, ScorerOptions{MaxBatch: rows, Workers: workers})
	if err != nil {
		b.Fatal(err)
	}
	sc.owned = true
	rng := rand.New(rand.NewPCG(1, 2))
	card := func(name string) int64 { return s.Feature(name).Cardinality() }
	reqs := make([]*Candidates, 16)
	for i := range reqs {
		c := NewCandidates(rows, []string{"user_id", "gender", "age", "item_id", "video_category"}, nil)
		if err := c.Reset(rows); err != nil {
			b.Fatal(err)
		}
		for _, user := range []string{"user_id", "gender", "age"} {
			if err := c.FillID(user, int32(rng.Int64N(card(user)))); err != nil {
				b.Fatal(err)
			}
		}
		items, cats := c.IDs("item_id"), c.IDs("video_category")
		for j := range items {
			items[j] = int32(rng.Int64N(card("item_id")))
			cats[j] = int32(rng.Int64N(card("video_category")))
		}
		reqs[i] = c
	}
	out := newScores(sc, rows)
	for _, r := range reqs[:3] {
		if err := sc.Score(r.Batch(), out); err != nil {
			b.Fatal(err)
		}
	}
	return sc, reqs
}

func newScores(sc *Scorer, rows int) [][]float32 {
	out := make([][]float32, len(sc.Tasks()))
	for t := range out {
		out[t] = make([]float32, rows)
	}
	return out
}
