package loader

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"

	"github.com/apache/arrow-go/v18/parquet"
	"github.com/apache/arrow-go/v18/parquet/file"
	"github.com/apache/arrow-go/v18/parquet/pqarrow"
)

// Iterator yields the Batches of one epoch. It is used by one goroutine at a
// time (Next and Close are not concurrent-safe), but the Batches it returns
// may be released from any goroutine.
type Iterator struct {
	ctx context.Context
	p   *producer

	// prefetch
	ch   chan result
	done chan struct{}
	wg   sync.WaitGroup

	err    error // sticky: returned again by every later Next
	closed bool
}

type result struct {
	b   *Batch
	err error
}

// Epoch returns an iterator over the dataset for the given epoch. The order
// of rows is a deterministic function of (Options.Seed, epoch) when
// shuffling, and file order otherwise. Cancelling ctx stops the iterator
// (and its prefetch goroutine): Next then returns ctx.Err(). A nil ctx means
// context.Background(). Close must be called in every case.
//
// Every batch of an epoch holds Options.BatchSize rows but the last, which
// holds the rest (and is dropped with DropLast), in every mode: distributed
// training computes every rank's rows of a step from it
// (dist.Partition.BatchRows) instead of asking the ranks.
func (d *Dataset) Epoch(ctx context.Context, epoch int) *Iterator {
	if ctx == nil {
		ctx = context.Background()
	}
	p := &producer{ds: d, ctx: ctx, pool: &bufPool{}, mem: newRecycler(d.opt.Allocator), curFile: -1}
	p.order = d.order(epoch, &p.rng)
	it := &Iterator{ctx: ctx, p: p}
	if d.opt.Prefetch > 0 {
		it.ch = make(chan result, d.opt.Prefetch)
		it.done = make(chan struct{})
		it.wg.Add(1)
		go it.run()
	}
	return it
}

// unit is one row group of one file to read.
type unit struct{ file, rg int }

// order lists the row groups of an epoch: files in (shuffled) order and the
// row groups of each file in (shuffled) order, so that one file is open at a
// time. It seeds *rng for the row shuffle that follows.
func (d *Dataset) order(epoch int, rng **rand.Rand) []unit {
	var r *rand.Rand
	if d.opt.Shuffle {
		// PCG seeded from (seed, epoch): the same pair gives the same stream,
		// and a different epoch gives an unrelated one.
		r = rand.New(rand.NewPCG(uint64(d.opt.Seed), uint64(epoch)^0x9e3779b97f4a7c15))
	}
	*rng = r
	files := make([]int, len(d.files))
	for i := range files {
		files[i] = i
	}
	if r != nil {
		r.Shuffle(len(files), func(i, j int) { files[i], files[j] = files[j], files[i] })
	}
	var out []unit
	for _, f := range files {
		rgs := slices.Clone(d.files[f].groups())
		if r != nil {
			r.Shuffle(len(rgs), func(i, j int) { rgs[i], rgs[j] = rgs[j], rgs[i] })
		}
		for _, rg := range rgs {
			out = append(out, unit{f, rg})
		}
	}
	return out
}

// Next returns the next Batch, or io.EOF after the last one. The caller must
// Release every Batch. After an error (other than io.EOF) the iterator has
// released its resources and returns the same error again.
func (it *Iterator) Next() (*Batch, error) {
	if it.closed {
		return nil, errors.New("loader: Next on a closed iterator")
	}
	if it.err != nil {
		return nil, it.err
	}
	if err := it.ctx.Err(); err != nil {
		it.fail(err)
		return nil, err
	}
	var b *Batch
	var err error
	if it.ch == nil {
		b, err = it.p.next()
	} else {
		select {
		case r, ok := <-it.ch:
			if !ok {
				// The producer stopped without a final result: cancelled.
				err = it.ctx.Err()
				if err == nil {
					err = io.EOF
				}
			} else {
				b, err = r.b, r.err
			}
		case <-it.ctx.Done():
			err = it.ctx.Err()
		}
	}
	if err != nil {
		it.fail(err)
		return nil, err
	}
	return b, nil
}

