//go:build cuda

package kernels_test

import (
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/mtlrank/mtlrank/kernels"
)

// zipfIDs returns n ids in [0, rows) with a Zipf(1.1) head, like user and
// item ids, and the number of distinct ids.
func zipfIDs(n, rows int, seed uint64) ([]int32, int) {
	rng := rand.New(rand.NewPCG(seed, 1))
	z := rand.NewZipf(rng, 1.1, 1, uint64(rows-1))
	ids := make([]int32, n)
	seen := map[int32]bool{}
	for i := range ids {
		// Scatter the hot ids over the table so that rows are not adjacent.
		ids[i] = int32((z.Uint64() * 2654435761) % uint64(rows))
		seen[ids[i]] = true
	}
	return ids, len(seen)
}

// BenchmarkCUDAEmbeddingUpdate measures the fused embedding backward + lazy
// Adam on a 10M-row table. GB/s counts the bytes that must move: for every
// unique row, the table row and both moments read and written (6 rows), plus
// the batch's gradient rows and ids read once. H100 SXM peak is ~3.35 TB/s.
func BenchmarkCUDAEmbeddingUpdate(b *testing.B) {
	d := newCUDA(b)
	const rows = 10_000_000
	for _, dim := range []int{32, 128} {
		for _, batch := range []int{65536, 1 << 20} {
			b.Run(fmt.Sprintf("dim%d_ids%d", dim, batch), func(b *testing.B) {
				table := d.Alloc(kernels.Float32, rows, dim)
				m := d.Alloc(kernels.Float32, rows, dim)
				v := d.Alloc(kernels.Float32, rows, dim)
				dout := d.Alloc(kernels.Float32, batch, dim)
				ids := d.Alloc(kernels.Int32, batch)
				defer func() {
					for _, t := range []*kernels.Tensor{table, m, v, dout, ids} {
						t.Release()
					}
				}()
				h, unique := zipfIDs(batch, rows, uint64(dim))
				d.CopyFromHostI32(ids, h)
				d.Fill(dout, 1e-3)
				srcs := []kernels.EmbeddingSource{{Dout: dout, IDs: ids}}
				p := kernels.AdamParams{LR: 1e-3, Beta1: 0.9, Beta2: 0.999, Eps: 1e-7, Step: 1}
				d.EmbeddingUpdateAdam(table, m, v, srcs, p) // warm-up: scratch sizing
				if err := d.Sync(); err != nil {
					b.Fatal(err)
				}
				bytes := float64(unique)*float64(dim)*4*6 + float64(batch)*float64(dim)*4 + float64(batch)*4
				b.ResetTimer()
				for i := 0; i < b.N; i++ {
					p.Step = i + 2
					d.EmbeddingUpdateAdam(table, m, v, srcs, p)
				}
				if err := d.Sync(); err != nil {
					b.Fatal(err)
				}
				b.StopTimer()
				sec := b.Elapsed().Seconds() / float64(b.N)
				b.ReportMetric(bytes/sec/1e9, "GB/s")
				b.ReportMetric(float64(unique), "unique_rows")
			})
		}
	}
}

// BenchmarkCUDAExpertGemm is the first expert layer of MMoE/PLE at batch
// 65536: E experts, each [B, in] x [in, 64], as one strided-batched GEMM
// with the input broadcast (stride 0), with and without the cuBLASLt
// bias + ReLU epilogue.
func BenchmarkCUDAExpertGemm(b *testing.B) {
	d := newCUDA(b)
	const B, in, out = 65536, 160, 64
	for _, e := range []int{4, 12} {
		for _, fused := range []bool{false, true} {
			b.Run(fmt.Sprintf("E%d_fused%v", e, fused), func(b *testing.B) {
				x := d.Alloc(kernels.Float32, B, in)
				w := d.Alloc(kernels.Float32, e, in, out)
				bias := d.Alloc(kernels.Float32, e, out)
				y := d.Alloc(kernels.Float32, e, B, out)
				defer func() {
					for _, t := range []*kernels.Tensor{x, w, bias, y} {
						t.Release()
					}
				}()
				d.Fill(x, 0.5)
				d.Fill(w, 0.01)
				run := func() {
					if fused {
						d.GemmBiasActBatched(false, false, B, out, in, x, 0, w, in*out, bias, out, y, B*out, e, kernels.ReLU)
						return
					}
					d.GemmStridedBatched(false, false, B, out, in, 1, x, 0, w, in*out, 0, y, B*out, e)
					d.BiasAct(y, bias, e, kernels.ReLU)
				}
				run()
				if err := d.Sync(); err != nil {
					b.Fatal(err)
				}
				b.ResetTimer()
				for i := 0; i < b.N; i++ {
					run()
				}
				if err := d.Sync(); err != nil {
					b.Fatal(err)
				}
				b.StopTimer()
				sec := b.Elapsed().Seconds() / float64(b.N)
				b.ReportMetric(2*float64(B)*in*out*float64(e)/sec/1e12, "TFLOP/s")
			})
		}
	}
}

