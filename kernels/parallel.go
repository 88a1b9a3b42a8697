package kernels

import (
	"runtime"
	"sync"
	"sync/atomic"
	"time"
)

// rangeTask is a piece of work over items [0, n) that can be split into
// disjoint sub-ranges run concurrently.
type rangeTask interface {
	run(lo, hi int)
}

type poolJob struct {
	t      rangeTask
	lo, hi int
}

// pool is a fixed set of worker goroutines for one CPU device. A parallel op
// takes mu (with TryLock: when another goroutine is already using the pool the
// op runs serially in its caller instead of waiting), stores its task in one
// of the pool's task slots (so that nothing is allocated per call), and splits
// it into at most `threads` contiguous chunks, each run by a worker while the
// caller waits (see runLocked for why the caller runs none).
//
// The workers reference only the pool, never the CPU, so a CPU that becomes
// unreachable is collected and its cleanup closes the workers' channels.
type pool struct {
	mu      sync.Mutex
	threads int
	work    []chan poolJob
	wg      sync.WaitGroup
	yielded time.Time // when a caller last yielded after a parallel op (see unlock)

	// Task slots, used only while mu is held.
	ew          ewTask
	bias        biasActTask
	bgrad       biasGradTask
	actBias     actBiasGradTask
	soft        softmaxTask
	gate        gateTask
	gateBwd     gateBwdTask
	gatesBwd    gatesBwdTask
	gateSetsBwd gateSetsBwdTask
	gatesPass   gatesPassTask
	cols        copyColsTask
	gather      gatherTask
	loss        lossTask
	adam        adamTask
	adagrad     adagradTask
	sgd         sgdTask
	drop        dropoutTask
	gemm        gemmTask
	gemmSum     gemmSumTask
	shards      shardTask
	partial     []float64 // per-block partial sums of reductions
}

// shardTask hands out items 0..n-1 one at a time to the goroutines that
// run it (each run call takes items until none is left), so uneven items
// balance themselves.
type shardTask struct {
	f    func(int)
	n    int64
	next atomic.Int64
}

func (t *shardTask) run(lo, hi int) {
	for {
		i := t.next.Add(1) - 1
		if i >= t.n {
			return
		}
		t.f(int(i))
	}
}

func newPool(threads int) *pool {
	p := &pool{threads: threads, work: make([]chan poolJob, threads)}
	for i := range p.work {
		ch := make(chan poolJob, 1)
		p.work[i] = ch
		go p.worker(ch)
	}
	return p
}

func (p *pool) worker(ch chan poolJob) {
	for j := range ch {
		j.t.run(j.lo, j.hi)
		p.wg.Done()
	}
}

func (p *pool) close() {
	for _, ch := range p.work {
		close(ch)
	}
}

// runLocked splits [0, n) into chunks of whole `unit`s, at most one per
// thread and at most `chunks` in all, runs them and waits. mu must be held.
//
// Every chunk goes to a worker and the caller parks until they are done,
// rather than running the first chunk itself. A goroutine woken through a
// channel waits in the waker's P (its runnext slot); had the caller gone
// on running, another thread would have to steal the woken worker from
// there, and the runtime sleeps (usleep(3)) before it steals a runnext
// from a running P, a sleep that lasts about 100 us in a VM: the worker of
// a parallel op started tens of microseconds late (docs/PERFORMANCE.md,
// "Idle time in a training step"). Parked, the caller gives its P to the
// last worker woken at once, and the earlier ones, queued behind it, are
// stolen without that sleep. The chunks are the same, so are the results.
func (p *pool) runLocked(t rangeTask, n, unit, chunks int) {
	if chunks > p.threads {
		chunks = p.threads
	}
	units := (n + unit - 1) / unit
	if chunks > units {
		chunks = units
	}
	if chunks <= 1 {
		t.run(0, n)
		return
	}
	per := (units + chunks - 1) / chunks * unit
	p.wg.Add(chunks)
	for i := range chunks {
		lo := i * per
		hi := min(lo+per, n)
		if lo >= hi {
			p.wg.Done()
			continue
		}
		p.work[i] <- poolJob{t: t, lo: lo, hi: hi}
	}
	p.wg.Wait()
}

// yieldEvery is how often at most a goroutine that runs parallel ops
// yields its P to the scheduler (see unlock).
const yieldEvery = time.Millisecond

// unlock releases mu after a parallel op, then calls runtime.Gosched when
// the last such call is yieldEvery ago (outside mu, so that the pool stays
// free for other callers meanwhile).
//
// Why: while a parallel op runs, every P is busy, most of the time in a
// cgo call. The runtime's sysmon takes the P away from a goroutine in a
// cgo call when that P has run the same goroutine for 10 ms or has been
// in the same call for two of sysmon's ticks (20 us and up), and hands it
// to another thread, which finds nothing to run and sleeps again: two
// futex calls and a thread on a core the workers need. Each such retake
// also resets sysmon's tick to 20 us, so that it wakes (nanosleep) tens of
// times per training step and retakes again. The workers go through the
// scheduler after every job (they park on their channel); the caller of a
// step's parallel ops often does not (its wait returns at once when it
// finished last), so it yields here, and sysmon can settle at its slowest
// tick (10 ms). See docs/PERFORMANCE.md, "Wake-ups in a training step".
func (p *pool) unlock() {
	now := time.Now()
	due := now.Sub(p.yielded) >= yieldEvery
	if due {
		p.yielded = now
	}
	p.mu.Unlock()
	if due {
		runtime.Gosched()
	}
}

// Work is counted in units of about 0.1 ns: one element of a vectorised
// element-wise C kernel. parMinWork is the least work worth handing to
// another goroutine: waking one through a channel costs a few microseconds.
const (
	parMinWork = 1 << 16
	costExpC   = 8   // an element of a vectorised C loop with a polynomial exp
	costRandom = 300 // a random access to a large table (a cache miss)
)

// chunksFor is the number of chunks worth using for n items of the given
// cost each (1: run serially).
func (c *CPU) chunksFor(n, cost int) int {
	if c.pool == nil {
		return 1
	}
	w := n * cost
	if w < 2*parMinWork {
		return 1
	}
	return min(c.threads, w/parMinWork)
}

// runPooled runs t over the pool's workers when the pool is free (TryLock),
// copying it into slot, the pool's task slot for its type, so that nothing is
// allocated per call; it reports false, touching nothing, when the pool is
// busy and the caller should run t serially.
func runPooled[T any, P interface {
	*T
	rangeTask
}](p *pool, slot P, t T, n, unit, chunks int) bool {
	if !p.mu.TryLock() {
		return false
	}
	*slot = t
	p.runLocked(slot, n, unit, chunks)
	var zero T
	*slot = zero
	p.unlock()
	return true
}
