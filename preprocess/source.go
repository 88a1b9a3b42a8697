package preprocess

import (
	"bufio"
	"compress/gzip"
	"context"
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/parquet/file"
	"github.com/apache/arrow-go/v18/parquet/pqarrow"

	"github.com/mtlrank/mtlrank/internal/parquetio"
	"github.com/mtlrank/mtlrank/loader"
)

// InputError is a problem with the input data, located as precisely as the
// input allows.
type InputError struct {
	File   string // the input file
	Column string // the column, "" when the problem is not about one column
	// Line is the 1-based line of a CSV record (0 when unknown or Parquet).
	Line int64
	// Row is the 0-based index of the data row within the file (-1 when unknown).
	Row int64
	Err error
}

func (e *InputError) Error() string {
	var b strings.Builder
	b.WriteString(e.File)
	if e.Column != "" {
		fmt.Fprintf(&b, ": column %q", e.Column)
	}
	switch {
	case e.Line > 0:
		fmt.Fprintf(&b, ", line %d", e.Line)
	case e.Row >= 0:
		fmt.Fprintf(&b, ", row %d", e.Row)
	}
	b.WriteString(": ")
	b.WriteString(e.Err.Error())
	return b.String()
}

func (e *InputError) Unwrap() error { return e.Err }

// ErrEmptyInput is returned (wrapped) when the inputs hold no data rows.
var ErrEmptyInput = errors.New("no data rows")

type inputFile struct {
	path   string
	format string
}

// expandInputs resolves each input (a file, a directory or a glob pattern)
// into files, in the given order; directory entries and glob matches are
// sorted by name. Directories contribute their Parquet files as
// loader.ListFiles lists them (Parquet), or their visible regular files
// other than schema and workflow files (CSV).
func expandInputs(inputs []string, format string) ([]inputFile, error) {
	if len(inputs) == 0 {
		return nil, fmt.Errorf("no input files: %w", ErrEmptyInput)
	}
	var out []inputFile
	add := func(path string) {
		f := format
		if f == "" {
			f = formatOf(path)
		}
		out = append(out, inputFile{path: path, format: f})
	}
	for _, in := range inputs {
		if strings.ContainsAny(in, "*?[") {
			matches, err := filepath.Glob(in)
			if err != nil {
				return nil, fmt.Errorf("input pattern %q: %w", in, err)
			}
			if len(matches) == 0 {
				return nil, fmt.Errorf("input pattern %q matches no file", in)
			}
			sort.Strings(matches)
			for _, m := range matches {
				if st, err := os.Stat(m); err == nil && st.Mode().IsRegular() {
					add(m)
				}
			}
			continue
		}
		st, err := os.Stat(in)
		if err != nil {
			return nil, fmt.Errorf("input: %w", err)
		}
		if !st.IsDir() {
			add(in)
			continue
		}
		var noParquet error
		if format != FormatCSV {
			// A folder of Parquet files is listed by the loader's rule, so
			// that preprocess reads exactly the files training would.
			files, err := loader.ListFiles(in)
			if err == nil {
				for _, f := range files {
					out = append(out, inputFile{path: f, format: FormatParquet})
				}
				continue
			}
			if format == FormatParquet || !errors.Is(err, loader.ErrNoParquetFiles) {
				return nil, fmt.Errorf("input directory: %w", err)
			}
			noParquet = err
		}
		entries, err := os.ReadDir(in)
		if err != nil {
			return nil, fmt.Errorf("input directory: %w", err)
		}
		n := 0
		for _, e := range entries {
			name := e.Name()
			if !e.Type().IsRegular() || strings.HasPrefix(name, ".") || strings.HasPrefix(name, "_") {
				continue
			}
			if name == "schema.pbtxt" || name == "schema.json" || name == "workflow.json" {
				continue
			}
			out = append(out, inputFile{path: filepath.Join(in, name), format: FormatCSV})
			n++
		}
		if n == 0 && noParquet != nil {
			// Neither kind: the Parquet listing's message says more (it
			// names sub-folders holding data).
			return nil, fmt.Errorf("input directory: %w", noParquet)
		}
		if n == 0 {
			return nil, fmt.Errorf("input directory %s holds no %s files", in, FormatCSV)
		}
	}
	return out, nil
}