// BenchmarkCUDAGate is one MMoE gate at batch 65536 (E experts of width 64)
// forward and backward, fused (two kernels) against the four unfused ops.
// GB/s counts the bytes the fused kernels must move: logits, weights and
// dlogits ([B, E] each), out and dout ([B, 64]), the experts read twice and
// their gradients read and written.
func BenchmarkCUDAGate(b *testing.B) {
	d := newCUDA(b)
	const B, D = 65536, 64
	for _, e := range []int{4, 8} {
		for _, fused := range []bool{false, true} {
			b.Run(fmt.Sprintf("E%d_fused%v", e, fused), func(b *testing.B) {
				var owned, xs, dxs []*kernels.Tensor
				alloc := func(shape ...int) *kernels.Tensor {
					t := d.Alloc(kernels.Float32, shape...)
					owned = append(owned, t)
					return t
				}
				defer func() {
					for _, t := range owned {
						t.Release()
					}
				}()
				for range e {
					xs, dxs = append(xs, alloc(B, D)), append(dxs, alloc(B, D))
				}
				logits, w, dw, dl := alloc(B, e), alloc(B, e), alloc(B, e), alloc(B, e)
				out, dout := alloc(B, D), alloc(B, D)
				d.Fill(logits, 0.1)
				d.Fill(dout, 1e-3)
				run := func() {
					if fused {
						d.GateForward(out, w, logits, xs, 1)
						d.GateBackward(dl, dout, w, xs, dxs, 1)
						return
					}
					d.SoftmaxRows(w, logits, 1)
					d.GateCombine(out, w, xs)
					d.GateCombineBackward(dout, w, xs, dw, dxs)
					d.SoftmaxBackward(dl, dw, w, 1)
				}
				run()
				if err := d.Sync(); err != nil {
					b.Fatal(err)
				}
				b.ResetTimer()
				for i := 0; i < b.N; i++ {
					run()
				}
				if err := d.Sync(); err != nil {
					b.Fatal(err)
				}
				b.StopTimer()
				sec := b.Elapsed().Seconds() / float64(b.N)
				bytes := 4 * float64(B) * (3*float64(e) + 2*D + 4*float64(e)*D)
				b.ReportMetric(bytes/sec/1e9, "GB/s")
			})
		}
	}
}

// BenchmarkCUDAMultiTaskLoss is the loss of five tasks (four binary, one
// regression, with a weight column, a positive-class weight and a sample
// space) at batch 65536: one fused launch against the per-task ops the
// models queue (weights, loss, scaling: about 25 launches).
func BenchmarkCUDAMultiTaskLoss(b *testing.B) {
	d := newCUDA(b)
	const B, T = 65536, 5
	for _, fused := range []bool{false, true} {
		b.Run(fmt.Sprintf("fused%v", fused), func(b *testing.B) {
			var owned []*kernels.Tensor
			alloc := func(shape ...int) *kernels.Tensor {
				t := d.Alloc(kernels.Float32, shape...)
				owned = append(owned, t)
				return t
			}
			defer func() {
				for _, t := range owned {
					t.Release()
				}
			}()
			wcol, space := alloc(B, 1), alloc(B, 1)
			d.Fill(wcol, 1)
			d.Fill(space, 1)
			var tasks []kernels.LossTask
			for t := range T {
				k := kernels.LossTask{Kind: kernels.LossBCE, Z: alloc(B, 1), DZ: alloc(B, 1), Y: alloc(B, 1), PosWeight: 1, Lambda: 1}
				switch t {
				case 0:
					k.Weight = wcol
				case 1:
					k.PosWeight, k.Space = 3, space
				case 4:
					k.Kind, k.Lambda = kernels.LossMSE, 0.3
				}
				tasks = append(tasks, k)
			}
			taskLoss, total := alloc(T), alloc(1)
			scratch := alloc(kernels.MultiTaskLossScratch(B))
			var ld kernels.Device = d
			if !fused {
				ld = unfusedLoss{d} // hides the fusion: the composed path
			}
			run := func() {
				d.Zero(taskLoss)
				d.Zero(total)
				kernels.MultiTaskLoss(ld, taskLoss, total, tasks, 1.0/B, scratch)
			}
			run()
			if err := d.Sync(); err != nil {
				b.Fatal(err)
			}
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				run()
			}
			if err := d.Sync(); err != nil {
				b.Fatal(err)
			}
		})
	}
}

// unfusedLoss is a Device without the MultiTaskLosser capability.
type unfusedLoss struct{ kernels.Device }