// fail records a terminal error and frees what the synchronous producer
// holds (a prefetching producer frees its own state when it stops).
func (it *Iterator) fail(err error) {
	it.err = err
	if it.ch == nil {
		it.p.close()
	}
}

// Close stops the iterator: it stops and waits for the prefetch goroutine,
// releases the batches it had queued and every Arrow record the iterator
// holds, and closes the open file. Batches already returned stay valid until
// released. Close is idempotent.
func (it *Iterator) Close() error {
	if it.closed {
		return nil
	}
	it.closed = true
	if it.ch != nil {
		close(it.done)
		for r := range it.ch {
			r.b.Release()
		}
		it.wg.Wait()
		return nil
	}
	it.p.close()
	return nil
}

// run is the prefetch goroutine: it produces batches into it.ch until the
// epoch ends, an error occurs, Close is called or ctx is cancelled.
func (it *Iterator) run() {
	defer it.wg.Done()
	defer close(it.ch)
	defer it.p.close()
	for {
		if it.ctx.Err() != nil {
			return
		}
		b, err := it.p.next()
		select {
		case it.ch <- result{b, err}:
		case <-it.done:
			b.Release()
			return
		case <-it.ctx.Done():
			b.Release()
			return
		}
		if err != nil {
			return
		}
	}
}

// producer turns the epoch's row groups into batches. All its state belongs
// to one goroutine (the caller's or the prefetch goroutine).
type producer struct {
	ds    *Dataset
	ctx   context.Context
	rng   *rand.Rand // nil: no shuffle
	order []unit
	pos   int // next unit in order
	pool  *bufPool
	mem   *recycler // the Arrow reader's allocator

	// the open file and row group
	curFile int
	rdr     *file.Reader
	fr      *pqarrow.FileReader
	rr      pqarrow.RecordReader
	rowInRG int64
	srcDone bool

	// sequential mode: the chunk being cut into batches
	cur *chunk
	off int

	// shuffle mode: the shuffle buffer
	window []*chunk
	left   []int // rows of window[i] not yet emitted
	idx    []ref
	idxPos int
	// batches gathered ahead (gatherBurst), handed out from readyPos
	ready    []*Batch
	readyPos int

	// gather's reused tables: each chunk's slice of the column being
	// copied, and the chunks a batch's source has named
	srcI32  [][]int32
	srcI64  [][]int64
	srcF32  [][]float32
	srcOffs [][]int32
	seen    []bool

	closed bool
}

// ref is one row of the shuffle buffer: chunk index in window, row.
type ref struct{ c, r int32 }

func (p *producer) rowShuffle() bool {
	return p.rng != nil && p.ds.opt.ShuffleBuffer != NoRowShuffle
}

// next produces one batch or an error (io.EOF at the end).
func (p *producer) next() (*Batch, error) {
	if p.closed {
		return nil, io.EOF
	}
	if err := p.ctx.Err(); err != nil {
		return nil, err
	}
	if p.rowShuffle() {
		return p.nextShuffled()
	}
	return p.nextSequential()
}

