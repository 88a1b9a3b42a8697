package step

import (
	"errors"
	"fmt"
	"unsafe"

	"github.com/mtlrank/mtlrank/dist"
	"github.com/mtlrank/mtlrank/kernels"
	"github.com/mtlrank/mtlrank/layers"
)

// The host side of the distributed step on any device: the collectives
// work on host memory, so the gradients cross between the device and the
// host through kernels.Pinned buffers (pinned memory and asynchronous
// copies on the CUDA device, plain memory and host copies on the CPU).
// Per step, on every rank:
//
//  1. after the pass (which ends with a Sync), the downloads are queued:
//     the parameters' L2 term, the dense gradients into the fused
//     allreduce's buffer, the touched ids and gradient rows of every table
//     into the send buffer; then one Sync, the only one of the exchange,
//     before the host reads or writes any buffer (it also waits for the
//     previous step's uploads, which read them);
//  2. the collectives run on the host buffers (the fused allreduce in the
//     pinned buffer itself);
//  3. the summed dense gradients and the merged rows are uploaded from the
//     buffers, queued on the device's stream before the update that reads
//     them; nothing waits for them (the next step's Sync does).

// errDistGraphs refuses graph capture in a distributed job: a captured
// step replays the device's work alone, while the distributed step runs
// collectives on the host between its pass and its update.
var errDistGraphs = errors.New("mtl: graph capture of the training step (Config.CUDAGraph, --cuda_graph) is not available in distributed training: the step's allreduce runs on the host between the device's pass and its update; turn capture off")

// staging holds the distributed step's pinned buffers.
type staging struct {
	dev kernels.Device
	// flat is the fused allreduce's buffer (distState.flat is its first
	// nd+tail elements) and, after them, one slot for the parameters' L2
	// term (the same on every rank: not summed).
	flat kernels.Pinned
	// send is this rank's part of the rows' allgather: its touched ids of
	// every table (int32 bits), then their gradient rows. up holds the
	// merged ids and rows of every table for their upload. Both grow.
	send, up kernels.Pinned
}

func newStaging(dev kernels.Device, flat int) (*staging, error) {
	s := &staging{dev: dev}
	var err error
	if s.flat, err = kernels.NewPinned(dev, flat+1); err != nil {
		return nil, fmt.Errorf("mtl: staging memory of the distributed step: %w", err)
	}
	return s, nil
}

func (s *staging) release() {
	for _, p := range []kernels.Pinned{s.flat, s.send, s.up} {
		if p != nil {
			p.Release()
		}
	}
}

// grow makes *p hold at least n elements. Only between a Sync and the
// next queued copy: the old buffer is freed at once.
func (s *staging) grow(p *kernels.Pinned, n int) error { return growPinned(s.dev, p, n) }

// growPinned makes *p, pinned memory of dev, hold at least n elements (the
// old buffer is freed at once: its Release waits for its copies in
// flight).
func growPinned(dev kernels.Device, p *kernels.Pinned, n int) error {
	if *p != nil && len((*p).F32()) >= n {
		return nil
	}
	c := n + n/2 + 64
	if *p != nil {
		(*p).Release()
		*p = nil
	}
	q, err := kernels.NewPinned(dev, c)
	if err != nil {
		return fmt.Errorf("mtl: staging memory of the distributed step (%d floats): %w", c, err)
	}
	*p = q
	return nil
}

// growTensor makes *t, a flat tensor of dev, hold at least n elements.
func growTensor(dev kernels.Device, t **kernels.Tensor, dt kernels.DType, n int) {
	if *t != nil && (*t).Len() >= n {
		return
	}
	(*t).Release()
	*t = dev.Alloc(dt, n+n/2+64)
}

// stageOut is step 1 above: it queues the parameters' L2 term and, with
// grads (a rank whose pass succeeded), the dense gradients and the tables'
// touched rows for download, and syncs the device. It returns the send
// buffer's part for the allgather (nil without grads) and the L2 term.
func (e *Engine) stageOut(grads bool) (send []float32, regParams float64, err error) {
	d, s := e.dist, e.dist.stage
	e.dev.Zero(d.regT)
	e.addParamRegLoss(d.regT)
	s.flat.Download(d.nd+d.tail, d.regT, 1)
	if grads {
		off := 0
		for i, p := range e.spec.Params {
			if !p.Sparse {
				k := p.Value.Len()
				s.flat.Download(off, e.train.grads[i], k)
				off += k
			}
		}
		// Replicated tables gather these rows on every rank
		// (exchangeRows), tables sharded by rows send them to their
		// owners (pushRows).
		if send, err = e.stageRows(); err != nil {
			return nil, 0, err
		}
	}
	if err := e.dev.Sync(); err != nil {
		return nil, 0, fmt.Errorf("mtl: step %d: reading the gradients: %w", e.step, err)
	}
	return send, float64(s.flat.F32()[d.nd+d.tail]), nil
}

