package kernels

import (
	"fmt"
	"math/rand/v2"
	"os"
	"syscall"
	"testing"
	"time"
)

// cpuTime is the process's user+system CPU time. Benchmarks report it per
// op next to wall time: on a shared machine wall time includes waiting for
// a core, CPU time does not (for one thread it is the better figure; with
// several threads it is the total work).
func cpuTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// loop runs f b.N times and reports CPU ns/op.
func loop(b *testing.B, f func()) {
	b.Helper()
	start := cpuTime()
	for b.Loop() {
		f()
	}
	b.ReportMetric(float64(cpuTime()-start)/float64(b.N), "cpu-ns/op")
}

func benchTensor(c *CPU, shape ...int) *Tensor {
	t := c.Alloc(Float32, shape...)
	rng := rand.New(rand.NewPCG(1, 2))
	for i := range t.F32 {
		t.F32[i] = rng.Float32()*2 - 1
	}
	return t
}

// BenchmarkSgemm is a large square GEMM: the OpenBLAS ceiling. "device"
// runs it through the CPU device (row blocks of single-threaded OpenBLAS
// spread over the device's goroutines); "openblas" calls OpenBLAS with its
// own threads.
func BenchmarkSgemm(b *testing.B) {
	const n = 1024
	for _, th := range []int{1, 2} {
		c := NewCPU(th)
		x, y, z := benchTensor(c, n, n), benchTensor(c, n, n), c.Alloc(Float32, n, n)
		report := func(b *testing.B, start time.Duration) {
			flops := 2 * n * n * n * float64(b.N)
			b.ReportMetric(flops/b.Elapsed().Seconds()/1e9, "GFLOP/s")
			// Per second of CPU time (all threads): the efficiency of the
			// kernel, which waiting for a core on a busy machine does not
			// distort.
			b.ReportMetric(flops/(cpuTime()-start).Seconds()/1e9, "GFLOP/cpu-s")
		}
		b.Run(fmt.Sprintf("device/%dx%dx%d/threads%d", n, n, n, th), func(b *testing.B) {
			start := cpuTime()
			for b.Loop() {
				c.Gemm(false, false, 1, x, y, 0, z)
			}
			report(b, start)
		})
		b.Run(fmt.Sprintf("openblas/%dx%dx%d/threads%d", n, n, n, th), func(b *testing.B) {
			setBLASThreads(th)
			defer setBLASThreads(1)
			start := cpuTime()
			for b.Loop() {
				sgemm(false, false, n, n, n, 1, x.F32, n, y.F32, n, 0, z.F32, n)
			}
			report(b, start)
		})
	}
}

// expertShapes are the batched expert GEMMs of the MMoE/CGC/PLE models:
// batch 1024, input width 96..160, expert width 64, 2..12 experts.
var expertShapes = []struct{ in, e int }{{96, 2}, {96, 4}, {160, 4}, {128, 12}}

// BenchmarkExpertGemm covers the three GEMMs of an expert layer: forward
// (input shared by all experts: stride 0), weight gradient (A^T with stride
// 0) and input gradient (B^T, accumulated over experts by the caller).
func BenchmarkExpertGemm(b *testing.B) {
	const rows, out = 1024, 64
	for _, th := range []int{1, 2} {
		c := NewCPU(th)
		for _, s := range expertShapes {
			x := benchTensor(c, rows, s.in)
			w := benchTensor(c, s.e, s.in, out)
			h := benchTensor(c, s.e, rows, out)
			dw := c.Alloc(Float32, s.e, s.in, out)
			flops := 2 * float64(rows*s.in*out*s.e)
			name := fmt.Sprintf("in%d_e%d/threads%d", s.in, s.e, th)
			b.Run("fwd/"+name, func(b *testing.B) {
				for b.Loop() {
					c.GemmStridedBatched(false, false, rows, out, s.in, 1, x, 0, w, s.in*out, 0, h, rows*out, s.e)
				}
				b.ReportMetric(flops*float64(b.N)/b.Elapsed().Seconds()/1e9, "GFLOP/s")
			})
			b.Run("dW/"+name, func(b *testing.B) {
				for b.Loop() {
					c.GemmStridedBatched(true, false, s.in, out, rows, 1, x, 0, h, rows*out, 0, dw, s.in*out, s.e)
				}
				b.ReportMetric(flops*float64(b.N)/b.Elapsed().Seconds()/1e9, "GFLOP/s")
			})
		}
	}
}

