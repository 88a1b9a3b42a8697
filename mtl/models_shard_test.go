package mtl

import (
	"fmt"
	"math"
	"strings"
	"testing"

	"github.com/mtlrank/mtlrank/kernels"
	"github.com/mtlrank/mtlrank/layers"
	"github.com/mtlrank/mtlrank/loader"
	"github.com/mtlrank/mtlrank/mtl/internal/step"
	"github.com/stretchr/testify/require"
)

// plainDev hides the CPU device's optional interfaces (Sharder, FusedGemm,
// FusedBiasGrad): a model on it runs every batch as one shard through the
// unfused ops, the reference for the sharded path.
type plainDev struct{ kernels.Device }

// A batch cut into shards gives the loss, the gradients (dense and sparse)
// and the predictions of the same batch run whole, up to float32 rounding
// of the shard sums.
func TestShardedMatchesWholeBatch(t *testing.T) {
	const rows = 3*step.ShardRows - 17 // three shards of unequal sizes
	require.Equal(t, 3, step.ShardCount(rows))
	for _, model := range []string{"mlp", "mmoe", "cgc", "ple", "dcn", "dlrm", "deepfm", "wide_n_deep"} {
		t.Run(model, func(t *testing.T) {
			cfg := gradConfig(model)
			whole, err := NewModel(gradSchema(), cfg, plainDev{kernels.NewCPU(1)}, rows)
			require.NoError(t, err)
			defer whole.Release()
			sharded, err := NewModel(gradSchema(), cfg, kernels.NewCPU(2), rows)
			require.NoError(t, err)
			defer sharded.Release()
			b := gradBatch(layers.NewRNG(41), rows)

			for _, m := range []*Model{whole, sharded} {
				require.NoError(t, m.exec.Train().LossPass(b, layers.Mode{}, true))
			}
			require.Equal(t, 1, whole.exec.Train().Shards())
			require.Equal(t, 3, sharded.exec.Train().Shards())
			require.InDelta(t, whole.exec.Train().Stats().Loss, sharded.exec.Train().Stats().Loss, 1e-6*math.Abs(whole.exec.Train().Stats().Loss))
			for i := range whole.exec.Train().Stats().TaskLoss {
				require.InDelta(t, whole.exec.Train().Stats().TaskLoss[i], sharded.exec.Train().Stats().TaskLoss[i], 1e-6*math.Abs(whole.exec.Train().Stats().TaskLoss[i])+1e-9)
			}
			for i, p := range whole.params {
				var a, c []float32
				if p.Sparse {
					a, _ = sparseToDense(whole.exec.Train().Input().SparseGrad(i), whole.input.Tables[i].Rows, whole.input.Tables[i].Dim)
					c, _ = sparseToDense(sharded.exec.Train().Input().SparseGrad(i), whole.input.Tables[i].Rows, whole.input.Tables[i].Dim)
				} else {
					a, c = hostT(whole.exec.Train().Grad(i)), hostT(sharded.exec.Train().Grad(i))
				}
				scale := 0.0
				for _, v := range a {
					scale = math.Max(scale, math.Abs(float64(v)))
				}
				for j := range a {
					require.InDelta(t, a[j], c[j], 1e-5*scale+1e-7, "%s[%d]", p.Name, j)
				}
			}

			out := func(m *Model) [][]float32 {
				o := make([][]float32, len(m.tasks))
				for i := range o {
					o[i] = make([]float32, rows)
				}
				p := m.NewPredictor(rows)
				defer p.Release()
				require.NoError(t, p.Predict(b, o))
				return o
			}
			ow, os := out(whole), out(sharded)
			for ti := range ow {
				for r := range ow[ti] {
					require.InDelta(t, ow[ti][r], os[ti][r], 2e-6*(1+math.Abs(float64(ow[ti][r]))), "task %d row %d", ti, r)
				}
			}
			gw, gs := whole.GateWeights(), sharded.GateWeights()
			require.Equal(t, len(gw), len(gs))
			for name, w := range gw {
				require.InDeltaSlice(t, w, gs[name], 1e-6, name)
			}
		})
	}
}

