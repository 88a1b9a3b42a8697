// Package batch coalesces concurrent scoring requests into larger batches,
// as Triton's dynamic batcher does: requests wait in one queue; whenever a
// scoring worker is free, the requests queued so far (up to a maximum
// number of rows, waiting up to a maximum queue delay for more) are scored
// together in one call and the scores handed back to each request.
//
// Batching only changes which rows share a call, never a row's score: the
// model's rows are independent (no batch statistics at inference), and the
// CPU kernels give every row the same bits whatever the batch's size and
// thread count (mtl's TestPredictThreadIndependent and kernels'
// TestGemmRowIndependentOfRows; serve/server's TestDynamicBatchingConcurrent checks
// coalesced requests against each scored alone).
package batch

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mtlrank/mtlrank/loader"
)

// Col is one input column of a request: int32 ids or float32 values, one
// per row.
type Col struct {
	I32 []int32
	F32 []float32
}

// Request is one request's encoded rows. Out receives the scores:
// Out[t][i] for task t and row i (each Out[t] needs Rows values).
type Request struct {
	Rows int
	Cols []Col // in the Batcher's column order
	Out  [][]float32
}

// ScoreFunc scores a batch (mtl.Scorer.Score).
type ScoreFunc func(b *loader.Batch, out [][]float32) error

// Options configures a Batcher.
type Options struct {
	// MaxRows is the largest batch scored at once, in rows (and the
	// largest request accepted).
	MaxRows int
	// MaxDelay is how long the first request of a batch may wait for more
	// requests to join it; 0 scores at once what is queued.
	MaxDelay time.Duration
	// Workers is the number of batches scored at once.
	Workers int
	// Coalesce joins requests; false scores every request alone (through
	// the same queue).
	Coalesce bool
	// OnBatch, when set, is called after each scored batch with its rows
	// and number of requests.
	OnBatch func(rows, requests int)
}

// Batcher queues requests and scores them in batches.
type Batcher struct {
	names  []string
	float  []bool
	tasks  int
	score  ScoreFunc
	opt    Options
	queue  chan *job
	idle   chan *worker
	mu     sync.RWMutex // guards closed against Do sending on a closed queue
	closed bool
	done   chan struct{}
}

// job states
const (
	queued int32 = iota
	taken
	cancelled
)

type job struct {
	r     *Request
	enq   time.Time
	state atomic.Int32
	done  chan error
	wait  time.Duration // time in the queue, set when taken
}

// worker owns the buffers of a batch of MaxRows rows and its outputs; its
// batch's columns point into them, or into a lone request's own columns.
type worker struct {
	batch *loader.Batch
	cols  []*loader.Column
	i32   [][]int32   // per column (nil for float columns)
	f32   [][]float32 // per column (nil for id columns)
	out   [][]float32 // per task
	view  [][]float32 // out cut to the batch's rows
	jobs  []*job
}

// New starts a Batcher for a model with the given input columns (float
// marks float32 columns) and number of tasks.
func New(names []string, float []bool, tasks int, score ScoreFunc, opt Options) (*Batcher, error) {
	if len(names) != len(float) {
		return nil, errors.New("batch: names and float differ in length")
	}
	if opt.MaxRows < 1 || opt.Workers < 1 || opt.MaxDelay < 0 {
		return nil, fmt.Errorf("batch: MaxRows %d and Workers %d must be >= 1, MaxDelay %v >= 0", opt.MaxRows, opt.Workers, opt.MaxDelay)
	}
	b := &Batcher{names: names, float: float, tasks: tasks, score: score, opt: opt,
		queue: make(chan *job, 4*opt.Workers+64), idle: make(chan *worker, opt.Workers), done: make(chan struct{})}
	for range opt.Workers {
		w := &worker{cols: make([]*loader.Column, len(names)), i32: make([][]int32, len(names)),
			f32: make([][]float32, len(names)), out: make([][]float32, tasks), view: make([][]float32, tasks)}
		m := make(map[string]*loader.Column, len(names))
		for i, n := range names {
			if float[i] {
				w.f32[i] = make([]float32, opt.MaxRows)
			} else {
				w.i32[i] = make([]int32, opt.MaxRows)
			}
			w.cols[i] = &loader.Column{Name: n}
			m[n] = w.cols[i]
		}
		for t := range w.out {
			w.out[t] = make([]float32, opt.MaxRows)
		}
		w.batch = loader.NewBatch(0, m, "request batch", nil)
		b.idle <- w
	}
	go b.schedule()
	return b, nil
}

// ErrClosed is returned by Do after Close.
var ErrClosed = errors.New("batch: batcher is closed")