func (p *producer) nextSequential() (*Batch, error) {
	bs := p.ds.opt.BatchSize
	for p.cur == nil || p.off == p.cur.rows {
		p.cur.release()
		p.cur, p.off = nil, 0
		c, err := p.nextChunk()
		if err != nil {
			return nil, err
		}
		p.cur = c
	}
	avail := p.cur.rows - p.off
	if avail >= bs {
		b := p.view(p.cur, p.off, bs)
		p.off += bs
		return b, nil
	}
	// The batch straddles reads: take the rest of cur and rows of the
	// following chunks.
	win := []*chunk{p.cur}
	// A batch never holds more rows than the dataset: a huge BatchSize
	// must not reserve memory for rows that do not exist.
	refs := make([]ref, 0, min(bs, int(min(p.ds.rows, 1<<30))))
	for r := p.off; r < p.cur.rows; r++ {
		refs = append(refs, ref{0, int32(r)})
	}
	p.cur, p.off = nil, 0
	for len(refs) < bs {
		c, err := p.nextChunk()
		if err == io.EOF {
			break
		}
		if err != nil {
			releaseAll(win)
			return nil, err
		}
		take := min(bs-len(refs), c.rows)
		ci := int32(len(win))
		win = append(win, c)
		for r := 0; r < take; r++ {
			refs = append(refs, ref{ci, int32(r)})
		}
		if take < c.rows {
			p.cur, p.off = c, take
		}
	}
	if len(refs) < bs && p.ds.opt.DropLast {
		releaseAll(win)
		return nil, io.EOF
	}
	var b *Batch
	if nonEmpty(win) == 1 {
		// Only one chunk contributes (the others were empty): a view.
		c := win[refs[0].c]
		b = p.view(c, int(refs[0].r), len(refs))
	} else {
		b = p.gather(win, refs)
	}
	for _, c := range win {
		if c != p.cur {
			c.release()
		}
	}
	return b, nil
}

func nonEmpty(win []*chunk) int {
	n := 0
	for _, c := range win {
		if c.rows > 0 {
			n++
		}
	}
	return n
}

func releaseAll(cs []*chunk) {
	for _, c := range cs {
		c.release()
	}
}

func (p *producer) nextShuffled() (*Batch, error) {
	for {
		if p.readyPos < len(p.ready) {
			b := p.ready[p.readyPos]
			p.ready[p.readyPos] = nil
			p.readyPos++
			return b, nil
		}
		if p.canGather() {
			p.gatherBurst()
			continue
		}
		if p.srcDone {
			return nil, io.EOF
		}
		if err := p.refill(); err != nil {
			return nil, err
		}
	}
}

// canGather reports whether the shuffle buffer holds the rows of a batch:
// a full one, or the epoch's short last one unless it is dropped.
func (p *producer) canGather() bool {
	avail := len(p.idx) - p.idxPos
	return avail >= p.ds.opt.BatchSize || (p.srcDone && avail > 0 && !p.ds.opt.DropLast)
}

// burstRows and burstBatches bound what gatherBurst copies at once: about
// a megabyte of tenrec's columns, what a core's cache holds of the chunks
// just read, and for small batches a bounded number of Batches.
const (
	burstRows    = 1 << 14
	burstBatches = 32
)

// gatherBurst copies the next batches of the shuffle buffer into p.ready,
// as many as it holds up to burstRows rows and burstBatches batches (at
// least one). Right after a refill the chunks were just decoded and are
// still in cache; gathering one batch per Next instead would read them
// back, in training after the step has evicted them, at a cache miss per
// value. The batches and their order are the same either way.
func (p *producer) gatherBurst() {
	bs := p.ds.opt.BatchSize
	p.ready, p.readyPos = p.ready[:0], 0
	rows := 0
	for p.canGather() {
		n := min(len(p.idx)-p.idxPos, bs)
		if rows > 0 && (rows+n > burstRows || len(p.ready) == burstBatches) {
			break
		}
		refs := p.idx[p.idxPos : p.idxPos+n]
		p.ready = append(p.ready, p.gather(p.window, refs))
		p.idxPos += n
		rows += n
		// Free the records whose rows have all been emitted.
		for _, r := range refs {
			p.left[r.c]--
			if p.left[r.c] == 0 {
				p.window[r.c].release()
			}
		}
	}
}

