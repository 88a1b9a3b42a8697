package mtl

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/mtlrank/mtlrank/dist"
	"github.com/mtlrank/mtlrank/layers"
	"github.com/mtlrank/mtlrank/loader"
)

// allTables returns every parameter and optimizer tensor of m on the host,
// a row-sharded table (or its state) put together from every rank's rows
// (an allgather: every rank calls it). For a model that is not sharded it
// is hostParamsOf.
func allTables(m *Model) (map[string][]float32, error) {
	out := hostParamsOf(m)
	if !m.RowSharded() {
		return out, nil
	}
	c := m.comm
	n := c.Size()
	for _, list := range [][]NamedTensor{m.Params(), m.OptimizerState()} {
		for _, nt := range list {
			tab, ok := m.tableOf(nt.Name)
			if !ok {
				continue
			}
			counts := make([]int, n)
			for j := range n {
				counts[j] = layers.RowShard{Rank: j, Size: n}.Rows(tab.Rows) * tab.Dim
			}
			all := make([]float32, tab.Rows*tab.Dim)
			if err := c.AllgathervFloat32(out[nt.Name], all, counts); err != nil {
				return nil, err
			}
			full := make([]float32, len(all))
			at := 0
			for j := range n {
				for id := j; id < tab.Rows; id += n {
					copy(full[id*tab.Dim:(id+1)*tab.Dim], all[at:at+tab.Dim])
					at += tab.Dim
				}
			}
			out[nt.Name] = full
		}
	}
	return out, nil
}

// TestRowShardedStepMatchesOneProcess: with the tables sharded by rows, N
// ranks reach one process's parameters and optimizer state within 1e-5
// relative after 50 steps (uneven batches, a rank without rows in the
// last steps, every loss term, Adam, Adagrad and SGD), the bits of the
// job with replicated tables, and every rank the same tables put
// together. TestMPITrain runs the same cases under mpirun.
func TestRowShardedStepMatchesOneProcess(t *testing.T) {
	for _, c := range exactCases {
		for _, n := range []int{1, 2, 3} {
			t.Run(fmt.Sprintf("%v/%d", c, n), func(t *testing.T) {
				digests, errs := runRanks(n, func(comm dist.Comm) (string, error) { return c.check(comm, ShardRow) })
				for r := range n {
					require.NoError(t, errs[r], "rank %d", r)
					require.Equal(t, digests[0], digests[r], "rank %d's parameters and losses differ from rank 0's", r)
				}
			})
		}
	}
}

// TestShardedModelHoldsItsRows: a row-sharded rank allocates only its rows
// of each table and of their optimizer state (never the full table), and
// they are the rows id mod N == rank of the table one process starts
// from.
func TestShardedModelHoldsItsRows(t *testing.T) {
	checkShardedModelHoldsItsRows(t, cpuDevice, 2, 3, 5)
}