// Do queues r, waits for its scores and returns how long it waited in the
// queue. When ctx ends before r is taken from the queue, Do returns
// ctx.Err() at once; once taken, r is scored and Do waits for it (a batch
// takes milliseconds), so r.Out is never written after Do returns.
func (b *Batcher) Do(ctx context.Context, r *Request) (time.Duration, error) {
	if r.Rows < 1 || r.Rows > b.opt.MaxRows {
		return 0, fmt.Errorf("batch: %d rows outside [1, %d]", r.Rows, b.opt.MaxRows)
	}
	if len(r.Cols) != len(b.names) || len(r.Out) != b.tasks {
		return 0, fmt.Errorf("batch: request has %d columns and %d outputs, want %d and %d", len(r.Cols), len(r.Out), len(b.names), b.tasks)
	}
	j := &job{r: r, enq: time.Now(), done: make(chan error, 1)}
	b.mu.RLock()
	if b.closed {
		b.mu.RUnlock()
		return 0, ErrClosed
	}
	select {
	case b.queue <- j:
	case <-ctx.Done():
		b.mu.RUnlock()
		return 0, ctx.Err()
	}
	b.mu.RUnlock()
	select {
	case err := <-j.done:
		return j.wait, err
	case <-ctx.Done():
		if j.state.CompareAndSwap(queued, cancelled) {
			return time.Since(j.enq), ctx.Err()
		}
		err := <-j.done
		return j.wait, err
	}
}

// Close stops accepting requests, scores those already queued and waits
// for every batch to finish.
func (b *Batcher) Close() {
	b.mu.Lock()
	if !b.closed {
		b.closed = true
		close(b.queue)
	}
	b.mu.Unlock()
	<-b.done
}

// live reports whether j's caller still waits for it.
func live(j *job) bool { return j.state.Load() == queued }

// schedule forms batches whenever a worker is idle, so that requests
// arriving while every worker is busy queue up and are scored together.
func (b *Batcher) schedule() {
	var wg sync.WaitGroup
	defer func() {
		wg.Wait()
		close(b.done)
	}()
	var carry *job // received, but did not fit the previous batch
	var timer *time.Timer
	for {
		w := <-b.idle
		w.jobs = w.jobs[:0]
		rows := 0
		if carry != nil {
			w.jobs, rows, carry = append(w.jobs, carry), carry.r.Rows, nil
		} else {
			for len(w.jobs) == 0 {
				j, ok := <-b.queue
				if !ok {
					return
				}
				if live(j) {
					w.jobs, rows = append(w.jobs, j), j.r.Rows
				}
			}
		}
		if b.opt.Coalesce {
			deadline := w.jobs[0].enq.Add(b.opt.MaxDelay)
		collect:
			for rows < b.opt.MaxRows {
				var j *job
				var ok bool
				select {
				case j, ok = <-b.queue:
				default:
					wait := time.Until(deadline)
					if wait <= 0 {
						break collect
					}
					if timer == nil {
						timer = time.NewTimer(wait)
					} else {
						timer.Reset(wait)
					}
					select {
					case j, ok = <-b.queue:
						timer.Stop()
					case <-timer.C:
						break collect
					}
				}
				if !ok {
					break collect
				}
				if !live(j) {
					continue
				}
				if rows+j.r.Rows > b.opt.MaxRows {
					carry = j
					break collect
				}
				w.jobs, rows = append(w.jobs, j), rows+j.r.Rows
			}
		}
		// Take the jobs whose callers still wait: from here on they are
		// scored, and callers that gave up while the batch formed are not.
		kept := w.jobs[:0]
		rows = 0
		for _, j := range w.jobs {
			if j.state.CompareAndSwap(queued, taken) {
				j.wait = time.Since(j.enq)
				kept, rows = append(kept, j), rows+j.r.Rows
			}
		}
		w.jobs = kept
		if len(kept) == 0 {
			b.idle <- w
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			b.run(w, rows)
			b.idle <- w
		}()
	}
}

// run scores w's jobs and hands each its rows' scores.
func (b *Batcher) run(w *worker, rows int) {
	var err error
	w.batch.Rows = rows
	if len(w.jobs) == 1 {
		// Alone: score the request's own columns into its own outputs.
		r := w.jobs[0].r
		for i, c := range w.cols {
			c.I32, c.F32 = r.Cols[i].I32, r.Cols[i].F32
		}
		err = b.score(w.batch, r.Out)
	} else {
		off := 0
		for _, j := range w.jobs {
			for i := range w.cols {
				if b.float[i] {
					copy(w.f32[i][off:off+j.r.Rows], j.r.Cols[i].F32)
				} else {
					copy(w.i32[i][off:off+j.r.Rows], j.r.Cols[i].I32)
				}
			}
			off += j.r.Rows
		}
		for i, c := range w.cols {
			c.I32, c.F32 = nil, nil
			if b.float[i] {
				c.F32 = w.f32[i][:rows]
			} else {
				c.I32 = w.i32[i][:rows]
			}
		}
		for t := range w.view {
			w.view[t] = w.out[t][:rows]
		}
		err = b.score(w.batch, w.view)
		if err == nil {
			off = 0
			for _, j := range w.jobs {
				for t := range w.view {
					copy(j.r.Out[t][:j.r.Rows], w.view[t][off:off+j.r.Rows])
				}
				off += j.r.Rows
			}
		}
	}
	for _, c := range w.cols { // keep no reference to a request's memory
		c.I32, c.F32 = nil, nil
	}
	if b.opt.OnBatch != nil {
		b.opt.OnBatch(rows, len(w.jobs))
	}
	for _, j := range w.jobs {
		j.done <- err
	}
}
