package layers

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"sort"

	"github.com/mtlrank/mtlrank/kernels"
	"github.com/mtlrank/mtlrank/schema"
)

// InputOptions configure an InputBlock.
type InputOptions struct {
	// DimMultiplier scales the inferred embedding width
	// ceil(DimMultiplier * card**0.25) (rounded up to a multiple of 8);
	// 0 means Merlin's default 2.
	DimMultiplier float64
	// Dims overrides the width of a table, keyed by feature name or domain
	// name; the value is used as is.
	Dims map[string]int
	// Combiner reduces list features (Mean by default).
	Combiner kernels.Combiner
	// BatchL2 adds BatchL2 * sum(e^2) over the embeddings looked up in the
	// batch (after combining) to the loss, like Merlin's
	// l2_batch_regularization_factor.
	BatchL2 float32
	// Extra features come after the schema's (which are sorted by name),
	// in the order given: derived inputs (the wide part of DeepFM and
	// Wide&Deep) whose columns then form one block at the end.
	Extra []*schema.Feature
	// Domains overrides the block-wide settings for the tables of the
	// named domains.
	Domains map[string]DomainOptions
	// Shard, when Size > 1, makes every table hold only the rows of ids
	// id mod Size == Rank, at local row id div Size (row-sharded
	// distributed training): W is [ShardRows(Rows), Dim] and the full
	// table is never allocated. The initial values are the full table's
	// (the same draws, the other ranks' rows skipped), so the shards of
	// all ranks together are the table one process starts from.
	Shard RowShard
}

// RowShard is one rank's part of row-sharded tables: the ids id mod Size
// == Rank. The zero value (or Size 1) is the whole table.
type RowShard struct{ Rank, Size int }

// Sharded reports whether s holds part of the rows.
func (s RowShard) Sharded() bool { return s.Size > 1 }

// Rows is the number of rows of a table of rows rows that s holds: the
// ids r, r+Size, r+2*Size, ... below rows.
func (s RowShard) Rows(rows int) int {
	if !s.Sharded() {
		return rows
	}
	return (rows + s.Size - 1 - s.Rank) / s.Size
}

// DomainOptions are per-table settings (InputOptions.Domains).
type DomainOptions struct {
	Combiner *kernels.Combiner // nil: InputOptions.Combiner
	BatchL2  *float32          // nil: InputOptions.BatchL2
	// ZeroInit starts the table at 0 instead of U(-0.05, 0.05) (the
	// weights of a linear model).
	ZeroInit bool
}

// InferDim is Merlin's default embedding width for a table of card rows:
// ceil(multiplier * card**0.25) rounded up to a multiple of 8.
func InferDim(card int64, multiplier float64) int {
	if multiplier == 0 {
		multiplier = 2
	}
	d := int(math.Ceil(multiplier * math.Pow(float64(card), 0.25)))
	return (d + 7) / 8 * 8
}

// InputFeature is one input column and where it lands in the output.
type InputFeature struct {
	Name       string
	Continuous bool
	List       bool
	Table      int // index into InputBlock.Tables; -1 for continuous features
	Slot       int // position among the features of its table
	Col, Dim   int // output columns [Col, Col+Dim)
}

// EmbeddingTable is one embedding table, shared by the features of a domain.
type EmbeddingTable struct {
	Name      string // the domain name
	Rows, Dim int
	W         *kernels.Tensor // [Rows, Dim]
	Features  []int           // indices into InputBlock.Features, in name order
	// MaxValues is the largest number of ids one row of one feature can hold:
	// 1 for scalar features, value_count.max for list features (0 when a
	// list feature does not say). It sizes the sparse-gradient buffers.
	MaxValues int
	// Combiner reduces the lists of the table's features; BatchL2 is the
	// factor of the batch L2 term over their looked-up embeddings.
	Combiner kernels.Combiner
	BatchL2  float32
}

