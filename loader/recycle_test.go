package loader

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestSizeClass(t *testing.T) {
	for _, tc := range []struct{ n, want int }{
		{1, 64}, {64, 64}, {65, 80}, {80, 80}, {81, 96}, {100, 112},
		{1000, 1024}, {1024, 1024}, {1025, 1280}, {1280, 1280}, {1281, 1536},
		{32768, 32768}, {32769, 40960}, {40000, 40960}, {1<<20 + 1, 1<<20 + 1<<18},
	} {
		got := sizeClass(tc.n)
		assert.Equal(t, tc.want, got, "sizeClass(%d)", tc.n)
		assert.GreaterOrEqual(t, got, tc.n)
		if tc.n > 64 {
			assert.LessOrEqual(t, float64(got), 1.25*float64(tc.n), "at most 25%% over %d", tc.n)
		}
	}
}

// TestRecycler: freed buffers come back zeroed for requests of their class,
// in-place growth zeroes what it exposes, and every byte taken from the
// parent goes back to it exactly once: on close, when the free list is
// full, and for buffers freed after close.
func TestRecycler(t *testing.T) {
	mem := checkedAlloc(t)
	r := newRecycler(mem)
	r.poison = true

	a := r.Allocate(1000)
	require.Len(t, a, 1000)
	require.Equal(t, 1024, cap(a))
	for i := range a {
		a[i] = 7
	}
	r.Free(a)
	assert.Equal(t, 1024, mem.CurrentAlloc(), "kept, not given back")

	b := r.Allocate(900) // same class: the same memory, zeroed
	assert.Equal(t, &a[0], &b[0])
	assert.Equal(t, make([]byte, 900), b)
	assert.Equal(t, 1024, mem.CurrentAlloc())

	// Growing within the class stays in place and zeroes the new bytes,
	// which held the poison of the first use.
	b = r.Reallocate(1020, b)
	assert.Equal(t, &a[0], &b[0])
	assert.Equal(t, make([]byte, 1020), b)
	// Beyond it: a new buffer with the old bytes, the old one kept.
	b[0], b[1019] = 1, 2
	c := r.Reallocate(5000, b)
	require.Len(t, c, 5000)
	assert.Equal(t, byte(1), c[0])
	assert.Equal(t, byte(2), c[1019])
	assert.Equal(t, make([]byte, 5000-1020), c[1020:])
	assert.Equal(t, 1024+5120, mem.CurrentAlloc())

	z := r.Allocate(0)
	r.Free(z)

	// A buffer larger than the free list may hold goes back at once.
	big := r.Allocate(maxRecycled + 1)
	r.Free(big)
	assert.Equal(t, 1024+5120, mem.CurrentAlloc())

	r.close()
	assert.Equal(t, 5120, mem.CurrentAlloc(), "close gives back the kept buffers")
	r.Free(c) // freed after close: straight to the parent
	mem.AssertSize(t, 0)
	r.close() // idempotent
	mem.AssertSize(t, 0)
}

// TestEpochsWithPoisonedFrees reads every mode with a recycler that fills
// each freed buffer with garbage: a batch or chunk that still read memory
// the reader had freed would show wrong values (rowsOf checks every one).
// The checked allocator then finds every byte given back.
func TestEpochsWithPoisonedFrees(t *testing.T) {
	recyclePoison = true
	defer func() { recyclePoison = false }()
	dir := writeTestDataset(t, []int{300, 250, 450}, 64)
	for _, m := range []struct {
		name string
		mod  func(*Options)
	}{
		{"sequential", func(o *Options) {}},
		{"sequential small reads", func(o *Options) { o.ReadRows = 20 }},
		{"prefetch", func(o *Options) { o.Prefetch = 3 }},
		{"within reads", func(o *Options) { o.Shuffle = true }},
		{"within reads prefetch", func(o *Options) { o.Shuffle, o.Prefetch = true, 2 }},
		{"buffer 200", func(o *Options) { o.Shuffle, o.ShuffleBuffer = true, 200 }},
		{"buffer 200 read 16", func(o *Options) { o.Shuffle, o.ShuffleBuffer, o.ReadRows = true, 200, 16 }},
		{"no row shuffle", func(o *Options) { o.Shuffle, o.ShuffleBuffer = true, NoRowShuffle }},
		{"no row shuffle prefetch", func(o *Options) { o.Shuffle, o.ShuffleBuffer, o.Prefetch = true, NoRowShuffle, 4 }},
	} {
		t.Run(m.name, func(t *testing.T) {
			mem := checkedAlloc(t)
			opt := DefaultOptions()
			opt.BatchSize, opt.Prefetch, opt.Allocator = 32, 0, mem
			m.mod(&opt)
			d, err := Open(dir, testSchema(), opt)
			require.NoError(t, err)
			for epoch := range 2 {
				_, rids := readAll(t, d, epoch)
				require.Len(t, rids, 1000)
				seen := make([]bool, 1000)
				for _, r := range rids {
					require.False(t, seen[r], "rid %d twice", r)
					seen[r] = true
				}
			}
			assertNoLeak(t, mem)
		})
	}
}
