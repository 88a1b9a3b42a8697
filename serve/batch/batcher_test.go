package batch

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/mtlrank/mtlrank/loader"
)

// rowScore is a row-wise fake model: task 0 = id*10 + x, task 1 = -id.
func rowScore(seen *[]int, mu *sync.Mutex, delay time.Duration) ScoreFunc {
	return func(b *loader.Batch, out [][]float32) error {
		if mu != nil {
			mu.Lock()
			*seen = append(*seen, b.Rows)
			mu.Unlock()
		}
		time.Sleep(delay)
		ids, xs := b.Column("id").I32, b.Column("x").F32
		if len(ids) != b.Rows || len(xs) != b.Rows {
			return errors.New("column length differs from rows")
		}
		for i := range b.Rows {
			out[0][i] = float32(ids[i])*10 + xs[i]
			out[1][i] = -float32(ids[i])
		}
		return nil
	}
}

func request(rows, base int) *Request {
	r := &Request{Rows: rows, Cols: []Col{{I32: make([]int32, rows)}, {F32: make([]float32, rows)}},
		Out: [][]float32{make([]float32, rows), make([]float32, rows)}}
	for i := range rows {
		r.Cols[0].I32[i] = int32(base + i)
		r.Cols[1].F32[i] = float32(i) / 4
	}
	return r
}

func checkOut(t *testing.T, r *Request) {
	t.Helper()
	for i := range r.Rows {
		require.Equal(t, float32(r.Cols[0].I32[i])*10+r.Cols[1].F32[i], r.Out[0][i], "row %d", i)
		require.Equal(t, -float32(r.Cols[0].I32[i]), r.Out[1][i], "row %d", i)
	}
}

func TestBatcherConcurrent(t *testing.T) {
	for _, tc := range []struct {
		name     string
		coalesce bool
		workers  int
		delay    time.Duration
	}{
		{"coalesce/1 worker/no delay", true, 1, 0},
		{"coalesce/2 workers/delay", true, 2, 5 * time.Millisecond},
		{"alone", false, 2, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var seen []int
			var mu sync.Mutex
			var batches, reqs atomic.Int64
			b, err := New([]string{"id", "x"}, []bool{false, true}, 2, rowScore(&seen, &mu, time.Millisecond), Options{
				MaxRows: 10, MaxDelay: tc.delay, Workers: tc.workers, Coalesce: tc.coalesce,
				OnBatch: func(rows, n int) { batches.Add(1); reqs.Add(int64(n)) },
			})
			require.NoError(t, err)
			var wg sync.WaitGroup
			for g := range 40 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					r := request(1+g%4, g*100)
					_, err := b.Do(context.Background(), r)
					assert.NoError(t, err)
					checkOut(t, r)
				}()
			}
			wg.Wait()
			b.Close()
			assert.Equal(t, int64(40), reqs.Load())
			for _, rows := range seen {
				assert.LessOrEqual(t, rows, 10)
			}
			if tc.coalesce {
				assert.Less(t, batches.Load(), int64(40), "nothing coalesced")
			} else {
				assert.Equal(t, int64(40), batches.Load())
			}
		})
	}
}

func TestBatcherCancelAndClose(t *testing.T) {
	block := make(chan struct{})
	score := func(b *loader.Batch, out [][]float32) error {
		<-block
		return errors.New("model failed")
	}
	b, err := New([]string{"id", "x"}, []bool{false, true}, 2, score, Options{MaxRows: 4, Workers: 1, Coalesce: true})
	require.NoError(t, err)

	// The first request occupies the only worker; the second waits in the
	// queue and gives up when its context ends.
	first := make(chan error, 1)
	go func() {
		_, err := b.Do(context.Background(), request(2, 0))
		first <- err
	}()
	time.Sleep(20 * time.Millisecond)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Millisecond)
	defer cancel()
	t0 := time.Now()
	_, err = b.Do(ctx, request(2, 0))
	require.ErrorIs(t, err, context.DeadlineExceeded)
	assert.Less(t, time.Since(t0), time.Second)

	// A scoring error reaches the request; Close waits for it.
	third := make(chan error, 1)
	go func() {
		_, err := b.Do(context.Background(), request(1, 0))
		third <- err
	}()
	time.Sleep(20 * time.Millisecond)
	close(block)
	require.ErrorContains(t, <-first, "model failed")
	b.Close()
	require.ErrorContains(t, <-third, "model failed", "queued before Close: scored")
	_, err = b.Do(context.Background(), request(1, 0))
	require.ErrorIs(t, err, ErrClosed)

	// Bad requests.
	b2, err := New([]string{"id", "x"}, []bool{false, true}, 2, score, Options{MaxRows: 4, Workers: 1})
	require.NoError(t, err)
	defer b2.Close()
	_, err = b2.Do(context.Background(), request(5, 0))
	require.ErrorContains(t, err, "5 rows outside [1, 4]")
	r := request(1, 0)
	r.Cols = r.Cols[:1]
	_, err = b2.Do(context.Background(), r)
	require.ErrorContains(t, err, "request has 1 columns")
	_, err = New([]string{"id"}, []bool{false, true}, 2, score, Options{MaxRows: 4, Workers: 1})
	require.Error(t, err)
	_, err = New([]string{"id"}, []bool{false}, 2, score, Options{MaxRows: 0, Workers: 1})
	require.Error(t, err)
}

