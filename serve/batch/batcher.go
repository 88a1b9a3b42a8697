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
	"slices"
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
//
// No goroutine of its own scores: a request that finds a worker free
// scores its batch on its own goroutine (the leader), taking the requests
// queued behind it along; a leader that is done hands its worker to the
// first request still queued, which leads the next batch. A request so
// costs one goroutine wake-up at most (none when a worker is free), where a
// scheduling goroutine and a goroutine per batch cost three hand-offs.
type Batcher struct {
	names []string
	float []bool
	tasks int
	score ScoreFunc
	opt   Options

	mu         sync.Mutex
	queue      []*job // waiting requests from queue[head] on, oldest first (cancelled ones are skipped when reached)
	head       int
	queuedRows int
	collected  int // rows of the collecting leader's batch
	idle       []*worker
	collecting *worker // a leader waiting MaxDelay for more requests, or nil
	closed     bool
	busy       sync.WaitGroup // workers out of idle
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
	// done gets one message: the batch's error, or a worker to lead the
	// next batch with.
	done chan message
	wait time.Duration // time in the queue, set when taken
}

type message struct {
	err  error
	lead *worker
	// formed: lead's batch is formed already (its leader's request timed
	// out while it waited for more): score it at once.
	formed bool
}

var jobs = sync.Pool{New: func() any { return &job{done: make(chan message, 1)} }}

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
	full  chan struct{} // wakes a collecting leader when MaxRows are queued
	timer *time.Timer
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
	b := &Batcher{names: names, float: float, tasks: tasks, score: score, opt: opt}
	for range opt.Workers {
		w := &worker{cols: make([]*loader.Column, len(names)), i32: make([][]int32, len(names)),
			f32: make([][]float32, len(names)), out: make([][]float32, tasks), view: make([][]float32, tasks),
			full: make(chan struct{}, 1)}
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
		b.idle = append(b.idle, w)
	}
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
	j := jobs.Get().(*job)
	j.r, j.enq, j.wait = r, time.Now(), 0
	j.state.Store(queued)
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		jobs.Put(j)
		return 0, ErrClosed
	}
	b.queue = append(b.queue, j)
	b.queuedRows += r.Rows
	if c := b.collecting; c != nil && b.queuedRows+b.collected >= b.opt.MaxRows {
		select {
		case c.full <- struct{}{}:
		default:
		}
	}
	lead := b.dispatch(j)
	b.mu.Unlock()
	if lead != nil {
		return b.finish(j, b.lead(ctx, lead, j, false))
	}
	var m message
	select {
	case m = <-j.done:
	case <-ctx.Done():
		if j.state.CompareAndSwap(queued, cancelled) {
			// j stays in the queue until a leader skips it: it is not
			// reused.
			return time.Since(j.enq), ctx.Err()
		}
		m = <-j.done
	}
	if m.lead != nil {
		m.err = b.lead(ctx, m.lead, j, m.formed)
	}
	return b.finish(j, m.err)
}

// finish recycles a taken job and returns Do's results.
func (b *Batcher) finish(j *job, err error) (time.Duration, error) {
	wait := j.wait
	j.r = nil
	jobs.Put(j)
	return wait, err
}

// dispatch, with b.mu held, hands idle workers to the oldest live queued
// requests while no leader is collecting. It returns the worker that self
// (the caller's own request) leads, if any; the other leaders are woken.
func (b *Batcher) dispatch(self *job) *worker {
	var mine *worker
	for len(b.idle) > 0 && b.collecting == nil {
		j := b.pop()
		if j == nil {
			break
		}
		w := b.idle[len(b.idle)-1]
		b.idle = b.idle[:len(b.idle)-1]
		b.busy.Add(1)
		if j == self {
			mine = w
		} else {
			j.done <- message{lead: w}
		}
	}
	return mine
}

// pop takes the oldest queued request whose caller still waits (nil if
// none), with b.mu held.
func (b *Batcher) pop() *job {
	for b.head < len(b.queue) {
		if j := b.next(); j.state.CompareAndSwap(queued, taken) {
			j.wait = time.Since(j.enq)
			return j
		}
	}
	return nil
}

// next removes the queue's oldest request, with b.mu held.
func (b *Batcher) next() *job {
	j := b.queue[b.head]
	b.queue[b.head] = nil
	b.head++
	b.queuedRows -= j.r.Rows
	if b.head == len(b.queue) { // empty: start over at the front
		b.queue, b.head = b.queue[:0], 0
	}
	return j
}

