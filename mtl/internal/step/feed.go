package step

import (
	"fmt"
	"math"

	"github.com/mtlrank/mtlrank/kernels"
	"github.com/mtlrank/mtlrank/layers"
	"github.com/mtlrank/mtlrank/loader"
)

// feeder turns the columns of a loader.Batch into device tensors for one
// workspace. Everything is checked on the host first, so that bad data is an
// error naming the batch, column and row instead of a device fault: missing
// columns, list/scalar mismatches, broken offsets, ids outside their domain,
// int64 ids that do not fit int32, NaN/Inf in floats.
//
// On the CPU device int32 ids and float32 values are used in place (zero
// copy); int64 ids are converted into a reused buffer. Other devices get
// host-to-device copies into buffers that grow when a batch needs more room.
// A table shared by several features needs its ids concatenated (and its
// offsets rebased) on the host.
//
// On a kernels.AsyncUploader (the CUDA device) the copies are asynchronous
// and double-buffered: while a batch is read and checked its columns are
// only queued; commit then copies them all through the stager's pinned
// memory on the copy stream into the device tensors of the stager's
// current slot (each column has one set per slot) and commits once, so
// that the step's compute waits for the copies on the device, not on the
// host, and the next batch's copies (into the other slot) overlap it.
type feeder struct {
	dev     kernels.Device
	cpu     *kernels.CPU
	block   *layers.InputBlock
	data    *layers.InputData
	tables  []tableFeed
	conts   []*floatFeed // per block feature; nil for categorical features
	maxRows int
	// hostIDs[t], hostOffs[t] are table t's ids and offsets of the last
	// batch on the host (what data.IDs[t] and data.Offsets[t] hold, wherever
	// the device keeps those): a row-sharded job renumbers the ids on the
	// host (dist_rows.go). They point into the batch or the feeder's
	// scratch, valid until the next feed.
	hostIDs, hostOffs [][]int32

	async     kernels.AsyncUploader // nil: copies (or CPU wraps) as columns are read
	stager    kernels.BatchStager   // created by the first commit
	slotBytes int
	ups       []upload // the current batch's queued columns
	// sig and sigSlot describe the device views of the last commit (buffer
	// and length of every column, and the stager slot): a captured step is
	// only valid for batches with the same views (captureSig).
	sig     []viewSig
	sigSlot int
}

// viewSig is one column's device view: its buffer and length.
type viewSig struct {
	buf *kernels.Tensor
	n   int
}

// upload is one queued column: host data for the view h of the current
// slot's buffer in bufs.
type upload struct {
	h     *layers.Header
	bufs  *[2]*kernels.Tensor
	i32   []int32
	f32   []float32
	float bool
}

func (u *upload) len() int {
	if u.float {
		return len(u.f32)
	}
	return len(u.i32)
}

type featFeed struct {
	name string
	list bool
	max  int64 // ids must lie in [0, max]
	// derive computes a derived input (Derived) from the batch in place of
	// reading the column name; nil for the schema's inputs. derived is its
	// result as a column (reused: no allocation per batch).
	derive  DeriveFunc
	derived loader.Column
}

// DeriveFunc computes a derived input of a batch: its ids, and its offsets
// when it is a list input.
type DeriveFunc func(b *loader.Batch) (ids, offs []int32, err error)

// Derived are the model inputs computed from other columns of a batch
// rather than read from a column of their own (the wide part of deepfm and
// wide_n_deep). The feeder checks a derived input as it checks a column:
// its shape (list or scalar, offsets) and its ids against FeatureMax.
type Derived interface {
	// Deriver returns the function that computes input name, or nil when
	// name is a column of the batch. Every feeder asks for its own, so the
	// function may keep buffers between batches.
	Deriver(name string) DeriveFunc
}

// IDColumn reads a categorical column of a batch with the checks the
// feeder makes on its inputs (missing column, list/scalar mismatch, broken
// offsets, ids outside [0, max]), for a DeriveFunc's sources. It keeps a
// conversion buffer, so each DeriveFunc needs its own.
type IDColumn struct {
	f    featFeed
	conv []int32
}

