package step

import "github.com/mtlrank/mtlrank/kernels"

// The rows a step's sparse update touches (the batch's ids of each large
// table, in the table and in each of its optimizer-state tensors) are
// known once the input block has gathered them. On a device that can
// (kernels.RowPrefetcher: the CPU) the engine hands it their list for the
// backward pass: the backward GEMMs request those rows at a fixed pace
// with software prefetches, so that the update, which runs right after,
// finds them in the L2 or L3 cache instead of waiting for memory. The list
// is armed from the first shard's backward until the shards finish (the
// forward GEMMs of a later shard on the same goroutine pay it too) and
// changes no result.

// prefetchMinBytes is the smallest table whose rows are requested: smaller
// ones, with their optimizer state, mostly stay in the caches from step
// to step.
const prefetchMinBytes = 1 << 20

// rowPrefetch is the engine's list and the tensors of each table it covers.
type rowPrefetch struct {
	// min is the smallest table requested, less prefetchMinBytes (so
	// that the zero value is the default); below 0 - prefetchMinBytes: off
	min     int
	l       *kernels.RowPrefetch
	tensors [][]*kernels.Tensor // per table: the table and its row state (nil: not requested)
}

// SetRowPrefetch sets the smallest table (in bytes) whose rows are
// requested during the backward pass, on a kernels.RowPrefetcher device (1
// MB by default); a negative value turns the requests off. Every result is
// the same bits either way.
func (e *Engine) SetRowPrefetch(minBytes int) {
	e.pf.release()
	e.pf.min = max(minBytes, -1) - prefetchMinBytes
}

// RowPrefetch is the list of the last training pass's backward (nil when
// none was made): tests read its counts.
func (e *Engine) RowPrefetch() *kernels.RowPrefetch { return e.pf.l }

// list builds the list of the update's rows for the batch ws (the training
// workspace, after the input block's forward) has gathered, or returns nil:
// off, no device support, no large table, a row-sharded job (whose update
// reads other rows), or an inference workspace.
func (p *rowPrefetch) list(ws *Workspace) *kernels.RowPrefetch {
	e := ws.e
	if p.min < -prefetchMinBytes || e.caps.Prefetch == nil || e.rows != nil || ws != e.train || e.upd == nil {
		return nil
	}
	if p.l == nil {
		p.l = kernels.NewRowPrefetch()
		for t, table := range e.upd.tables {
			var ts []*kernels.Tensor
			if 4*table.Len() >= prefetchMinBytes+p.min {
				ts = append([]*kernels.Tensor{table}, e.upd.opt.rowState(t)...)
			}
			p.tensors = append(p.tensors, ts)
		}
	}
	p.l.Reset()
	for t, ts := range p.tensors {
		if ts == nil {
			continue
		}
		ids := e.spec.Input.TableIDs(ws.input, t)
		for _, x := range ts {
			p.l.Add(x, ids)
		}
	}
	if p.l.Units() == 0 {
		return nil
	}
	return p.l
}

// done disarms l on dev after the shards and drops its streams.
func (p *rowPrefetch) done(dev kernels.RowPrefetcher, l *kernels.RowPrefetch) {
	dev.SetRowPrefetch(nil)
	l.Done()
}

func (p *rowPrefetch) release() {
	if p.l != nil {
		p.l.Release()
		p.l = nil
	}
	p.tensors = nil
}
