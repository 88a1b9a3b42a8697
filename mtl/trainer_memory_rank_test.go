package mtl

import (
	"fmt"
	"math"
	"math/rand/v2"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/mtlrank/mtlrank/dist"
	"github.com/mtlrank/mtlrank/loader"
)

// TestEstimateRankMemory: a rank's estimate is one process's (its share of
// the tables with row sharding) plus the distributed step's buffers, worked
// out here by hand from gradSchema: 3 tables 8 wide (user 31 rows, item 41
// rows fed by item and by hist's 5 ids, tags 13 rows with lists of unknown
// length, counted as 4 ids), so a batch row sends at most 1+6+4 = 11 ids
// and their 8-wide rows.
func TestEstimateRankMemory(t *testing.T) {
	cfg := gradConfig("mlp")
	cfg.Optimizer = "adam"
	const batch = 16
	one, err := EstimateMemory(gradSchema(), cfg, testDev(), batch)
	require.NoError(t, err)
	require.Zero(t, one.Exchange)
	u := float64(batch * 11 * (1 + 8)) // a rank's ids and rows per step
	dense := float64(one.Dense / 4)
	const tableRows = 31 + 41 + 13
	for _, tc := range []struct {
		ranks      int
		rowSharded bool
	}{{1, false}, {1, true}, {2, false}, {3, false}, {2, true}, {3, true}} {
		t.Run(fmt.Sprintf("ranks=%d/row=%v", tc.ranks, tc.rowSharded), func(t *testing.T) {
			est, err := EstimateRankMemory(gradSchema(), cfg, testDev(), batch, tc.ranks, tc.rowSharded)
			require.NoError(t, err)
			if tc.ranks == 1 {
				assert.Equal(t, one, est, "one rank is one process")
				return
			}
			n := float64(tc.ranks)
			base, floats := one, dense+u+4*n*u+tableRows
			if tc.rowSharded {
				base = one.RowShard(tc.ranks)
				floats = dense + 3*u + 5*n*u + math.Ceil(tableRows/n)
			}
			assert.EqualValues(t, 4*floats, est.Exchange)
			assert.Equal(t, base.Embeddings, est.Embeddings)
			assert.Equal(t, base.Optimizer, est.Optimizer)
			assert.Equal(t, base.Total+est.Exchange, est.Total)
			assert.Contains(t, est.String(), "the distributed step's exchange buffers "+FormatBytes(est.Exchange))
		})
	}
	_, err = EstimateRankMemory(gradSchema(), cfg, testDev(), batch, 0, false)
	assert.ErrorContains(t, err, "ranks must be >= 1, got 0")
}

// TestEstimateRankMemoryBoundsTheSteps: what the first steps of a
// distributed job allocate beyond one process's same steps stays within
// the estimate's Exchange on every rank, replicated or sharded by rows,
// with batches whose ids are all distinct (the estimate's worst case).
func TestEstimateRankMemoryBoundsTheSteps(t *testing.T) {
	cfg := gradConfig("mlp")
	cfg.Optimizer = "adam"
	const batch, steps = 16, 3
	rng := rand.New(rand.NewPCG(11, 12))
	batches := make([]*loader.Batch, steps)
	for s := range batches {
		batches[s] = gradBatch(rng, batch)
	}
	m, err := NewModel(gradSchema(), cfg, testDev(), batch)
	require.NoError(t, err)
	single := allocated(func() {
		for _, b := range batches {
			_, err := m.TrainStep(b)
			require.NoError(t, err)
		}
	})
	m.Release()
	for _, sharding := range []string{ShardReplicate, ShardRow} {
		for _, n := range []int{2, 3} {
			t.Run(fmt.Sprintf("%s/ranks=%d", sharding, n), func(t *testing.T) {
				est, err := EstimateRankMemory(gradSchema(), cfg, testDev(), batch, n, sharding == ShardRow)
				require.NoError(t, err)
				models := make([]*Model, n)
				_, errs := runRanks(n, func(c dist.Comm) (int, error) {
					m, err := newTestModel(cfg, testDev(), c, sharding)
					models[c.Rank()] = m
					return 0, err
				})
				for _, err := range errs {
					require.NoError(t, err)
				}
				defer func() {
					for _, m := range models {
						m.Release()
					}
				}()
				all := allocated(func() {
					_, errs := runRanks(n, func(c dist.Comm) (int, error) {
						for _, b := range batches {
							if _, err := models[c.Rank()].TrainStep(b); err != nil {
								return 0, err
							}
						}
						return 0, nil
					})
					for _, err := range errs {
						require.NoError(t, err)
					}
				})
				extra := float64(all) - float64(n)*float64(single)
				t.Logf("%d ranks allocated %d bytes in %d steps, one process %d; the estimate's exchange %d per rank", n, all, steps, single, est.Exchange)
				assert.LessOrEqual(t, extra, float64(n)*float64(est.Exchange), "the ranks' steps allocate more than the estimate says")
				assert.Greater(t, extra, 0.0)
			})
		}
	}
}
