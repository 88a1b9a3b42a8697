package mtl

import (
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"maps"
	"math"
	"math/rand/v2"
	"slices"
	"sync"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/mtlrank/mtlrank/dist"
	"github.com/mtlrank/mtlrank/loader"
)

// concatBatches is the batch of the parts' rows one after the other (the
// global batch of a distributed step whose ranks hold the parts).
func concatBatches(parts []*loader.Batch) *loader.Batch {
	rows := 0
	cols := map[string]*loader.Column{}
	for _, p := range parts {
		for name, c := range p.Columns {
			o := cols[name]
			if o == nil {
				o = &loader.Column{Name: name}
				if c.Offsets != nil {
					o.Offsets = []int32{0}
				}
				cols[name] = o
			}
			if c.Offsets != nil {
				base := o.Offsets[len(o.Offsets)-1]
				for _, x := range c.Offsets[1:] {
					o.Offsets = append(o.Offsets, base+x)
				}
			}
			o.F32 = append(o.F32, c.F32...)
			o.I32 = append(o.I32, c.I32...)
			o.I64 = append(o.I64, c.I64...)
		}
		rows += p.Rows
	}
	return loader.NewBatch(rows, cols, "global", nil)
}

// distSteps are the rows of each rank's batch per step: uneven, and with
// ranks that have run out (0 rows), as at the end of an epoch.
func distSteps(n, steps int) [][]int {
	out := make([][]int, steps)
	for s := range out {
		out[s] = make([]int, n)
		for r := range n {
			out[s][r] = 20 + 3*r + s%5
		}
		if s >= steps-3 && n > 1 {
			out[s][n-1] = 0 // the last rank's part has run out
		}
	}
	return out
}

// exactCase is one case of the exactness test of distributed training: a
// model and optimizer trained for exactSteps steps on the parts of the same
// global batches by the ranks of a job, and by one process on the global
// batches.
type exactCase struct {
	model, opt string
	initBias   bool
}

const exactSteps = 50

// exactCases: with InitOutputBias a regression head's bias starts where its
// gradient is zero, so that its first gradients are rounding noise, which
// Adam's normalised step turns into steps of +-LR: one process is as
// sensitive to the order of its own sums. The Adam cases train without it;
// the bias itself is checked bit for bit by TestDistributedInitOutputBias.
var exactCases = []exactCase{
	{"mmoe", "adam", false}, {"ple", "adagrad", true}, {"mlp", "sgd", true}, {"cgc", "adagrad", true},
}

func (c exactCase) String() string {
	return fmt.Sprintf("%s/%s/init_bias=%v", c.model, c.opt, c.initBias)
}

// reference is the case's configuration, the ranks' batches of each step
// for n ranks (every rank draws every rank's, from the same seed), and the
// model one process trains on the global batches, with its losses.
func (c exactCase) reference(n int) (Config, [][]*loader.Batch, *Model, []float64, error) {
	cfg := gradConfig(c.model)
	cfg.Optimizer = c.opt
	cfg.LR = 0.01
	cfg.InitOutputBias = c.initBias
	plan := distSteps(n, exactSteps)
	rng := rand.New(rand.NewPCG(5, 6))
	parts := make([][]*loader.Batch, exactSteps)
	for s := range parts {
		parts[s] = make([]*loader.Batch, n)
		for r := range n {
			parts[s][r] = gradBatch(rng, plan[s][r])
		}
	}
	one, err := NewModel(gradSchema(), cfg, testDev(), 128)
	if err != nil {
		return cfg, nil, nil, nil, err
	}
	var wantLoss []float64
	for s := range exactSteps {
		st, err := one.TrainStep(concatBatches(parts[s]))
		if err != nil {
			one.Release()
			return cfg, nil, nil, nil, fmt.Errorf("one process, step %d: %w", s, err)
		}
		wantLoss = append(wantLoss, st.Loss)
	}
	return cfg, parts, one, wantLoss, nil
}

// newTestModel is a gradSchema model of cfg for batches of 128 rows, one
// rank of comm with its tables replicated or sharded by rows.
func newTestModel(cfg Config, comm dist.Comm, sharding string) (*Model, error) {
	if sharding == ShardRow {
		return NewShardedModel(gradSchema(), cfg, testDev(), 128, comm)
	}
	m, err := NewModel(gradSchema(), cfg, testDev(), 128)
	if err != nil {
		return nil, err
	}
	if err := m.setComm(comm); err != nil {
		m.Release()
		return nil, err
	}
	return m, nil
}

// run is one rank's side of the case on comm with replicated tables:
// check(comm, ShardReplicate).
func (c exactCase) run(comm dist.Comm) (string, error) { return c.check(comm, ShardReplicate) }

