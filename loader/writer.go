package loader

import (
	"errors"
	"fmt"
	"sort"
	"unsafe"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"

	"github.com/mtlrank/mtlrank/internal/parquetio"
	"github.com/mtlrank/mtlrank/schema"
)

// DefaultRowGroupRows is the row-group size used when WriterOptions leaves it
// at 0.
const DefaultRowGroupRows = 1 << 16

// WriterOptions configures a Writer. The zero value is usable.
type WriterOptions struct {
	// RowGroupRows is the maximum number of rows per row group
	// (default DefaultRowGroupRows). Each Write starts a new row group, so
	// a Write of n rows makes ceil(n/RowGroupRows) row groups.
	RowGroupRows int
	// Compression is "snappy" (default), "zstd", "gzip", "lz4" or "none".
	Compression string
	// Dictionary turns on Parquet dictionary encoding. It makes files of
	// low-cardinality columns smaller but their decoding slower; off by
	// default because the loader's throughput matters more than disk size
	// for training data.
	Dictionary bool
	// Allocator serves the writer's Arrow buffers (default
	// memory.DefaultAllocator).
	Allocator memory.Allocator
}

// Writer streams columns to a Parquet file with the columns of a schema, in
// schema order, through the one Parquet writer (internal/parquetio): data
// goes to a temporary file in the destination folder (named
// ".<name>.tmp-*", which Open never lists) that Close renames into place,
// so a reader never sees a partial file; Abort (or a failed Close) removes
// it. The file gets mode 0666 minus the umask, as os.Create gives.
//
// Column types follow the schema: dtype int8, int16, int32, int64, float32,
// float64 or bool; features with a value_count or the list tag become
// Parquet lists of that type. Columns are written as required (no nulls).
// A Writer is not safe for concurrent use.
type Writer struct {
	path   string
	pw     *parquetio.Writer
	schema *arrow.Schema
	feats  []*schema.Feature
	mem    memory.Allocator
}

// NewWriter creates a writer for path (the folder must exist).
func NewWriter(path string, s *schema.Schema, opt WriterOptions) (*Writer, error) {
	if s == nil || len(s.Features) == 0 {
		return nil, fmt.Errorf("loader: write %s: empty schema", path)
	}
	if opt.RowGroupRows < 0 {
		return nil, fmt.Errorf("loader: write %s: RowGroupRows must be >= 0, got %d", path, opt.RowGroupRows)
	}
	if opt.RowGroupRows == 0 {
		opt.RowGroupRows = DefaultRowGroupRows
	}
	if opt.Allocator == nil {
		opt.Allocator = memory.DefaultAllocator
	}
	if _, err := parquetio.Codec(opt.Compression); err != nil {
		return nil, fmt.Errorf("loader: write %s: %w", path, err)
	}
	fields := make([]arrow.Field, 0, len(s.Features))
	seen := map[string]bool{}
	for _, f := range s.Features {
		if seen[f.Name] {
			return nil, fmt.Errorf("loader: write %s: feature %q listed twice", path, f.Name)
		}
		seen[f.Name] = true
		t, err := arrowType(f.DType)
		if err != nil {
			return nil, fmt.Errorf("loader: write %s: feature %q: %w", path, f.Name, err)
		}
		if f.IsList() {
			t = arrow.ListOfNonNullable(t)
		}
		// Pass-through columns (raw ids kept beside predictions) keep
		// their nulls.
		fields = append(fields, arrow.Field{Name: f.Name, Type: t, Nullable: f.IsPassThrough()})
	}
	as := arrow.NewSchema(fields, nil)
	pw, err := parquetio.Create(path, as, parquetio.WriterOptions{
		Compression:  opt.Compression,
		Dictionary:   func(arrow.Field) bool { return opt.Dictionary },
		RowGroupRows: int64(opt.RowGroupRows),
		Allocator:    opt.Allocator,
	})
	if err != nil {
		return nil, fmt.Errorf("loader: %w", err)
	}
	return &Writer{path: path, pw: pw, schema: as, feats: s.Features, mem: opt.Allocator}, nil
}

func arrowType(d schema.DType) (arrow.DataType, error) {
	switch d {
	case schema.Int8:
		return arrow.PrimitiveTypes.Int8, nil
	case schema.Int16:
		return arrow.PrimitiveTypes.Int16, nil
	case schema.Int32:
		return arrow.PrimitiveTypes.Int32, nil
	case schema.Int64:
		return arrow.PrimitiveTypes.Int64, nil
	case schema.Float32:
		return arrow.PrimitiveTypes.Float32, nil
	case schema.Float64:
		return arrow.PrimitiveTypes.Float64, nil
	case schema.Bool:
		return arrow.FixedWidthTypes.Boolean, nil
	case schema.String:
		return arrow.BinaryTypes.String, nil
	case "":
		return nil, errors.New("no dtype")
	}
	return nil, fmt.Errorf("dtype %q cannot be written (want int8, int16, int32, int64, float32, float64, bool or string)", d)
}

