package step

import (
	"errors"
	"fmt"
	"strings"
	"unsafe"

	"github.com/mtlrank/mtlrank/dist"
	"github.com/mtlrank/mtlrank/kernels"
	"github.com/mtlrank/mtlrank/layers"
	"github.com/mtlrank/mtlrank/loader"
)

// distState is the engine's state in a distributed (data-parallel) job:
// every rank runs the same steps on its own rows, and the gradients are
// summed over the ranks before identical updates (docs/DISTRIBUTED.md).
type distState struct {
	comm dist.Comm
	// flat is the buffer of the step's fused allreduce: the dense
	// gradients in Spec.Params order, then each task's loss share, the
	// batch's regularisation term, a failure flag, and one slot per rank
	// and table for the number of ids the rank's batch touched in the table
	// (zero but the rank's own: the sum hands every rank every count).
	// It lives in stage's pinned memory (dist_device.go).
	flat  []float32
	stage *staging
	// nd is the dense gradients' length in flat, tail the number of
	// slots after them.
	nd, tail int
	one      []float32 // the allreduce of the step's rows
	// The sparse exchange: each rank's part of the allgather is its
	// touched ids (int32 bits in float32 slots: MPI and Go's copies only
	// move bits, no arithmetic touches them),
	// table after table, then their gradient rows in the same order
	// (staged in stage's send buffer).
	recv    []float32
	merged  []*kernels.SparseGrad
	mergers []dist.RowMerger // per table: dist.SumRowsByID with a slot per row
	// mids, msums are each table's merged ids and rows (the mergers'
	// results) until their upload.
	mids       [][]int32
	msums      [][]float32
	regT       *kernels.Tensor // [1] the parameters' L2 term
	globalRows int
	bytes      int64
	// plan, when set (PlanRows), is the next step's rows over all ranks
	// and this rank's, known from the data's partition: the step then
	// needs no allreduce of the row count.
	plan struct{ global, own int }
}

// maxGlobalRows bounds the rows of one step over all ranks: the count is
// summed as a float32, exact up to 2^24.
const maxGlobalRows = 1 << 24

// SetComm makes the engine one rank of the distributed job c: from here on
// TrainStep sums the gradients over the ranks (one allreduce of all dense
// gradients, an allgather of the tables' touched rows) and every rank
// applies the same update, with the losses divided by the step's rows over
// all ranks. It broadcasts rank 0's parameters and optimizer state, so that
// all ranks start from the same bits. Every rank calls it. A communicator
// of one rank leaves the engine as it is. The distributed step runs on any
// device (the gradients cross through pinned host buffers:
// dist_device.go), without graph capture; on a device that fuses the
// embedding update with its backward pass, the tables' sparse gradients
// are materialised instead, since the ranks' rows are summed before the
// update.
func (e *Engine) SetComm(c dist.Comm) error {
	if join, err := e.joins(c); !join {
		return err
	}
	nd := e.denseLen()
	nt := len(e.spec.Input.Tables)
	tail := len(e.spec.Tasks) + 2 + nt*c.Size()
	st, err := newStaging(e.dev, nd+tail)
	if err != nil {
		return err
	}
	d := e.newDistState(c, st, nd, tail)
	if err := e.bcastRank0(c, true); err != nil {
		d.release()
		return err
	}
	e.dist = d
	e.upd.merged = d.merged
	return nil
}

// joins reports whether c makes the engine a rank of a job: false with no
// error for no communicator or one of one rank (the engine stays as it
// is), false with the reason when the engine cannot join.
func (e *Engine) joins(c dist.Comm) (bool, error) {
	switch {
	case c == nil || c.Size() == 1:
		return false, nil
	case e.dist != nil:
		return false, errors.New("mtl: the engine is already part of a distributed job")
	case e.graphs != nil:
		return false, errDistGraphs
	}
	return true, nil
}

// denseLen is the number of floats of the dense parameters: the gradients
// of the fused allreduce.
func (e *Engine) denseLen() int {
	nd := 0
	for _, p := range e.spec.Params {
		if !p.Sparse {
			nd += p.Value.Len()
		}
	}
	return nd
}

