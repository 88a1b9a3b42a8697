package mtl

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/mtlrank/mtlrank/dist"
	"github.com/mtlrank/mtlrank/kernels"
	"github.com/mtlrank/mtlrank/loader"
)

// errDeviceFault is the fault a faultyDevice injects.
var errDeviceFault = errors.New("injected device fault")

// faultyDevice is a device without the CPU's capabilities (so that a
// row-sharded step takes the path of GPU ranks: the rows asked of a rank
// are gathered on its device and staged through pinned memory) whose
// EmbeddingGather fails once armed; the other methods are the CPU's.
type faultyDevice struct {
	kernels.Device
	armed atomic.Bool
}

func (d *faultyDevice) EmbeddingGather(out *kernels.Tensor, col int, table, ids, offsets *kernels.Tensor, mode kernels.Combiner) error {
	if d.armed.Load() {
		return errDeviceFault
	}
	return d.Device.EmbeddingGather(out, col, table, ids, offsets, mode)
}

// TestRowLookupDeviceFaultFailsEveryRank: with tables sharded by rows on
// device ranks, a rank whose device fails while gathering the rows the
// others asked of it still takes part in the exchange (it sends zeros), so
// that no rank is left waiting; the step then fails on every rank, the
// faulty rank with its device's error, and no rank updates anything. The
// step after a healthy one is the one that fails, so the lookup's buffers
// are warm.
func TestRowLookupDeviceFaultFailsEveryRank(t *testing.T) {
	checkRowLookupDeviceFault(t, cpuDevice)
}

// checkRowLookupDeviceFault is TestRowLookupDeviceFaultFailsEveryRank on
// the devices of open, each wrapped in a faultyDevice.
func checkRowLookupDeviceFault(t *testing.T, open rankDevice) {
	const n, badRank = 3, 2
	cfg := gradConfig("mmoe")
	rng := rand.New(rand.NewPCG(3, 4))
	steps := [2][]*loader.Batch{}
	for s := range steps {
		steps[s] = make([]*loader.Batch, n)
		for r := range n {
			steps[s][r] = gradBatch(rng, 16)
		}
	}
	type result struct {
		step    int
		updated string // a parameter the failed step changed
	}
	rank := func(c dist.Comm) (result, error) {
		inner, closeDev, err := open()
		if err != nil {
			return result{}, err
		}
		defer closeDev()
		dev := &faultyDevice{Device: inner}
		m, err := newTestModel(cfg, dev, c, ShardRow)
		if err != nil {
			return result{}, err
		}
		defer m.Release()
		if _, err := m.TrainStep(steps[0][c.Rank()]); err != nil {
			return result{}, fmt.Errorf("the healthy step: %w", err)
		}
		before := hostParamsOf(m)
		dev.armed.Store(c.Rank() == badRank)
		_, err = m.TrainStep(steps[1][c.Rank()])
		dev.armed.Store(false)
		out := result{step: m.Step()}
		for name, v := range hostParamsOf(m) {
			if !slices.Equal(v, before[name]) {
				out.updated = name
			}
		}
		return out, err
	}
	var res []result
	var errs []error
	done := make(chan struct{})
	go func() {
		defer close(done)
		res, errs = runRanks(n, rank)
	}()
	select {
	case <-done:
	case <-time.After(time.Minute):
		t.Fatal("the ranks are still in the step after a minute: a rank left the others waiting in a collective")
	}
	for r := range n {
		require.Error(t, errs[r], "rank %d", r)
		assert.Equal(t, 1, res[r].step, "rank %d's step counter", r)
		assert.Empty(t, res[r].updated, "rank %d updated a parameter", r)
		if r == badRank {
			assert.ErrorIs(t, errs[r], errDeviceFault, "the faulty rank returns its device's error")
			assert.Contains(t, errs[r].Error(), "row lookup: gathering the rows of table")
		} else {
			assert.Contains(t, errs[r].Error(), "mtl: step 1: 1 of the 3 ranks failed")
		}
	}
}