// NewIDColumn returns a reader of column name: a list column when list,
// with ids in [0, max].
func NewIDColumn(name string, list bool, max int64) *IDColumn {
	return &IDColumn{f: featFeed{name: name, list: list, max: max}}
}

// Read returns the column's int32 ids (converted from int64 when needed)
// and offsets (nil for a scalar column), checked.
func (c *IDColumn) Read(b *loader.Batch) (ids, offs []int32, err error) {
	return c.f.read(b, &c.conv)
}

type tableFeed struct {
	feats      []featFeed
	ids, offs  []int32            // host scratch
	ids64      []int32            // int64 -> int32 conversion scratch
	devIDs     [2]*kernels.Tensor // per stager slot (slot 0 without a stager)
	devOffs    [2]*kernels.Tensor
	idsH, offH layers.Header
}

// floatFeed reads one float column.
type floatFeed struct {
	name string
	buf  []float32
	dev  [2]*kernels.Tensor // non-CPU devices, per stager slot
	h    layers.Header
}

// newFeeder creates a feeder for block's features; features maps each
// categorical feature to the largest id it may hold. The inputs derived
// names are computed from the batch (nil: every input is a column).
func newFeeder(c *Caps, block *layers.InputBlock, maxRows int, features map[string]int64, derived Derived) *feeder {
	fd := &feeder{dev: c.Dev, block: block, data: block.NewInputData(), maxRows: maxRows, cpu: c.CPU, async: c.Staged}
	fd.tables = make([]tableFeed, len(block.Tables))
	fd.hostIDs, fd.hostOffs = make([][]int32, len(block.Tables)), make([][]int32, len(block.Tables))
	for ti, t := range block.Tables {
		for _, fi := range t.Features {
			f := block.Features[fi]
			ff := featFeed{name: f.Name, list: f.List, max: features[f.Name]}
			if derived != nil {
				ff.derive = derived.Deriver(f.Name)
			}
			fd.tables[ti].feats = append(fd.tables[ti].feats, ff)
		}
	}
	fd.conts = make([]*floatFeed, len(block.Features))
	for i, f := range block.Features {
		if f.Continuous {
			fd.conts[i] = &floatFeed{name: f.Name}
		}
	}
	return fd
}

func (fd *feeder) release() {
	for i := range fd.tables {
		releaseAll(fd.tables[i].devIDs[:]...)
		releaseAll(fd.tables[i].devOffs[:]...)
	}
	for _, c := range fd.conts {
		if c != nil {
			releaseAll(c.dev[:]...)
		}
	}
	if fd.stager != nil {
		fd.stager.Release()
		fd.stager = nil
	}
}

// begin starts a batch: it forgets the columns queued for an earlier batch
// that failed before its commit.
func (fd *feeder) begin() {
	clear(fd.ups)
	fd.ups = fd.ups[:0]
}