// check is one rank's side of the case on comm: it trains the one-process
// reference itself, then its rank's part with the tables replicated, checks
// that the parameters and losses are within 1e-5 relative of the
// reference's, and returns the digest of its parameters and losses (the
// same on every rank). With sharding ShardRow it also trains its part with
// the tables sharded by rows, whose losses, parameters and optimizer state
// (the tables put together from all ranks) must be the replicated job's
// bits: the owners add an id's gradient rows in rank order, the order of
// the replicated merge.
func (c exactCase) check(comm dist.Comm, sharding string) (string, error) {
	cfg, parts, one, wantLoss, err := c.reference(comm.Size())
	if err != nil {
		return "", err
	}
	defer one.Release()
	rank := comm.Rank()
	m, err := newTestModel(cfg, comm, ShardReplicate)
	if err != nil {
		return "", err
	}
	defer m.Release()
	var row *Model
	if sharding == ShardRow {
		if row, err = newTestModel(cfg, comm, ShardRow); err != nil {
			return "", err
		}
		defer row.Release()
	}
	h := sha256.New()
	for s := range exactSteps {
		b := parts[s][rank]
		if b.Rows == 0 {
			b = &loader.Batch{}
		}
		st, err := m.TrainStep(b)
		if err != nil {
			return "", fmt.Errorf("rank %d, step %d: %w", rank, s, err)
		}
		if row != nil {
			rst, err := row.TrainStep(b)
			if err != nil {
				return "", fmt.Errorf("rank %d, step %d, tables sharded by rows: %w", rank, s, err)
			}
			if rst.Loss != st.Loss {
				return "", fmt.Errorf("rank %d, step %d: loss %v with the tables sharded by rows, %v replicated", rank, s, rst.Loss, st.Loss)
			}
		}
		if d := math.Abs(st.Loss - wantLoss[s]); d > 1e-5*math.Abs(wantLoss[s]) {
			return "", fmt.Errorf("rank %d, step %d: loss %v, one process %v", rank, s, st.Loss, wantLoss[s])
		}
		binary.Write(h, binary.LittleEndian, st.Loss)
	}
	want, got := hostParamsOf(one), hostParamsOf(m)
	var sharded map[string][]float32
	if row != nil {
		if sharded, err = allTables(row); err != nil {
			return "", err
		}
	}
	for _, name := range slices.Sorted(maps.Keys(want)) {
		if err := tensorClose(want[name], got[name], 1e-5); err != nil {
			return "", fmt.Errorf("rank %d: %s: %w", rank, name, err)
		}
		if row != nil && !slices.Equal(got[name], sharded[name]) {
			return "", fmt.Errorf("rank %d: %s: with the tables sharded by rows, not the bits of the replicated tables' job", rank, name)
		}
		binary.Write(h, binary.LittleEndian, got[name])
	}
	return fmt.Sprintf("%x", h.Sum(nil)), nil
}

// runRanks runs f on every rank of a dist.LocalGroup of n and returns
// their results.
func runRanks[T any](n int, f func(c dist.Comm) (T, error)) ([]T, []error) {
	comms := dist.LocalGroup(n)
	out, errs := make([]T, n), make([]error, n)
	var wg sync.WaitGroup
	for r := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			out[r], errs[r] = f(comms[r])
		}()
	}
	wg.Wait()
	return out, errs
}

// TestDistributedStepMatchesOneProcess: N ranks (dist.LocalGroup) training
// on the parts of the same global batches (uneven, ranks running out at
// the end) reach the parameters and optimizer state one process reaches on
// the global batches, within 1e-5 relative after 50 steps, with every loss
// term on (L2 on dense parameters and embeddings, sample weights, sample
// spaces, loss and class weights), and every rank holds the same bits.
// TestMPITrain runs the same cases under mpirun.
func TestDistributedStepMatchesOneProcess(t *testing.T) {
	for _, c := range exactCases {
		for _, n := range []int{1, 2, 3} {
			t.Run(fmt.Sprintf("%v/%d", c, n), func(t *testing.T) {
				digests, errs := runRanks(n, c.run)
				for r := range n {
					require.NoError(t, errs[r], "rank %d", r)
					require.Equal(t, digests[0], digests[r], "rank %d's parameters and losses differ from rank 0's", r)
				}
			})
		}
	}
}

// tensorClose checks got against want within rel relative in the tensor's
// Euclidean norm: ||got - want|| <= rel * ||want||. Elementwise relative
// errors are not meaningful for elements near zero, which Adam's
// normalised steps move by amounts of the order of the learning rate
// whatever the size of their gradient.
func tensorClose(want, got []float32, rel float64) error {
	if len(got) != len(want) {
		return fmt.Errorf("%d elements, want %d", len(got), len(want))
	}
	var d2, w2 float64
	worst := 0
	for i := range want {
		d := float64(want[i]) - float64(got[i])
		d2 += d * d
		w2 += float64(want[i]) * float64(want[i])
		if math.Abs(d) > math.Abs(float64(want[worst])-float64(got[worst])) {
			worst = i
		}
	}
	if math.Sqrt(d2) > rel*math.Sqrt(w2) {
		return fmt.Errorf("||distributed - one process|| = %.3g > %.0e x %.3g; worst [%d]: one process %v, distributed %v",
			math.Sqrt(d2), rel, math.Sqrt(w2), worst, want[worst], got[worst])
	}
	return nil
}