func formatOf(path string) string {
	if parquetio.HasExtension(path) {
		return FormatParquet
	}
	return FormatCSV
}

type valueKind uint8

const (
	kindString valueKind = iota
	kindInt
	kindFloat
)

// column holds one input column's values for the rows of a chunk. Exactly
// one of str, i64, f64 is used, by kind. Strings may alias Arrow memory or a
// CSV line: clone them before keeping them past the chunk.
type column struct {
	kind    valueKind
	str     []string
	i64     []int64
	f64     []float64
	null    []bool
	hasNull bool
}

func (c *column) reset(kind valueKind, n int) {
	c.kind = kind
	c.hasNull = false
	switch kind {
	case kindString:
		c.str = resize(c.str, n)
	case kindInt:
		c.i64 = resize(c.i64, n)
	case kindFloat:
		c.f64 = resize(c.f64, n)
	}
}

func (c *column) setNull(i, n int) {
	if !c.hasNull {
		c.null = resize(c.null, n)
		clear(c.null)
		c.hasNull = true
	}
	c.null[i] = true
}

func (c *column) isNull(i int) bool { return c.hasNull && c.null[i] }

// appendKey appends the canonical string form of value i: the string itself,
// the decimal form of an integer, or the shortest form of a float.
func (c *column) appendKey(buf []byte, i int) []byte {
	switch c.kind {
	case kindInt:
		return strconv.AppendInt(buf, c.i64[i], 10)
	case kindFloat:
		return strconv.AppendFloat(buf, c.f64[i], 'g', -1, 64)
	}
	return append(buf, c.str[i]...)
}

func resize[T any](s []T, n int) []T {
	if cap(s) >= n {
		return s[:n]
	}
	return make([]T, n)
}

// chunk is a block of consecutive rows of one input file.
type chunk struct {
	file      string
	isCSV     bool
	n         int
	firstRow  int64   // index in the file of the chunk's first data row
	globalRow int64   // index across all inputs of the chunk's first data row
	lines     []int64 // CSV: line of each row
	cols      []column
	releases  []func()
}

func (c *chunk) release() {
	for _, r := range c.releases {
		r()
	}
	c.releases = c.releases[:0]
}

// errAt builds an InputError for row i of the chunk.
func (c *chunk) errAt(col string, i int, format string, args ...any) error {
	e := &InputError{File: c.file, Column: col, Row: c.firstRow + int64(i), Err: fmt.Errorf(format, args...)}
	if c.isCSV {
		e.Line = c.lines[i]
	}
	return e
}

// rowSource reads chunks of one file.
type rowSource interface {
	// read fills c with up to max rows; it returns n == 0 at the end.
	read(c *chunk, max int) (int, error)
	close() error
}

// scanItem is a chunk or the error that ended reading.
type scanItem struct {
	c   *chunk
	err error
}

// scan reads the named columns of files in chunks and calls fn for each
// chunk, in order. Reading runs in a goroutine one chunk ahead of fn. Memory
// held is bounded by a few chunks; Arrow memory is released before scan
// returns, also on error.
func scan(spec *Spec, files []inputFile, cols []string, stage string, fn func(*chunk) error) (err error) {
	ctx, cancel := context.WithCancel(context.Background())
	ch := make(chan scanItem, 1)
	free := make(chan *chunk, 3)
	maxRows := spec.chunkRows()

	go func() {
		defer close(ch)
		var global int64
		send := func(it scanItem) bool {
			select {
			case ch <- it:
				return true
			case <-ctx.Done():
				if it.c != nil {
					it.c.release()
				}
				return false
			}
		}
		for _, f := range files {
			if ctx.Err() != nil {
				return
			}
			n, err := readFile(ctx, spec, f, cols, maxRows, global, free, send)
			global += n
			if err != nil {
				send(scanItem{err: err})
				return
			}
		}
	}()

	defer func() {
		cancel()
		for it := range ch { // wait for the reader and free what it sent
			if it.c != nil {
				it.c.release()
			}
		}
	}()
	var rows int64
	for it := range ch {
		if it.err != nil {
			return it.err
		}
		c := it.c
		err := fn(c)
		c.release()
		if err != nil {
			return err
		}
		rows += int64(c.n)
		spec.progress(stage, rows)
		select {
		case free <- c:
		default:
		}
	}
	return nil
}