// refill compacts the shuffle buffer, reads chunks until it holds at least
// max(ShuffleBuffer, BatchSize) rows (or the data ends) and permutes it.
func (p *producer) refill() error {
	// Compact in place: the buffers are reused from refill to refill, so
	// that the steady state allocates nothing per row.
	remap := make([]int32, len(p.window))
	live := 0
	for i, c := range p.window {
		if p.left[i] > 0 {
			remap[i] = int32(live)
			p.window[live], p.left[live] = c, p.left[i]
			live++
		}
	}
	clear(p.window[live:])
	p.window, p.left = p.window[:live], p.left[:live]
	// Moving the rest to the front never overwrites an unread ref: entry k
	// goes to k-idxPos.
	rest := p.idx[p.idxPos:]
	if p.idx == nil {
		p.idx = make([]ref, 0, min(max(p.ds.opt.ReadRows, p.ds.opt.ShuffleBuffer), int(min(p.ds.rows, 1<<30))))
	}
	idx := p.idx[:len(rest)]
	for k, r := range rest {
		idx[k] = ref{remap[r.c], r.r}
	}
	p.idx, p.idxPos = idx, 0
	target := max(p.ds.opt.ShuffleBuffer, p.ds.opt.BatchSize)
	for len(p.idx) < target {
		c, err := p.nextChunk()
		if err == io.EOF {
			p.srcDone = true
			break
		}
		if err != nil {
			return err
		}
		if c.rows == 0 {
			c.release()
			continue
		}
		ci := int32(len(p.window))
		p.window = append(p.window, c)
		p.left = append(p.left, c.rows)
		for r := 0; r < c.rows; r++ {
			p.idx = append(p.idx, ref{ci, int32(r)})
		}
	}
	shuffle(p.rng, p.idx)
	return nil
}

// shuffle permutes s with exactly the draws and swaps of
// rand.Shuffle(len(s), swap), which fixes each epoch's row order, without a
// call through the swap closure per row.
func shuffle[T any](r *rand.Rand, s []T) {
	for i := len(s) - 1; i > 0; i-- {
		j := int(r.Uint64N(uint64(i + 1)))
		s[i], s[j] = s[j], s[i]
	}
}

// nextChunk reads and validates the next chunk of rows; io.EOF at the end.
func (p *producer) nextChunk() (*chunk, error) {
	for {
		if err := p.ctx.Err(); err != nil {
			return nil, err
		}
		if p.rr == nil {
			if p.pos == len(p.order) {
				p.closeFile()
				return nil, io.EOF
			}
			if err := p.openUnit(p.order[p.pos]); err != nil {
				p.closeFile()
				return nil, err
			}
		}
		c, err := p.readChunk()
		if err != nil {
			p.closeFile()
			return nil, err
		}
		if c != nil {
			return c, nil
		}
		// row group finished
		u := p.order[p.pos]
		plan := p.ds.files[u.file]
		want := plan.md.RowGroup(u.rg).NumRows()
		p.rr.Release()
		p.rr = nil
		p.pos++
		if p.rowInRG != want {
			p.closeFile()
			return nil, corruptErr(plan.path, u.rg, fmt.Errorf("read %d rows, footer says %d", p.rowInRG, want))
		}
	}
}

// openUnit opens the unit's file (when not open yet) and a record reader over
// its row group.
func (p *producer) openUnit(u unit) (err error) {
	plan := p.ds.files[u.file]
	defer func() {
		if r := recover(); r != nil {
			err = corruptErr(plan.path, u.rg, r)
		}
	}()
	if p.curFile != u.file {
		p.closeFile()
		props := parquet.NewReaderProperties(p.mem)
		rdr, err := file.OpenParquetFile(plan.path, false, file.WithReadProps(props), file.WithMetadata(plan.md))
		if err != nil {
			return fmt.Errorf("loader: %w", err)
		}
		fr, err := pqarrow.NewFileReader(rdr, pqarrow.ArrowReadProperties{BatchSize: plan.readRows(p.ds.opt.ReadRows)}, p.mem)
		if err != nil {
			rdr.Close()
			return corruptErr(plan.path, -1, err)
		}
		p.rdr, p.fr, p.curFile = rdr, fr, u.file
	}
	rr, err := p.fr.GetRecordReader(p.ctx, plan.leaves, []int{u.rg})
	if err != nil {
		return corruptErr(plan.path, u.rg, err)
	}
	p.rr = rr
	p.rowInRG = 0
	return nil
}