// InputBlock looks up embeddings of categorical features and copies
// continuous features, concatenating everything in sorted feature-name order
// into one [B, OutDim] matrix.
type InputBlock struct {
	Features []InputFeature
	Tables   []*EmbeddingTable
	OutDim   int
	Combiner kernels.Combiner
	BatchL2  float32
	l2       []l2Group // the batch L2 terms, one per distinct factor
	dev      kernels.Device
}

// l2Group is the categorical features whose looked-up embeddings share a
// batch L2 factor.
type l2Group struct {
	factor float32
	feats  []int // indices into InputBlock.Features
	cols   int   // their total width
}

// NewInputBlock builds the block for the given input features (targets are
// rejected). Tables are named after domains; features sharing a domain must
// agree on int_domain.max. Tables are initialised U(-0.05, 0.05).
func NewInputBlock(dev kernels.Device, features []*schema.Feature, opt InputOptions, rng *rand.Rand) (*InputBlock, error) {
	if len(features) == 0 {
		return nil, errors.New("layers: input block: no input features")
	}
	fs := append([]*schema.Feature(nil), features...)
	sort.Slice(fs, func(i, j int) bool { return fs[i].Name < fs[j].Name })
	fs = append(fs, opt.Extra...)
	seen := make(map[string]bool, len(fs))
	b := &InputBlock{Combiner: opt.Combiner, BatchL2: opt.BatchL2, dev: dev}
	byDomain := map[string]int{}
	domainMax := map[string]int64{}
	domainDim := map[string]int{}
	domainDimFrom := map[string]string{}
	for _, f := range fs {
		if seen[f.Name] {
			return nil, fmt.Errorf("layers: input block: feature %q listed twice", f.Name)
		}
		seen[f.Name] = true
		if f.IsTarget() {
			return nil, fmt.Errorf("layers: input block: feature %q is a target, not an input", f.Name)
		}
		in := InputFeature{Name: f.Name, List: f.IsList(), Table: -1}
		switch {
		case f.HasTag(schema.TagCategorical):
			if f.IntDomain == nil || f.IntDomain.Max < 0 {
				return nil, fmt.Errorf("layers: input block: categorical feature %q needs an int_domain with max >= 0", f.Name)
			}
			dom := f.DomainName()
			if m, ok := domainMax[dom]; ok && m != f.IntDomain.Max {
				return nil, fmt.Errorf("layers: input block: feature %q: domain %q has max %d here but %d for another feature",
					f.Name, dom, f.IntDomain.Max, m)
			}
			domainMax[dom] = f.IntDomain.Max
			for _, key := range []string{f.Name, dom} {
				d, ok := opt.Dims[key]
				if !ok {
					continue
				}
				if d <= 0 {
					return nil, fmt.Errorf("layers: input block: embedding dim for %q must be positive, got %d", key, d)
				}
				if prev, ok := domainDim[dom]; ok && prev != d {
					return nil, fmt.Errorf("layers: input block: embedding dims for %q (%d) and %q (%d) disagree; they share table %q",
						domainDimFrom[dom], prev, key, d, dom)
				}
				domainDim[dom], domainDimFrom[dom] = d, key
			}
			t, ok := byDomain[dom]
			if !ok {
				t = len(b.Tables)
				byDomain[dom] = t
				tab := &EmbeddingTable{Name: dom, Rows: int(f.IntDomain.Max + 1), Combiner: opt.Combiner, BatchL2: opt.BatchL2}
				if o, ok := opt.Domains[dom]; ok {
					if o.Combiner != nil {
						tab.Combiner = *o.Combiner
					}
					if o.BatchL2 != nil {
						tab.BatchL2 = *o.BatchL2
					}
				}
				b.Tables = append(b.Tables, tab)
			}
			tab := b.Tables[t]
			in.Table, in.Slot = t, len(tab.Features)
			tab.Features = append(tab.Features, len(b.Features))
			// MaxValues: the largest per-row id count over the table's
			// features, 0 (unknown) as soon as one list feature lacks it.
			mv := 1
			if in.List {
				mv = 0
				if f.ValueCount != nil && f.ValueCount.Max > 0 {
					mv = int(f.ValueCount.Max)
				}
			}
			switch {
			case len(tab.Features) == 1 || mv == 0:
				tab.MaxValues = mv
			case tab.MaxValues > 0:
				tab.MaxValues = max(tab.MaxValues, mv)
			}
		case f.HasTag(schema.TagContinuous):
			if in.List {
				return nil, fmt.Errorf("layers: input block: continuous list feature %q is not supported", f.Name)
			}
			in.Continuous, in.Dim = true, 1
		default:
			return nil, fmt.Errorf("layers: input block: feature %q is neither categorical nor continuous", f.Name)
		}
		b.Features = append(b.Features, in)
	}
	if sh := opt.Shard; sh.Sharded() && (sh.Rank < 0 || sh.Rank >= sh.Size) {
		return nil, fmt.Errorf("layers: input block: rank %d of %d", sh.Rank, sh.Size)
	}
	for _, t := range b.Tables {
		t.Dim = domainDim[t.Name]
		if t.Dim == 0 {
			t.Dim = InferDim(int64(t.Rows), opt.DimMultiplier)
		}
		t.W = dev.Alloc(kernels.Float32, opt.Shard.Rows(t.Rows), t.Dim)
		switch {
		case opt.Domains[t.Name].ZeroInit:
		case opt.Shard.Sharded():
			fillShard(dev, rng, t.W, t.Rows, opt.Shard, 0.05)
		default:
			fillUniform(dev, rng, t.W, 0.05)
		}
	}
	for i := range b.Features {
		f := &b.Features[i]
		if !f.Continuous {
			f.Dim = b.Tables[f.Table].Dim
			b.addL2(i)
		}
		f.Col = b.OutDim
		b.OutDim += f.Dim
	}
	return b, nil
}