// checkShardedModelHoldsItsRows is TestShardedModelHoldsItsRows on ranks
// of ns ranks, each on its own device of open (whose closer reports the
// tensors a rank left allocated).
func checkShardedModelHoldsItsRows(t *testing.T, open rankDevice, ns ...int) {
	cfg := gradConfig("mlp")
	cfg.Optimizer = "adam"
	one, err := NewModel(gradSchema(), cfg, testDev(), 16)
	require.NoError(t, err)
	defer one.Release()
	full := hostParamsOf(one)
	rows := map[string]int{"input/emb/user": 31, "input/emb/item": 41, "input/emb/tags": 13}
	est, err := EstimateMemory(gradSchema(), cfg, testDev(), 16)
	require.NoError(t, err)
	require.EqualValues(t, (31+41+13)*8*4, est.Embeddings, "the tables are 8 wide")
	for _, n := range ns {
		shardEst := est.RowShard(n)
		require.EqualValues(t, (est.Embeddings+int64(n)-1)/int64(n), shardEst.Embeddings)
		require.Less(t, shardEst.Total, est.Total)
		tableBytes, errs := runRanks(n, func(c dist.Comm) (_ int64, err error) {
			dev, closeDev, err := open()
			if err != nil {
				return 0, err
			}
			defer func() { err = errors.Join(err, closeDev()) }()
			m, err := NewShardedModel(gradSchema(), cfg, dev, 16, c)
			if err != nil {
				return 0, err
			}
			defer m.Release()
			var bytes int64
			for _, list := range [][]NamedTensor{m.Params(), m.OptimizerState()} {
				for _, nt := range list {
					table := strings.TrimSuffix(strings.TrimSuffix(nt.Name, "/m"), "/v")
					total, ok := rows[table]
					if !ok {
						continue
					}
					want := (total - c.Rank() + n - 1) / n // ids r, r+n, ... below total
					if nt.Tensor.Rows() != want {
						return 0, fmt.Errorf("rank %d of %d: %s has %d rows, want %d of the %d", c.Rank(), n, nt.Name, nt.Tensor.Rows(), want, total)
					}
					if nt.Name != table {
						continue
					}
					h := make([]float32, nt.Tensor.Len())
					m.dev.CopyToHostF32(h, nt.Tensor)
					d := nt.Tensor.Cols()
					for k := range want {
						id := k*n + c.Rank()
						if !slices.Equal(h[k*d:(k+1)*d], full[table][id*d:(id+1)*d]) {
							return 0, fmt.Errorf("rank %d: %s local row %d is not row %d of the full table", c.Rank(), table, k, id)
						}
					}
					bytes += 4 * int64(nt.Tensor.Len())
				}
			}
			return bytes, nil
		})
		var all int64
		for r, err := range errs {
			require.NoError(t, err, "rank %d of %d", r, n)
			all += tableBytes[r]
			assert.LessOrEqual(t, tableBytes[r], shardEst.Embeddings+3*8*4, "rank %d of %d: at most a row per table above 1/N", r, n)
		}
		require.Equal(t, est.Embeddings, all, "the ranks' tables together are the tables, once")
	}
}

// TestRowShardedCommBytes: the bytes a rank receives in a row-sharded
// step, counted by the step (Model.CommBytes), against the count worked by
// hand for two ranks with known ids (docs/DISTRIBUTED.md, "Row sharding").
func TestRowShardedCommBytes(t *testing.T) {
	batch := func(user, item []int32, hist, tags [][]int32) *loader.Batch {
		list := func(ls [][]int32) *loader.Column {
			c := &loader.Column{Offsets: []int32{0}, I32: []int32{}}
			for _, l := range ls {
				c.I32 = append(c.I32, l...)
				c.Offsets = append(c.Offsets, int32(len(c.I32)))
			}
			return c
		}
		cols := map[string]*loader.Column{
			"user": {I32: user}, "item": {I32: item}, "hist": list(hist), "tags": list(tags),
			"price": {F32: []float32{0.5, -1}}, "w": {F32: []float32{1, 2}},
			"click": {F32: []float32{1, 0}}, "like": {F32: []float32{0, 1}}, "watch": {F32: []float32{3, 1}},
		}
		for k, c := range cols {
			c.Name = k
		}
		return loader.NewBatch(2, cols, "test", nil)
	}
	parts := []*loader.Batch{
		batch([]int32{1, 2}, []int32{3, 3}, [][]int32{{4, 5}, {}}, [][]int32{{0}, {1, 2}}),
		batch([]int32{2, 4}, []int32{6, 1}, [][]int32{{1}, {8, 9}}, [][]int32{{}, {3}}),
	}
	// Tables (in the block's order): item (item and hist), tags, user.
	// Rank 0's distinct ids: item {3, 4, 5}, tags {0, 1, 2}, user {1, 2};
	// it asks rank 1 (odd ids) for item 3, 5, tags 1, user 1: 4 rows.
	// Rank 1's: item {6, 1, 8, 9}, tags {3}, user {2, 4}; it asks rank 0
	// for item 6, 8, user 2, 4: 4 rows. So each rank receives, besides the
	// allreduce: 1 count (4 bytes), the other's header (failure flag, rows
	// and 3 counts) and 4 ids (4*(2+3+4) bytes), 4 rows of 8 floats (every
	// table of this schema is 8 wide) in the forward pass (its own asks)
	// and 4 in the backward pass (the other's asks): 4 + 36 + 128 + 128 =
	// 296 bytes.
	const sparse = 4 + 4*(2+3+4) + 4*4*8 + 4*4*8
	cfg := gradConfig("mlp")
	cfg.InitOutputBias = false
	got, errs := runRanks(2, func(c dist.Comm) ([2]int64, error) {
		m, err := NewShardedModel(gradSchema(), cfg, testDev(), 16, c)
		if err != nil {
			return [2]int64{}, err
		}
		defer m.Release()
		dense := 0
		for i, p := range m.params {
			if !p.Sparse {
				dense += p.Value.Len()
			} else if d := m.input.Tables[i].Dim; d != 8 {
				return [2]int64{}, fmt.Errorf("table %s has dim %d: the count above assumes 8", p.Name, d)
			}
		}
		if _, err := m.TrainStep(parts[c.Rank()]); err != nil {
			return [2]int64{}, err
		}
		// The fused allreduce (the dense gradients, 3 task losses, the
		// regularisation term and the failure flag) moves (N-1)/N of its
		// buffer twice; the step's rows came with the headers.
		allreduces := int64(4 * (dense + 3 + 2))
		return [2]int64{m.CommBytes(), allreduces + sparse}, nil
	})
	for r := range 2 {
		require.NoError(t, errs[r], "rank %d", r)
		require.Equal(t, got[r][1], got[r][0], "rank %d's bytes received", r)
	}
}

