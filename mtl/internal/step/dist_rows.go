package step

import (
	"errors"
	"fmt"
	"math"

	"github.com/mtlrank/mtlrank/dist"
	"github.com/mtlrank/mtlrank/kernels"
	"github.com/mtlrank/mtlrank/layers"
	"github.com/mtlrank/mtlrank/loader"
)

// rowState is the engine's state in a job whose embedding tables are
// sharded by rows (SetRowComm): rank r holds the rows id mod N == r of
// every table, at local row id div N, with their optimizer state. A lookup
// fetches the batch's rows from their owners; a training step sends the
// gradient rows back to them (docs/DISTRIBUTED.md, "Row sharding").
type rowState struct {
	comm    dist.Comm
	n, rank int
	local   []int // per table: the rows this rank holds
	dims    []int
	// flat is the fused allreduce of a step: the dense gradients in
	// Spec.Params order, each task's loss share, the batch's
	// regularisation term and a failure flag.
	flat []float32
	nd   int
	// The owner's merge of its rows' gradients over the ranks (local row
	// ids) is distState's (mergers, then merged, which replace the
	// workspace's in the optimizer). Scratch of the gradient exchange:
	send, recv []float32
	ids        []int32 // a sender's ids, made local
	// bytes the lookups of the current step received (added to the
	// step's count by rowStep)
	stepBytes int64
	// global is the rows of the last lookup's batches over all ranks (the
	// headers carry each rank's); inStep makes a lookup divide the
	// training workspace's losses by it (Workspace.lossRows).
	global int
	inStep bool
}

// rowLookup is a workspace's state of its last lookup in a row-sharded job.
type rowLookup struct {
	tables []rowTable
	lk     []*kernels.Tensor // per table: the fetched rows, for InputWS.SetTables
	// The id exchange: the ids this rank asked of each owner (per owner
	// j: the header [failed, the batch's rows, count of table 0, ...],
	// then the ids, table after table), and those the others asked of
	// this rank.
	sendIDs, recvIDs       []int32
	sendCounts, recvCounts []int
	// askRows[j], giveRows[j]: the floats of the rows this rank receives
	// from owner j, and sends to rank j.
	askRows, giveRows []int
	rowsIn, rowsOut   []float32
	// stage is the device side of the lookup, on a device whose memory
	// the host cannot address (nil on the CPU).
	stage   *lookupStage
	wTables []*kernels.Tensor // the tables' W, for stage
}

// rowTable is one table's part of a lookup.
type rowTable struct {
	index    map[int32]int32 // id -> its place in distinct
	distinct []int32         // the batch's ids, in order of first appearance
	compact  []int32         // the batch's ids renumbered into distinct
	idsH     layers.Header
	rows     []float32 // [len(distinct), dim]: the fetched rows (in the stage's pinned memory on a device)
	rowsH    layers.Header
	// the routing of distinct by owner (dist.Route): send[k] ==
	// distinct[perm[k]], counts[j] of them for owner j
	send   []int32
	counts []int
	perm   []int
	// the ids the others asked of this rank: per source rank j, in[j]
	in [][]int32
}

// SetRowComm makes the engine one rank of the distributed job c with its
// embedding tables sharded by rows: each table's W (and its optimizer
// state) must already be rank c.Rank()'s shard, as layers.RowShard lays
// it out. From here on every lookup (TrainStep, Loss, Predict, Forward,
// on any workspace of the engine) is collective: every rank must call
// them in the same order, a rank without rows with an empty batch or
// JoinLookup. Training steps sum the dense gradients over the ranks as
// SetComm's do, and send the tables' gradient rows to their owners, who
// add them in rank order and update their rows. It broadcasts rank 0's
// dense parameters and their optimizer state. A communicator of one rank
// leaves the engine as it is. It runs on any device (rows and gradients
// cross through pinned host buffers: dist_device.go's staging and
// lookupStage), without graph capture.
func (e *Engine) SetRowComm(c dist.Comm) error {
	if join, err := e.joins(c); !join {
		return err
	}
	n, rank := c.Size(), c.Rank()
	sh := layers.RowShard{Rank: rank, Size: n}
	r := &rowState{comm: c, n: n, rank: rank}
	for _, tab := range e.spec.Input.Tables {
		if got, want := tab.W.Rows(), sh.Rows(tab.Rows); got != want {
			return fmt.Errorf("mtl: table %q holds %d rows, rank %d of %d must hold %d: build the model sharded by rows", tab.Name, got, rank, n, want)
		}
		r.local, r.dims = append(r.local, tab.W.Rows()), append(r.dims, tab.Dim)
	}
	r.nd = e.denseLen()
	tail := len(e.spec.Tasks) + 2
	st, err := newStaging(e.dev, r.nd+tail)
	if err != nil {
		return err
	}
	r.flat = st.flat.F32()[:r.nd+tail]
	// The dense parameters and their optimizer state from rank 0; the
	// tables' rows are each rank's own.
	if err := e.bcastRank0(c, false); err != nil {
		st.release()
		return err
	}
	e.rows = r
	e.dist = e.newDistState(c, st, r.nd, tail)
	e.upd.merged = e.dist.merged
	return nil
}