// readFile streams one file's chunks to send; it returns the rows read.
func readFile(ctx context.Context, spec *Spec, f inputFile, cols []string, maxRows int, global int64,
	free chan *chunk, send func(scanItem) bool) (rows int64, err error) {
	defer func() {
		if r := recover(); r != nil {
			// arrow-go can panic on corrupt files; report it as bad input.
			err = &InputError{File: f.path, Row: -1, Err: fmt.Errorf("cannot read %s file: %v", f.format, r)}
		}
	}()
	var src rowSource
	if f.format == FormatParquet {
		src, err = openParquet(ctx, f.path, spec, cols, maxRows)
	} else {
		src, err = openCSV(f.path, spec, cols)
	}
	if err != nil {
		return 0, err
	}
	defer func() {
		if cerr := src.close(); cerr != nil && err == nil {
			err = &InputError{File: f.path, Row: -1, Err: cerr}
		}
	}()
	for ctx.Err() == nil {
		var c *chunk
		select {
		case c = <-free:
		default:
			c = &chunk{}
		}
		c.file, c.isCSV = f.path, f.format == FormatCSV
		c.firstRow, c.globalRow = rows, global+rows
		if len(c.cols) != len(cols) {
			c.cols = make([]column, len(cols))
		}
		n, err := src.read(c, maxRows)
		if err != nil {
			c.release()
			return rows, err
		}
		if n == 0 {
			c.release()
			return rows, nil
		}
		c.n = n
		rows += int64(n)
		if !send(scanItem{c: c}) {
			return rows, nil
		}
	}
	return rows, nil
}

// ---- CSV ----

type csvSource struct {
	path  string
	f     *os.File
	gz    *gzip.Reader
	r     *csv.Reader
	idx   []int // field index of each requested column
	na    map[string]bool
	row   int64
	names []string
}

func openCSV(path string, spec *Spec, cols []string) (_ *csvSource, err error) {
	comma, err := spec.csvComma()
	if err != nil {
		return nil, err
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("open input: %w", err)
	}
	s := &csvSource{path: path, f: f, na: map[string]bool{"": true}}
	defer func() {
		if err != nil {
			s.close()
		}
	}()
	var rd io.Reader = f
	if strings.EqualFold(filepath.Ext(path), ".gz") {
		if s.gz, err = gzip.NewReader(f); err != nil {
			return nil, &InputError{File: path, Row: -1, Err: fmt.Errorf("gzip: %w", err)}
		}
		rd = s.gz
	}
	br := bufio.NewReaderSize(rd, 1<<20)
	if bom, _ := br.Peek(3); string(bom) == "\xef\xbb\xbf" {
		br.Discard(3)
	}
	if magic, _ := br.Peek(4); string(magic) == "PAR1" {
		return nil, &InputError{File: path, Row: -1, Err: errors.New("this is a Parquet file, read as CSV: set the input format to parquet (--input_data_format parquet, Spec.InputFormat)")}
	}
	for _, v := range spec.CSVNAValues {
		s.na[strings.TrimSpace(v)] = true
	}
	r := csv.NewReader(br)
	r.Comma = comma
	r.TrimLeadingSpace = comma != ' '
	r.ReuseRecord = true
	s.r = r

	names := spec.CSVColumnNames
	if spec.CSVHeader {
		header, err := r.Read()
		if err == io.EOF {
			return nil, &InputError{File: path, Row: -1, Err: errors.New("empty file: expected a header row")}
		}
		if err != nil {
			return nil, &InputError{File: path, Row: -1, Err: fmt.Errorf("header: %w", err)}
		}
		if len(names) == 0 {
			names = make([]string, len(header))
			for i, h := range header {
				names[i] = strings.TrimSpace(h)
			}
			if dup := firstDuplicate(names); dup != "" {
				return nil, &InputError{File: path, Line: 1, Row: -1, Err: fmt.Errorf("header names column %q twice", dup)}
			}
		} else if len(header) != len(names) {
			return nil, &InputError{File: path, Line: 1, Row: -1,
				Err: fmt.Errorf("header has %d fields but %d column names were given", len(header), len(names))}
		}
	} else if len(names) == 0 {
		return nil, &InputError{File: path, Row: -1, Err: errors.New("CSV without a header row needs the column names")}
	}
	s.names = names
	r.FieldsPerRecord = len(names)
	s.idx = make([]int, len(cols))
	for j, c := range cols {
		s.idx[j] = -1
		for k, n := range names {
			if n == c {
				s.idx[j] = k
				break
			}
		}
		if s.idx[j] < 0 {
			return nil, &InputError{File: path, Column: c, Row: -1,
				Err: fmt.Errorf("column not found (columns: %s)", listNames(names))}
		}
	}
	return s, nil
}