// TestRowShardedPredictWithJoiningRanks: with the tables sharded by rows,
// a rank without a batch joins the others' Loss and Predict
// (Model.JoinLookup), and they get the bits one process gets on their
// batches; Loss (the validation loss) includes the L2 term of the dense
// parameters, in both modes (a distributed model left it out once: the
// training step adds it after the ranks' sum).
func TestRowShardedPredictWithJoiningRanks(t *testing.T) {
	for _, sharding := range []string{ShardReplicate, ShardRow} {
		t.Run(sharding, func(t *testing.T) { testPredictWithJoiningRanks(t, sharding) })
	}
}

func testPredictWithJoiningRanks(t *testing.T, sharding string) {
	cfg := gradConfig("ple")
	rng := rand.New(rand.NewPCG(3, 4))
	b := gradBatch(rng, 37)
	one, err := NewModel(gradSchema(), cfg, testDev(), 64)
	require.NoError(t, err)
	defer one.Release()
	want := make([][]float32, len(one.tasks))
	for i := range want {
		want[i] = make([]float32, b.Rows)
	}
	require.NoError(t, one.Predict(b, want))
	wantLoss, err := one.Loss(b)
	require.NoError(t, err)
	const n, asker = 3, 1
	got, errs := runRanks(n, func(c dist.Comm) ([][]float32, error) {
		m, err := newTestModel(cfg, testDev(), c, sharding)
		if err != nil {
			return nil, err
		}
		defer m.Release()
		if c.Rank() != asker {
			for range 2 {
				if err := m.JoinLookup(); err != nil {
					return nil, err
				}
			}
			return nil, nil
		}
		// Both calls before any check: the others wait in two lookups.
		st, lossErr := m.Loss(b)
		out := make([][]float32, len(m.tasks))
		for i := range out {
			out[i] = make([]float32, b.Rows)
		}
		err = m.Predict(b, out)
		if lossErr != nil {
			return nil, lossErr
		}
		if st.Loss != wantLoss.Loss {
			return nil, fmt.Errorf("loss %v, one process %v", st.Loss, wantLoss.Loss)
		}
		return out, err
	})
	for r := range n {
		require.NoError(t, errs[r], "rank %d", r)
	}
	require.Equal(t, want, got[asker])
}