// addL2 puts categorical feature fi into the batch L2 group of its table's
// factor.
func (b *InputBlock) addL2(fi int) {
	f := &b.Features[fi]
	factor := b.Tables[f.Table].BatchL2
	if factor == 0 {
		return
	}
	for i := range b.l2 {
		if g := &b.l2[i]; g.factor == factor {
			g.feats = append(g.feats, fi)
			g.cols += f.Dim
			return
		}
	}
	b.l2 = append(b.l2, l2Group{factor: factor, feats: []int{fi}, cols: f.Dim})
}

// Params lists the embedding tables as "<prefix>/<domain>" (Sparse).
func (b *InputBlock) Params(prefix string) []Param {
	ps := make([]Param, len(b.Tables))
	for i, t := range b.Tables {
		ps[i] = Param{Name: prefix + "/" + t.Name, Value: t.W, Sparse: true}
	}
	return ps
}

// Release frees the tables.
func (b *InputBlock) Release() {
	for _, t := range b.Tables {
		t.W.Release()
	}
}

// InputData is one batch of inputs on the device.
//
// IDs[t] holds the int32 ids of every feature of table t, feature after
// feature in the table's order. Offsets[t] is nil when table t has a single
// scalar feature; for a single list feature it is that feature's [B+1]
// offsets; for a table shared by k features it is the [k*B+1] offsets of all
// of them into IDs[t] (scalar features contribute one id per row).
// Values[f] is the [B, 1] float32 column of continuous feature f (nil for
// categorical features).
type InputData struct {
	Rows    int
	IDs     []*kernels.Tensor
	Offsets []*kernels.Tensor
	Values  []*kernels.Tensor
}

// NewInputData returns an InputData with slices sized for the block.
func (b *InputBlock) NewInputData() *InputData {
	return &InputData{
		IDs:     make([]*kernels.Tensor, len(b.Tables)),
		Offsets: make([]*kernels.Tensor, len(b.Tables)),
		Values:  make([]*kernels.Tensor, len(b.Features)),
	}
}

