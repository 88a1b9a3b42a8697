package mtl

import (
	"fmt"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/mtlrank/mtlrank/dist"
	"github.com/mtlrank/mtlrank/kernels"
	"github.com/mtlrank/mtlrank/layers"
	"github.com/mtlrank/mtlrank/loader"
	"github.com/mtlrank/mtlrank/mtl/internal/step"
)

// batchIDs is the number of ids a gradBatch looks up (user, item, and the
// list features hist and tags): the rows of the tables' sparse update.
func batchIDs(b *loader.Batch) int64 {
	n := int64(2 * b.Rows)
	for _, f := range []string{"hist", "tags"} {
		o := b.Columns[f].Offsets
		n += int64(o[len(o)-1] - o[0])
	}
	return n
}

// TestRowPrefetchSameBits: requesting the sparse update's rows during the
// backward pass (every table's, the test's tables being small) changes no
// bit of the losses, parameters or optimizer state, with Adam, Adagrad and
// SGD, fused and two-phase steps; and the list holds the batch's ids once
// per tensor (the table and its optimizer state) and is requested by the
// backward GEMMs.
func TestRowPrefetchSameBits(t *testing.T) {
	rng := layers.NewRNG(47)
	batches := []*loader.Batch{gradBatch(rng, 3*step.ShardRows+9), gradBatch(rng, step.ShardRows), gradBatch(rng, 5)}
	for _, model := range []string{"mlp", "mmoe"} {
		for _, opt := range []string{"adam", "adagrad", "sgd"} {
			states := map[string]int64{"adam": 2, "adagrad": 1, "sgd": 0}[opt]
			for _, fused := range []bool{true, false} {
				t.Run(fmt.Sprintf("%s/%s/fused=%v", model, opt, fused), func(t *testing.T) {
					run := func(minBytes int) ([]float64, map[string][]float32) {
						cfg := detConfig(model)
						cfg.Optimizer = opt
						m, err := NewModel(gradSchema(), cfg, kernels.NewCPU(2), 4*step.ShardRows)
						require.NoError(t, err)
						defer m.Release()
						m.exec.SetFusedStep(fused)
						m.exec.SetRowPrefetch(minBytes)
						var losses []float64
						for i := range 5 {
							b := batches[i%len(batches)]
							st, err := m.TrainStep(b)
							require.NoError(t, err)
							losses = append(losses, st.Loss)
							l := m.exec.RowPrefetch()
							if minBytes < 0 {
								require.Nil(t, l)
								continue
							}
							require.Equal(t, (1+states)*batchIDs(b), l.Units(), "step %d", i)
							units, lines := l.Issued()
							if b.Rows >= step.ShardRows {
								// a GEMM call of a few rows does too little work to take a unit
								require.Positive(t, units, "step %d: nothing requested", i)
							}
							require.LessOrEqual(t, units, l.Units())
							require.GreaterOrEqual(t, lines, units) // a row spans a line at least
						}
						return losses, modelState(m)
					}
					lOff, sOff := run(-1)
					lOn, sOn := run(0)
					require.Equal(t, lOff, lOn, "losses")
					require.Equal(t, sOff, sOn, "parameters, optimizer state")
				})
			}
		}
	}
}

// TestRowPrefetchDistributedSameBits: in a job with replicated tables each
// rank requests its batch's rows, and every rank ends with the bits it
// ends with without the requests.
func TestRowPrefetchDistributedSameBits(t *testing.T) {
	rng := layers.NewRNG(53)
	var parts [][]*loader.Batch
	for range 4 {
		parts = append(parts, []*loader.Batch{gradBatch(rng, 100), gradBatch(rng, 70)})
	}
	for _, opt := range []string{"adam", "adagrad", "sgd"} {
		t.Run(opt, func(t *testing.T) {
			run := func(minBytes int) []map[string][]float32 {
				out, errs := runRanks(2, func(c dist.Comm) (map[string][]float32, error) {
					cfg := gradConfig("mmoe")
					cfg.Optimizer = opt
					m, err := newTestModel(cfg, kernels.NewCPU(2), c, ShardReplicate)
					if err != nil {
						return nil, err
					}
					defer m.Release()
					m.exec.SetRowPrefetch(minBytes)
					for s := range parts {
						if _, err := m.TrainStep(parts[s][c.Rank()]); err != nil {
							return nil, err
						}
						if l := m.exec.RowPrefetch(); minBytes >= 0 && (l == nil || l.Units() == 0) {
							return nil, fmt.Errorf("rank %d, step %d: no rows listed", c.Rank(), s)
						}
					}
					return modelState(m), nil
				})
				for _, err := range errs {
					require.NoError(t, err)
				}
				return out
			}
			off, on := run(-1), run(0)
			require.Equal(t, off, on)
		})
	}
}