// stageRows queues the download of the tables' touched ids and gradient
// rows into the send buffer (the ids of every table, then their rows) and
// returns it: the allgather's part of replicated tables, what pushRows
// sends to the owners of tables sharded by rows.
func (e *Engine) stageRows() ([]float32, error) {
	s := e.dist.stage
	n := 0
	for t, tab := range e.spec.Input.Tables {
		n += e.train.input.SparseGrad(t).N * (1 + tab.Dim)
	}
	if err := s.grow(&s.send, n); err != nil {
		return nil, err
	}
	// The ids of every table, then their rows.
	off := 0
	for t := range e.spec.Input.Tables {
		g := e.train.input.SparseGrad(t)
		s.send.Download(off, g.Rows, g.N)
		off += g.N
	}
	for t, tab := range e.spec.Input.Tables {
		g := e.train.input.SparseGrad(t)
		s.send.Download(off, g.Values, g.N*tab.Dim)
		off += g.N * tab.Dim
	}
	return s.send.F32()[:n], nil
}

// uploadDense queues the upload of the summed dense gradients from the
// fused allreduce's buffer into the gradients, each followed by its L2
// term (added once, after the sum).
func (e *Engine) uploadDense() {
	off := 0
	for i, p := range e.spec.Params {
		if !p.Sparse {
			k := p.Value.Len()
			e.dist.stage.flat.Upload(e.train.grads[i], off, k)
			off += k
			e.addL2Grad(i)
		}
	}
}

// uploadMerged queues the upload of the tables' merged ids and rows (the
// dist.RowMerger results of each table, in table order) into d.merged, the
// sparse gradients the update reads.
func (e *Engine) uploadMerged(ids [][]int32, rows [][]float32) error {
	// (on tables sharded by rows the ids are the owner's local rows)
	d, s := e.dist, e.dist.stage
	n := 0
	for t := range ids {
		n += len(ids[t]) + len(rows[t])
	}
	if err := s.grow(&s.up, n); err != nil {
		return err
	}
	buf, off := s.up.F32(), 0
	for t, tab := range e.spec.Input.Tables {
		g := d.merged[t]
		k := len(ids[t])
		if g.Rows == nil || g.Rows.Len() < k {
			if g.Rows != nil {
				g.Rows.Release()
				g.Values.Release()
			}
			c := max(k, 2*g.N, 1)
			g.Rows, g.Values = e.dev.Alloc(kernels.Int32, c), e.dev.Alloc(kernels.Float32, c, tab.Dim)
		}
		g.N = k
		copy(s.up.I32()[off:], ids[t])
		s.up.Upload(g.Rows, off, k)
		off += k
		copy(buf[off:], rows[t])
		s.up.Upload(g.Values, off, k*tab.Dim)
		off += k * tab.Dim
	}
	return nil
}

// lookupStage is the device side of a workspace's lookups in a job whose
// tables are sharded by rows (dist_rows.go), on a device whose memory the
// host cannot address (the CPU device reads and wraps the host's rows and
// has none). Per lookup:
//
//  1. the owner queues the upload of the local ids the other ranks asked
//     of it, one gather of the rows per asker and table into one flat
//     buffer, and its download (serve); then one Sync, the only one of the
//     lookup: the rows are on the host for the alltoallv, and the uploads
//     of the previous lookup (from in, which the host writes next) are
//     done;
//  2. the rows received are written into in, each table's small table
//     with the batch's ids renumbered into it, and uploaded (place); the
//     pass queued after them reads them, and nothing waits for them.
type lookupStage struct {
	dev kernels.Device
	// out: the local ids asked of this rank (int32), then their rows as
	// gathered. in: per table, the batch's renumbered ids, then its small
	// table.
	out, in          kernels.Pinned
	askIDs, gathered *kernels.Tensor // flat, growing
	compact, rows    []*kernels.Tensor
	// views: per (asker, table) of the gathers; per table of place's
	// tensors
	idsH, rowsH       []layers.Header
	compactH, tablesH []layers.Header
}

func newLookupStage(dev kernels.Device, n, nt int) *lookupStage {
	return &lookupStage{dev: dev, compact: make([]*kernels.Tensor, nt), rows: make([]*kernels.Tensor, nt),
		idsH: make([]layers.Header, n*nt), rowsH: make([]layers.Header, n*nt),
		compactH: make([]layers.Header, nt), tablesH: make([]layers.Header, nt)}
}