// readChunk decodes the next read of the current row group; nil, nil when
// the row group is finished.
func (p *producer) readChunk() (c *chunk, err error) {
	u := p.order[p.pos]
	plan := p.ds.files[u.file]
	defer func() {
		if r := recover(); r != nil {
			c.release()
			c, err = nil, corruptErr(plan.path, u.rg, r)
		}
	}()
	if !p.rr.Next() {
		if err := p.rr.Err(); err != nil {
			if p.ctx.Err() != nil {
				return nil, p.ctx.Err()
			}
			return nil, corruptErr(plan.path, u.rg, err)
		}
		return nil, nil
	}
	rec := p.rr.RecordBatch()
	rec.Retain()
	c = &chunk{plan: plan, rg: u.rg, first: plan.rgFirst[u.rg] + p.rowInRG, rows: int(rec.NumRows()), rec: rec}
	if int(rec.NumCols()) != len(p.ds.specs) {
		c.release()
		return nil, corruptErr(plan.path, u.rg, fmt.Errorf("read %d columns, want %d", rec.NumCols(), len(p.ds.specs)))
	}
	if p.rowInRG+int64(c.rows) > plan.md.RowGroup(u.rg).NumRows() {
		c.release()
		return nil, corruptErr(plan.path, u.rg, fmt.Errorf("more rows than the footer's %d", plan.md.RowGroup(u.rg).NumRows()))
	}
	var fill float32
	if p.ds.opt.FillNaN != nil {
		fill = *p.ds.opt.FillNaN
	}
	c.cols = make([]colData, len(p.ds.specs))
	for i := range p.ds.specs {
		arr := rec.Column(i)
		if arr.Len() != c.rows {
			c.release()
			return nil, corruptErr(plan.path, u.rg, fmt.Errorf("column %q has %d rows, want %d", p.ds.specs[i].name, arr.Len(), c.rows))
		}
		cd, err := buildColumn(c, &p.ds.specs[i], arr, fill)
		if err != nil {
			c.release()
			return nil, err
		}
		c.cols[i] = cd
	}
	p.rowInRG += int64(c.rows)
	return c, nil
}

// readRows is the Arrow reader's batch size for the file: ReadRows, capped
// at the file's largest row group. A read never crosses a row group, so the
// cap returns the same records, but the reader reserves its value buffers for
// the batch size: reserving 2^18 values for a 2^16-row group would allocate
// (and zero) four times the data.
func (f *filePlan) readRows(readRows int) int64 {
	most := int64(1)
	for rg := range f.md.NumRowGroups() {
		most = max(most, f.md.RowGroup(rg).NumRows())
	}
	return min(int64(readRows), most)
}

func (p *producer) closeFile() {
	defer func() { _ = recover() }() // a reader broken by corrupt data may panic again
	if p.rr != nil {
		p.rr.Release()
		p.rr = nil
	}
	if p.rdr != nil {
		_ = p.rdr.Close()
		p.rdr, p.fr = nil, nil
	}
	p.curFile = -1
}

// close releases everything the producer holds. Idempotent.
func (p *producer) close() {
	if p.closed {
		return
	}
	p.closed = true
	p.cur.release()
	p.cur = nil
	for i, c := range p.window {
		if p.left[i] > 0 {
			c.release()
		}
	}
	p.window, p.left, p.idx = nil, nil, nil
	for _, b := range p.ready[p.readyPos:] {
		b.Release()
	}
	p.ready, p.readyPos = nil, 0
	p.srcI32, p.srcI64, p.srcF32, p.srcOffs = nil, nil, nil, nil
	p.closeFile()
	p.mem.close()
}