// Sharded training does not depend on the number of threads: the cut
// depends only on the batch size and every sum runs in a fixed order.
func TestShardedTrainingThreadIndependent(t *testing.T) {
	rng := layers.NewRNG(42)
	batches := []*loader.Batch{gradBatch(rng, 2*step.ShardRows+5), gradBatch(rng, 4*step.ShardRows), gradBatch(rng, 7)}
	for _, model := range []string{"mlp", "ple"} {
		t.Run(model, func(t *testing.T) {
			run := func(threads int) ([]float64, [][]float32) {
				cfg := detConfig(model) // dropout and LR decay on
				m, err := NewModel(gradSchema(), cfg, kernels.NewCPU(threads), 4*step.ShardRows)
				require.NoError(t, err)
				defer m.Release()
				losses := trainLosses(t, m, batches, 6)
				var params [][]float32
				for _, p := range m.Params() {
					params = append(params, hostT(p.Tensor))
				}
				return losses, params
			}
			l1, p1 := run(1)
			for _, th := range []int{2, 3} {
				l, p := run(th)
				require.Equal(t, l1, l, fmt.Sprintf("losses with %d threads", th))
				require.Equal(t, p1, p, fmt.Sprintf("parameters with %d threads", th))
			}
		})
	}
}

// rowIndependent reports whether every forward GEMM of m (the kernels of its
// Dense layers and experts) runs on kernels whose result for a row does not
// depend on the number of rows (kernels.RowIndependentGemm).
func rowIndependent(m *Model) bool {
	for _, p := range m.Params() {
		if !strings.HasSuffix(p.Name, "/kernel") {
			continue
		}
		sh := p.Tensor.Shape
		if !kernels.RowIndependentGemm(sh[len(sh)-1], sh[len(sh)-2]) {
			return false
		}
	}
	return true
}

// TestPredictThreadIndependent: inference cuts small batches into one shard
// per thread (step.PredictShardCount), and the predictions are the same bits
// whatever the number of threads and whatever else is in the batch: every
// row is computed on its own, by kernels whose result for a row does not
// depend on the number of rows (TestGemmRowIndependentOfRows). That holds
// where the small-GEMM kernels take every layer (AVX2 and FMA, layers of
// the models' usual sizes); otherwise OpenBLAS's kernel for the CPU decides,
// and the scores are only required to agree within float32 rounding.
func TestPredictThreadIndependent(t *testing.T) {
	const maxRows = 300
	rng := layers.NewRNG(7)
	full := gradBatch(rng, maxRows)
	sizes := []int{1, 5, 31, 32, 33, 64, 100, 128, 255, 257, maxRows}
	for _, model := range []string{"mlp", "mmoe", "ple"} {
		t.Run(model, func(t *testing.T) {
			predict := func(threads int) map[int][][]float32 {
				m, err := NewModel(gradSchema(), detConfig(model), kernels.NewCPU(threads), 8)
				require.NoError(t, err)
				defer m.Release()
				p := m.NewPredictor(maxRows)
				defer p.Release()
				got := map[int][][]float32{}
				for _, rows := range sizes {
					out := make([][]float32, len(m.Tasks()))
					for i := range out {
						out[i] = make([]float32, rows)
					}
					require.NoError(t, p.Predict(headBatch(full, rows), out))
					if threads > 1 && rows >= 2*step.PredictShardMin {
						// split over the threads even below the training cut's 256 rows
						require.Greater(t, p.ws.Shards(), 1, "%d rows on %d threads", rows, threads)
						require.LessOrEqual(t, p.ws.Shards(), max(threads, step.ShardCount(rows)), "%d rows on %d threads", rows, threads)
					}
					got[rows] = out
				}
				return got
			}
			m, err := NewModel(gradSchema(), detConfig(model), kernels.NewCPU(1), 8)
			require.NoError(t, err)
			exact := rowIndependent(m)
			m.Release()
			// the test model's layers are thin: on the small kernels wherever they exist
			require.Equal(t, kernels.RowIndependentGemm(16, 16), exact)
			same := func(want, got []float32, format string, args ...any) {
				t.Helper()
				if exact {
					require.Equal(t, want, got, append([]any{format}, args...)...)
					return
				}
				for i := range want {
					require.InDelta(t, want[i], got[i], 1e-5, append([]any{format + " [%d]"}, append(args, i)...)...)
				}
			}
			want := predict(1)
			// the first rows score the same in every batch they belong to
			for _, rows := range sizes {
				for task := range want[rows] {
					same(want[1][task][:1], want[rows][task][:1], "row 0 in a batch of %d", rows)
					if rows >= 31 {
						same(want[31][task], want[rows][task][:31], "rows 0-30 in a batch of %d", rows)
					}
				}
			}
			for _, th := range []int{2, 3} {
				got := predict(th)
				for _, rows := range sizes {
					for task := range want[rows] {
						same(want[rows][task], got[rows][task], "%d threads, %d rows, task %d", th, rows, task)
					}
				}
			}
		})
	}
}