// InputWS is the per-caller state of an InputBlock.
type InputWS struct {
	// tables, when set (SetTables), replace the block's tables in the
	// next Forward and Backward.
	tables    []*kernels.Tensor
	data      *InputData
	out, dout *batchBuf
	offs      []hdr // per feature: its offsets in a shared table
	cat       []*batchBuf
	cat2      []hdr
	grads     []*kernels.SparseGrad // nil entries until first needed (see NewWorkspace)
	srcs      [][1]kernels.EmbeddingSource
	l2        []*batchBuf // per InputBlock.l2 group
	train     bool
	maxRows   int

	// On a kernels.Sharder device the features are gathered as shards, the
	// largest first (gatherOrder), each on the one-thread device, with
	// their errors in gatherErr (gatherShards).
	gatherOrder []int
	gatherErr   []error
	gatherFn    func(int)
	gatherCost  int // the work of one row of the widest feature (gatherShardMinWork)
}

// Gathering the features as shards costs a join of the device's goroutines
// (a few microseconds), worth it only for enough rows. The block shards when
// its widest feature alone has at least gatherShardMinWork of work, in the
// CPU device's units of about 0.1 ns (kernels/parallel.go: a random table
// row costs 300 plus its width): the point at which that feature's gather
// was split over the threads when features were gathered one after the
// other. Smaller batches, such as serving requests of up to a few hundred
// rows, gather every feature in the calling goroutine, as before.
const (
	gatherShardMinWork = 1 << 17
	gatherRowRandom    = 300
)

// NewWorkspace allocates the workspace for batches of up to maxRows rows.
func (b *InputBlock) NewWorkspace(maxRows int, train bool) *InputWS {
	ws := &InputWS{
		out:     newBatchBuf(b.dev, 1, maxRows, b.OutDim),
		offs:    make([]hdr, len(b.Features)),
		train:   train,
		maxRows: maxRows,
	}
	if sh, ok := b.dev.(kernels.Sharder); ok && len(b.Features) > 1 {
		b.planGather(ws, sh.ShardDevice())
	}
	if !train {
		return ws
	}
	ws.dout = newBatchBuf(b.dev, 1, maxRows, b.OutDim)
	ws.cat = make([]*batchBuf, len(b.Tables))
	ws.cat2 = make([]hdr, len(b.Tables))
	ws.grads = make([]*kernels.SparseGrad, len(b.Tables))
	ws.srcs = make([][1]kernels.EmbeddingSource, len(b.Tables))
	// A device that fuses the embedding backward with the optimizer
	// (EmbeddingSources) never needs the sparse gradients: they are
	// allocated on the first BackwardTable instead of here.
	_, fused := b.dev.(kernels.FusedEmbeddingUpdater)
	for i, t := range b.Tables {
		if len(t.Features) > 1 {
			ws.cat[i] = newBatchBuf(b.dev, len(t.Features), maxRows, t.Dim)
		}
		if !fused {
			ws.grads[i] = b.newTableGrad(ws, i)
		}
	}
	for _, g := range b.l2 {
		ws.l2 = append(ws.l2, newBatchBuf(b.dev, 1, maxRows, g.cols))
	}
	return ws
}

// newTableGrad is table ti's sparse gradient sized for the workspace's
// batches.
func (b *InputBlock) newTableGrad(ws *InputWS, ti int) *kernels.SparseGrad {
	t := b.Tables[ti]
	per := t.MaxValues
	if per == 0 {
		per = 4 // unknown list length: start here and grow on demand
	}
	return b.newSparseGrad(ws.maxRows*len(t.Features)*per, t.Dim)
}

