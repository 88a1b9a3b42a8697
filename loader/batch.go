// Package loader reads Parquet datasets into Batches of column views, shuffles
// and prefetches them, and generates synthetic datasets with planted signal.
package loader

// Column is one feature's data for the rows of a Batch. Exactly one of the
// value slices is set, according to the column's type. For int32, int64 and
// float32 Parquet columns the slice is a zero-copy view of the Arrow buffer;
// other widths are converted once per batch.
type Column struct {
	Name string
	I32  []int32   // categorical ids stored as int32 (or converted from int8/int16)
	I64  []int64   // categorical ids stored as int64 (zero-copy view)
	F32  []float32 // continuous values and targets (float64/bool/int converted)
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