// bcastRank0 gives every rank rank 0's parameters and optimizer state, so
// that all ranks start from the same bits; with tables false it leaves out
// the embedding tables and their state, which are each rank's own rows.
func (e *Engine) bcastRank0(c dist.Comm, tables bool) error {
	var tableState []string
	var shared []*kernels.Tensor
	for _, p := range e.spec.Params {
		if p.Sparse && !tables {
			tableState = append(tableState, p.Name+"/")
			continue
		}
		shared = append(shared, p.Value)
	}
	for _, s := range e.OptimizerState() {
		if !hasAnyPrefix(s.Name, tableState) {
			shared = append(shared, s.Tensor)
		}
	}
	for _, t := range shared {
		if err := bcastTensor(e.dev, c, t, 0); err != nil {
			return fmt.Errorf("mtl: broadcasting rank 0's parameters: %w", err)
		}
	}
	return nil
}

func hasAnyPrefix(s string, prefixes []string) bool {
	for _, p := range prefixes {
		if strings.HasPrefix(s, p) {
			return true
		}
	}
	return false
}

// newDistState is the distributed state of both sharding modes on the
// staging st, whose flat buffer holds the fused allreduce (nd dense
// gradients and tail slots after them).
func (e *Engine) newDistState(c dist.Comm, st *staging, nd, tail int) *distState {
	nt := len(e.spec.Input.Tables)
	d := &distState{comm: c, flat: st.flat.F32()[:nd+tail], stage: st, nd: nd, tail: tail, one: make([]float32, 1),
		merged: make([]*kernels.SparseGrad, nt), mergers: make([]dist.RowMerger, nt),
		mids: make([][]int32, nt), msums: make([][]float32, nt), regT: e.dev.Alloc(kernels.Float32, 1)}
	for t := range d.merged {
		d.merged[t] = &kernels.SparseGrad{}
	}
	return d
}

// GlobalRows is the rows of the last training step over all ranks (the
// batch's rows in one process).
func (e *Engine) GlobalRows() int {
	if e.dist == nil {
		return e.train.rows
	}
	return e.dist.globalRows
}

// CommBytes is the bytes this rank received in the collectives of the
// training steps so far (0 in one process). What a rank sends is the same
// for the allreduce and about the same for the allgathers.
func (e *Engine) CommBytes() int64 {
	if e.dist == nil {
		return 0
	}
	return e.dist.bytes
}

// PlanRows gives the next training step's rows over all ranks (global)
// and this rank's (own), as the data's partition says
// (dist.Partition.BatchRows): the step then takes the global count from
// here instead of an allreduce, one synchronisation point fewer. A rank
// whose batch does not have own rows fails the step on every rank (the
// losses would be divided by a wrong count). Without a plan, or in one
// process, the step is as before. The plan holds for one step.
func (e *Engine) PlanRows(global, own int) {
	if e.dist != nil {
		e.dist.plan.global, e.dist.plan.own = global, own
	}
}

// distStep is TrainStep in a distributed job. b may be nil or empty: a rank
// whose part of the epoch has run out joins the step with nothing of its
// own. Every rank returns the same error when a rank's pass fails or the
// loss is not finite, and then no rank updates.
func (e *Engine) distStep(b *loader.Batch) (Stats, error) {
	d, ws := e.dist, e.train
	n := d.comm.Size()
	rows := 0
	if b != nil {
		rows = b.Rows
	}
	global, planErr := e.takePlan(rows)
	if global == 0 {
		d.one[0] = float32(rows)
		if err := d.comm.AllreduceSum(d.one); err != nil {
			return Stats{}, fmt.Errorf("mtl: step %d: %w", e.step, err)
		}
		d.bytes += allreduceBytes(1, n)
		global = int(d.one[0])
	}
	if global > maxGlobalRows {
		return Stats{}, fmt.Errorf("mtl: step %d: %d rows over all ranks: at most %d per step", e.step, global, maxGlobalRows)
	}
	if global == 0 {
		return Stats{}, fmt.Errorf("mtl: step %d: no rank has rows", e.step)
	}
	d.globalRows = global

	passErr := planErr
	if rows > 0 && passErr == nil {
		// Each rank draws its own dropout masks.
		mode := layers.Mode{Train: true, Seed: layers.MixSeed(e.dropoutSeed(), uint64(d.comm.Rank()))}
		ws.lossRows = global
		passErr = ws.LossPass(b, mode, true)
		ws.lossRows = 0
	}
	flat, nd := d.flat, d.nd
	counts := nd + len(e.spec.Tasks) + 2
	send, regParams, err := e.packStep(rows > 0 && passErr == nil)
	if passErr == nil {
		passErr = err
	}
	if rows > 0 && passErr == nil {
		passErr = e.putCounts(flat[counts:])
	}
	if err := e.reduceStep(flat, nd, passErr); err != nil {
		return Stats{}, err
	}
	if err := e.exchangeRows(send, flat[counts:]); err != nil {
		return Stats{}, fmt.Errorf("mtl: step %d: embedding rows: %w", e.step, err)
	}
	return e.finishDistStep(b, flat, nd, regParams)
}

