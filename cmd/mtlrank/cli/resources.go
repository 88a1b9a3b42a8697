package cli

import (
	"bufio"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"

	"github.com/mtlrank/mtlrank/kernels"
	"github.com/mtlrank/mtlrank/loader"
	"github.com/mtlrank/mtlrank/mtl"
	"github.com/mtlrank/mtlrank/schema"
)

// checkThreads rejects a --threads above the CPUs this process may run on:
// more threads than CPUs oversubscribe them (the OpenBLAS and Go workers
// then preempt each other), which only slows training down.
func checkThreads(threads int) error {
	if n := runtime.NumCPU(); threads > n {
		return usagef("--threads %d is more than the %d CPUs available to this process; use at most %d (0: all of them)", threads, n, n)
	}
	return nil
}

// rankProcs is the GOMAXPROCS for a rank of a distributed job that shares
// its machine with nodeRanks-1 other ranks, or 0 to leave it as it is (at
// current). Go gives a process one P per CPU it may run on (cpus, its
// affinity mask). Ranks started without cores of their own (mpirun
// --bind-to none, or --oversubscribe, which turns binding off; srun
// --cpu-bind=none) each see every CPU of the machine: each rank's scheduler
// then runs its goroutines on all of them and its idle Ps spin looking for
// work, so the ranks keep taking each other's cores. On 2 cores, 2 ranks x 1
// thread trained at 0.78 of one rank x 2 threads this way and at 0.89 with
// GOMAXPROCS=1 (docs/DISTRIBUTED.md). A rank takes its share instead: cpus
// divided by the ranks on the machine, at least 1 and at least its threads
// (--threads; 0 takes the share). A GOMAXPROCS in the environment (env) is
// the user's choice and stays; so does a current value at or below the
// share (ranks bound to their cores get theirs from their affinity).
func rankProcs(env string, cpus, current, nodeRanks, threads int) int {
	if env != "" || nodeRanks <= 1 {
		return 0
	}
	share := max(cpus/nodeRanks, 1, threads)
	if share >= current {
		return 0
	}
	return share
}

// rankPrefetch is the --prefetch of a rank of a distributed job of ranks
// ranks whose Go scheduler has procs Ps (GOMAXPROCS, after rankProcs):
// prefetch as given when the user set it (given) or the job is one
// process, else 0 (batches read in the step's goroutine, synchronously)
// when the rank has a single P. With one P the prefetch goroutine cannot
// run beside the step: it runs when the step blocks, i.e. while the rank
// waits in an MPI call, and holds the P when the call returns, until it
// blocks or Go's scheduler preempts it. The rank then comes late to the
// next collective and the other ranks wait for it. Read in the step, each
// rank's loading happens at the same point of every step, on every rank
// alike, and the ranks stay closer in step; it costs nothing, since the
// prefetch ran in the step's waits anyway. The batches are the same either
// way (the loader's order does not depend on its prefetch).
// docs/DISTRIBUTED.md ("Keeping the ranks in step") has the figures.
func rankPrefetch(prefetch int, given bool, ranks, procs int) int {
	if given || ranks <= 1 || procs > 1 {
		return prefetch
	}
	return 0
}

// capBatch returns batch, lowered to the row count of the dataset at path
// (at least 1): a batch larger than the data holds the same rows, and the
// workspaces sized for it would only waste memory.
func capBatch(batch int, path string) (int, error) {
	rows, err := loader.CountRows(path)
	if err != nil {
		return 0, err
	}
	return int(max(1, min(int64(batch), rows))), nil
}

// memInfoPath is read for the memory available on the machine.
var memInfoPath = "/proc/meminfo"

// cgroupLimits are the (limit, usage) files of the process's memory cgroup,
// v2 then v1: in a container the cgroup limit, not the machine, decides
// when the process is killed.
var cgroupLimits = [][2]string{
	{"/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"},
	{"/sys/fs/cgroup/memory/memory.limit_in_bytes", "/sys/fs/cgroup/memory/memory.usage_in_bytes"},
}