// commit makes the columns read since begin visible to the device; see
// feeder. Without a stager it has nothing to do: the columns were copied
// (or wrapped) as they were read.
func (fd *feeder) commit(rows int) error {
	if fd.async == nil {
		return nil
	}
	need := 0
	for i := range fd.ups {
		need += (4*fd.ups[i].len() + 255) &^ 255 // the stager aligns every upload to 256 bytes
	}
	if fd.stager == nil || need > fd.slotBytes {
		// The first batch sizes the slots for maxRows rows (list lengths
		// as in this batch); a batch that needs more grows them by half.
		size := max(need, (need*fd.maxRows+rows-1)/max(rows, 1)) + 4096
		if fd.stager != nil {
			size = max(need, fd.slotBytes+fd.slotBytes/2)
			// A new stager does not know which of the old one's slots the
			// queued steps still read: let them finish first.
			if err := fd.dev.Sync(); err != nil {
				return err
			}
			fd.stager.Release()
			fd.stager = nil
		}
		st, err := fd.async.NewBatchStager(size)
		if err != nil {
			return fmt.Errorf("staging memory for the batch uploads: %w", err)
		}
		fd.stager, fd.slotBytes = st, size
	}
	slot := fd.stager.Slot()
	fd.sig, fd.sigSlot = fd.sig[:0], slot
	grew := false
	for i := range fd.ups {
		u := &fd.ups[i]
		n, buf := u.len(), &u.bufs[slot]
		if *buf == nil || (*buf).Len() < n {
			(*buf).Release()
			if u.float {
				*buf = fd.dev.Alloc(kernels.Float32, max(n, fd.maxRows))
			} else {
				*buf = fd.dev.Alloc(kernels.Int32, max(n+n/2, 16))
			}
			grew = true
		}
		if u.float {
			u.h.View(*buf, 0, n, 1)
		} else {
			u.h.View(*buf, 0, n)
		}
		fd.sig = append(fd.sig, viewSig{*buf, n})
	}
	if grew {
		// New device memory is zeroed on the compute stream; the copies
		// run on the copy stream and must not overtake that.
		if err := fd.dev.Sync(); err != nil {
			return err
		}
	}
	for i := range fd.ups {
		u := &fd.ups[i]
		var err error
		switch {
		case u.len() == 0:
		case u.float:
			err = fd.stager.UploadF32Async(u.h.Tensor(), u.f32)
		default:
			err = fd.stager.UploadI32Async(u.h.Tensor(), u.i32)
		}
		if err != nil {
			return err
		}
	}
	fd.begin() // drop the references to the batch's host memory
	return fd.stager.Commit()
}

func releaseAll(ts ...*kernels.Tensor) {
	for _, t := range ts {
		t.Release()
	}
}

// BatchErr is an error about batch b, naming its source.
func BatchErr(b *loader.Batch, format string, args ...any) error {
	src := ""
	if b.Source != "" {
		src = " " + b.Source
	}
	return fmt.Errorf("mtl: batch%s: %s", src, fmt.Sprintf(format, args...))
}

// feed fills fd.data from b.
func (fd *feeder) feed(b *loader.Batch) (*layers.InputData, error) {
	if b == nil || b.Rows <= 0 {
		return nil, errEmptyBatch
	}
	if b.Rows > fd.maxRows {
		return nil, BatchErr(b, "%d rows, more than the %d this model or predictor was created for", b.Rows, fd.maxRows)
	}
	rows := b.Rows
	fd.data.Rows = rows
	for ti := range fd.tables {
		if err := fd.feedTable(b, ti); err != nil {
			return nil, err
		}
	}
	for i, c := range fd.conts {
		if c == nil {
			continue
		}
		t, err := c.get(fd, b)
		if err != nil {
			return nil, err
		}
		fd.data.Values[i] = t
	}
	return fd.data, nil
}