func hostParamsOf(m *Model) map[string][]float32 {
	out := map[string][]float32{}
	for _, list := range [][]NamedTensor{m.Params(), m.OptimizerState()} {
		for _, nt := range list {
			h := make([]float32, nt.Tensor.Len())
			m.dev.CopyToHostF32(h, nt.Tensor)
			out[nt.Name] = h
		}
	}
	return out
}

// TestDistributedInitOutputBias: on N ranks, InitOutputBias calibrates the
// heads on the ranks' first batches together, giving the bits one process
// gets from their concatenation (the rows are gathered in rank order, the
// order of the global batch), on every rank, also when a rank has no rows
// (with the tables sharded by rows, that rank serves the others' lookups).
func TestDistributedInitOutputBias(t *testing.T) {
	for _, tc := range []struct {
		rows     []int
		sharding string
	}{
		{[]int{20, 23}, ShardReplicate}, {[]int{7, 0, 30}, ShardReplicate}, {[]int{0, 12}, ShardReplicate},
		{[]int{20, 23}, ShardRow}, {[]int{7, 0, 30}, ShardRow}, {[]int{0, 12}, ShardRow},
	} {
		rows := tc.rows
		t.Run(fmt.Sprint(tc.sharding, rows), func(t *testing.T) {
			cfg := gradConfig("mmoe")
			n := len(rows)
			rng := rand.New(rand.NewPCG(5, 6))
			parts := make([]*loader.Batch, n)
			for r := range parts {
				parts[r] = gradBatch(rng, rows[r])
			}
			one, err := NewModel(gradSchema(), cfg, testDev(), 128)
			require.NoError(t, err)
			defer one.Release()
			_, err = one.initOutputBias(concatBatches(parts))
			require.NoError(t, err)
			want := hostParamsOf(one)
			got, errs := runRanks(n, func(c dist.Comm) (map[string][]float32, error) {
				m, err := newTestModel(cfg, c, tc.sharding)
				if err != nil {
					return nil, err
				}
				defer m.Release()
				b := parts[c.Rank()]
				if b.Rows == 0 {
					b = &loader.Batch{}
				}
				if _, err := m.initOutputBias(b); err != nil {
					return nil, err
				}
				return allTables(m)
			})
			for r := range n {
				require.NoError(t, errs[r], "rank %d", r)
				for name, v := range want {
					require.True(t, slices.Equal(v, got[r][name]), "rank %d: %s", r, name)
				}
			}
		})
	}
}

// TestDistributedStepFailsOnEveryRank: when one rank's batch is bad (an id
// outside its table), that rank returns its error, naming the column and
// row, and every other rank returns an error at the same step instead of
// waiting in the next collective, and no rank updates: in the training
// step, and in the first step's InitOutputBias, which reads the batch
// first; with replicated tables and with tables sharded by rows (where
// the id, 31, would be a row rank 1 does not hold either).
func TestDistributedStepFailsOnEveryRank(t *testing.T) {
	type failCase struct {
		initBias bool
		want     string
		sharding string
	}
	var cases []failCase
	for _, sharding := range []string{ShardReplicate, ShardRow} {
		cases = append(cases,
			failCase{false, "mtl: step 0: 1 of the 3 ranks failed", sharding},
			failCase{true, "mtl: InitOutputBias: 1 of the 3 ranks failed", sharding})
	}
	for _, tc := range cases {
		t.Run(fmt.Sprintf("%s/init_bias=%v", tc.sharding, tc.initBias), func(t *testing.T) {
			cfg := gradConfig("mmoe")
			cfg.InitOutputBias = tc.initBias
			const n, badRank = 3, 1
			rng := rand.New(rand.NewPCG(8, 9))
			parts := make([]*loader.Batch, n)
			for r := range parts {
				parts[r] = gradBatch(rng, 16)
			}
			parts[badRank].Columns["user"].I32[5] = 31 // the table has ids 0..30
			steps, errs := runRanks(n, func(c dist.Comm) (int, error) {
				m, err := newTestModel(cfg, c, tc.sharding)
				if err != nil {
					return -1, err
				}
				defer m.Release()
				before := hostParamsOf(m)
				_, err = m.TrainStep(parts[c.Rank()])
				for name, v := range hostParamsOf(m) {
					if !slices.Equal(v, before[name]) {
						return -1, fmt.Errorf("rank %d updated %s", c.Rank(), name)
					}
				}
				return m.Step(), err
			})
			for r := range n {
				require.Error(t, errs[r], "rank %d", r)
				require.Equal(t, 0, steps[r], "rank %d's step counter", r)
				if r == badRank {
					assert.Contains(t, errs[r].Error(), `column "user" row 5: id 31 outside [0, 30]`, "the bad rank names the column and row")
				} else {
					assert.Contains(t, errs[r].Error(), tc.want)
				}
			}
		})
	}
}