func (s *csvSource) read(c *chunk, max int) (int, error) {
	for j := range c.cols {
		c.cols[j].reset(kindString, max)
	}
	c.lines = resize(c.lines, max)
	n := 0
	for n < max {
		rec, err := s.r.Read()
		if err == io.EOF {
			break
		}
		if err != nil {
			var pe *csv.ParseError
			if errors.As(err, &pe) {
				return 0, &InputError{File: s.path, Line: int64(pe.Line), Row: s.row, Err: pe.Err}
			}
			return 0, &InputError{File: s.path, Row: s.row, Err: err}
		}
		line, _ := s.r.FieldPos(0)
		c.lines[n] = int64(line)
		for j, k := range s.idx {
			v := strings.TrimSpace(rec[k])
			col := &c.cols[j]
			if s.na[v] {
				col.setNull(n, max)
				v = ""
			}
			col.str[n] = v
		}
		n++
		s.row++
	}
	for j := range c.cols {
		col := &c.cols[j]
		col.str = col.str[:n]
		if col.hasNull {
			col.null = col.null[:n]
		}
	}
	c.lines = c.lines[:n]
	return n, nil
}

func (s *csvSource) close() error {
	if s.gz != nil {
		s.gz.Close()
	}
	return s.f.Close()
}

func listNames(names []string) string {
	const max = 20
	if len(names) > max {
		return strings.Join(names[:max], ", ") + fmt.Sprintf(", ... (%d in all)", len(names))
	}
	return strings.Join(names, ", ")
}

// ---- Parquet ----

type parquetSource struct {
	path string
	pf   *file.Reader
	rr   pqarrow.RecordReader
	cols []string
	row  int64
	// pending holds a record that is larger than one chunk.
	pending arrow.RecordBatch
	offset  int64
}