func (b *InputBlock) newSparseGrad(capacity, dim int) *kernels.SparseGrad {
	capacity = max(capacity, 1)
	return &kernels.SparseGrad{
		Rows:   b.dev.Alloc(kernels.Int32, capacity),
		Values: b.dev.Alloc(kernels.Float32, capacity, dim),
	}
}

// SetTables makes the next Forward and Backward on ws read tables[t] in
// place of table t's W (nil: the block's own): a row-sharded job looks up
// the rows it fetched from their owners for the batch, in a small table
// the batch's ids were renumbered into. Each must have the table's Dim
// columns; the ids are checked against its rows.
func (ws *InputWS) SetTables(tables []*kernels.Tensor) { ws.tables = tables }

// table is the tensor table ti's lookups read on ws.
func (b *InputBlock) table(ws *InputWS, ti int) *kernels.Tensor {
	if ws.tables != nil && ws.tables[ti] != nil {
		return ws.tables[ti]
	}
	return b.Tables[ti].W
}

// Y is the output of the last Forward, [B, OutDim]; DY its gradient.
func (ws *InputWS) Y() *kernels.Tensor  { return ws.out.t() }
func (ws *InputWS) DY() *kernels.Tensor { return ws.dout.t() }

// Data is the input data of the last Forward or BeginForward.
func (ws *InputWS) Data() *InputData { return ws.data }

// SparseGrad is the gradient of table t computed by the last Backward (nil
// on a kernels.FusedEmbeddingUpdater device before the first Backward).
func (ws *InputWS) SparseGrad(t int) *kernels.SparseGrad { return ws.grads[t] }

// Release frees the workspace.
func (ws *InputWS) Release() {
	ws.out.release()
	ws.dout.release()
	for _, c := range ws.cat {
		c.release()
	}
	for _, g := range ws.grads {
		if g != nil {
			releaseAll(g.Rows, g.Values)
		}
	}
	for _, l := range ws.l2 {
		l.release()
	}
}

// featureOffsets is the offsets tensor feature f's gather uses.
func (b *InputBlock) featureOffsets(ws *InputWS, data *InputData, fi int) *kernels.Tensor {
	f := &b.Features[fi]
	t := b.Tables[f.Table]
	offs := data.Offsets[f.Table]
	if len(t.Features) == 1 || offs == nil {
		return offs
	}
	return ws.offs[fi].set(offs, f.Slot*data.Rows, data.Rows+1)
}

