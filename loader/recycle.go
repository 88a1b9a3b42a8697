package loader

import (
	"math/bits"
	"sync"
	"unsafe"

	"github.com/apache/arrow-go/v18/arrow/memory"
)

// recycler is the memory.Allocator of one epoch's Parquet reader. The reader
// allocates fresh buffers for every read (the values of each column, the
// decompressed page, the page's bytes) and frees them when the record is
// released; with Go's allocator every one of them was a new, zeroed
// allocation that the collector then had to reclaim: a third of the
// loader's time in training. The recycler keeps what is freed and hands it
// out again for a later read of a similar size, so that the steady state
// reuses warm memory.
//
// Every buffer still comes from the parent allocator and goes back to it:
// when the free list is full, when the iterator closes, and for every
// buffer freed after that (batches may outlive their iterator), so that an
// accounting parent (memory.CheckedAllocator) sees each allocation freed
// exactly once. Buffers are zeroed when handed out again, as Go's and
// libc's allocators do.
//
// It is safe for concurrent use: records are released by whichever
// goroutine releases the last batch that views them, and arrow-go frees its
// pooled buffers from finalizers.
type recycler struct {
	parent memory.Allocator

	mu sync.Mutex
	// out maps the first byte of each buffer handed out to the parent's
	// slice, so that Free knows what is its own and what to give back.
	out    map[unsafe.Pointer][]byte
	free   map[int][][]byte // by class size: the parent's slices
	held   int              // bytes in free
	closed bool
	// poison fills freed buffers (tests: a read of freed memory then shows).
	poison bool
}

// maxRecycled bounds the bytes a recycler keeps: a few reads' worth of
// buffers at the default read size, not a cache of the dataset.
const maxRecycled = 64 << 20

// recyclePoison makes new recyclers poison what is freed (set by tests).
var recyclePoison bool

func newRecycler(parent memory.Allocator) *recycler {
	return &recycler{parent: parent, out: map[unsafe.Pointer][]byte{}, free: map[int][][]byte{}, poison: recyclePoison}
}

// sizeClass rounds n up to one of four steps per power of two, so that a
// buffer serves requests up to 25% smaller than itself.
func sizeClass(n int) int {
	if n <= 64 {
		return 64
	}
	step := 1 << max(bits.Len(uint(n-1))-3, 0)
	return (n + step - 1) &^ (step - 1)
}

func (r *recycler) Allocate(size int) []byte {
	if size == 0 {
		return r.parent.Allocate(0)
	}
	class := sizeClass(size)
	r.mu.Lock()
	defer r.mu.Unlock()
	var buf []byte
	if l := r.free[class]; len(l) > 0 {
		buf = l[len(l)-1]
		r.free[class] = l[:len(l)-1]
		r.held -= class
		clear(buf[:size])
	} else {
		buf = r.parent.Allocate(class)
	}
	r.out[unsafe.Pointer(unsafe.SliceData(buf))] = buf
	return buf[:size:class]
}

func (r *recycler) Reallocate(size int, b []byte) []byte {
	if cap(b) >= size {
		// In place, as Go's allocator does; what was beyond len(b) may
		// hold an earlier use's bytes.
		if size > len(b) {
			clear(b[len(b):size])
		}
		return b[:size]
	}
	out := r.Allocate(size)
	copy(out, b)
	r.Free(b)
	return out
}

func (r *recycler) Free(b []byte) {
	if cap(b) == 0 {
		r.parent.Free(b) // a zero-size allocation: the parent's own
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	key := unsafe.Pointer(unsafe.SliceData(b))
	buf, ok := r.out[key]
	if !ok {
		// Not handed out here: the parent's.
		r.parent.Free(b)
		return
	}
	delete(r.out, key)
	if r.closed || r.held+len(buf) > maxRecycled {
		r.parent.Free(buf)
		return
	}
	if r.poison {
		for i := range buf {
			buf[i] = 0xa5
		}
	}
	r.free[len(buf)] = append(r.free[len(buf)], buf)
	r.held += len(buf)
}

// close gives every kept buffer back to the parent; buffers freed later go
// straight to it. Idempotent.
func (r *recycler) close() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.closed = true
	for class, l := range r.free {
		for _, buf := range l {
			r.parent.Free(buf)
		}
		delete(r.free, class)
	}
	r.held = 0
}