func openParquet(ctx context.Context, path string, spec *Spec, cols []string, maxRows int) (_ *parquetSource, err error) {
	pf, err := file.OpenParquetFile(path, false)
	if err != nil {
		return nil, &InputError{File: path, Row: -1, Err: fmt.Errorf("open parquet: %w", err)}
	}
	s := &parquetSource{path: path, pf: pf, cols: cols}
	defer func() {
		if err != nil {
			s.close()
		}
	}()
	fr, err := pqarrow.NewFileReader(pf, pqarrow.ArrowReadProperties{BatchSize: int64(maxRows)}, spec.allocator())
	if err != nil {
		return nil, &InputError{File: path, Row: -1, Err: fmt.Errorf("read parquet schema: %w", err)}
	}
	asch, err := fr.Schema()
	if err != nil {
		return nil, &InputError{File: path, Row: -1, Err: fmt.Errorf("read parquet schema: %w", err)}
	}
	names := make([]string, asch.NumFields())
	for i, f := range asch.Fields() {
		names[i] = f.Name
	}
	leaves := make([]int, len(cols))
	for j, c := range cols {
		idx := asch.FieldIndices(c)
		if len(idx) == 0 {
			return nil, &InputError{File: path, Column: c, Row: -1,
				Err: fmt.Errorf("column not found (columns: %s)", listNames(names))}
		}
		if t := asch.Field(idx[0]).Type; !supportedType(t) {
			return nil, &InputError{File: path, Column: c, Row: -1, Err: fmt.Errorf("unsupported column type %s", t)}
		}
		leaf := pf.MetaData().Schema.ColumnIndexByName(c)
		if leaf < 0 {
			return nil, &InputError{File: path, Column: c, Row: -1, Err: errors.New("not a flat column")}
		}
		leaves[j] = leaf
	}
	if pf.NumRows() == 0 {
		return s, nil
	}
	rr, err := fr.GetRecordReader(ctx, leaves, nil)
	if err != nil {
		return nil, &InputError{File: path, Row: -1, Err: fmt.Errorf("read parquet: %w", err)}
	}
	s.rr = rr
	return s, nil
}

func supportedType(t arrow.DataType) bool {
	switch t.ID() {
	case arrow.STRING, arrow.LARGE_STRING, arrow.BINARY, arrow.LARGE_BINARY,
		arrow.INT8, arrow.INT16, arrow.INT32, arrow.INT64,
		arrow.UINT8, arrow.UINT16, arrow.UINT32, arrow.UINT64,
		arrow.FLOAT32, arrow.FLOAT64, arrow.BOOL,
		arrow.DATE32, arrow.DATE64, arrow.TIMESTAMP:
		return true
	case arrow.DICTIONARY:
		return supportedType(t.(*arrow.DictionaryType).ValueType)
	}
	return false
}

func (s *parquetSource) read(c *chunk, max int) (int, error) {
	if s.rr == nil {
		return 0, nil
	}
	if s.pending == nil {
		if !s.rr.Next() {
			if err := s.rr.Err(); err != nil {
				return 0, &InputError{File: s.path, Row: s.row, Err: fmt.Errorf("read parquet: %w", err)}
			}
			return 0, nil
		}
		s.pending = s.rr.RecordBatch()
		s.pending.Retain()
		s.offset = 0
	}
	rec := s.pending
	n := int(min(int64(max), rec.NumRows()-s.offset))
	sch := rec.Schema()
	for j, name := range s.cols {
		idx := sch.FieldIndices(name)
		if len(idx) == 0 {
			return 0, &InputError{File: s.path, Column: name, Row: s.row, Err: errors.New("column missing from record")}
		}
		arr := rec.Column(idx[0])
		if err := fillColumn(&c.cols[j], arr, int(s.offset), n); err != nil {
			return 0, &InputError{File: s.path, Column: name, Row: s.row, Err: err}
		}
	}
	// String values alias the record's buffers: keep it alive with the chunk.
	rec.Retain()
	c.releases = append(c.releases, rec.Release)
	s.offset += int64(n)
	s.row += int64(n)
	if s.offset >= rec.NumRows() {
		s.pending.Release()
		s.pending = nil
	}
	return n, nil
}

func (s *parquetSource) close() error {
	if s.pending != nil {
		s.pending.Release()
		s.pending = nil
	}
	if s.rr != nil {
		s.rr.Release()
		s.rr = nil
	}
	return s.pf.Close()
}

