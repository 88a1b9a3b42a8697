package mtl

import (
	"fmt"
	"math"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/mtlrank/mtlrank/dist"
	"github.com/mtlrank/mtlrank/layers"
)

// TestJoinTakesRank0sDenseState: ranks that start from different bits
// (parameters and optimizer state drawn from a seed of their own) hold
// rank 0's dense parameters and optimizer state once they join a job, in
// both sharding modes; with tables sharded by rows each rank keeps its own
// rows (no table is broadcast).
func TestJoinTakesRank0sDenseState(t *testing.T) {
	const n, rows = 2, 64
	for _, sharding := range []string{ShardReplicate, ShardRow} {
		t.Run(sharding, func(t *testing.T) {
			comms := dist.LocalGroup(n)
			models := make([]*Model, n)
			before := make([]map[string][]float32, n) // rank r's bits before it joins
			errs := make([]error, n)
			var wg sync.WaitGroup
			for r := range n {
				wg.Add(1)
				go func() {
					defer wg.Done()
					models[r], before[r], errs[r] = joinWithOwnState(comms[r], sharding, r, rows)
				}()
			}
			done := make(chan struct{})
			go func() { wg.Wait(); close(done) }()
			select {
			case <-done:
			case <-time.After(time.Minute):
				// A rank that fails a broadcast alone (a shard's length
				// that differs from rank 0's, as in MPI) leaves the others
				// waiting.
				t.Fatal("the ranks did not all finish joining within a minute")
			}
			for r := range n {
				if errs[r] != nil {
					t.Fatalf("rank %d: %v", r, errs[r])
				}
				defer models[r].Release()
			}
			for r := 1; r < n; r++ {
				m := models[r]
				for _, nt := range append(m.Params(), m.OptimizerState()...) {
					got := hostBits(m, nt)
					_, table := m.tableOf(nt.Name)
					switch {
					case table && sharding == ShardRow:
						if !sameFloatBits(got, before[r][nt.Name]) {
							t.Errorf("rank %d: %s changed when the rank joined: a table's rows are the rank's own", r, nt.Name)
						}
						if sameFloatBits(got, before[0][nt.Name]) {
							t.Errorf("rank %d: %s holds rank 0's bits: the test's ranks must start apart", r, nt.Name)
						}
					default:
						if !sameFloatBits(got, before[0][nt.Name]) {
							t.Errorf("rank %d: %s differs from rank 0's after joining", r, nt.Name)
						}
						if sameFloatBits(before[r][nt.Name], before[0][nt.Name]) {
							t.Errorf("rank %d: %s started with rank 0's bits: the test cannot tell a broadcast", r, nt.Name)
						}
					}
				}
			}
		})
	}
}

// joinWithOwnState builds rank r's model, gives it parameters and optimizer
// state of its own, records its tensors, and joins the job.
func joinWithOwnState(c dist.Comm, sharding string, r, rows int) (*Model, map[string][]float32, error) {
	cfg := gradConfig("mmoe")
	var m *Model
	var err error
	if sharding == ShardRow {
		// The rows of a sharded model are collective from the start: build
		// the shard alone (a LocalGroup of one rank would be one process), so
		// joining is the step under test.
		m, err = newModel(gradSchema(), cfg, testDev(), rows, layers.RowShard{Rank: c.Rank(), Size: c.Size()})
	} else {
		m, err = NewModel(gradSchema(), cfg, testDev(), rows)
	}
	if err != nil {
		return nil, nil, err
	}
	// Parameters (biases start at zero on every rank) and optimizer state
	// of the rank's own: positive values drawn from the rank's seed (Adam's
	// second moment must not be negative).
	rng := rand.New(rand.NewPCG(uint64(r), 1))
	for _, nt := range append(m.Params(), m.OptimizerState()...) {
		h := make([]float32, nt.Tensor.Len())
		for i := range h {
			h[i] = rng.Float32() + 0.01
		}
		m.dev.CopyFromHostF32(nt.Tensor, h)
	}
	before := map[string][]float32{}
	for _, nt := range append(m.Params(), m.OptimizerState()...) {
		before[nt.Name] = hostBits(m, nt)
	}
	if sharding == ShardRow {
		err = m.setRowComm(c)
	} else {
		err = m.setComm(c)
	}
	if err != nil {
		m.Release()
		return nil, nil, fmt.Errorf("joining: %w", err)
	}
	return m, before, nil
}

func hostBits(m *Model, nt NamedTensor) []float32 {
	h := make([]float32, nt.Tensor.Len())
	m.dev.CopyToHostF32(h, nt.Tensor)
	return h
}

func sameFloatBits(a, b []float32) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if math.Float32bits(a[i]) != math.Float32bits(b[i]) {
			return false
		}
	}
	return true
}