// take moves queued requests into w's batch while they fit, with b.mu held.
func (b *Batcher) take(w *worker, rows int) int {
	for b.head < len(b.queue) {
		j := b.queue[b.head]
		if j.state.Load() == queued && rows+j.r.Rows > b.opt.MaxRows {
			break // the next batch's first
		}
		b.next()
		if j.state.CompareAndSwap(queued, taken) {
			j.wait = time.Since(j.enq)
			w.jobs, rows = append(w.jobs, j), rows+j.r.Rows
		}
	}
	return rows
}

// lead scores a batch on w starting with first (taken), then passes w on
// and returns first's result. With formed, w.jobs is the batch already.
// While it waits for more requests, first may still time out (ctx): then
// it leaves the batch, and the batch goes to one of its other requests.
func (b *Batcher) lead(ctx context.Context, w *worker, first *job, formed bool) error {
	rows := first.r.Rows
	if formed {
		rows = 0
		for _, j := range w.jobs {
			rows += j.r.Rows
		}
	} else {
		w.jobs = append(w.jobs[:0], first)
	}
	if b.opt.Coalesce && !formed {
		b.mu.Lock()
		rows = b.take(w, rows)
		if b.opt.MaxDelay > 0 && rows < b.opt.MaxRows {
			if wait := time.Until(first.enq.Add(b.opt.MaxDelay)); wait > 0 {
				b.collecting, b.collected = w, rows
				select {
				case <-w.full: // a stale wake-up from an earlier batch
				default:
				}
				b.mu.Unlock()
				if w.timer == nil {
					w.timer = time.NewTimer(wait)
				} else {
					w.timer.Reset(wait)
				}
				var expired bool
				select {
				case <-w.timer.C:
				case <-w.full:
					w.timer.Stop()
				case <-ctx.Done():
					w.timer.Stop()
					expired = true
				}
				b.mu.Lock()
				b.collecting = nil
				rows = b.take(w, rows)
				if expired {
					err := ctx.Err()
					first.wait = time.Since(first.enq)
					w.jobs = slices.DeleteFunc(w.jobs, func(j *job) bool { return j == first })
					if len(w.jobs) > 0 {
						w.jobs[0].done <- message{lead: w, formed: true}
					} else {
						b.release(w)
					}
					b.mu.Unlock()
					return err
				}
				// Requests that did not fit lead batches of their own on
				// idle workers.
				b.dispatch(nil)
			}
		}
		b.mu.Unlock()
	}
	err := b.run(w, rows)
	for _, j := range w.jobs {
		if j != first {
			j.done <- message{err: err}
		}
	}
	w.jobs = w.jobs[:0]
	b.mu.Lock()
	b.release(w)
	b.mu.Unlock()
	return err
}

// release, with b.mu held, returns w to the idle workers and hands it on
// to the oldest queued request if any.
func (b *Batcher) release(w *worker) {
	b.idle = append(b.idle, w)
	b.dispatch(nil)
	// After dispatch, which may take w again: Close's wait must not see
	// no busy worker while queued requests remain.
	b.busy.Done()
}

// Close stops accepting requests, scores those already queued and waits
// for every batch to finish.
func (b *Batcher) Close() {
	b.mu.Lock()
	b.closed = true
	b.mu.Unlock()
	b.busy.Wait()
}

// run scores w's jobs, writes each its rows' scores and returns the
// batch's error.
func (b *Batcher) run(w *worker, rows int) error {
	var err error
	w.batch.Rows = rows
	if len(w.jobs) == 1 {
		// Alone: score the request's own columns into its own outputs.
		r := w.jobs[0].r
		for i, c := range w.cols {
			c.I32, c.F32 = r.Cols[i].I32, r.Cols[i].F32
		}
		err = b.scoreSafely(w.batch, r.Out)
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
		err = b.scoreSafely(w.batch, w.view)
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
	return err
}

// scoreSafely calls the score function, turning a panic into an error: the
// batch fails, its requests get the error, and the worker goes on.
func (b *Batcher) scoreSafely(batch *loader.Batch, out [][]float32) (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("batch: scoring panicked: %v", p)
		}
	}()
	return b.score(batch, out)
}
