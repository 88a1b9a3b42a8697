package mtl

import (
	"fmt"
	"math/rand/v2"
	"os"
	"runtime"
	"syscall"
	"testing"
	"time"

	"github.com/mtlrank/mtlrank/kernels"
	"github.com/mtlrank/mtlrank/loader"
	"github.com/mtlrank/mtlrank/schema"
)

// tenrecBatches are random tenrec batches like the PyTorch reference's:
// ids uniform over each table, random binary targets, watching_times in
// 0..4.
func tenrecBatches(s *schema.Schema, n, rows int) []*loader.Batch {
	return tenrecBatchesZipf(s, n, rows, 0)
}

// tenrecBatchesZipf is tenrecBatches with, when zipf > 0, the ids of
// tables over zipfMinRows rows drawn by popularity: rank k with
// probability proportional to (1+k)^-zipf, the ranks scattered over the
// table by a fixed permutation (as raw ids are, before Categorify orders
// them by frequency), so that popular rows share no cache lines or pages.
func tenrecBatchesZipf(s *schema.Schema, n, rows int, zipf float64) []*loader.Batch {
	const zipfMinRows = 1000
	// k -> k*permPrime mod card is a permutation of [0, card) when the
	// prime does not divide card (checked once per table size).
	const permPrime = 1_000_003
	rng := rand.New(rand.NewPCG(0, 0))
	draw := func(card int64) int32 { return int32(rng.Int64N(card)) }
	if zipf > 0 {
		zipfs := map[int64]*rand.Zipf{}
		uniform := draw
		draw = func(card int64) int32 {
			if card < zipfMinRows {
				return uniform(card)
			}
			z := zipfs[card]
			if z == nil {
				if card%permPrime == 0 {
					panic("tenrecBatchesZipf: table size is a multiple of the permutation's prime")
				}
				z = rand.NewZipf(rng, zipf, 1, uint64(card-1))
				zipfs[card] = z
			}
			return int32(z.Uint64() * permPrime % uint64(card))
		}
	}
	var out []*loader.Batch
	for range n {
		cols := map[string]*loader.Column{}
		for _, f := range s.Features {
			c := &loader.Column{Name: f.Name}
			switch {
			case f.HasTag(schema.TagCategorical):
				c.I32 = make([]int32, rows)
				for i := range c.I32 {
					c.I32[i] = draw(f.Cardinality())
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

// cpuTime is the process's user+system CPU time: on a shared machine wall
// time includes waiting for a core, CPU time does not.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// forwardFLOPs is the multiply-add count of one example's forward pass
// times 2: every Dense or expert kernel [in, out] (or [E, in, out]) costs
// in*out multiply-adds per example. A training step costs 3 times that
// (forward, weight gradients, input gradients: the first layers' input
// gradients feed the embedding tables).
func forwardFLOPs(m *Model) float64 {
	var macs int
	for _, p := range m.params {
		if p.L2 {
			macs += p.Value.Len()
		}
	}
	return 2 * float64(macs)
}

// benchLoop runs step b.N times and reports examples/s, CPU time per step
// and the achieved GFLOP/s (wall clock).
func benchLoop(b *testing.B, rows int, flopsPerExample float64, step func(i int) error) {
	b.ReportAllocs()
	b.ResetTimer()
	cpu0 := cpuTime()
	for i := 0; i < b.N; i++ {
		if err := step(i); err != nil {
			b.Fatal(err)
		}
	}
	cpu := cpuTime() - cpu0
	sec := b.Elapsed().Seconds()
	b.ReportMetric(float64(b.N*rows)/sec, "examples/s")
	b.ReportMetric(float64(cpu.Nanoseconds())/float64(b.N), "cpu-ns/op")
	b.ReportMetric(flopsPerExample*float64(b.N*rows)/sec/1e9, "GFLOP/s")
}

func benchModel(b *testing.B, s *schema.Schema, model string, rows int, mutate func(*Config)) *Model {
	cfg := DefaultConfig()
	cfg.Model = model
	if mutate != nil {
		mutate(&cfg)
	}
	m, err := NewModel(s, cfg, kernels.NewCPU(benchThreads()), rows)
	if err != nil {
		b.Fatal(err)
	}
	return m
}

// BenchmarkTrainStep measures training throughput at batch 1024 on the
// tenrec schema with the benchmark settings (DefaultConfig; see
// docs/ARCHITECTURE.md).
func BenchmarkTrainStep(b *testing.B) {
	for _, model := range []string{"mlp", "mmoe", "cgc", "ple"} {
		b.Run(model, func(b *testing.B) {
			const rows = 1024
			s := schema.Tenrec()
			m := benchModel(b, s, model, rows, nil)
			defer m.Release()
			batches := tenrecBatches(s, 8, rows)
			for i := range 3 {
				if _, err := m.TrainStep(batches[i]); err != nil {
					b.Fatal(err)
				}
			}
			benchLoop(b, rows, 3*forwardFLOPs(m), func(i int) error {
				_, err := m.TrainStep(batches[i%len(batches)])
				return err
			})
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
			m := benchModel(b, s, model, rows, nil)
			defer m.Release()
			p := m.NewPredictor(rows)
			defer p.Release()
			batches := tenrecBatches(s, 8, rows)
			out := make([][]float32, len(m.Tasks()))
			for t := range out {
				out[t] = make([]float32, rows)
			}
			for i := range 3 {
				if err := p.Predict(batches[i], out); err != nil {
					b.Fatal(err)
				}
			}
			benchLoop(b, rows, forwardFLOPs(m), func(i int) error {
				return p.Predict(batches[i%len(batches)], out)
			})
		})
	}
}

// BenchmarkTrainStepTableRows measures how the step time depends on the
// size of the user_id and item_id tables (1e5 vs 1e7 rows): their widths
// are pinned to tenrec's (40 and 48), so only the table size changes. Ids
// are drawn two ways: uniformly over each table, the worst case for caches,
// and by Zipf popularity with exponent 1.1 (loader/synth's default), ranks
// scattered over the table. The 1e7 model holds about 10.5 GB (tables and
// Adam moments); it runs only when MTLRANK_BIG_BENCH is set.
func BenchmarkTrainStepTableRows(b *testing.B) {
	dists := []struct {
		name string
		zipf float64
	}{{"uniform", 0}, {"zipf1.1", 1.1}}
	for _, rows := range []int64{100_000, 10_000_000} {
		for _, model := range []string{"mlp", "mmoe"} {
			b.Run(fmt.Sprintf("%s/rows%d", model, rows), func(b *testing.B) {
				if rows > 1_000_000 && os.Getenv("MTLRANK_BIG_BENCH") == "" {
					b.Skip("set MTLRANK_BIG_BENCH=1 to allocate 1e7-row tables (about 10.5 GB)")
				}
				const batch = 1024
				s := schema.TenrecWithRows(rows)
				runtime.GC() // the previous model's tables are gone before these are allocated
				m := benchModel(b, s, model, batch, func(c *Config) {
					c.EmbeddingDims = map[string]int{"user_id": 40, "item_id": 48}
				})
				defer runtime.GC()
				defer m.Release()
				// Steady state: the lazily updated Adam moments of a long run
				// have had every page written. Fresh ones are untouched
				// memory, and the first write to each page (a 2 MB huge
				// page for large tables) would be timed here instead.
				for _, st := range m.OptimizerState() {
					m.Device().Fill(st.Tensor, 0)
				}
				for _, dist := range dists {
					b.Run(dist.name, func(b *testing.B) {
						// 256 batches touch up to 500k rows of each table, more
						// than the last-level cache holds at 1e7 rows
						batches := tenrecBatchesZipf(s, 256, batch, dist.zipf)
						for i := range 3 {
							if _, err := m.TrainStep(batches[i]); err != nil {
								b.Fatal(err)
							}
						}
						benchLoop(b, batch, 3*forwardFLOPs(m), func(i int) error {
							_, err := m.TrainStep(batches[i%len(batches)])
							return err
						})
					})
				}
			})
		}
	}
}

// BenchmarkModelGemmShapes is the GEMM ceiling of inference at the models'
// shapes: the forward GEMMs of every Dense and expert kernel of the model
// (x [rows, in] times W [in, out]) at batch 1024, as two goroutines each
// computing 512 rows with single-threaded GEMMs and nothing else. With
// MTLRANK_GEMM=blas in the environment every GEMM runs on OpenBLAS (the
// machine's sgemm at these shapes); by default the CPU device's small-GEMM
// kernels take the shapes they handle. GFLOP/s here against the GFLOP/s of
// BenchmarkPredict is the share of the GEMM ceiling that inference reaches.
func BenchmarkModelGemmShapes(b *testing.B) {
	const rows, half = 1024, 512
	for _, model := range []string{"mlp", "mmoe", "cgc", "ple"} {
		b.Run(model, func(b *testing.B) {
			m := benchModel(b, schema.Tenrec(), model, 16, nil)
			defer m.Release()
			type gemm struct{ x, w, y *kernels.Tensor }
			var work [2][]gemm
			var macs int
			for g := range work {
				dev := kernels.NewCPU(1)
				rng := rand.New(rand.NewPCG(uint64(g), 1))
				for _, p := range m.params {
					if !p.L2 {
						continue
					}
					sh := p.Value.Shape
					e, in, out := 1, sh[0], sh[1]
					if len(sh) == 3 {
						e, in, out = sh[0], sh[1], sh[2]
					}
					if g == 0 {
						macs += rows * e * in * out
					}
					for i := range e {
						x := dev.Alloc(kernels.Float32, half, in)
						for j := range x.F32 {
							x.F32[j] = rng.Float32()
						}
						w := p.Value.View(i*in*out, in, out)
						work[g] = append(work[g], gemm{x, w, dev.Alloc(kernels.Float32, half, out)})
					}
				}
			}
			engine := "small-kernels"
			if os.Getenv("MTLRANK_GEMM") == "blas" {
				engine = "openblas"
			}
			b.Run(engine, func(b *testing.B) {
				start := make(chan struct{})
				done := make(chan struct{})
				for g := range work {
					go func() {
						for range start {
							for _, t := range work[g] {
								t.x.Dev.Gemm(false, false, 1, t.x, t.w, 0, t.y)
							}
							done <- struct{}{}
						}
					}()
				}
				defer close(start)
				b.ResetTimer()
				cpu0 := cpuTime() // the CPU-time rate: steadier on a loaded machine, comparable to TrainStep's cpu-ns/op
				for range b.N {
					start <- struct{}{}
					start <- struct{}{}
					<-done
					<-done
				}
				b.ReportMetric(2*float64(macs)*float64(b.N)/b.Elapsed().Seconds()/1e9, "GFLOP/s")
				b.ReportMetric(float64(rows*b.N)/b.Elapsed().Seconds(), "examples/s")
				b.ReportMetric(float64((cpuTime()-cpu0).Nanoseconds())/float64(b.N), "cpu-ns/op")
			})
		})
	}
}
