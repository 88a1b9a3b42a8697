package mtl

import (
	"math/rand/v2"
	"runtime"
	"testing"

	"github.com/mtlrank/mtlrank/kernels"
	"github.com/mtlrank/mtlrank/loader"
	"github.com/mtlrank/mtlrank/schema"
)

// tenrecBatches are random tenrec batches like the PyTorch reference's:
// ids uniform over each table, random binary targets, watching_times in
// 0..4.
func tenrecBatches(s *schema.Schema, n, rows int) []*loader.Batch {
	rng := rand.New(rand.NewPCG(0, 0))
	var out []*loader.Batch
	for range n {
		cols := map[string]*loader.Column{}
		for _, f := range s.Features {
			c := &loader.Column{Name: f.Name}
			switch {
			case f.HasTag(schema.TagCategorical):
				c.I32 = make([]int32, rows)
				for i := range c.I32 {
					c.I32[i] = int32(rng.Int64N(f.Cardinality()))
				}
			case f.HasTag(schema.TagRegression):
				c.F32 = make([]float32, rows)
				for i := range c.F32 {
					c.F32[i] = float32(rng.IntN(5))
				}
			default:
				c.F32 = make([]float32, rows)
				for i := range c.F32 {
					c.F32[i] = float32(rng.IntN(2))
				}
			}
			cols[f.Name] = c
		}
		out = append(out, loader.NewBatch(rows, cols, "bench", nil))
	}
	return out
}

func benchThreads() int { return min(2, runtime.GOMAXPROCS(0)) }

// BenchmarkTrainStep measures training throughput at batch 1024 on the
// tenrec schema with the DESIGN.md benchmark settings (DefaultConfig).
func BenchmarkTrainStep(b *testing.B) {
	for _, model := range []string{"mlp", "mmoe", "cgc", "ple"} {
		b.Run(model, func(b *testing.B) {
			const rows = 1024
			s := schema.Tenrec()
			cfg := DefaultConfig()
			cfg.Model = model
			m, err := NewModel(s, cfg, kernels.NewCPU(benchThreads()), rows)
			if err != nil {
				b.Fatal(err)
			}
			defer m.Release()
			batches := tenrecBatches(s, 8, rows)
			for i := range 3 {
				if _, err := m.TrainStep(batches[i]); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				if _, err := m.TrainStep(batches[i%len(batches)]); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.N*rows)/b.Elapsed().Seconds(), "examples/s")
		})
	}
}

// BenchmarkPredict measures inference throughput (probabilities copied to
// the host) at batch 1024 on the tenrec schema.
func BenchmarkPredict(b *testing.B) {
	for _, model := range []string{"mlp", "mmoe", "cgc", "ple"} {
		b.Run(model, func(b *testing.B) {
			const rows = 1024
			s := schema.Tenrec()
			cfg := DefaultConfig()
			cfg.Model = model
			m, err := NewModel(s, cfg, kernels.NewCPU(benchThreads()), rows)
			if err != nil {
				b.Fatal(err)
			}
			defer m.Release()
			p := m.NewPredictor(rows)
			defer p.Release()
			batches := tenrecBatches(s, 8, rows)
			out := make([][]float32, len(m.Tasks()))
			for t := range out {
				out[t] = make([]float32, rows)
			}
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				if err := p.Predict(batches[i%len(batches)], out); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.N*rows)/b.Elapsed().Seconds(), "examples/s")
		})
	}
}
