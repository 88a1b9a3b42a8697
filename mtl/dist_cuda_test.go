//go:build cuda

package mtl

// Distributed training on CUDA ranks: the exactness cases of
// TestDistributedStepMatchesOneProcess, InitOutputBias and the failure
// flag, each rank of a dist.LocalGroup on a CUDA context of its own (as
// the processes of an MPI job on their GPUs), the gradients and rows
// staged through pinned host memory (docs/DISTRIBUTED.md, "GPU ranks").

import (
	"errors"
	"fmt"
	"math"
	"sync"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/mtlrank/mtlrank/cublas"
	"github.com/mtlrank/mtlrank/dist"
	"github.com/mtlrank/mtlrank/kernels"
)

// cudaDevice opens GPU 0 for one rank; its closer fails when the rank left
// tensors allocated.
func cudaDevice() (kernels.Device, func() error, error) {
	d, err := kernels.NewCUDA(0)
	if err != nil {
		return nil, nil, err
	}
	return d, func() error {
		closeMu.Lock()
		defer closeMu.Unlock()
		return d.Close()
	}, nil
}

// closeMu serialises the ranks' Close. The emulated runtime's cudaFree
// (which a context's Close calls) waits for every stream of the process,
// from a list it copies first, and a stream that another context destroys
// meanwhile is freed under it (csrc/emu/runtime.cpp: cudaFree and
// cudaDeviceSynchronize against cudaStreamDestroy): the waiter then hangs.
// The ranks of a real job are processes of their own.
var closeMu sync.Mutex

// skipWithoutCUDA skips the test when there is no usable CUDA device.
func skipWithoutCUDA(t *testing.T) {
	t.Helper()
	d, err := kernels.NewCUDA(0)
	if errors.Is(err, cublas.ErrNoDevice) {
		t.Skipf("no usable CUDA device: %v", err)
	}
	require.NoError(t, err)
	require.NoError(t, d.Close())
}

// cudaExactSteps is the length of the exactness runs on CUDA ranks: the
// emulated device runs every GPU thread on the host, where the CPU test's
// 50 steps (exactSteps) with N = 1, 2, 3 took 4 to 8 minutes on 2 cores.
// 20 steps still end with the last rank's part run out for 3 steps
// (distSteps).
const cudaExactSteps = 20

// TestCUDADistributedStepMatchesOneProcess: on CUDA ranks, every case of
// TestDistributedStepMatchesOneProcess with N = 2, 3, with the tables
// replicated and, in the cases marked cudaRow, sharded by rows, reaches the parameters and optimizer
// state of one CUDA process within 1e-5 relative after cudaExactSteps
// steps, with the same bits on every rank and in both modes (exactRanks);
// and the CUDA ranks' losses stay within the CPU-vs-CUDA parity tolerance
// of TestCUDAModelParity's training steps (1e-4 + 2e-3·|loss|) of N CPU
// ranks' in the same mode on the same batches. N = 1 is left to the CPU: a
// communicator of one rank leaves the engine as it is (SetComm,
// SetRowComm), so that it would compare one CUDA process with itself.
func TestCUDADistributedStepMatchesOneProcess(t *testing.T) {
	skipWithoutCUDA(t)
	for _, c := range exactCases {
		modes := []string{ShardReplicate}
		if c.cudaRow {
			modes = append(modes, ShardRow)
		}
		for _, n := range []int{2, 3} {
			t.Run(fmt.Sprintf("%v/%d", c, n), func(t *testing.T) {
				gpu := exactRanks(t, c, n, cudaExactSteps, cudaDevice, modes...)
				cpu := exactRanks(t, c, n, cudaExactSteps, cpuDevice, modes...)
				for m, mode := range modes {
					for s, want := range cpu[m].losses {
						assert.InDelta(t, want, gpu[m].losses[s], 1e-4+2e-3*math.Abs(want), "%s: step %d: CUDA ranks' loss against CPU ranks'", mode, s)
					}
				}
			})
		}
	}
}

// TestCUDADistributedInitOutputBias is TestDistributedInitOutputBias on
// CUDA ranks: the biases one CUDA process computes, bit for bit.
func TestCUDADistributedInitOutputBias(t *testing.T) {
	skipWithoutCUDA(t)
	checkDistributedInitOutputBias(t, cudaDevice, ShardReplicate, ShardRow)
}

// TestCUDADistributedStepFailsOnEveryRank is
// TestDistributedStepFailsOnEveryRank on CUDA ranks.
func TestCUDADistributedStepFailsOnEveryRank(t *testing.T) {
	skipWithoutCUDA(t)
	checkDistributedStepFails(t, cudaDevice, `"user"`, ShardReplicate, ShardRow)
}

// TestCUDARowLookupDeviceFaultFailsEveryRank is
// TestRowLookupDeviceFaultFailsEveryRank on CUDA ranks: the rows asked of
// the faulty rank are gathered on its GPU and staged through pinned
// memory.
func TestCUDARowLookupDeviceFaultFailsEveryRank(t *testing.T) {
	skipWithoutCUDA(t)
	checkRowLookupDeviceFault(t, cudaDevice)
}

// TestCUDADistributedRefusesGraphs: graph capture and a communicator
// exclude each other, whichever comes first, with an error saying why,
// with the tables replicated and sharded by rows.
func TestCUDADistributedRefusesGraphs(t *testing.T) {
	skipWithoutCUDA(t)
	for _, sharding := range []string{ShardReplicate, ShardRow} {
		for _, captureFirst := range []bool{true, false} {
			_, errs := runRanks(2, func(c dist.Comm) (struct{}, error) {
				dev, closeDev, err := cudaDevice()
				if err != nil {
					return struct{}{}, err
				}
				defer closeDev()
				cfg := gradConfig("mlp")
				cfg.CUDAGraph = captureFirst
				m, err := newTestModel(cfg, dev, c, sharding)
				if err != nil {
					return struct{}{}, err
				}
				defer m.Release()
				if captureFirst {
					return struct{}{}, nil
				}
				return struct{}{}, m.SetCUDAGraph(true)
			})
			for r, err := range errs {
				require.Error(t, err, "%s, capture first: %v, rank %d", sharding, captureFirst, r)
				assert.Contains(t, err.Error(), "graph capture of the training step (Config.CUDAGraph, --cuda_graph) is not available in distributed training")
			}
		}
	}
}

// TestCUDAShardedModelHoldsItsRows is TestShardedModelHoldsItsRows on
// CUDA ranks: each allocates only its rows of every table and of their
// optimizer state on its device, the rows of the tables one process
// starts from, and leaves nothing allocated (the device's Close checks).
func TestCUDAShardedModelHoldsItsRows(t *testing.T) {
	skipWithoutCUDA(t)
	checkShardedModelHoldsItsRows(t, cudaDevice, 2, 3)
}