// BenchmarkExpertGemmStrategies compares ways to run the forward expert
// batch with two threads: one C loop over the entries in one goroutine, and
// the entries spread over the pool (what GemmStridedBatched does).
func BenchmarkExpertGemmStrategies(b *testing.B) {
	const rows, out = 1024, 64
	c := NewCPU(2)
	for _, s := range expertShapes {
		x := benchTensor(c, rows, s.in)
		w := benchTensor(c, s.e, s.in, out)
		h := benchTensor(c, s.e, rows, out)
		flops := 2 * float64(rows*s.in*out*s.e)
		report := func(b *testing.B, start time.Duration) {
			b.ReportMetric(flops*float64(b.N)/b.Elapsed().Seconds()/1e9, "GFLOP/s")
			b.ReportMetric(float64(cpuTime()-start)/float64(b.N), "cpu-ns/op")
		}
		name := fmt.Sprintf("in%d_e%d", s.in, s.e)
		b.Run("cloop/"+name, func(b *testing.B) {
			start := cpuTime()
			for b.Loop() {
				sgemmBatch(false, false, rows, out, s.in, 1, x.F32, 0, s.in, w.F32, s.in*out, out, 0, h.F32, rows*out, out, s.e)
			}
			report(b, start)
		})
		b.Run("pool/"+name, func(b *testing.B) {
			start := cpuTime()
			for b.Loop() {
				c.gemm(false, false, rows, out, s.in, 1, x.F32, 0, s.in, w.F32, s.in*out, out, 0, h.F32, rows*out, out, s.e)
			}
			report(b, start)
		})
	}
}

// BenchmarkEmbedding covers gather, backward and the sparse Adam update on
// a 200k-row table (like tenrec's item_id) with batches of 1024 rows whose
// ids are drawn afresh for each of 16 batches used in turn, so that table
// rows come from memory as in training, not from a warm cache. With
// MTLRANK_BIG_BENCH set it also runs a 1e7-row table, whose rows and Adam
// moments (up to 5.8 GB) come from DRAM rather than the last-level cache.
func BenchmarkEmbedding(b *testing.B) {
	const rows, sets = 1024, 16
	for _, tableRows := range []int{200_000, 10_000_000} {
		for _, dim := range []int{16, 48} {
			for _, list := range []bool{false, true} {
				name := fmt.Sprintf("rows%d/dim%d_list%v", tableRows, dim, list)
				if tableRows > 1_000_000 && os.Getenv("MTLRANK_BIG_BENCH") == "" {
					b.Run(name, func(b *testing.B) { b.Skip("set MTLRANK_BIG_BENCH=1 to allocate 1e7-row tables") })
					continue
				}
				benchEmbedding(b, name, rows, tableRows, sets, dim, list)
			}
		}
	}
}

func benchEmbedding(b *testing.B, name string, rows, tableRows, sets, dim int, list bool) {
	c := NewCPU(2)
	table := benchTensor(c, tableRows, dim)
	n := rows
	if list {
		n = 4 * rows
	}
	rng := rand.New(rand.NewPCG(3, 4))
	ids := make([]*Tensor, sets)
	grads := make([]*SparseGrad, sets)
	var offs *Tensor
	if list {
		offs = c.Alloc(Int32, rows+1)
		for i := range offs.I32 {
			offs.I32[i] = int32(4 * i)
		}
	}
	out := benchTensor(c, rows, 100)
	for s := range ids {
		ids[s] = c.Alloc(Int32, n)
		for i := range ids[s].I32 {
			ids[s].I32[i] = int32(rng.IntN(tableRows))
		}
		grads[s] = &SparseGrad{Rows: c.Alloc(Int32, n), Values: c.Alloc(Float32, n, dim)}
		c.EmbeddingBackward(grads[s], out, 8, ids[s], offs, Mean, tableRows)
	}
	m, v := c.Alloc(Float32, tableRows, dim), c.Alloc(Float32, tableRows, dim)
	// written once, as in training, so that no page fault is timed
	c.Fill(m, 0)
	c.Fill(v, 0)
	defer c.Free(m)
	defer c.Free(v)
	defer c.Free(table)
	k := 0
	b.Run("gather/"+name, func(b *testing.B) {
		loop(b, func() {
			k = (k + 1) % sets
			if err := c.EmbeddingGather(out, 8, table, ids[k], offs, Mean); err != nil {
				b.Fatal(err)
			}
		})
	})
	g := &SparseGrad{Rows: c.Alloc(Int32, n), Values: c.Alloc(Float32, n, dim)}
	b.Run("backward/"+name, func(b *testing.B) {
		loop(b, func() {
			k = (k + 1) % sets
			c.EmbeddingBackward(g, out, 8, ids[k], offs, Mean, tableRows)
		})
	})
	b.Run("sparseAdam/"+name, func(b *testing.B) {
		p := AdamParams{LR: 1e-3, Beta1: 0.9, Beta2: 0.999, Eps: 1e-7, Step: 1}
		loop(b, func() {
			k = (k + 1) % sets
			c.SparseAdam(table, m, v, grads[k], p)
		})
	})

}