// Forward gathers and concatenates the inputs of data into [B, OutDim].
// An id outside its table is an error naming the feature.
func (b *InputBlock) Forward(ws *InputWS, data *InputData) (*kernels.Tensor, error) {
	out, err := b.BeginForward(ws, data)
	if err != nil {
		return nil, err
	}
	rows := data.Rows
	if ws.gatherFn != nil && rows*ws.gatherCost >= gatherShardMinWork {
		return out, b.gatherShards(ws)
	}
	for i := range b.Features {
		if err := b.gather(ws, b.dev, i); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// BeginForward is Forward without the gather: it checks data and sizes ws
// for it, and returns the block's output [B, OutDim], which holds Forward's
// values once GatherRows has run over every row. A kernels.Sharder's shards
// gather their own rows this way, each before its part of the model, so
// that the input block costs no join of the device's goroutines.
func (b *InputBlock) BeginForward(ws *InputWS, data *InputData) (*kernels.Tensor, error) {
	rows := data.Rows
	if rows <= 0 || rows > ws.maxRows {
		return nil, fmt.Errorf("layers: input block: batch of %d rows, workspace holds 1..%d", rows, ws.maxRows)
	}
	if err := b.checkData(data); err != nil {
		return nil, err
	}
	ws.data = data
	ws.out.resize(rows)
	if ws.dout != nil {
		ws.dout.resize(rows)
	}
	return ws.out.t(), nil
}

// RowGather is the state of one goroutine's GatherRows calls: views of the
// batch's tensors, so that a call allocates nothing.
type RowGather struct {
	out, in, offs hdr
}

// GatherRows writes rows [lo, hi) of every input of the batch begun by
// BeginForward into the block's output on dev, with the bits Forward writes
// there: an output row depends only on that row's ids or values. Calls for
// disjoint rows, each with its own g, may run concurrently. On an error
// (an id outside its table, malformed offsets) the rows are left
// incomplete. The error is Forward's for these rows alone (an id error
// names its batch row; an offsets error counts from lo), so a caller that
// needs the batch's error, the first bad feature of all rows, runs
// Forward.
func (b *InputBlock) GatherRows(ws *InputWS, g *RowGather, dev kernels.Device, lo, hi int) error {
	data, rows := ws.data, hi-lo
	out := g.out.set(ws.out.t(), lo*b.OutDim, rows, b.OutDim)
	for i := range b.Features {
		f := &b.Features[i]
		var vals, ids, offs *kernels.Tensor
		switch {
		case f.Continuous:
			vals = g.in.set(data.Values[i], lo, rows, 1)
		case data.Offsets[f.Table] == nil:
			ids = g.in.set(data.IDs[f.Table], lo, rows)
		default:
			// offsets index the table's whole ids (feature slot f.Slot of
			// a shared table: its own data.Rows+1 of them)
			ids, offs = data.IDs[f.Table], data.Offsets[f.Table]
			base := 0
			if len(b.Tables[f.Table].Features) > 1 {
				base = f.Slot * data.Rows
			}
			offs = g.offs.set(offs, base+lo, rows+1)
		}
		if err := b.gatherInto(ws, dev, out, i, vals, ids, offs, lo); err != nil {
			return err
		}
	}
	return nil
}

// gather writes feature i of the current batch into its columns of the
// block's output on dev.
func (b *InputBlock) gather(ws *InputWS, dev kernels.Device, i int) error {
	data := ws.data
	f := &b.Features[i]
	if f.Continuous {
		return b.gatherInto(ws, dev, ws.out.t(), i, data.Values[i], nil, nil, 0)
	}
	return b.gatherInto(ws, dev, ws.out.t(), i, nil, data.IDs[f.Table], b.featureOffsets(ws, data, i), 0)
}

// gatherInto writes feature i into its columns of out (the block's output
// or a view of its rows from row lo of the batch on): a continuous
// feature's vals, else the embeddings of ids (with offs for lists). An id
// outside its table is an error naming the feature and the id's row of the
// batch.
func (b *InputBlock) gatherInto(ws *InputWS, dev kernels.Device, out *kernels.Tensor, i int, vals, ids, offs *kernels.Tensor, lo int) error {
	f := &b.Features[i]
	if f.Continuous {
		dev.CopyCols(out, f.Col, vals, 0, 1, false)
		return nil
	}
	t := b.Tables[f.Table]
	err := dev.EmbeddingGather(out, f.Col, b.table(ws, f.Table), ids, offs, t.Combiner)
	if err == nil {
		return nil
	}
	var idErr *kernels.IDRangeError
	if lo != 0 && errors.As(err, &idErr) {
		e := *idErr
		e.Row += lo // a row of the batch, not of the view
		err = &e
	}
	return fmt.Errorf("layers: input %q (table %q): %w", f.Name, t.Name, err)
}

// planGather sets ws up to gather the features as shards on a
// kernels.Sharder: one join of the device's goroutines for the whole
// block instead of one per feature, each feature gathered whole by one
// goroutine (the same bits: every output element is written by the same
// loop either way). Features are handed out largest first (a table row
// read per id, times the ids per row), so that the small ones fill in.
// Batches too small to pay for the join are gathered serially
// (gatherShardMinWork).
func (b *InputBlock) planGather(ws *InputWS, dev kernels.Device) {
	cost := func(i int) int {
		f := &b.Features[i]
		if f.Continuous {
			return f.Dim
		}
		return (f.Dim + gatherRowRandom) * max(1, b.Tables[f.Table].MaxValues)
	}
	ws.gatherOrder = make([]int, len(b.Features))
	ws.gatherCost = 0
	for i := range ws.gatherOrder {
		ws.gatherOrder[i] = i
		ws.gatherCost = max(ws.gatherCost, cost(i))
	}
	slices.SortStableFunc(ws.gatherOrder, func(x, y int) int { return cost(y) - cost(x) })
	ws.gatherErr = make([]error, len(b.Features))
	ws.gatherFn = func(k int) {
		i := ws.gatherOrder[k]
		ws.gatherErr[i] = b.gather(ws, dev, i)
	}
}

// gatherShards gathers every feature as a shard and returns the error of
// the first feature (in feature order) that failed, as the serial loop
// would.
func (b *InputBlock) gatherShards(ws *InputWS) error {
	b.dev.(kernels.Sharder).RunShards(len(b.Features), ws.gatherFn)
	var first error
	for i, err := range ws.gatherErr {
		if err != nil && first == nil {
			first = err
		}
		ws.gatherErr[i] = nil
	}
	return first
}

// checkData validates shapes (a mismatch is a bug in the caller, reported as
// an error rather than a device panic).
func (b *InputBlock) checkData(d *InputData) error {
	if len(d.IDs) != len(b.Tables) || len(d.Offsets) != len(b.Tables) || len(d.Values) != len(b.Features) {
		return errors.New("layers: input block: input data does not match the block")
	}
	for ti, t := range b.Tables {
		ids, offs := d.IDs[ti], d.Offsets[ti]
		if ids == nil || ids.DType != kernels.Int32 {
			return fmt.Errorf("layers: input block: table %q: missing int32 ids", t.Name)
		}
		single := len(t.Features) == 1 && !b.Features[t.Features[0]].List
		switch {
		case single && offs == nil:
			if ids.Len() != d.Rows {
				return fmt.Errorf("layers: input %q: %d ids for %d rows", b.Features[t.Features[0]].Name, ids.Len(), d.Rows)
			}
		case offs == nil:
			return fmt.Errorf("layers: input block: table %q: offsets missing", t.Name)
		default:
			if want := len(t.Features)*d.Rows + 1; offs.Len() != want || offs.DType != kernels.Int32 {
				return fmt.Errorf("layers: input block: table %q: offsets have %d entries, want %d", t.Name, offs.Len(), want)
			}
		}
	}
	for i, f := range b.Features {
		if !f.Continuous {
			continue
		}
		v := d.Values[i]
		if v == nil || v.DType != kernels.Float32 || v.Rows() != d.Rows || v.Cols() != 1 {
			return fmt.Errorf("layers: input %q: want float32 values [%d, 1]", f.Name, d.Rows)
		}
	}
	return nil
}

// AddRegLoss adds BatchL2 * sum(e^2) over the embeddings of the last Forward
// (each table's own factor, EmbeddingTable.BatchL2) to loss[0].
func (b *InputBlock) AddRegLoss(ws *InputWS, loss *kernels.Tensor) {
	for gi, g := range b.l2 {
		b.packEmbeddings(ws, gi)
		b.dev.SumSquares(loss, ws.l2[gi].t(), g.factor)
	}
}

// packEmbeddings copies the looked-up embeddings of L2 group gi into its
// buffer.
func (b *InputBlock) packEmbeddings(ws *InputWS, gi int) {
	buf := ws.l2[gi]
	buf.resize(ws.data.Rows)
	col := 0
	for _, fi := range b.l2[gi].feats {
		f := &b.Features[fi]
		b.dev.CopyCols(buf.t(), col, ws.out.t(), f.Col, f.Dim, false)
		col += f.Dim
	}
}

// Backward turns ws.DY() into one sparse gradient per table (SparseGrad).
// With BatchL2 it first adds the regulariser's gradient 2*BatchL2*e. It is
// BeginBackward followed by BackwardTable for every table.
func (b *InputBlock) Backward(ws *InputWS) {
	b.BeginBackward(ws)
	for ti := range b.Tables {
		b.BackwardTable(ws, ti)
	}
}

// BeginBackward is the part of Backward before the per-table work: it adds
// the gradient of the batch L2 term (if any) to ws.DY().
func (b *InputBlock) BeginBackward(ws *InputWS) {
	dout := ws.dout.t()
	for gi, g := range b.l2 {
		b.packEmbeddings(ws, gi)
		buf := ws.l2[gi].t()
		b.dev.Scale(buf, 2*g.factor)
		col := 0
		for _, fi := range g.feats {
			f := &b.Features[fi]
			b.dev.CopyCols(dout, f.Col, buf, col, f.Dim, true)
			col += f.Dim
		}
	}
}

// BackwardTable computes table ti's sparse gradient from ws.DY() (after
// BeginBackward). Calls for different tables may run concurrently: each
// writes only its own gradient and scratch.
func (b *InputBlock) BackwardTable(ws *InputWS, ti int) {
	t := b.Tables[ti]
	ids := ws.data.IDs[ti]
	if ws.grads[ti] == nil {
		ws.grads[ti] = b.newTableGrad(ws, ti)
	}
	if g := ws.grads[ti]; g.Rows.Len() < ids.Len() {
		releaseAll(g.Rows, g.Values)
		*g = *b.newSparseGrad(max(ids.Len(), 2*g.Rows.Len()), t.Dim)
	}
	s := b.gradSource(ws, ti)
	rows := t.Rows
	if ws.tables != nil && ws.tables[ti] != nil {
		rows = ws.tables[ti].Rows()
	}
	b.dev.EmbeddingBackward(ws.grads[ti], s.Dout, s.Col, s.IDs, s.Offsets, s.Comb, rows)
}

// EmbeddingSources returns the gradient of table ti for the last Forward on
// ws (after BeginBackward, so with the batch L2 term) as the sources a
// kernels.FusedEmbeddingUpdater takes in place of BackwardTable followed by
// a sparse optimizer: EmbeddingBackward over them is BackwardTable's
// SparseGrad. It is always one source: ws.DY() for a table with one
// feature; for a shared table its features' gradients stacked as in
// BackwardTable, which covers any number of features and scans each id
// once (one source per feature would scan all the table's ids per
// feature). The slice is reused by the next call for the same table; calls
// for different tables may run concurrently.
func (b *InputBlock) EmbeddingSources(ws *InputWS, ti int) []kernels.EmbeddingSource {
	ws.srcs[ti][0] = b.gradSource(ws, ti)
	return ws.srcs[ti][:]
}

// gradSource is table ti's gradient as one source: ws.DY() for a table with
// one feature; for a shared table the output gradients of its features
// stacked as [k*B, dim] (written to the table's scratch), whose rows the
// table's [k*B+1] offsets index, so that one backward call merges them.
func (b *InputBlock) gradSource(ws *InputWS, ti int) kernels.EmbeddingSource {
	data, dout, t := ws.data, ws.dout.t(), b.Tables[ti]
	s := kernels.EmbeddingSource{Dout: dout, IDs: data.IDs[ti], Offsets: data.Offsets[ti], Comb: t.Combiner}
	if len(t.Features) == 1 {
		s.Col = b.Features[t.Features[0]].Col
		return s
	}
	cat := ws.cat[ti]
	cat.resize(data.Rows)
	for j, fi := range t.Features {
		b.dev.CopyCols(cat.part(j), 0, dout, b.Features[fi].Col, t.Dim, false)
	}
	s.Dout = ws.cat2[ti].set(cat.full, 0, len(t.Features)*data.Rows, t.Dim)
	return s
}