// Rows is the number of rows written so far.
func (w *Writer) Rows() int64 { return w.pw.Rows() }

// Write appends rows as one or more new row groups. cols has one entry per
// schema feature (no more, no fewer), all with the same number of rows. A
// scalar column is a slice of the feature's dtype ([]int32 for int32, ...)
// or a Column / *Column whose I32, I64 or F32 matches, or an arrow.Array of
// the column's Arrow type (a string column takes only these); a list column is a
// slice of slices ([][]int32, ...) or a Column / *Column with Offsets
// (len rows+1, non-decreasing, within the values). The data is not retained
// after Write returns. A Write with zero rows writes nothing.
//
// Errors in the arguments leave the writer usable; an I/O error is sticky.
func (w *Writer) Write(cols map[string]any) error {
	if err := w.pw.Usable(); err != nil {
		return fmt.Errorf("loader: %w", err)
	}
	for _, name := range sortedKeys(cols) {
		if w.schema.FieldIndices(name) == nil {
			return fmt.Errorf("loader: write %s: column %q is not in the schema", w.path, name)
		}
	}
	arrs := make([]arrow.Array, len(w.feats))
	defer func() {
		for _, a := range arrs {
			if a != nil {
				a.Release()
			}
		}
	}()
	rows := -1
	for i, f := range w.feats {
		v, ok := cols[f.Name]
		if !ok {
			return fmt.Errorf("loader: write %s: column %q missing", w.path, f.Name)
		}
		a, err := toArrow(w.schema.Field(i).Type, v, w.mem)
		if err != nil {
			return fmt.Errorf("loader: write %s: column %q: %w", w.path, f.Name, err)
		}
		arrs[i] = a
		if rows >= 0 && a.Len() != rows {
			return fmt.Errorf("loader: write %s: column %q has %d rows, column %q has %d", w.path, f.Name, a.Len(), w.feats[0].Name, rows)
		}
		rows = a.Len()
	}
	if rows == 0 {
		return nil
	}
	rec := array.NewRecordBatch(w.schema, arrs, int64(rows))
	defer rec.Release()
	if err := w.pw.Write(rec); err != nil {
		return fmt.Errorf("loader: %w", err)
	}
	return nil
}

// WriteBatch writes the columns of b named by the schema (b may hold more).
func (w *Writer) WriteBatch(b *Batch) error {
	cols := make(map[string]any, len(w.feats))
	for _, f := range w.feats {
		c := b.Column(f.Name)
		if c == nil {
			return fmt.Errorf("loader: write %s: batch has no column %q", w.path, f.Name)
		}
		cols[f.Name] = c
	}
	return w.Write(cols)
}

// Close finishes the file and renames it to its final path. On failure the
// temporary file is removed. Close after Close or Abort returns nil.
func (w *Writer) Close() error {
	if err := w.pw.Close(); err != nil {
		return fmt.Errorf("loader: %w", err)
	}
	return nil
}

// Abort discards the file. Abort after Close returns nil and keeps the file.
func (w *Writer) Abort() error { return w.pw.Abort() }

// WriteParquet writes cols (see Writer.Write for the accepted types) to path
// as one Parquet file with row groups of at most rowGroupRows rows
// (0: DefaultRowGroupRows), atomically.
func WriteParquet(path string, s *schema.Schema, cols map[string]any, rowGroupRows int) error {
	w, err := NewWriter(path, s, WriterOptions{RowGroupRows: rowGroupRows})
	if err != nil {
		return err
	}
	if err := w.Write(cols); err != nil {
		_ = w.Abort()
		return err
	}
	return w.Close()
}

// toArrow wraps v as an Arrow array of type t. Fixed-width Go slices are
// wrapped without a copy (the writer only reads them during Write); slices of
// slices and bools are copied.
func toArrow(t arrow.DataType, v any, mem memory.Allocator) (arrow.Array, error) {
	if a, ok := v.(arrow.Array); ok {
		if !arrow.TypeEqual(a.DataType(), t) {
			return nil, fmt.Errorf("got an Arrow %s array for a %s column", a.DataType(), t)
		}
		a.Retain()
		return a, nil
	}
	if c, ok := v.(Column); ok {
		v = &c
	}
	if lt, ok := t.(*arrow.ListType); ok {
		return listToArrow(lt, v, mem)
	}
	if c, ok := v.(*Column); ok {
		if c == nil {
			return nil, errors.New("nil *Column")
		}
		if c.Offsets != nil {
			return nil, errors.New("a Column with Offsets (list data) for a scalar feature")
		}
		v = columnValues(c)
	}
	return valuesToArrow(t, v, mem)
}