// BenchmarkTableJobs times what the table jobs of a tenrec training step
// do after the shards: the sparse gradient (EmbeddingBackward) and the
// lazy Adam update (SparseAdam) of user_id (1e5 x 40) and item_id
// (1.8e5 x 48), one table per goroutine, both at once (RunShards, as the
// step's jobs run, so each call runs in its goroutine), batches of 1024
// uniform ids drawn afresh for each of 16 batches used in turn, the Adam
// moments written once beforehand (no page fault timed). The rows and
// moments (about 150 MB) do not fit the caches: this is the step's memory
// latency part.
func BenchmarkTableJobs(b *testing.B) {
	const rows, sets = 1024, 16
	c := NewCPU(2)
	type tab struct {
		table, m, v *Tensor
		ids         []*Tensor
		g           *SparseGrad
	}
	rng := rand.New(rand.NewPCG(5, 6))
	var tabs []tab
	for _, shape := range [][2]int{{180_000, 48}, {100_000, 40}} {
		t := tab{table: benchTensor(c, shape[0], shape[1]), m: c.Alloc(Float32, shape[0], shape[1]),
			v: c.Alloc(Float32, shape[0], shape[1])}
		c.Fill(t.m, 0)
		c.Fill(t.v, 0)
		for range sets {
			ids := c.Alloc(Int32, rows)
			for i := range ids.I32 {
				ids.I32[i] = int32(rng.IntN(shape[0]))
			}
			t.ids = append(t.ids, ids)
		}
		t.g = &SparseGrad{Rows: c.Alloc(Int32, rows), Values: c.Alloc(Float32, rows, shape[1])}
		tabs = append(tabs, t)
	}
	dout := benchTensor(c, rows, 100)
	p := AdamParams{LR: 1e-5, Beta1: 0.9, Beta2: 0.999, Eps: 1e-7, Step: 1}
	k := 0
	job := func(j int) {
		t := tabs[j]
		c.EmbeddingBackward(t.g, dout, 8, t.ids[k], nil, Sum, t.table.Rows())
		c.SparseAdam(t.table, t.m, t.v, t.g, p)
	}
	loop(b, func() {
		k = (k + 1) % sets
		c.RunShards(len(tabs), job)
	})
}