// fillColumn converts rows [off, off+n) of arr into dst.
func fillColumn(dst *column, arr arrow.Array, off, n int) error {
	nulls := arr.NullN() > 0
	markNulls := func() {
		if nulls {
			for i := 0; i < n; i++ {
				if arr.IsNull(off + i) {
					dst.setNull(i, n)
				}
			}
		}
	}
	switch a := arr.(type) {
	case *array.String:
		dst.reset(kindString, n)
		for i := 0; i < n; i++ {
			dst.str[i] = a.Value(off + i)
		}
	case *array.LargeString:
		dst.reset(kindString, n)
		for i := 0; i < n; i++ {
			dst.str[i] = a.Value(off + i)
		}
	case *array.Binary:
		dst.reset(kindString, n)
		for i := 0; i < n; i++ {
			dst.str[i] = a.ValueString(off + i)
		}
	case *array.LargeBinary:
		dst.reset(kindString, n)
		for i := 0; i < n; i++ {
			dst.str[i] = a.ValueString(off + i)
		}
	case *array.Int8:
		fillInts(dst, a.Int8Values()[off:off+n])
	case *array.Int16:
		fillInts(dst, a.Int16Values()[off:off+n])
	case *array.Int32:
		fillInts(dst, a.Int32Values()[off:off+n])
	case *array.Int64:
		fillInts(dst, a.Int64Values()[off:off+n])
	case *array.Uint8:
		fillInts(dst, a.Uint8Values()[off:off+n])
	case *array.Uint16:
		fillInts(dst, a.Uint16Values()[off:off+n])
	case *array.Uint32:
		fillInts(dst, a.Uint32Values()[off:off+n])
	case *array.Uint64:
		dst.reset(kindInt, n)
		for i, v := range a.Uint64Values()[off : off+n] {
			if v > math.MaxInt64 && !(nulls && a.IsNull(off+i)) {
				return fmt.Errorf("row %d: value %d does not fit in int64", i, v)
			}
			dst.i64[i] = int64(v)
		}
	case *array.Date32:
		dst.reset(kindInt, n)
		for i, v := range a.Date32Values()[off : off+n] {
			dst.i64[i] = int64(v)
		}
	case *array.Date64:
		dst.reset(kindInt, n)
		for i, v := range a.Date64Values()[off : off+n] {
			dst.i64[i] = int64(v)
		}
	case *array.Timestamp:
		dst.reset(kindInt, n)
		for i, v := range a.TimestampValues()[off : off+n] {
			dst.i64[i] = int64(v)
		}
	case *array.Boolean:
		dst.reset(kindInt, n)
		for i := 0; i < n; i++ {
			dst.i64[i] = 0
			if a.Value(off + i) {
				dst.i64[i] = 1
			}
		}
	case *array.Float32:
		dst.reset(kindFloat, n)
		for i, v := range a.Float32Values()[off : off+n] {
			dst.f64[i] = float64(v)
			if v != v {
				dst.setNull(i, n)
			}
		}
	case *array.Float64:
		dst.reset(kindFloat, n)
		for i, v := range a.Float64Values()[off : off+n] {
			dst.f64[i] = v
			if v != v {
				dst.setNull(i, n)
			}
		}
	case *array.Dictionary:
		// Decode the whole dictionary once, then gather.
		var dict column
		dl := a.Dictionary().Len()
		if err := fillColumn(&dict, a.Dictionary(), 0, dl); err != nil {
			return err
		}
		dst.reset(dict.kind, n)
		for i := 0; i < n; i++ {
			if nulls && a.IsNull(off+i) {
				continue
			}
			k := a.GetValueIndex(off + i)
			switch dict.kind {
			case kindString:
				dst.str[i] = dict.str[k]
			case kindInt:
				dst.i64[i] = dict.i64[k]
			case kindFloat:
				dst.f64[i] = dict.f64[k]
			}
			if dict.isNull(k) {
				dst.setNull(i, n)
			}
		}
	default:
		return fmt.Errorf("unsupported column type %s", arr.DataType())
	}
	markNulls()
	return nil
}

func fillInts[T int8 | int16 | int32 | int64 | uint8 | uint16 | uint32](dst *column, vals []T) {
	dst.reset(kindInt, len(vals))
	for i, v := range vals {
		dst.i64[i] = int64(v)
	}
}