// ids returns feature f's ids (int32, converted from int64 into conv when
// needed) and offsets (nil for scalar features), checked.
func (f *featFeed) read(b *loader.Batch, conv *[]int32) (ids, offs []int32, err error) {
	col := b.Column(f.name)
	if f.derive != nil {
		// A derived input passes the checks of a column too, so that a
		// device never sees an id outside its table whatever the Derived.
		if ids, offs, err = f.derive(b); err != nil {
			return nil, nil, err
		}
		f.derived = loader.Column{Name: f.name, I32: ids, Offsets: offs}
		col = &f.derived
	}
	if col == nil {
		return nil, nil, BatchErr(b, "column %q is missing", f.name)
	}
	rows := b.Rows
	nvals := len(col.I32)
	switch {
	case col.I32 != nil:
	case col.I64 != nil:
		nvals = len(col.I64)
	case col.F32 != nil || !f.list:
		return nil, nil, BatchErr(b, "column %q: categorical ids must be int32 or int64", f.name)
	}
	// (a list column whose lists are all empty may hold no values at all)
	if f.list {
		offs = col.Offsets
		if offs == nil {
			return nil, nil, BatchErr(b, "column %q is a list feature in the schema but has no list offsets", f.name)
		}
		if len(offs) != rows+1 {
			return nil, nil, BatchErr(b, "column %q: %d list offsets for %d rows, want %d", f.name, len(offs), rows, rows+1)
		}
		if offs[0] < 0 {
			return nil, nil, BatchErr(b, "column %q row 0: negative list offset %d", f.name, offs[0])
		}
		for r := 0; r < rows; r++ {
			if offs[r+1] < offs[r] || int(offs[r+1]) > nvals {
				return nil, nil, BatchErr(b, "column %q row %d: list offsets [%d, %d) are not inside the %d values",
					f.name, r, offs[r], offs[r+1], nvals)
			}
		}
	} else {
		if col.Offsets != nil {
			return nil, nil, BatchErr(b, "column %q is a scalar feature in the schema but holds lists", f.name)
		}
		if nvals != rows {
			return nil, nil, BatchErr(b, "column %q: %d values for %d rows", f.name, nvals, rows)
		}
	}
	if col.I32 != nil {
		ids = col.I32
	} else {
		if cap(*conv) < nvals {
			*conv = make([]int32, nvals, nvals+nvals/2)
		}
		ids = (*conv)[:nvals]
		for i, v := range col.I64 {
			if v < math.MinInt32 || v > math.MaxInt32 {
				return nil, nil, BatchErr(b, "column %q row %d: id %d outside [0, %d]", f.name, f.rowOf(offs, i), v, f.max)
			}
			ids[i] = int32(v)
		}
	}
	// Range check on the host: the error can name the row, and a device
	// never sees an id outside its table.
	lo, hi := 0, len(ids)
	if offs != nil {
		lo, hi = int(offs[0]), int(offs[rows])
	}
	for i := lo; i < hi; i++ {
		if v := ids[i]; v < 0 || int64(v) > f.max {
			return nil, nil, BatchErr(b, "column %q row %d: id %d outside [0, %d]", f.name, f.rowOf(offs, i), v, f.max)
		}
	}
	return ids, offs, nil
}

// rowOf maps a position in the values to its batch row.
func (f *featFeed) rowOf(offs []int32, pos int) int {
	if offs == nil {
		return pos
	}
	r := 0
	for r+1 < len(offs)-1 && int(offs[r+1]) <= pos {
		r++
	}
	return r
}

func (fd *feeder) feedTable(b *loader.Batch, ti int) error {
	tf := &fd.tables[ti]
	rows := b.Rows
	if len(tf.feats) == 1 {
		ids, offs, err := tf.feats[0].read(b, &tf.ids64)
		if err != nil {
			return err
		}
		fd.data.IDs[ti] = fd.putI32(&tf.idsH, &tf.devIDs, ids)
		fd.data.Offsets[ti] = nil
		fd.hostIDs[ti], fd.hostOffs[ti] = ids, offs
		if offs != nil {
			fd.data.Offsets[ti] = fd.putI32(&tf.offH, &tf.devOffs, offs)
		}
		return nil
	}
	// Shared table: concatenate ids feature after feature, with absolute
	// offsets into the concatenation (scalars: one id per row).
	tf.ids = tf.ids[:0]
	tf.offs = append(tf.offs[:0], 0)
	for _, f := range tf.feats {
		ids, offs, err := f.read(b, &tf.ids64)
		if err != nil {
			return err
		}
		base := int32(len(tf.ids))
		if offs == nil {
			tf.ids = append(tf.ids, ids...)
			for r := 1; r <= rows; r++ {
				tf.offs = append(tf.offs, base+int32(r))
			}
			continue
		}
		tf.ids = append(tf.ids, ids[offs[0]:offs[rows]]...)
		for r := 1; r <= rows; r++ {
			tf.offs = append(tf.offs, base+offs[r]-offs[0])
		}
	}
	fd.data.IDs[ti] = fd.putI32(&tf.idsH, &tf.devIDs, tf.ids)
	fd.data.Offsets[ti] = fd.putI32(&tf.offH, &tf.devOffs, tf.offs)
	fd.hostIDs[ti], fd.hostOffs[ti] = tf.ids, tf.offs
	return nil
}