func columnValues(c *Column) any {
	switch {
	case c.I32 != nil:
		return c.I32
	case c.I64 != nil:
		return c.I64
	case c.F32 != nil:
		return c.F32
	}
	return []int32{} // an empty column: valuesToArrow checks the type
}

// valuesToArrow wraps a flat slice whose element type matches t.
func valuesToArrow(t arrow.DataType, v any, mem memory.Allocator) (arrow.Array, error) {
	mismatch := func() error {
		return fmt.Errorf("got %T for a %s column", v, t)
	}
	switch t.ID() {
	case arrow.INT8:
		s, ok := v.([]int8)
		if !ok {
			return nil, mismatch()
		}
		return wrapFixed(t, s), nil
	case arrow.INT16:
		s, ok := v.([]int16)
		if !ok {
			return nil, mismatch()
		}
		return wrapFixed(t, s), nil
	case arrow.INT32:
		s, ok := v.([]int32)
		if !ok {
			return nil, mismatch()
		}
		return wrapFixed(t, s), nil
	case arrow.INT64:
		s, ok := v.([]int64)
		if !ok {
			return nil, mismatch()
		}
		return wrapFixed(t, s), nil
	case arrow.FLOAT32:
		s, ok := v.([]float32)
		if !ok {
			return nil, mismatch()
		}
		return wrapFixed(t, s), nil
	case arrow.FLOAT64:
		s, ok := v.([]float64)
		if !ok {
			return nil, mismatch()
		}
		return wrapFixed(t, s), nil
	case arrow.BOOL:
		s, ok := v.([]bool)
		if !ok {
			return nil, mismatch()
		}
		b := array.NewBooleanBuilder(mem)
		defer b.Release()
		b.AppendValues(s, nil)
		return b.NewArray(), nil
	}
	return nil, fmt.Errorf("unsupported type %s", t)
}

// wrapFixed makes an Arrow array over the memory of s (no copy).
func wrapFixed[T int8 | int16 | int32 | int64 | float32 | float64](t arrow.DataType, s []T) arrow.Array {
	var b []byte
	if len(s) > 0 {
		var z T
		b = unsafe.Slice((*byte)(unsafe.Pointer(&s[0])), len(s)*int(unsafe.Sizeof(z)))
	}
	data := array.NewData(t, len(s), []*memory.Buffer{nil, memory.NewBufferBytes(b)}, nil, 0, 0)
	defer data.Release()
	return array.MakeFromData(data)
}

// listToArrow builds a list array from a slice of slices or a Column with
// Offsets.
func listToArrow(lt *arrow.ListType, v any, mem memory.Allocator) (arrow.Array, error) {
	var values any
	var offs []int32
	switch x := v.(type) {
	case *Column:
		if x == nil {
			return nil, errors.New("nil *Column")
		}
		if x.Offsets == nil {
			return nil, errors.New("a Column without Offsets for a list feature")
		}
		values, offs = columnValues(x), x.Offsets
	case [][]int8:
		values, offs = flatten(x)
	case [][]int16:
		values, offs = flatten(x)
	case [][]int32:
		values, offs = flatten(x)
	case [][]int64:
		values, offs = flatten(x)
	case [][]float32:
		values, offs = flatten(x)
	case [][]float64:
		values, offs = flatten(x)
	default:
		return nil, fmt.Errorf("got %T for a %s column (want a slice of slices or a Column with Offsets)", v, lt)
	}
	child, err := valuesToArrow(lt.Elem(), values, mem)
	if err != nil {
		return nil, err
	}
	defer child.Release()
	if len(offs) == 0 {
		return nil, errors.New("list offsets must have rows+1 entries, got 0")
	}
	n := len(offs) - 1
	if offs[0] < 0 {
		return nil, fmt.Errorf("list offsets start at %d", offs[0])
	}
	for i := 0; i < n; i++ {
		if offs[i+1] < offs[i] {
			return nil, fmt.Errorf("list offsets decrease at row %d (%d > %d)", i, offs[i], offs[i+1])
		}
	}
	if int(offs[n]) > child.Len() {
		return nil, fmt.Errorf("list offsets end at %d but there are %d values", offs[n], child.Len())
	}
	ob := unsafe.Slice((*byte)(unsafe.Pointer(&offs[0])), len(offs)*4)
	data := array.NewData(lt, n, []*memory.Buffer{nil, memory.NewBufferBytes(ob)}, []arrow.ArrayData{child.Data()}, 0, 0)
	defer data.Release()
	return array.MakeFromData(data), nil
}

func flatten[T any](rows [][]T) ([]T, []int32) {
	total := 0
	for _, r := range rows {
		total += len(r)
	}
	values := make([]T, 0, total)
	offs := make([]int32, len(rows)+1)
	for i, r := range rows {
		values = append(values, r...)
		offs[i+1] = int32(len(values))
	}
	return values, offs
}

// sortedKeys is used for deterministic error messages.
func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
