package kernels

/*
#include <stdlib.h>
#include "cpu_prefetch.h"
*/
import "C"

import (
	"fmt"
	"runtime"
	"sync/atomic"
	"unsafe"
)

// RowPrefetch is a list of table rows that a later sparse optimizer update
// will touch: per stream, a tensor (an embedding table or one of its
// optimizer-state tensors, rows of Cols floats) and the ids of its rows.
// Armed on a CPU device (CPU.SetRowPrefetch), the list is requested with
// software prefetches while the device's small-GEMM kernels run: a call
// takes one unit (one row of one stream, every cache line it spans) per
// RowPrefetchWork multiply-adds, at most rowPrefetchPerTile per tile of
// its output, and spreads them evenly over its tiles, so that the requests
// never come in a burst (which stalls the core for about what the misses
// cost) but ride on compute-bound work that leaves the core's miss buffers
// idle. The lines are then in the L2 or L3 cache when the update reads
// them.
//
// Prefetches change no result. Only addresses inside a stream's rows are
// formed, and ids outside the tensor's rows are skipped. Reset, Add and
// Done must not run while the list is armed; armed, any number of GEMMs may
// pay it at once (each claims its own units, so every unit is requested
// once).
type RowPrefetch struct {
	mem     *pfMem
	n, capN int // streams, room for them
	units   int64
	per     int64
	pin     runtime.Pinner
	next    atomic.Int64 // units claimed since Reset
	lines   atomic.Int64 // cache lines requested since Reset
}

// pfMem is a list's C memory: its streams.
type pfMem struct{ p *C.mtlcpu_pf_stream }

func (m *pfMem) free() {
	C.free(unsafe.Pointer(m.p))
	m.p = nil
}

// RowPrefetchWork is the GEMM work (multiply-adds) that pays for one unit
// of a RowPrefetch by default: about 200 cycles of the small kernels, so
// that the one to four lines of a unit keep well within the misses a core
// can have in flight.
const RowPrefetchWork = 4096

// rowPrefetchPerTile is the most units a GEMM call takes per tile of 6 x 64
// of its output (the AVX-512 kernels' tile): a tile of a weight gradient
// (k = a shard's 256 rows) does about 100,000 multiply-adds, which at
// RowPrefetchWork would request 24 rows at once after it.
const rowPrefetchPerTile = 2

// NewRowPrefetch returns an empty list; Release frees it.
func NewRowPrefetch() *RowPrefetch {
	l := &RowPrefetch{per: RowPrefetchWork, mem: &pfMem{}}
	runtime.AddCleanup(l, (*pfMem).free, l.mem)
	return l
}

// SetPace sets the GEMM work (multiply-adds, at least 1) that pays for one
// unit; call it on an empty list.
func (l *RowPrefetch) SetPace(work int64) { l.per = max(work, 1) }

// Reset empties the list and its counters.
func (l *RowPrefetch) Reset() {
	l.Done()
	l.units = 0
	l.next.Store(0)
	l.lines.Store(0)
}

// Done drops the streams (and the pins of their memory) after the list's
// last use; the counters stay.
func (l *RowPrefetch) Done() {
	l.pin.Unpin()
	l.n = 0
}

// Add appends a stream: the rows ids of t (a float32 tensor of rows of
// t.Cols() values). t's and ids' memory stays pinned until Done or Reset,
// and neither may change size before then.
func (l *RowPrefetch) Add(t *Tensor, ids []int32) {
	if t.DType != Float32 {
		panic(fmt.Sprintf("kernels: RowPrefetch.Add: %v is not float32", t))
	}
	dim := t.Cols()
	if len(ids) == 0 || dim == 0 || t.Len() == 0 {
		return
	}
	if l.n == l.capN {
		c := max(8, 2*l.capN)
		p := (*C.mtlcpu_pf_stream)(C.realloc(unsafe.Pointer(l.mem.p), C.size_t(c)*C.sizeof_mtlcpu_pf_stream))
		if p == nil {
			panic("kernels: RowPrefetch.Add: out of memory")
		}
		l.mem.p, l.capN = p, c
	}
	base, id := &t.F32[0], &ids[0]
	l.pin.Pin(base) // C memory holds the pointers while the list is armed
	l.pin.Pin(id)
	unsafe.Slice(l.mem.p, l.capN)[l.n] = C.mtlcpu_pf_stream{base: (*C.char)(unsafe.Pointer(base)),
		ids: (*C.int32_t)(unsafe.Pointer(id)), n: C.long(len(ids)), rows: C.long(t.Len() / dim),
		stride: C.long(4 * dim), bytes: C.long(4 * dim)}
	l.n++
	l.units += int64(len(ids))
}

// Units is the number of units (rows of streams) in the list.
func (l *RowPrefetch) Units() int64 { return l.units }

// Issued returns the units requested since Reset and their cache lines.
func (l *RowPrefetch) Issued() (units, lines int64) {
	return min(l.next.Load(), l.units), l.lines.Load()
}