// putI32 makes host ids visible to the device: wrapped in place on the CPU,
// queued for commit on an AsyncUploader (the returned header is pointed at
// the data there), copied into a (growing) device buffer elsewhere.
func (fd *feeder) putI32(h *layers.Header, bufs *[2]*kernels.Tensor, v []int32) *kernels.Tensor {
	if fd.cpu != nil {
		return h.WrapI32(fd.cpu, v, len(v))
	}
	if fd.async != nil {
		fd.ups = append(fd.ups, upload{h: h, bufs: bufs, i32: v})
		return h.Tensor()
	}
	buf := &bufs[0]
	if *buf == nil || (*buf).Len() < len(v) {
		(*buf).Release()
		*buf = fd.dev.Alloc(kernels.Int32, max(len(v)+len(v)/2, 16))
	}
	t := h.View(*buf, 0, len(v))
	if len(v) > 0 {
		fd.dev.CopyFromHostI32(t, v)
	}
	return t
}

// get reads the column as float32 [rows, 1].
func (c *floatFeed) get(fd *feeder, b *loader.Batch) (*kernels.Tensor, error) {
	v, err := c.read(b)
	if err != nil {
		return nil, err
	}
	if fd.cpu != nil {
		return c.h.WrapF32(fd.cpu, v, len(v), 1), nil
	}
	if fd.async != nil {
		fd.ups = append(fd.ups, upload{h: &c.h, bufs: &c.dev, f32: v, float: true})
		return c.h.Tensor(), nil
	}
	if c.dev[0] == nil {
		c.dev[0] = fd.dev.Alloc(kernels.Float32, fd.maxRows, 1)
	}
	t := c.h.View(c.dev[0], 0, len(v), 1)
	fd.dev.CopyFromHostF32(t, v)
	return t, nil
}

func (c *floatFeed) read(b *loader.Batch) ([]float32, error) {
	col := b.Column(c.name)
	if col == nil {
		return nil, BatchErr(b, "column %q is missing", c.name)
	}
	if col.Offsets != nil {
		return nil, BatchErr(b, "column %q holds lists; a number per row is needed", c.name)
	}
	rows := b.Rows
	var v []float32
	switch {
	case col.F32 != nil:
		if len(col.F32) != rows {
			return nil, BatchErr(b, "column %q: %d values for %d rows", c.name, len(col.F32), rows)
		}
		v = col.F32
	case col.I32 != nil || col.I64 != nil:
		n := len(col.I32) + len(col.I64)
		if n != rows {
			return nil, BatchErr(b, "column %q: %d values for %d rows", c.name, n, rows)
		}
		if cap(c.buf) < rows {
			c.buf = make([]float32, rows)
		}
		v = c.buf[:rows]
		for i := range v {
			if col.I32 != nil {
				v[i] = float32(col.I32[i])
			} else {
				v[i] = float32(col.I64[i])
			}
		}
	default:
		return nil, BatchErr(b, "column %q has no values", c.name)
	}
	for i, x := range v {
		if math.IsNaN(float64(x)) || math.IsInf(float64(x), 0) {
			return nil, BatchErr(b, "column %q row %d: value %v is not finite", c.name, i, x)
		}
	}
	return v, nil
}

// BatchWrap wraps err with the batch's source.
func BatchWrap(b *loader.Batch, err error) error {
	if b.Source == "" {
		return fmt.Errorf("mtl: batch: %w", err)
	}
	return fmt.Errorf("mtl: batch %s: %w", b.Source, err)
}

var errEmptyBatch = fmt.Errorf("mtl: empty batch")
