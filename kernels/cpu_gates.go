package kernels

/*
#include "cpu_gates.h"
*/
import "C"

import (
	"runtime"
	"sync"
	"unsafe"
)

// gatesCall is the argument block of mtlcpu_gates_bwd: C sees the tensors
// through arrays of their addresses. The addresses are held as uintptr,
// not as pointers: pinning each tensor per call (runtime.Pinner) allocated
// on every call. That is safe because a tensor's storage is Go heap memory,
// which the garbage collector does not move, and the GatesBackward that
// holds the tensors is kept alive until the call returns. The blocks are
// pooled, so that a step allocates nothing.
type gatesCall struct {
	dout, w, dlogits, x, dx, db []uintptr
	ne, list                    []C.int
	invT                        []C.float
	rows, d                     int
	relu                        C.int
}

var gatesCalls = sync.Pool{New: func() any { return new(gatesCall) }}

// addresses sets dst to the addresses of ts' storage.
func addresses(dst []uintptr, ts []*Tensor) []uintptr {
	dst = dst[:0]
	for _, t := range ts {
		dst = append(dst, uintptr(unsafe.Pointer(&t.F32[0])))
	}
	return dst
}

// prepare fills the block for p (rows > 0); the bias gradients only with
// fold.
func (c *gatesCall) prepare(p *GatesBackward, rows, d int, fold bool) {
	c.rows, c.d = rows, d
	c.dout = addresses(c.dout, p.DOuts)
	c.w = addresses(c.w, p.Ws)
	c.dlogits = addresses(c.dlogits, p.DLogits)
	c.x = addresses(c.x, p.Experts)
	c.dx = addresses(c.dx, p.DExperts)
	c.db = c.db[:0]
	if fold {
		c.db = addresses(c.db, p.DB)
	}
	c.relu = cbool(p.Act == ReLU)
	c.ne, c.invT = c.ne[:0], c.invT[:0]
	for g, l := range p.Lists {
		c.ne = append(c.ne, C.int(len(l)))
		c.invT = append(c.invT, C.float(1/p.Temperatures[g]))
	}
	c.list = c.list[:0]
	for _, l := range p.Lists {
		for _, e := range l {
			c.list = append(c.list, C.int(e))
		}
	}
}

func pp(s []uintptr) **C.float {
	if len(s) == 0 {
		return nil
	}
	return (**C.float)(unsafe.Pointer(&s[0]))
}

func cip(s []C.int) *C.int {
	if len(s) == 0 {
		return nil
	}
	return &s[0]
}

// run is rows [lo, hi) of the pass; the bias sums need lo, hi = 0, rows.
func (c *gatesCall) run(lo, hi int) {
	C.mtlcpu_gates_bwd(C.long(lo), C.long(hi), C.int(c.d), C.int(len(c.dout)), C.int(len(c.x)),
		pp(c.dout), pp(c.w), pp(c.dlogits), cip(c.ne), &c.invT[0], pp(c.x), pp(c.dx),
		cip(c.list), c.relu, pp(c.db))
}

// gatesPassTask is a gatesCall split over the pool's workers (without the
// fold, whose sums run over all rows in order).
type gatesPassTask struct{ c *gatesCall }

func (t *gatesPassTask) run(lo, hi int) { t.c.run(lo, hi) }

// GatesBackward implements GatesFusedBackwarder with mtlcpu_gates_bwd
// (cpu_gates.c): every gate over a block of rows (gatesBlockRows) before
// the next, then the block's softmax backward and the experts' activation
// backward and bias sums while the block is in cache. The bias sums run
// over the rows in order in one call, so where the rows are split over
// threads, or the sums do not fit the kernel's scratch, the experts'
// ActBiasGrad runs after the pass instead (the same bits either way).
// Gates with more columns than the kernel's scratch run composed.
func (c *CPU) GatesBackward(p *GatesBackward) {
	rows, d := p.check("GatesBackward")
	cols := 0
	for _, l := range p.Lists {
		cols += len(l)
	}
	if cols > C.MTL_GATES_MAX_COLS {
		composeGatesBackward(c, p)
		return
	}
	if rows == 0 {
		for _, db := range p.DB {
			c.Zero(db)
		}
		return
	}
	chunks := c.chunksFor(rows, 3*d*cols)
	fold := p.DB != nil && chunks == 1 && len(p.Experts)*d <= C.MTL_GATES_MAX_SUMS
	call := gatesCalls.Get().(*gatesCall)
	call.prepare(p, rows, d, fold)
	if chunks == 1 || !runPooled(c.pool, &c.pool.gatesPass, gatesPassTask{call}, rows, 1, chunks) {
		call.run(0, rows)
	}
	runtime.KeepAlive(p) // the tensors whose addresses the call used
	gatesCalls.Put(call)
	if p.DB != nil && !fold {
		for e := range p.DExperts {
			c.ActBiasGrad(p.DExperts[e], p.Experts[e], p.Act, p.DB[e], 1, false)
		}
	}
}