// view builds a zero-copy batch of rows [off, off+n) of c: the columns are
// sub-slices of the record's buffers (list offsets are rebased into a pooled
// buffer), and the batch holds a reference to the record until released.
func (p *producer) view(c *chunk, off, n int) *Batch {
	specs := p.ds.specs
	cols := make(map[string]*Column, len(specs))
	var buf *bufSet
	for i := range specs {
		cd := &c.cols[i]
		col := &Column{Name: specs[i].name}
		lo, hi := off, off+n
		if cd.offs != nil {
			if buf == nil {
				buf = p.pool.get(len(specs))
			}
			o := cd.offs[lo : hi+1]
			lo, hi = int(o[0]), int(o[n])
			ro := grow(&buf.cols[i].offs, n+1)
			for j, v := range o {
				ro[j] = v - o[0]
			}
			col.Offsets = ro
		}
		// Switch on the spec, not on which slice is non-nil: an empty
		// value buffer may come back as a nil slice.
		switch specs[i].out {
		case outI32:
			col.I32 = nonNil(cd.i32[lo:hi:hi])
		case outI64:
			col.I64 = nonNil(cd.i64[lo:hi:hi])
		default:
			col.F32 = nonNil(cd.f32[lo:hi:hi])
		}
		cols[specs[i].name] = col
	}
	c.rec.Retain()
	rec := c.rec
	pool := p.pool
	src := fmt.Sprintf("%s[row group %d, rows %d:%d]", c.plan.path, c.rg, c.first+int64(off), c.first+int64(off+n))
	return NewBatch(n, cols, src, func() {
		rec.Release()
		if buf != nil {
			pool.put(buf)
		}
	})
}

// gather copies the rows refs of the window's chunks into a pooled buffer
// set. The batch references no Arrow memory.
func (p *producer) gather(win []*chunk, refs []ref) *Batch {
	specs := p.ds.specs
	n := len(refs)
	buf := p.pool.get(len(specs))
	cols := make(map[string]*Column, len(specs))
	for i := range specs {
		sp := &specs[i]
		cb := &buf.cols[i]
		col := &Column{Name: sp.name}
		var offs [][]int32
		if sp.list {
			offs = sources(&p.srcOffs, win, i, func(cd *colData) []int32 { return cd.offs })
			ro := grow(&cb.offs, n+1)
			ro[0] = 0
			total := int32(0)
			for j, r := range refs {
				o := offs[r.c]
				total += o[r.r+1] - o[r.r]
				ro[j+1] = total
			}
			col.Offsets = ro
		}
		switch sp.out {
		case outI32:
			col.I32 = gatherCol(&cb.i32, sources(&p.srcI32, win, i, func(cd *colData) []int32 { return cd.i32 }), offs, col.Offsets, refs)
		case outI64:
			col.I64 = gatherCol(&cb.i64, sources(&p.srcI64, win, i, func(cd *colData) []int64 { return cd.i64 }), offs, col.Offsets, refs)
		default:
			col.F32 = gatherCol(&cb.f32, sources(&p.srcF32, win, i, func(cd *colData) []float32 { return cd.f32 }), offs, col.Offsets, refs)
		}
		cols[sp.name] = col
	}
	pool := p.pool
	return NewBatch(n, cols, p.gatherSource(win, refs), func() { pool.put(buf) })
}

// sources lists column i's slice of each chunk of the window (in a reused
// table), so that the copy loops index a slice per row instead of chasing
// chunk and column pointers.
func sources[T any](tab *[][]T, win []*chunk, i int, get func(*colData) []T) [][]T {
	t := (*tab)[:0]
	for _, c := range win {
		t = append(t, get(&c.cols[i]))
	}
	*tab = t
	return t
}