// BenchmarkElementwise covers the per-step element-wise ops at the size of
// four experts' activations (4 x 1024 x 64).
func BenchmarkElementwise(b *testing.B) {
	const e, rows, d = 4, 1024, 64
	for _, th := range []int{1, 2} {
		c := NewCPU(th)
		x, y := benchTensor(c, e, rows, d), benchTensor(c, e, rows, d)
		bias := benchTensor(c, e, d)
		xShard, yShard, biasShard := x.View(0, 256, d), y.View(0, 256, d), bias.View(0, d)
		w := benchTensor(c, rows, e)
		out := c.Alloc(Float32, rows, d)
		experts := make([]*Tensor, e)
		dex := make([]*Tensor, e)
		for i := range experts {
			experts[i] = x.View(i*rows*d, rows, d)
			dex[i] = y.View(i*rows*d, rows, d)
		}
		m, v := c.Alloc(Float32, e, rows, d), c.Alloc(Float32, e, rows, d)
		loss, z, lab, dz := c.Alloc(Float32, 1), benchTensor(c, rows), benchTensor(c, rows), c.Alloc(Float32, rows)
		sfx := fmt.Sprintf("/threads%d", th)
		ops := []struct {
			name string
			f    func()
		}{
			{"BiasActReLU", func() { c.BiasAct(x, bias, e, ReLU) }},
			{"ActBackward", func() { c.ActBackward(y, x, ReLU) }},
			{"BiasGrad", func() { c.BiasGrad(y, bias, e, false) }},
			{"ActBiasGradReLU", func() { c.ActBiasGrad(y, x, ReLU, bias, e, false) }},
			// a Dense layer of a 256-row training shard, as a step runs it
			{"ActBiasGradReLUShard", func() { c.ActBiasGrad(yShard, xShard, ReLU, biasShard, 1, false) }},
			{"Dropout", func() { c.Dropout(x, y, 0.1, 1) }},
			{"Axpy", func() { c.Axpy(0.5, x, y) }},
			{"GateCombine", func() { c.GateCombine(out, w, experts) }},
			{"GateCombineBackward", func() { c.GateCombineBackward(out, w, experts, w, dex) }},
			{"Adam", func() { c.Adam(x, y, m, v, AdamParams{LR: 1e-3, Beta1: 0.9, Beta2: 0.999, Eps: 1e-7, Step: 3}) }},
			{"BCEWithLogits1024", func() { c.BCEWithLogits(loss, dz, z, lab, nil, 1) }},
		}
		for _, op := range ops {
			b.Run(op.name+sfx, func(b *testing.B) { loop(b, op.f) })
		}
	}
}

// BenchmarkModelGemm covers the 2-D GEMMs of the tenrec models at batch
// 1024 (input width 112): gate and tower Dense layers, forward (x*W),
// weight gradient (x^T*dy) and input gradient (dy*W^T).
func BenchmarkModelGemm(b *testing.B) {
	const rows = 1024
	shapes := []struct{ in, out int }{{112, 64}, {64, 4}, {64, 64}, {64, 1}, {112, 128}, {32, 1}}
	for _, th := range []int{1, 2} {
		c := NewCPU(th)
		for _, s := range shapes {
			x, w, y := benchTensor(c, rows, s.in), benchTensor(c, s.in, s.out), benchTensor(c, rows, s.out)
			dw, dx := c.Alloc(Float32, s.in, s.out), c.Alloc(Float32, rows, s.in)
			flops := 2 * float64(rows*s.in*s.out)
			name := fmt.Sprintf("%dx%d/threads%d", s.in, s.out, th)
			for _, op := range []struct {
				name string
				f    func()
			}{
				{"fwd", func() { c.Gemm(false, false, 1, x, w, 0, y) }},
				{"dW", func() { c.Gemm(true, false, 1, x, y, 0, dw) }},
				{"dX", func() { c.Gemm(false, true, 1, y, w, 0, dx) }},
			} {
				b.Run(op.name+"/"+name, func(b *testing.B) {
					loop(b, op.f)
					b.ReportMetric(flops*float64(b.N)/b.Elapsed().Seconds()/1e9, "GFLOP/s")
				})
			}
		}
	}
}