// cgroupAvailable is what the memory cgroup still allows; ok is false
// without a cgroup limit ("max", or the v1 "unlimited" near 2^63).
func cgroupAvailable() (int64, bool) {
	read := func(path string) (int64, bool) {
		b, err := os.ReadFile(path)
		if err != nil {
			return 0, false
		}
		n, err := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
		return n, err == nil
	}
	for _, f := range cgroupLimits {
		limit, ok := read(f[0])
		if !ok || limit >= 1<<62 {
			continue
		}
		used, _ := read(f[1])
		return max(limit-used, 0), true
	}
	return 0, false
}

// availableMemory is the memory a model on dev may use: the free GPU memory
// on a CUDA device, else the host's MemAvailable, or what the memory cgroup
// still allows when that is less. ok is false when it is unknown (the
// check is then skipped).
func availableMemory(dev kernels.Device) (bytes int64, what string, ok bool) {
	if n, ok := deviceFreeMemory(dev); ok {
		return n, "the free memory of " + dev.Name(), true
	}
	bytes, what, ok = memAvailable()
	if n, cok := cgroupAvailable(); cok && (!ok || n < bytes) {
		return n, "the memory left under this process's cgroup limit", true
	}
	return bytes, what, ok
}

// memAvailable reads MemAvailable from /proc/meminfo.
func memAvailable() (int64, string, bool) {
	f, err := os.Open(memInfoPath)
	if err != nil {
		return 0, "", false
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		// "MemAvailable:   24211912 kB"
		fields := strings.Fields(sc.Text())
		if len(fields) >= 2 && fields[0] == "MemAvailable:" {
			kb, err := strconv.ParseInt(fields[1], 10, 64)
			if err != nil || kb <= 0 {
				return 0, "", false
			}
			return kb << 10, "the memory available on this machine (MemAvailable in " + memInfoPath + ")", true
		}
	}
	return 0, "", false
}

// checkMemory estimates what building the model of (s, cfg) on dev for
// batches of maxBatch rows will allocate, plus extra bytes the command
// needs beside it, and returns a clear error when that exceeds
// --max_memory (limit > 0) or the available memory: allocating it would
// end the process with the Go runtime's fatal "out of memory", or swap the
// machine to a halt.
func checkMemory(s *schema.Schema, cfg mtl.Config, dev kernels.Device, maxBatch int, limit, extra int64) error {
	return checkRankMemory(s, cfg, dev, maxBatch, limit, extra, 1, false)
}

// checkRankMemory is checkMemory for one rank of a job of ranks ranks
// whose embedding tables are replicated or (rowSharded) sharded by rows:
// the distributed step's buffers count too (mtl.EstimateRankMemory).
func checkRankMemory(s *schema.Schema, cfg mtl.Config, dev kernels.Device, maxBatch int, limit, extra int64, ranks int, rowSharded bool) error {
	est, err := mtl.EstimateRankMemory(s, cfg, dev, maxBatch, ranks, rowSharded)
	if err != nil {
		return &usageError{err.Error()}
	}
	what := "--max_memory"
	if limit <= 0 {
		var ok bool
		if limit, what, ok = availableMemory(dev); !ok {
			return nil
		}
	}
	need := est.Total
	desc := est.String()
	if extra > 0 {
		need += extra
		desc = fmt.Sprintf("about %s: the model %s, and %s for the data", mtl.FormatBytes(need), est, mtl.FormatBytes(extra))
	}
	if need > limit {
		return fmt.Errorf("the model needs %s, more than the %s of %s; lower the batch sizes, the layer widths or the embedding tables (int_domain.max), or set --max_memory if the estimate is wrong for this machine",
			desc, mtl.FormatBytes(limit), what)
	}
	return nil
}