// gatherCol copies rows refs of one column into *dst (grown as needed):
// values of scalars, or for a list (offs set: each chunk's offsets; ro: the
// batch's rebased offsets) each row's run of values.
func gatherCol[T any](dst *[]T, srcs [][]T, offs [][]int32, ro []int32, refs []ref) []T {
	if offs == nil {
		out := grow(dst, len(refs))
		if len(srcs) == 1 {
			// The usual case (rows shuffled within one read): one source.
			s := srcs[0]
			for j, r := range refs {
				out[j] = s[r.r]
			}
			return out
		}
		for j, r := range refs {
			out[j] = srcs[r.c][r.r]
		}
		return out
	}
	out := grow(dst, int(ro[len(refs)]))
	for j, r := range refs {
		o := offs[r.c]
		copy(out[ro[j]:ro[j+1]], srcs[r.c][o[r.r]:o[r.r+1]])
	}
	return out
}

// gatherSource describes where a copied batch's rows came from: the runs of
// consecutive rows, or for a shuffled batch the row groups involved.
func (p *producer) gatherSource(win []*chunk, refs []ref) string {
	var b strings.Builder
	if p.rowShuffle() {
		// Chunks in the order of their first row in the batch; a flag per
		// chunk of the window rather than a map, as this runs per batch.
		seen := grow(&p.seen, len(win))
		clear(seen)
		b.WriteString("shuffled rows from")
		listed := 0
		for _, r := range refs {
			if seen[r.c] {
				continue
			}
			seen[r.c] = true
			if listed++; listed > 8 {
				b.WriteString(" ...")
				break
			}
			c := win[r.c]
			fmt.Fprintf(&b, " %s[row group %d]", c.plan.path, c.rg)
		}
		return b.String()
	}
	for i := 0; i < len(refs); {
		j := i + 1
		for j < len(refs) && refs[j].c == refs[i].c && refs[j].r == refs[j-1].r+1 {
			j++
		}
		c := win[refs[i].c]
		if i > 0 {
			b.WriteString(" + ")
		}
		fmt.Fprintf(&b, "%s[row group %d, rows %d:%d]", c.plan.path, c.rg,
			c.first+int64(refs[i].r), c.first+int64(refs[j-1].r)+1)
		i = j
	}
	return b.String()
}

// grow returns (*s)[:n], reallocating when the capacity is short. The
// result is never nil, so that an empty column still shows its type.
func grow[T any](s *[]T, n int) []T {
	if cap(*s) < n || *s == nil {
		*s = make([]T, n, n+n/4+1)
	}
	*s = (*s)[:n]
	return *s
}

// bufSet holds the Go buffers of one copied (or list-rebased) batch; it goes
// back to the pool when the batch is released, so that steady-state batches
// allocate nothing for their data.
type bufSet struct{ cols []colBuf }

type colBuf struct {
	i32  []int32
	i64  []int64
	f32  []float32
	offs []int32
}

// bufPool is a free list of bufSets, shared by the producer and whatever
// goroutine releases the batches.
type bufPool struct {
	mu   sync.Mutex
	free []*bufSet
}

// maxFree bounds the free list: batches released in bursts must not pin an
// unbounded amount of memory. It holds a burst of gathered batches
// (gatherBurst) of 512 rows and those in flight.
const maxFree = 40

func (bp *bufPool) get(ncols int) *bufSet {
	bp.mu.Lock()
	defer bp.mu.Unlock()
	if n := len(bp.free); n > 0 {
		b := bp.free[n-1]
		bp.free = bp.free[:n-1]
		return b
	}
	return &bufSet{cols: make([]colBuf, ncols)}
}

func (bp *bufPool) put(b *bufSet) {
	bp.mu.Lock()
	defer bp.mu.Unlock()
	if len(bp.free) < maxFree {
		bp.free = append(bp.free, b)
	}
}

// nonNil returns s, or an empty non-nil slice for nil, so that Column users
// can tell a column's type from which slice is set.
func nonNil[T any](s []T) []T {
	if s == nil {
		return []T{}
	}
	return s
}