// allreduceBytes is what dist.Comm.AllreduceSum of n floats receives per
// rank among size ranks: (size-1)/size of the buffer in each of its two
// movements.
func allreduceBytes(n, size int) int64 {
	return 2 * 4 * int64(n) * int64(size-1) / int64(size)
}

// maxCount bounds the ids a rank's batch touches in one table: the counts
// travel as float32 in the fused allreduce, exact up to 2^24.
const maxCount = 1 << 24

// putCounts writes the number of ids this rank's batch touched in each
// table to its slots of counts (rank-major: counts[r*tables+t]).
func (e *Engine) putCounts(counts []float32) error {
	nt, rank := len(e.spec.Input.Tables), e.dist.comm.Rank()
	for t := range nt {
		n := e.train.input.SparseGrad(t).N
		if n > maxCount {
			return fmt.Errorf("mtl: step %d: the batch touches %d ids of table %d: at most %d per rank and step in distributed training", e.step, n, t, maxCount)
		}
		counts[rank*nt+t] = float32(n)
	}
	return nil
}

// exchangeRows sums the tables' sparse gradients over the ranks into
// d.merged (replicated tables): every rank's touched ids and gradient rows
// are gathered, all tables in one allgather (counts, every rank's touched
// ids per table, came with the fused allreduce), and the rows of an id
// touched by several ranks are added in rank order (dist.SumRowsByID's
// order, by a dist.RowMerger), so
// that every rank holds the same bits. send is this rank's part (its
// touched ids of every table, then their rows: stageOut), empty on a rank
// without rows this step.
func (e *Engine) exchangeRows(send []float32, counts []float32) error {
	d := e.dist
	tables := e.spec.Input.Tables
	nt, n, rank := len(tables), d.comm.Size(), d.comm.Rank()
	count := func(r, t int) int { return int(counts[r*nt+t]) }
	// Rank r's part: its ids, then its rows.
	parts, idsOf := make([]int, n), make([]int, n)
	for r := range n {
		for t, tab := range tables {
			idsOf[r] += count(r, t)
			parts[r] += count(r, t) * (1 + tab.Dim)
		}
	}
	d.recv = grow(d.recv, sum(parts))
	if err := d.comm.AllgathervFloat32(send, d.recv, parts); err != nil {
		return err
	}
	d.bytes += 4 * int64(sum(parts)-parts[rank])
	idOff, rowOff := make([]int, n), make([]int, n)
	at := 0
	for r := range n {
		idOff[r], rowOff[r] = at, at+idsOf[r]
		at += parts[r]
	}
	// Each table's parts, rank after rank, go to its merger where they lie
	// in recv (the ids' int32 bits read in place): no copy.
	for t, tab := range tables {
		m := &d.mergers[t]
		for r := range n {
			c := count(r, t)
			ids := int32Bits(d.recv[idOff[r] : idOff[r]+c])
			if err := m.Add(ids, d.recv[rowOff[r]:rowOff[r]+c*tab.Dim], tab.Dim, tab.Rows); err != nil {
				return err
			}
			idOff[r] += c
			rowOff[r] += c * tab.Dim
		}
		d.mids[t], d.msums[t] = m.Take()
	}
	return e.uploadMerged(d.mids, d.msums)
}

// int32Bits is f read as the int32s whose bits it holds (the ids of the
// rows' allgather), without a copy.
func int32Bits(f []float32) []int32 {
	return unsafe.Slice((*int32)(unsafe.Pointer(unsafe.SliceData(f))), len(f))
}

func grow[T any](s []T, n int) []T {
	if cap(s) < n {
		return make([]T, n)
	}
	return s[:n]
}

func sum(xs []int) int {
	s := 0
	for _, x := range xs {
		s += x
	}
	return s
}

// releaseDist frees the distributed state's tensors.
func (d *distState) release() {
	if d == nil {
		return
	}
	d.regT.Release()
	d.stage.release()
	for _, g := range d.merged {
		if g.Rows != nil {
			g.Rows.Release()
			g.Values.Release()
		}
	}
}