// BenchmarkGemmEngines compares, single-threaded, OpenBLAS and the
// small-GEMM kernels on the models' shapes at shard sizes (forward x*W,
// input gradient dy*W^T, weight gradient x^T*dy), heads and gate logits,
// and a few larger shapes that decide where smallGemm hands over to BLAS.
func BenchmarkGemmEngines(b *testing.B) {
	if gemmLevel == 0 {
		b.Skip("no AVX2/FMA")
	}
	type shape struct {
		ta, tb  bool
		m, n, k int
	}
	var shapes []shape
	for _, rows := range []int{256, 512, 1024} {
		for _, l := range []struct{ in, out int }{{112, 64}, {64, 64}, {64, 4}, {64, 1}, {112, 128}, {128, 64}} {
			shapes = append(shapes, shape{false, false, rows, l.out, l.in}, shape{false, true, rows, l.in, l.out},
				shape{true, false, l.in, l.out, rows})
		}
	}
	shapes = append(shapes, shape{false, false, 1024, 512, 512}, shape{false, false, 1024, 1024, 256},
		shape{false, false, 512, 256, 1024}, shape{true, false, 512, 512, 4096}, shape{false, true, 2048, 128, 128})
	rng := rand.New(rand.NewPCG(1, 2))
	for _, s := range shapes {
		a, bb, c, lda, ldb := gemmOperands(rng, s.ta, s.tb, s.m, s.n, s.k)
		flops := 2 * float64(s.m*s.n*s.k)
		name := fmt.Sprintf("ta%v_tb%v_%dx%dx%d", s.ta, s.tb, s.m, s.n, s.k)
		b.Run("blas/"+name, func(b *testing.B) {
			for b.Loop() {
				sgemm(s.ta, s.tb, s.m, s.n, s.k, 1, a, lda, bb, ldb, 0, c, s.n)
			}
			b.ReportMetric(flops*float64(b.N)/b.Elapsed().Seconds()/1e9, "GFLOP/s")
		})
		b.Run("small/"+name, func(b *testing.B) {
			for b.Loop() {
				if !cSgemm(s.ta, s.tb, s.m, s.n, s.k, 1, a, lda, bb, ldb, 0, c, s.n, nil, false) {
					b.Skip("shape not handled")
				}
			}
			b.ReportMetric(flops*float64(b.N)/b.Elapsed().Seconds()/1e9, "GFLOP/s")
		})
	}
}

// stepLayers are the (in, out) kernels of the tenrec models in their
// default configuration (mlp body 112-128-64-32, expert and gate MLPs
// 112->64 and 64->64, gate logits over 3, 4 or 7 experts, towers 32->64 or
// 64->64, heads 64->1).
var stepLayers = []struct{ in, out int }{
	{112, 128}, {128, 64}, {64, 32}, {32, 64}, {112, 64}, {64, 64}, {64, 1}, {64, 3}, {64, 4}, {64, 7},
}

// BenchmarkStepGemmEngines compares, single-threaded and at the training
// step's shard size (256 rows, mtl.shardRows), the engines on every GEMM a
// training step runs per layer: the forward x*W, the data gradient dy*W^T
// and the weight gradient x^T*dy (k = the shard's rows). "blas" is
// OpenBLAS, "kernels" the device's kernels at the machine's level,
// "kernels-avx2" the same kernels capped at AVX2+FMA (the code path of
// CPUs without AVX-512), "device" whatever the device routes the shape to.
func BenchmarkStepGemmEngines(b *testing.B) {
	if gemmLevel == 0 {
		b.Skip("no AVX2/FMA")
	}
	const rows = 256
	rng := rand.New(rand.NewPCG(3, 4))
	for _, l := range stepLayers {
		for _, s := range []struct {
			op      string
			ta, tb  bool
			m, n, k int
		}{
			{"fwd", false, false, rows, l.out, l.in},
			{"dX", false, true, rows, l.in, l.out},
			{"dW", true, false, l.in, l.out, rows},
		} {
			a, bb, c, lda, ldb := gemmOperands(rng, s.ta, s.tb, s.m, s.n, s.k)
			flops := 2 * float64(s.m*s.n*s.k)
			name := fmt.Sprintf("%s/%dx%d", s.op, l.in, l.out)
			// the CPU-time rate is the steadier figure on a loaded machine
			report := func(b *testing.B, cpu0 time.Duration) {
				b.ReportMetric(flops*float64(b.N)/b.Elapsed().Seconds()/1e9, "GFLOP/s")
				b.ReportMetric(flops*float64(b.N)/(cpuTime()-cpu0).Seconds()/1e9, "cpu-GFLOP/s")
			}
			b.Run(name+"/blas", func(b *testing.B) {
				cpu0 := cpuTime()
				for b.Loop() {
					sgemm(s.ta, s.tb, s.m, s.n, s.k, 1, a, lda, bb, ldb, 0, c, s.n)
				}
				report(b, cpu0)
			})
			engines := map[string]int{"kernels": gemmLevel}
			if gemmLevel == 2 {
				engines["kernels-avx2"] = 1
			}
			for _, eng := range []string{"kernels", "kernels-avx2"} {
				lv, ok := engines[eng]
				if !ok {
					continue
				}
				b.Run(name+"/"+eng, func(b *testing.B) {
					defer setGemmLevel(setGemmLevel(lv))
					cpu0 := cpuTime()
					for b.Loop() {
						if !cSgemm(s.ta, s.tb, s.m, s.n, s.k, 1, a, lda, bb, ldb, 0, c, s.n, nil, false) {
							b.Skip("shape not handled")
						}
					}
					report(b, cpu0)
				})
			}
			dev := NewCPU(1)
			b.Run(name+"/device", func(b *testing.B) {
				cpu0 := cpuTime()
				for b.Loop() {
					dev.gemm(s.ta, s.tb, s.m, s.n, s.k, 1, a, 0, lda, bb, 0, ldb, 0, c, 0, s.n, 1)
				}
				report(b, cpu0)
			})
		}
	}
}