// A panic in the model fails the requests of its batch with an error, and
// the batcher goes on scoring the next ones.
func TestBatcherScorePanic(t *testing.T) {
	var calls atomic.Int64
	score := func(b *loader.Batch, out [][]float32) error {
		if calls.Add(1) == 1 {
			panic("kernel fault")
		}
		return rowScore(nil, nil, 0)(b, out)
	}
	b, err := New([]string{"id", "x"}, []bool{false, true}, 2, score, Options{MaxRows: 8, Workers: 1, Coalesce: true})
	require.NoError(t, err)
	defer b.Close()
	_, err = b.Do(context.Background(), request(2, 0))
	require.ErrorContains(t, err, "scoring panicked: kernel fault")
	r := request(3, 7)
	_, err = b.Do(context.Background(), r)
	require.NoError(t, err)
	checkOut(t, r)
}

// With a long queue delay, a batch is scored as soon as the queued rows
// reach MaxRows; a request that does not fit waits for the next batch.
func TestBatcherFullBatchDoesNotWait(t *testing.T) {
	var seen []int
	var mu sync.Mutex
	b, err := New([]string{"id", "x"}, []bool{false, true}, 2, rowScore(&seen, &mu, 0), Options{
		MaxRows: 4, MaxDelay: 5 * time.Second, Workers: 1, Coalesce: true})
	require.NoError(t, err)
	defer b.Close()
	t0 := time.Now()
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := request(1, g*10)
			_, err := b.Do(context.Background(), r)
			assert.NoError(t, err)
			checkOut(t, r)
		}()
	}
	wg.Wait()
	assert.Less(t, time.Since(t0), 2500*time.Millisecond, "a full batch waited for the queue delay")
	mu.Lock()
	assert.Equal(t, []int{4}, seen)
	mu.Unlock()
}

// Requests that do not fit the collecting batch lead their own.
func TestBatcherOverflowLeadsNextBatch(t *testing.T) {
	var seen []int
	var mu sync.Mutex
	b, err := New([]string{"id", "x"}, []bool{false, true}, 2, rowScore(&seen, &mu, 0), Options{
		MaxRows: 4, MaxDelay: 50 * time.Millisecond, Workers: 1, Coalesce: true})
	require.NoError(t, err)
	first := make(chan error, 1)
	go func() {
		r := request(3, 0)
		_, err := b.Do(context.Background(), r)
		checkOut(t, r)
		first <- err
	}()
	waitFor(t, b, func() bool { return b.collecting != nil })
	r := request(2, 100)
	_, err = b.Do(context.Background(), r)
	require.NoError(t, err)
	checkOut(t, r)
	require.NoError(t, <-first)
	b.Close()
	mu.Lock()
	defer mu.Unlock()
	assert.Equal(t, []int{3, 2}, seen)
}

// A request whose context ends while its batch waits for more requests
// leaves the batch at once; the requests that joined it are still scored.
func TestBatcherLeaderTimesOutWhileCollecting(t *testing.T) {
	var seen []int
	var mu sync.Mutex
	b, err := New([]string{"id", "x"}, []bool{false, true}, 2, rowScore(&seen, &mu, 0), Options{
		MaxRows: 8, MaxDelay: 5 * time.Second, Workers: 1, Coalesce: true})
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	first := make(chan error, 1)
	go func() {
		_, err := b.Do(ctx, request(3, 0))
		first <- err
	}()
	waitFor(t, b, func() bool { return b.collecting != nil })
	joined := make(chan *Request, 1)
	go func() {
		r := request(2, 100)
		_, err := b.Do(context.Background(), r)
		assert.NoError(t, err)
		joined <- r
	}()
	waitFor(t, b, func() bool { return b.queuedRows == 2 })
	t0 := time.Now()
	cancel()
	require.ErrorIs(t, <-first, context.Canceled)
	r := <-joined
	checkOut(t, r)
	assert.Less(t, time.Since(t0), 2500*time.Millisecond, "the joined request waited for the queue delay")
	b.Close()
	mu.Lock()
	defer mu.Unlock()
	assert.Equal(t, []int{2}, seen, "the cancelled request was scored")
}

// waitFor waits until cond, checked with b.mu held, holds.
func waitFor(t *testing.T, b *Batcher, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(time.Millisecond) {
		b.mu.Lock()
		ok := cond()
		b.mu.Unlock()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("the batcher did not reach the expected state")
		}
	}
}
