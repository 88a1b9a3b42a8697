// Package loader reads Parquet datasets into Batches of column views, shuffles
// and prefetches them, and writes Parquet files (loader/synth generates
// synthetic datasets with planted signal).
//
// # Reading
//
// Open takes one .parquet file or a folder of them and a schema, reads the
// footers and checks every requested column against the schema (present,
// list or scalar as the schema says, a type that fits: integers for
// categorical ids, numbers for continuous features and targets). Dataset.Epoch
// returns an Iterator whose Next yields Batches of Options.BatchSize rows.
//
// Row groups are decoded a read at a time (at most Options.ReadRows rows) with
// arrow-go's pqarrow reader; only the requested columns are decoded (the
// buffers of released reads are reused by the epoch's later reads, zeroed,
// rather than allocated anew). Each read is validated once: nulls (an error,
// or FillNaN for continuous inputs), NaN and ±Inf (likewise; targets are
// never filled), ids outside [0, int_domain.max] when Options.CheckDomains
// is on. Every error names the
// file, the column, the row group and the absolute row in the file (see
// DataError); unreadable data is reported as ErrCorrupt, never as a panic.
//
// # Zero copy
//
// int32 and int64 ids and float32 values (list values included) are handed
// out as sub-slices of the Arrow buffers: a Batch is a view of the record it
// was cut from and holds a reference to it until Release. Two cases copy,
// into per-iterator buffers that are reused once the batch is released: a
// batch that straddles two reads (a row-group boundary, typically once per
// row group), and every batch of a row shuffle (Options.Shuffle with a
// ShuffleBuffer other than NoRowShuffle), which gathers rows from the shuffle
// buffer. List offsets are always rebased to start at 0, into a reused
// buffer. Other Parquet types (int8/int16/uint*, float64, bool) are converted
// once per read.
//
// # Shuffling
//
// With Options.Shuffle, an epoch visits files in a random order, the row
// groups of each file in a random order, and permutes rows in a shuffle
// buffer; everything derives from (Options.Seed, epoch), so an epoch is
// reproducible and two epochs differ.
//
// # Writing
//
// Writer and WriteParquet write int8/16/32/64, float32/64 and bool columns
// and lists of them, in schema order, to a temporary file renamed into place
// on Close.
package loader

// Column is one feature's data for the rows of a Batch. Exactly one of the
// value slices is set (non-nil, possibly empty), according to the column's
// type. For int32, int64 and float32 Parquet columns the slice is a zero-copy
// view of the Arrow buffer when the batch is one (see the package doc); other
// widths are converted once per read.
type Column struct {
	Name string
	// I32 holds categorical ids stored as int32 (or converted from int8,
	// int16, uint8 or uint16).
	I32 []int32
	// I64 holds categorical ids stored as int64 (zero-copy view), uint32 or
	// uint64. A column is I64 in every batch when any file stores it so.
	I64 []int64
	// F32 holds continuous values and targets (float64, bool and integers
	// converted; targets are always F32).
	F32 []float32
	// Offsets is set for list features: row b holds values
	// [Offsets[b], Offsets[b+1]) of the value slice; len(Offsets) = rows+1.
	Offsets []int32
}

// Batch is a group of rows with one Column per requested feature. It holds
// references to Arrow memory until Release is called; Columns must not be
// used after Release.
type Batch struct {
	Rows    int
	Columns map[string]*Column
	// Source names where the rows came from (file and row group), for errors.
	Source string

	release func()
}

// NewBatch builds a Batch whose Release calls release (which may be nil).
func NewBatch(rows int, cols map[string]*Column, source string, release func()) *Batch {
	return &Batch{Rows: rows, Columns: cols, Source: source, release: release}
}

// Column returns the named column or nil.
func (b *Batch) Column(name string) *Column { return b.Columns[name] }

// Release drops the batch's references to Arrow memory. Safe to call twice.
func (b *Batch) Release() {
	if b == nil || b.release == nil {
		return
	}
	r := b.release
	b.release = nil
	r()
}