// Flush requests every unit not yet requested, at once (tests: a burst
// costs about what the misses it hides would).
func (l *RowPrefetch) Flush() {
	if old := l.next.Swap(l.units); old < l.units {
		l.lines.Add(int64(C.mtlcpu_pf_issue(l.mem.p, C.int(l.n), C.long(old), C.long(l.units))))
	}
}

// Release frees the list.
func (l *RowPrefetch) Release() {
	l.Done()
	l.units, l.capN = 0, 0
	l.mem.free()
}

// span returns the streams and the units [lo, hi) a GEMM call of this
// shape takes (nil streams: none; l may be nil).
func (l *RowPrefetch) span(m, n, k int) (s *C.mtlcpu_pf_stream, ns C.int, lo, hi C.long) {
	u := l.take(m, n, k)
	if l == nil || u == 0 || l.next.Load() >= l.units {
		return nil, 0, 0, 0 // none, or all requested
	}
	b := l.next.Add(u)
	a := b - u
	if a >= l.units {
		return nil, 0, 0, 0
	}
	return l.mem.p, C.int(l.n), C.long(a), C.long(min(b, l.units))
}

// take is the number of units a GEMM call of this shape takes (l may be
// nil).
func (l *RowPrefetch) take(m, n, k int) int64 {
	if l == nil {
		return 0
	}
	tiles := int64((m+5)/6) * int64((n+63)/64)
	return min(int64(m)*int64(n)*int64(k)/l.per, rowPrefetchPerTile*tiles)
}

// paid records the lines requested by a C call that returned r (-1 -
// lines where it did not run the GEMM) and reports whether it ran the
// GEMM.
func (l *RowPrefetch) paid(r C.long) bool {
	lines := int64(r)
	if r < 0 {
		lines = -1 - lines
	}
	if lines != 0 {
		l.lines.Add(lines)
	}
	return r >= 0
}

// RowPrefetcher is a device that can request the rows of a sparse update
// during its GEMMs (a RowPrefetch): the CPU device.
type RowPrefetcher interface {
	// SetRowPrefetch arms l (nil disarms).
	SetRowPrefetch(l *RowPrefetch)
}

var _ RowPrefetcher = (*CPU)(nil)

// SetRowPrefetch arms l on the device (nil disarms): until the next call,
// the small-GEMM kernels of the device and of its ShardDevice pay l's
// units with their work. GEMMs on OpenBLAS pay nothing. The caller keeps
// l's streams valid while it is armed.
func (c *CPU) SetRowPrefetch(l *RowPrefetch) {
	c.pf.Store(l)
	if c.serial != c {
		c.serial.pf.Store(l)
	}
}

// cSgemmPF is cSgemm paying l (nil: none) with the GEMM's work.
func cSgemmPF(l *RowPrefetch, ta, tb bool, m, n, k int, alpha float32, a []float32, lda int, b []float32, ldb int,
	beta float32, c []float32, ldc int, bias []float32, relu bool) bool {
	s, ns, lo, hi := l.span(m, n, k)
	return l.paid(C.mtlcpu_sgemm_pf(cbool(ta), cbool(tb), C.long(m), C.long(n), C.long(k), C.float(alpha), fp(a),
		C.long(lda), fp(b), C.long(ldb), C.float(beta), fp(c), C.long(ldc), fp(bias), cbool(relu), s, ns, lo, hi))
}

// cSgemmActGradPF is cSgemmActGrad paying l (nil: none).
func cSgemmActGradPF(l *RowPrefetch, tb bool, m, n, k int, a []float32, lda int, b []float32, ldb int, c []float32,
	ldc int, y []float32, ldy int, db []float32) bool {
	need("gemm data gradient", len(c), span(m, ldc, n))
	if y != nil {
		need("gemm data gradient", len(y), span(m, ldy, n))
	}
	need("gemm data gradient", len(db), n)
	s, ns, lo, hi := l.span(m, n, k)
	return l.paid(C.mtlcpu_sgemm_actgrad_pf(cbool(tb), C.long(m), C.long(n), C.long(k), fp(a), C.long(lda), fp(b),
		C.long(ldb), fp(c), C.long(ldc), fp(y), C.long(ldy), fp(db), s, ns, lo, hi))
}

// addresses returns the addresses that requesting units [lo, hi) would
// prefetch, in order (tests).
func (l *RowPrefetch) addresses(lo, hi int64) []uintptr {
	n := int64(0)
	for _, s := range unsafe.Slice(l.mem.p, l.n) {
		n += int64(s.n) * (int64(s.bytes)/64 + 2)
	}
	rec := make([]*C.char, n+1)
	k := C.mtlcpu_pf_record(l.mem.p, C.int(l.n), C.long(lo), C.long(hi), &rec[0])
	out := make([]uintptr, k)
	for i := range out {
		out[i] = uintptr(unsafe.Pointer(rec[i]))
	}
	return out
}