// RowSharded reports whether the engine's tables are sharded by rows
// (SetRowComm), which makes its lookups collective.
func (e *Engine) RowSharded() bool { return e.rows != nil }

// JoinLookup takes part, without a batch, in the collective lookup of a
// row-sharded job (SetRowComm) that the other ranks make in a Loss,
// Predict or Forward of their batches: it serves their rows. Without row
// sharding it does nothing.
func (e *Engine) JoinLookup() error {
	if e.rows == nil {
		return nil
	}
	_, err := e.rows.lookup(e.train, nil, errEmptyBatch)
	if errors.Is(err, errEmptyBatch) {
		err = nil
	}
	return err
}

// lookup is the collective lookup of a row-sharded job: data (nil when
// feedErr is set) is the workspace's fed batch, whose distinct ids per
// table are sent to their owners (ExchangeCounts, then one
// AlltoallvInt32 for all tables) and whose rows come back (one
// AlltoallvFloat32) into a small table per table, the batch's ids
// renumbered into it; ws's input block then reads those
// (InputWS.SetTables). A rank whose batch failed to feed (feedErr), or
// has none (errEmptyBatch), still serves the others and says so in its
// header: when any rank failed, every rank returns an error after the id
// exchange (the failed rank its own), and no rows move.
func (r *rowState) lookup(ws *Workspace, data *layers.InputData, feedErr error) (*layers.InputData, error) {
	n, nt := r.n, len(r.dims)
	lk := ws.lookup
	if lk == nil {
		lk = &rowLookup{tables: make([]rowTable, nt), lk: make([]*kernels.Tensor, nt),
			sendCounts: make([]int, n), askRows: make([]int, n), giveRows: make([]int, n)}
		for t := range lk.tables {
			lk.tables[t].index = map[int32]int32{}
			lk.tables[t].in = make([][]int32, n)
		}
		if ws.e.caps.CPU == nil {
			lk.stage = newLookupStage(ws.e.dev, n, nt)
			for _, tab := range ws.e.spec.Input.Tables {
				lk.wTables = append(lk.wTables, tab.W)
			}
		}
		ws.lookup = lk
	}
	failed := feedErr != nil && !errors.Is(feedErr, errEmptyBatch)
	rows := 0
	if data != nil {
		rows = data.Rows
	}
	var err error
	for t := range lk.tables {
		tb := &lk.tables[t]
		tb.distinct = tb.distinct[:0]
		if data != nil && feedErr == nil {
			tb.renumber(ws.feed.hostIDs[t], ws.feed.hostOffs[t])
		}
		if tb.send, tb.counts, tb.perm, err = dist.Route(tb.distinct, n); err != nil {
			return nil, err // ids are checked >= 0 when fed
		}
	}
	// The ids, owner after owner: a header, then each table's.
	lk.sendIDs = lk.sendIDs[:0]
	for j := range n {
		start := len(lk.sendIDs)
		flag := int32(0)
		if failed {
			flag = 1
		}
		lk.sendIDs = append(lk.sendIDs, flag, int32(rows))
		for t := range lk.tables {
			lk.sendIDs = append(lk.sendIDs, int32(lk.tables[t].counts[j]))
		}
		for t := range lk.tables {
			tb := &lk.tables[t]
			at := ownerOffset(tb.counts, j)
			lk.sendIDs = append(lk.sendIDs, tb.send[at:at+tb.counts[j]]...)
		}
		lk.sendCounts[j] = len(lk.sendIDs) - start
	}
	if lk.recvCounts, err = dist.ExchangeCounts(r.comm, lk.sendCounts); err != nil {
		return nil, err
	}
	r.stepBytes += 4 * int64(n-1)
	lk.recvIDs = grow(lk.recvIDs, sum(lk.recvCounts))
	if err := r.comm.AlltoallvInt32(lk.sendIDs, lk.sendCounts, lk.recvIDs, lk.recvCounts); err != nil {
		return nil, err
	}
	r.stepBytes += 4 * int64(sum(lk.recvCounts)-lk.recvCounts[r.rank])
	// What each rank asked of this one; the failures; the rows.
	const hdr = 2 // the failure flag and the rows, then the counts
	fails := 0
	at := 0
	r.global = 0
	var badID error
	for j := range n {
		part := lk.recvIDs[at : at+lk.recvCounts[j]]
		at += lk.recvCounts[j]
		if len(part) < hdr+nt {
			return nil, fmt.Errorf("mtl: row lookup: rank %d sent %d ids, fewer than the header's %d", j, len(part), hdr+nt)
		}
		fails += int(part[0])
		r.global += int(part[1])
		ids := part[hdr+nt:]
		lk.giveRows[j] = 0
		for t := range lk.tables {
			c := int(part[hdr+t])
			tb := &lk.tables[t]
			tb.in[j] = ids[:c]
			ids = ids[c:]
			lk.giveRows[j] += c * r.dims[t]
			for _, id := range tb.in[j] {
				if int(id)%n != r.rank || int(id)/n >= r.local[t] {
					badID = fmt.Errorf("mtl: row lookup: rank %d asked rank %d for row %d of table %d, which it does not hold", j, r.rank, id, t)
				}
			}
		}
	}
	if r.inStep && ws == ws.e.train {
		// the losses of the step are divided by its rows over all ranks
		ws.lossRows = r.global
	}
	if fails > 0 {
		lf := &lookupFailure{fails: fails, n: n}
		if failed {
			lf.own = feedErr
		}
		return nil, lf
	}
	// The rows: each owner's for each asker, in the order asked.
	// A rank whose device fails to gather them sends zeros, as for a bad
	// id, and fails after the exchange: the others do not wait for it.
	serveErr := r.serve(ws, badID != nil)
	for j := range n {
		lk.askRows[j] = 0
		for t := range lk.tables {
			lk.askRows[j] += lk.tables[t].counts[j] * r.dims[t]
		}
	}
	lk.rowsIn = grow(lk.rowsIn, sum(lk.askRows))
	if err := r.comm.AlltoallvFloat32(lk.rowsOut, lk.giveRows, lk.rowsIn, lk.askRows); err != nil {
		return nil, err
	}
	r.stepBytes += 4 * int64(sum(lk.askRows)-lk.askRows[r.rank])
	if badID != nil {
		return nil, badID
	}
	if serveErr != nil {
		return nil, serveErr
	}
	if data == nil {
		return nil, feedErr
	}
	// Scatter the rows to their places in each table's small table (host
	// memory on the CPU, the stage's pinned memory on a device).
	if lk.stage != nil {
		if err := lk.stage.smallTables(lk.tables, r.dims); err != nil {
			return nil, err
		}
	} else {
		for t := range lk.tables {
			tb := &lk.tables[t]
			tb.rows = grow(tb.rows, len(tb.distinct)*r.dims[t])
		}
	}
	at = 0
	for j := range n {
		for t := range lk.tables {
			tb, d := &lk.tables[t], r.dims[t]
			off := ownerOffset(tb.counts, j)
			for k := range tb.counts[j] {
				p := tb.perm[off+k]
				copy(tb.rows[p*d:(p+1)*d], lk.rowsIn[at:at+d])
				at += d
			}
		}
	}
	if lk.stage != nil {
		lk.stage.place(lk.tables, r.dims, data.IDs, lk.lk)
	} else {
		cpu := ws.e.caps.CPU
		for t := range lk.tables {
			tb := &lk.tables[t]
			lk.lk[t] = tb.rowsH.WrapF32(cpu, tb.rows, len(tb.distinct), r.dims[t])
			data.IDs[t] = tb.idsH.WrapI32(cpu, tb.compact, len(tb.compact))
		}
	}
	ws.input.SetTables(lk.lk)
	return data, nil
}