// headBatch is a batch of the first rows rows of b, sharing its buffers.
func headBatch(b *loader.Batch, rows int) *loader.Batch {
	cols := map[string]*loader.Column{}
	for name, c := range b.Columns {
		h := &loader.Column{Name: c.Name}
		switch {
		case c.Offsets != nil:
			h.I32, h.I64, h.Offsets = c.I32, c.I64, c.Offsets[:rows+1]
		case c.I32 != nil:
			h.I32 = c.I32[:rows]
		case c.I64 != nil:
			h.I64 = c.I64[:rows]
		default:
			h.F32 = c.F32[:rows]
		}
		cols[name] = h
	}
	return loader.NewBatch(rows, cols, "head", nil)
}

// The fused step of a sharded device (each job finishes its gradients and
// applies its update at once) gives the bits of the two-phase step (every
// gradient first, then every update): losses, parameters, optimizer state
// and the gradients the step leaves, for every optimizer.
func TestFusedStepMatchesTwoPhases(t *testing.T) {
	rng := layers.NewRNG(43)
	batches := []*loader.Batch{gradBatch(rng, 3*step.ShardRows+9), gradBatch(rng, step.ShardRows), gradBatch(rng, 5)}
	for _, model := range []string{"mlp", "mmoe", "ple", "dlrm", "wide_n_deep"} {
		for _, opt := range []string{"adam", "adagrad", "sgd"} {
			t.Run(model+"/"+opt, func(t *testing.T) {
				run := func(fused bool) (losses []float64, state [][]float32) {
					cfg := detConfig(model) // dropout, L2 terms and LR decay on
					cfg.Optimizer = opt
					m, err := NewModel(gradSchema(), cfg, kernels.NewCPU(2), 4*step.ShardRows)
					require.NoError(t, err)
					defer m.Release()
					m.exec.SetFusedStep(fused)
					losses = trainLosses(t, m, batches, 5)
					for _, p := range m.Params() {
						state = append(state, hostT(p.Tensor))
					}
					for _, s := range m.OptimizerState() {
						state = append(state, hostT(s.Tensor))
					}
					for i, p := range m.params {
						if !p.Sparse {
							state = append(state, hostT(m.exec.Train().Grad(i)))
						}
					}
					return losses, state
				}
				l2, s2 := run(false)
				l1, s1 := run(true)
				require.Equal(t, l2, l1, "losses")
				require.Equal(t, s2, s1, "parameters, optimizer state, gradients")
			})
		}
	}
}
