package mtl

import (
	"crypto/sha256"
	"encoding/binary"
	"errors"
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
	"github.com/mtlrank/mtlrank/kernels"
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
// model and optimizer trained for a number of steps (exactSteps on the
// CPU) on the parts of the same global batches by the ranks of a job, and
// by one process on the global batches.
type exactCase struct {
	model, opt string
	initBias   bool
	// cudaRow: TestCUDADistributedStepMatchesOneProcess also runs the case
	// with the tables sharded by rows (the emulated device's time is
	// short: ple, the slowest case, whose Adagrad cgc covers, runs that
	// mode on the CPU only)
	cudaRow bool
}

const exactSteps = 50

// exactCases: with InitOutputBias a regression head's bias starts where its
// gradient is zero, so that its first gradients are rounding noise, which
// Adam's normalised step turns into steps of +-LR: one process is as
// sensitive to the order of its own sums. The Adam cases train without it;
// the bias itself is checked bit for bit by TestDistributedInitOutputBias.
var exactCases = []exactCase{
	{"mmoe", "adam", false, true}, {"ple", "adagrad", true, false}, {"mlp", "sgd", true, true}, {"cgc", "adagrad", true, true},
}

func (c exactCase) String() string {
	return fmt.Sprintf("%s/%s/init_bias=%v", c.model, c.opt, c.initBias)
}

// run is one rank's side of the case on comm with replicated tables:
// check(comm, ShardReplicate).
func (c exactCase) run(comm dist.Comm) (string, error) { return c.check(comm, ShardReplicate) }

// check is one rank's side of the case on comm, on the CPU device: it
// trains the one-process reference itself, then its rank's part with the
// tables replicated, checks that the parameters and losses are within 1e-5
// relative of the reference's, and returns the digest of its parameters
// and losses (the same on every rank). With sharding ShardRow it also
// trains its part with the tables sharded by rows, whose losses,
// parameters and optimizer state (the tables put together from all ranks)
// must be the replicated job's bits: the owners add an id's gradient rows
// in rank order, the order of the replicated merge.
func (c exactCase) check(comm dist.Comm, sharding string) (string, error) {
	parts := c.batches(comm.Size(), exactSteps)
	ref, err := c.train(testDev(), nil, parts, ShardReplicate)
	if err != nil {
		return "", err
	}
	got, err := c.train(testDev(), comm, parts, ShardReplicate)
	if err != nil {
		return "", err
	}
	if err := got.check(ref); err != nil {
		return "", err
	}
	if sharding == ShardRow {
		row, err := c.train(testDev(), comm, parts, ShardRow)
		if err != nil {
			return "", fmt.Errorf("tables sharded by rows: %w", err)
		}
		if err := row.same(got); err != nil {
			return "", fmt.Errorf("tables sharded by rows against replicated: %w", err)
		}
	}
	return got.digest, nil
}

// batches are the parts of the case's global batches of steps steps among
// n ranks: parts[step][rank]. Every rank draws every rank's batches, from
// the same seed.
func (c exactCase) batches(n, steps int) [][]*loader.Batch {
	plan := distSteps(n, steps)
	rng := rand.New(rand.NewPCG(5, 6))
	parts := make([][]*loader.Batch, steps)
	for s := range parts {
		parts[s] = make([]*loader.Batch, n)
		for r := range n {
			parts[s][r] = gradBatch(rng, plan[s][r])
		}
	}
	return parts
}

// newTestModel is a gradSchema model of cfg on dev for batches of 128
// rows, one rank of comm with its tables replicated or sharded by rows.
func newTestModel(cfg Config, dev kernels.Device, comm dist.Comm, sharding string) (*Model, error) {
	if sharding == ShardRow {
		return NewShardedModel(gradSchema(), cfg, dev, 128, comm)
	}
	m, err := NewModel(gradSchema(), cfg, dev, 128)
	if err != nil {
		return nil, err
	}
	if err := m.setComm(comm); err != nil {
		m.Release()
		return nil, err
	}
	return m, nil
}

// exactRun is what a training run of the case ended with: every step's
// loss, the parameters and optimizer state (row-sharded tables put
// together from all ranks), and their digest.
type exactRun struct {
	rank   int
	losses []float64
	params map[string][]float32
	digest string
}

// train runs the case's steps on dev, one per element of parts: as one
// process on the global batches (comm nil), or as comm's rank on its
// parts, with the tables replicated or sharded by rows.
func (c exactCase) train(dev kernels.Device, comm dist.Comm, parts [][]*loader.Batch, sharding string) (*exactRun, error) {
	cfg := gradConfig(c.model)
	cfg.Optimizer = c.opt
	cfg.LR = 0.01
	cfg.InitOutputBias = c.initBias
	m, err := newTestModel(cfg, dev, comm, sharding)
	if err != nil {
		return nil, err
	}
	defer m.Release()
	run := &exactRun{}
	if comm != nil {
		run.rank = comm.Rank()
	}
	h := sha256.New()
	for s := range parts {
		b := concatBatches(parts[s])
		if comm != nil {
			if b = parts[s][run.rank]; b.Rows == 0 {
				b = &loader.Batch{}
			}
		}
		st, err := m.TrainStep(b)
		if err != nil {
			return nil, fmt.Errorf("rank %d, step %d: %w", run.rank, s, err)
		}
		run.losses = append(run.losses, st.Loss)
		binary.Write(h, binary.LittleEndian, st.Loss)
	}
	if run.params, err = allTables(m); err != nil {
		return nil, err
	}
	for _, name := range slices.Sorted(maps.Keys(run.params)) {
		binary.Write(h, binary.LittleEndian, run.params[name])
	}
	run.digest = fmt.Sprintf("%x", h.Sum(nil))
	return run, nil
}

// check compares a rank's run with the one-process run: every step's loss
// and every parameter and optimizer tensor within 1e-5 relative.
func (r *exactRun) check(one *exactRun) error {
	for s, want := range one.losses {
		if d := math.Abs(r.losses[s] - want); d > 1e-5*math.Abs(want) {
			return fmt.Errorf("rank %d, step %d: loss %v, one process %v", r.rank, s, r.losses[s], want)
		}
	}
	for _, name := range slices.Sorted(maps.Keys(one.params)) {
		if err := tensorClose(one.params[name], r.params[name], 1e-5); err != nil {
			return fmt.Errorf("rank %d: %s: %w", r.rank, name, err)
		}
	}
	return nil
}

// same checks that r has other's bits: every loss, parameter and
// optimizer tensor.
func (r *exactRun) same(other *exactRun) error {
	for s, want := range other.losses {
		if r.losses[s] != want {
			return fmt.Errorf("rank %d, step %d: loss %v, want %v", r.rank, s, r.losses[s], want)
		}
	}
	for _, name := range slices.Sorted(maps.Keys(other.params)) {
		if !slices.Equal(other.params[name], r.params[name]) {
			return fmt.Errorf("rank %d: %s: not the same bits", r.rank, name)
		}
	}
	return nil
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
// TestMPITrain runs the same cases under mpirun, TestCUDADistributed* on
// the CUDA device.
func TestDistributedStepMatchesOneProcess(t *testing.T) {
	for _, c := range exactCases {
		for _, n := range []int{1, 2, 3} {
			t.Run(fmt.Sprintf("%v/%d", c, n), func(t *testing.T) {
				exactRanks(t, c, n, exactSteps, cpuDevice, ShardReplicate)
			})
		}
	}
}

// rankDevice opens the device one rank (or the one-process reference)
// trains on, and returns the function that closes it, which reports
// tensors left allocated.
type rankDevice func() (kernels.Device, func() error, error)

func cpuDevice() (kernels.Device, func() error, error) {
	return testDev(), func() error { return nil }, nil
}

// trainOn is exactCase.train with the tables replicated or sharded by
// rows on a device of open, closed after.
func (c exactCase) trainOn(open rankDevice, comm dist.Comm, parts [][]*loader.Batch, sharding string) (*exactRun, error) {
	dev, closeDev, err := open()
	if err != nil {
		return nil, err
	}
	run, err := c.train(dev, comm, parts, sharding)
	return run, errors.Join(err, closeDev())
}

// exactRanks trains case c for steps steps as one process and, in each
// sharding mode, on n ranks of a dist.LocalGroup, each on its own device of
// open; it checks that every rank holds the same bits, within 1e-5
// relative of the one process's (row-sharded tables put together from all
// ranks), and that the modes after the first reach its bits: the owners
// of rows add their gradient rows in rank order, the replicated merge's
// order. It returns rank 0's run of each mode.
func exactRanks(t *testing.T, c exactCase, n, steps int, open rankDevice, shardings ...string) []*exactRun {
	t.Helper()
	parts := c.batches(n, steps)
	one, err := c.trainOn(open, nil, parts, ShardReplicate)
	require.NoError(t, err, "one process")
	var out []*exactRun
	for _, sharding := range shardings {
		runs, errs := runRanks(n, func(comm dist.Comm) (*exactRun, error) { return c.trainOn(open, comm, parts, sharding) })
		for r := range n {
			require.NoError(t, errs[r], "%s: rank %d", sharding, r)
			require.Equal(t, runs[0].digest, runs[r].digest, "%s: rank %d's parameters and losses differ from rank 0's", sharding, r)
			require.NoError(t, runs[r].check(one), sharding)
		}
		if len(out) > 0 {
			require.NoError(t, runs[0].same(out[0]), "%s against %s", sharding, shardings[0])
		}
		out = append(out, runs[0])
	}
	return out
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
	checkDistributedInitOutputBias(t, cpuDevice, ShardReplicate, ShardRow)
}

// checkDistributedInitOutputBias is TestDistributedInitOutputBias on the
// devices of open, in each of the sharding modes.
func checkDistributedInitOutputBias(t *testing.T, open rankDevice, shardings ...string) {
	for _, sharding := range shardings {
		for _, rows := range [][]int{{20, 23}, {7, 0, 30}, {0, 12}} {
			t.Run(fmt.Sprint(sharding, rows), func(t *testing.T) {
				cfg := gradConfig("mmoe")
				n := len(rows)
				rng := rand.New(rand.NewPCG(5, 6))
				parts := make([]*loader.Batch, n)
				for r := range parts {
					parts[r] = gradBatch(rng, rows[r])
				}
				biases := func(c dist.Comm) (map[string][]float32, error) {
					dev, closeDev, err := open()
					if err != nil {
						return nil, err
					}
					defer closeDev()
					b := concatBatches(parts)
					mode := ShardReplicate
					if c != nil {
						mode = sharding
						if b = parts[c.Rank()]; b.Rows == 0 {
							b = &loader.Batch{}
						}
					}
					m, err := newTestModel(cfg, dev, c, mode)
					if err != nil {
						return nil, err
					}
					defer m.Release()
					if _, err := m.initOutputBias(b); err != nil {
						return nil, err
					}
					return allTables(m)
				}
				want, err := biases(nil)
				require.NoError(t, err)
				got, errs := runRanks(n, biases)
				for r := range n {
					require.NoError(t, errs[r], "rank %d", r)
					for name, v := range want {
						require.True(t, slices.Equal(v, got[r][name]), "rank %d: %s", r, name)
					}
				}
			})
		}
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
	checkDistributedStepFails(t, cpuDevice, `column "user" row 5: id 31 outside [0, 30]`, ShardReplicate, ShardRow)
}

// checkDistributedStepFails is TestDistributedStepFailsOnEveryRank on the
// devices of open, in each of the sharding modes; the bad rank's error
// contains wantBad.
func checkDistributedStepFails(t *testing.T, open rankDevice, wantBad string, shardings ...string) {
	type failCase struct {
		initBias bool
		want     string
		sharding string
	}
	var cases []failCase
	for _, sharding := range shardings {
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
				dev, closeDev, err := open()
				if err != nil {
					return -1, err
				}
				defer closeDev()
				m, err := newTestModel(cfg, dev, c, tc.sharding)
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
					assert.Contains(t, errs[r].Error(), wantBad, "the bad rank names the column")
				} else {
					assert.Contains(t, errs[r].Error(), tc.want)
				}
			}
		})
	}
}