// serve sets lk.rowsOut to the rows the ranks asked of this one (the ids
// of tb.in), asker after asker, table after table, in the order asked:
// read from the tables on the CPU, gathered on a device (lookupStage),
// zeros when bad (a rank asked for a row this one does not hold) and when
// the device fails to gather them (the error).
func (r *rowState) serve(ws *Workspace, bad bool) error {
	lk := ws.lookup
	if lk.stage != nil {
		giving := sum(lk.giveRows)
		rows, err := lk.stage.serve(lk.wTables, lk.tables, r.n, giving, bad)
		if err != nil {
			rows = make([]float32, giving)
		}
		lk.rowsOut = rows
		return err
	}
	lk.rowsOut = lk.rowsOut[:0]
	for j := range r.n {
		for t := range lk.tables {
			w, d := ws.e.spec.Input.Tables[t].W.F32, r.dims[t]
			for _, id := range lk.tables[t].in[j] {
				if bad {
					lk.rowsOut = append(lk.rowsOut, make([]float32, d)...)
					continue
				}
				k := int(id) / r.n
				lk.rowsOut = append(lk.rowsOut, w[k*d:(k+1)*d]...)
			}
		}
	}
	return nil
}

// ownerOffset is where owner j's ids start in a Route's send.
func ownerOffset(counts []int, j int) int {
	at := 0
	for _, c := range counts[:j] {
		at += c
	}
	return at
}