// gemmOperands returns random row-major operands of C[m, n] = op(A) op(B)
// and their leading dimensions.
func gemmOperands(rng *rand.Rand, ta, tb bool, m, n, k int) (a, b, c []float32, lda, ldb int) {
	lda, ldb = k, n
	if ta {
		lda = m
	}
	if tb {
		ldb = k
	}
	return randF32(rng, m*k, -1, 1), randF32(rng, k*n, -1, 1), make([]float32, m*n), lda, ldb
}

// BenchmarkGemmActBiasGrad compares a layer's data gradient followed by the
// ReLU backward and bias gradient pass of the layer below (unfused) with
// GemmActBiasGrad (fused) at a 256-row training shard's shapes: the shared
// MLP's 64 -> 128 and 32 -> 64 layers, a tower's head (k = 1) and a gate's
// logits over its hidden layer (4 experts).
func BenchmarkGemmActBiasGrad(b *testing.B) {
	c := NewCPU(1)
	for _, s := range []struct{ m, n, k int }{{256, 128, 64}, {256, 64, 32}, {256, 64, 1}, {256, 64, 4}} {
		dy, w := benchTensor(c, s.m, s.k), benchTensor(c, s.n, s.k)
		y, dx, db := benchTensor(c, s.m, s.n), c.Alloc(Float32, s.m, s.n), c.Alloc(Float32, s.n)
		name := fmt.Sprintf("m%d_n%d_k%d", s.m, s.n, s.k)
		b.Run(name+"/unfused", func(b *testing.B) {
			for b.Loop() {
				c.Gemm(false, true, 1, dy, w, 0, dx)
				c.ActBiasGrad(dx, y, ReLU, db, 1, false)
			}
		})
		b.Run(name+"/fused", func(b *testing.B) {
			for b.Loop() {
				c.GemmActBiasGrad(dy, w, y, ReLU, dx, db)
			}
		})
	}
}

// BenchmarkGemmSum is the input gradient of layers sharing an input at a
// shard's size, single-threaded: the chain of GEMMs (each dy_s W_s^T added
// into dx) against one K-segmented GEMM (GemmSum). Shapes: MMoE's input
// (5 gate layers and 4 experts, 64 wide, into the 112-wide input), CGC's
// level 0 (6 gates and 7 experts), mlp's 5 towers into the bottom's
// 32-wide output, and a PLE upper level's group (one gate, 2 experts).
func BenchmarkGemmSum(b *testing.B) {
	c := NewCPU(1)
	const rows = 256
	for _, s := range []struct {
		name     string
		terms, n int
	}{{"mmoe_9x64_n112", 9, 112}, {"cgc_13x64_n112", 13, 112}, {"mlp_5x64_n32", 5, 32}, {"ple_3x64_n64", 3, 64}} {
		var dys, ws []*Tensor
		for range s.terms {
			dys, ws = append(dys, benchTensor(c, rows, 64)), append(ws, benchTensor(c, s.n, 64))
		}
		dx := c.Alloc(Float32, rows, s.n)
		flops := 2 * float64(rows*s.n*64*s.terms)
		for _, op := range []struct {
			name string
			f    func()
		}{
			{"chain", func() { chainGemmSum(c, dys, ws, false, dx) }},
			{"sum", func() { c.GemmSum(dys, ws, false, dx) }},
		} {
			b.Run(s.name+"/"+op.name, func(b *testing.B) {
				loop(b, op.f)
				b.ReportMetric(flops*float64(b.N)/b.Elapsed().Seconds()/1e9, "GFLOP/s")
			})
		}
	}
}