// serve is step 1 above: the rows of the tables w that the n ranks asked
// of this one (tables[t].in[j]: rank j's ids of table t, each held at
// local row id div n; giving floats in all), asker-major as the alltoallv
// sends them. With bad (an id this rank does not hold) the rows are zeros
// and nothing is gathered.
func (s *lookupStage) serve(w []*kernels.Tensor, tables []rowTable, n, giving int, bad bool) ([]float32, error) {
	ids := 0
	for t := range tables {
		for _, in := range tables[t].in {
			ids += len(in)
		}
	}
	if err := growPinned(s.dev, &s.out, ids+giving); err != nil {
		return nil, err
	}
	if giving > 0 && !bad {
		local := s.out.I32()
		at := 0
		for j := range n {
			for t := range tables {
				for _, id := range tables[t].in[j] {
					local[at] = id / int32(n)
					at++
				}
			}
		}
		growTensor(s.dev, &s.askIDs, kernels.Int32, ids)
		growTensor(s.dev, &s.gathered, kernels.Float32, giving)
		s.out.Upload(s.askIDs, 0, ids)
		idAt, rowAt, k := 0, 0, 0
		for j := range n {
			for t := range tables {
				c, d := len(tables[t].in[j]), w[t].Cols()
				if c > 0 {
					iv := s.idsH[k].View(s.askIDs, idAt, c)
					rv := s.rowsH[k].View(s.gathered, rowAt, c, d)
					if err := s.dev.EmbeddingGather(rv, 0, w[t], iv, nil, kernels.Sum); err != nil {
						return nil, fmt.Errorf("mtl: row lookup: gathering the rows of table %d asked by rank %d: %w", t, j, err)
					}
				}
				idAt, rowAt, k = idAt+c, rowAt+c*d, k+1
			}
		}
		s.out.Download(ids, s.gathered, giving)
	}
	if err := s.dev.Sync(); err != nil {
		return nil, fmt.Errorf("mtl: row lookup: gathering the rows asked of this rank: %w", err)
	}
	rows := s.out.F32()[ids : ids+giving]
	if bad {
		clear(rows)
	}
	return rows, nil
}

// smallTables makes room in in for each table's renumbered ids (copied
// from tb.compact) and small table, and points tb.rows at the latter for
// the received rows. After a serve only (its Sync makes in free to
// write).
func (s *lookupStage) smallTables(tables []rowTable, dims []int) error {
	n := 0
	for t := range tables {
		n += len(tables[t].compact) + len(tables[t].distinct)*dims[t]
	}
	if err := growPinned(s.dev, &s.in, n); err != nil {
		return err
	}
	at := 0
	for t := range tables {
		tb := &tables[t]
		at += copy(s.in.I32()[at:], tb.compact)
		k := len(tb.distinct) * dims[t]
		tb.rows = s.in.F32()[at : at+k]
		at += k
	}
	return nil
}

// place is step 2 above, after the host filled smallTables' memory: it
// queues the uploads and sets, per table, the device's renumbered ids
// (ids[t]) and small table (small[t]).
func (s *lookupStage) place(tables []rowTable, dims []int, ids, small []*kernels.Tensor) {
	at := 0
	for t := range tables {
		tb := &tables[t]
		c, k := len(tb.compact), len(tb.distinct)*dims[t]
		growTensor(s.dev, &s.compact[t], kernels.Int32, c)
		growTensor(s.dev, &s.rows[t], kernels.Float32, k)
		s.in.Upload(s.compact[t], at, c)
		s.in.Upload(s.rows[t], at+c, k)
		ids[t] = s.compactH[t].View(s.compact[t], 0, c)
		small[t] = s.tablesH[t].View(s.rows[t], 0, len(tb.distinct), dims[t])
		at += c + k
	}
}

func (s *lookupStage) release() {
	if s == nil {
		return
	}
	for _, p := range []kernels.Pinned{s.out, s.in} {
		if p != nil {
			p.Release()
		}
	}
	releaseAll(s.askIDs, s.gathered)
	releaseAll(s.compact...)
	releaseAll(s.rows...)
}

// bcastTensor broadcasts root's elements of t: in place on the CPU device,
// through host memory elsewhere.
func bcastTensor(dev kernels.Device, c dist.Comm, t *kernels.Tensor, root int) error {
	f := t.F32
	onHost := f != nil
	if !onHost {
		if t.Len() == 0 {
			return nil
		}
		f = make([]float32, t.Len())
		if c.Rank() == root {
			dev.CopyToHostF32(f, t)
		}
	}
	if len(f) == 0 {
		return nil
	}
	if err := c.Bcast(unsafe.Slice((*byte)(unsafe.Pointer(&f[0])), 4*len(f)), root); err != nil {
		return err
	}
	if !onHost {
		dev.CopyFromHostF32(t, f)
	}
	return nil
}