// renumber lists a table's distinct ids of a batch (ids and offsets as
// the feeder gave them on the host) in order of first appearance and
// writes the batch's ids renumbered into that list (a copy: the batch's
// columns are the caller's). Only the ids the offsets cover are read (the
// feeder checked those against the vocabulary).
func (tb *rowTable) renumber(ids, offs []int32) {
	lo, hi := 0, len(ids)
	if offs != nil {
		lo, hi = int(offs[0]), int(offs[len(offs)-1])
	}
	clear(tb.index)
	tb.compact = grow(tb.compact, len(ids))
	clear(tb.compact[:lo])
	clear(tb.compact[hi:])
	for i := lo; i < hi; i++ {
		id := ids[i]
		k, ok := tb.index[id]
		if !ok {
			k = int32(len(tb.distinct))
			tb.index[id] = k
			tb.distinct = append(tb.distinct, id)
		}
		tb.compact[i] = k
	}
}

// rowStep is TrainStep in a row-sharded job; b may be nil or empty (a rank
// whose part has run out joins with nothing of its own). Every rank
// returns an error at the same step when a rank's batch fails or the loss
// is not finite, and then no rank updates.
func (e *Engine) rowStep(b *loader.Batch) (Stats, error) {
	d, r, ws := e.dist, e.rows, e.train
	rows := 0
	if b != nil {
		rows = b.Rows
	}
	// The step's rows over all ranks come with the lookup's headers
	// (rowState.global), before the losses need them: no allreduce of
	// their own, unlike the replicated step's fallback. A plan
	// (PlanRows) checks them: a rank whose batch is not the partition's
	// fails the lookup, so that every rank fails before any row moves.
	planned, planErr := e.takePlan(rows)
	r.stepBytes = 0
	r.inStep = true
	var passErr error
	switch {
	case planErr != nil:
		_, passErr = r.lookup(ws, nil, planErr)
	case rows > 0:
		mode := layers.Mode{Train: true, Seed: layers.MixSeed(e.dropoutSeed(), uint64(r.rank))}
		passErr = ws.LossPass(b, mode, true)
	default:
		_, passErr = r.lookup(ws, nil, errEmptyBatch)
		if errors.Is(passErr, errEmptyBatch) {
			passErr = nil
		}
	}
	r.inStep, ws.lossRows = false, 0
	d.bytes += r.stepBytes
	if lf := (*lookupFailure)(nil); errors.As(passErr, &lf) {
		// Every rank saw the failure in the lookup's headers: no rows
		// moved, and no rank goes on to the allreduce.
		if lf.own != nil {
			return Stats{}, lf.own
		}
		return Stats{}, fmt.Errorf("mtl: step %d: %w", e.step, lf)
	}
	if r.global == 0 {
		return Stats{}, fmt.Errorf("mtl: step %d: no rank has rows", e.step)
	}
	if planned > 0 && planned != r.global {
		// every rank sees the same headers and plans from the same
		// partition: all fail here
		return Stats{}, fmt.Errorf("mtl: step %d: the ranks' batches have %d rows where the data's partition says %d", e.step, r.global, planned)
	}
	d.globalRows = r.global
	flat, nd := r.flat, r.nd
	send, regParams, err := e.packStep(rows > 0 && passErr == nil)
	if passErr == nil {
		passErr = err
	}
	if err := e.reduceStep(flat, nd, passErr); err != nil {
		return Stats{}, err
	}
	if err := e.pushRows(send); err != nil {
		return Stats{}, fmt.Errorf("mtl: step %d: embedding gradients: %w", e.step, err)
	}
	return e.finishDistStep(b, flat, nd, regParams)
}

// lookupFailure is the error of a lookup in which some rank's batch failed
// to feed: own is this rank's error (nil on the others).
type lookupFailure struct {
	own   error
	fails int
	n     int
}

func (f *lookupFailure) Error() string {
	if f.own != nil {
		return f.own.Error()
	}
	return fmt.Sprintf("%d of the %d ranks failed (their output says why)", f.fails, f.n)
}

func (f *lookupFailure) Unwrap() error { return f.own }

// pushRows sends the gradient rows of the last training lookup to their
// owners with the lookup's counts reversed (one AlltoallvFloat32 for all
// tables; an owner knows which ids it served, so no ids travel), and each
// owner adds the rows of an id in rank order (a dist.RowMerger over the
// ranks' parts, which the alltoallv lays out in rank order) into
// distState.merged, its local rows' gradients (uploadMerged): the bits of
// SetComm's merge of replicated tables. send is the tables' touched ids
// and gradient rows as stageRows downloaded them (each table's ids are
// the lookup's renumbered ones, in the device's order), empty on a rank
// without rows this step.
func (e *Engine) pushRows(send []float32) error {
	r, d, lk := e.rows, e.dist, e.train.lookup
	n, nt := r.n, len(lk.tables)
	// Per table, where its rows start in send (stageRows: the ids of every
	// table, then their rows), and the row there of each looked-up id.
	rowAt, pos := make([]int, nt), make([][]int, nt)
	if len(send) > 0 {
		ids := 0
		for t := range lk.tables {
			if g, k := e.train.input.SparseGrad(t), len(lk.tables[t].distinct); g.N != k {
				return fmt.Errorf("table %d: %d gradient rows for %d looked-up ids", t, g.N, k)
			}
			ids += len(lk.tables[t].distinct)
		}
		idAt, at := 0, ids
		for t := range lk.tables {
			k := len(lk.tables[t].distinct)
			rowAt[t], pos[t] = at, make([]int, k)
			for p, x := range send[idAt : idAt+k] {
				id := int32(math.Float32bits(x))
				if id < 0 || int(id) >= k {
					return fmt.Errorf("table %d: gradient row for id %d of a lookup of %d ids", t, id, k)
				}
				pos[t][id] = p
			}
			idAt += k
			at += k * r.dims[t]
		}
	}
	r.send = r.send[:0]
	for j := range n {
		for t := range lk.tables {
			tb, dim := &lk.tables[t], r.dims[t]
			off := ownerOffset(tb.counts, j)
			for k := range tb.counts[j] {
				p := rowAt[t] + pos[t][tb.perm[off+k]]*dim
				r.send = append(r.send, send[p:p+dim]...)
			}
		}
	}
	r.recv = grow(r.recv, sum(lk.giveRows))
	if err := r.comm.AlltoallvFloat32(r.send, lk.askRows, r.recv, lk.giveRows); err != nil {
		return err
	}
	d.bytes += 4 * int64(sum(lk.giveRows)-lk.giveRows[r.rank])
	// Each table's ids and rows in rank order, then the merge.
	starts := make([]int, n)
	for j := 1; j < n; j++ {
		starts[j] = starts[j-1] + lk.giveRows[j-1]
	}
	// Each sender's part goes to the table's merger with its ids made
	// local and its rows where they lie in recv.
	for t := range lk.tables {
		tb, dim, m := &lk.tables[t], r.dims[t], &d.mergers[t]
		for j := range n {
			r.ids = r.ids[:0]
			for _, id := range tb.in[j] {
				r.ids = append(r.ids, id/int32(n))
			}
			k := len(tb.in[j]) * dim
			if err := m.Add(r.ids, r.recv[starts[j]:starts[j]+k], dim, r.local[t]); err != nil {
				return err
			}
			starts[j] += k
		}
		d.mids[t], d.msums[t] = m.Take()
	}
	return e.uploadMerged(d.mids, d.msums)
}
