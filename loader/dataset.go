package loader

import (
	"errors"
	"fmt"
	"os"
	"slices"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/apache/arrow-go/v18/parquet"
	"github.com/apache/arrow-go/v18/parquet/file"
	"github.com/apache/arrow-go/v18/parquet/metadata"
	"github.com/apache/arrow-go/v18/parquet/pqarrow"

	"github.com/mtlrank/mtlrank/internal/parquetio"
	"github.com/mtlrank/mtlrank/internal/pqcrc"
	"github.com/mtlrank/mtlrank/schema"
)

// NoRowShuffle as Options.ShuffleBuffer keeps the rows of each row group in
// file order while still shuffling file and row-group order, so that batches
// stay zero-copy views.
const NoRowShuffle = -1

// defaultReadRows bounds the rows decoded at once from one row group, so that
// memory does not grow with the row-group size (pyarrow used to write whole
// files as one row group). It is rounded to a multiple of the batch size so
// that batches within a read stay zero-copy.
const defaultReadRows = 1 << 18

// Options configures a Dataset. The zero value is not usable as is (BatchSize
// must be set); DefaultOptions gives the recommended settings.
type Options struct {
	// BatchSize is the number of rows per batch (>= 1).
	BatchSize int
	// DropLast drops the last batch of an epoch when it has fewer than
	// BatchSize rows.
	DropLast bool
	// Columns lists the features to read, by name; nil reads every schema
	// feature. Only these Parquet columns are decoded.
	Columns []string

	// Shuffle enables the per-epoch shuffle: file order, row-group order
	// within each file, and rows through a shuffle buffer. The order is a
	// deterministic function of (Seed, epoch).
	Shuffle bool
	Seed    int64
	// ShuffleBuffer is the number of rows shuffled together. Rows are read
	// into the buffer until it holds at least max(ShuffleBuffer, BatchSize)
	// rows (at least one read of a row group, so 0 shuffles within each row
	// group as Merlin's dataloader shuffles within each partition), the
	// buffer is permuted, and full batches are taken from it; the rows left
	// over join the next fill. This path gathers rows into per-iterator
	// buffers, i.e. it copies. NoRowShuffle keeps rows in file order.
	ShuffleBuffer int

	// Prefetch is the number of batches a background goroutine prepares
	// ahead of Next (a bounded channel); 0 reads synchronously in Next.
	Prefetch int

	// FillNaN, when set, replaces nulls, NaN and ±Inf in continuous input
	// features by *FillNaN (the CLI's --fill_nan). When nil they are
	// errors. Targets are never filled: a missing label is always an error,
	// as is a non-finite regression label or a binary label other than 0
	// and 1.
	FillNaN *float32

	// Allocator serves the Arrow buffers (default memory.DefaultAllocator).
	Allocator memory.Allocator

	// CheckDomains checks that every categorical id lies in
	// [0, int_domain.max] (and, without an int_domain, that it is not
	// negative). DefaultOptions turns it on; leave it on unless the data is
	// known to be valid: an id out of range would index outside an embedding
	// table later.
	CheckDomains bool

	// ReadRows is the number of rows decoded at once from a row group;
	// 0 picks the multiple of BatchSize nearest to 256k rows.
	ReadRows int
}

// DefaultOptions returns the recommended options: batches of 1024 rows, two
// batches prefetched, domain checks on, no shuffle.
func DefaultOptions() Options {
	return Options{BatchSize: 1024, Prefetch: 2, CheckDomains: true}
}

func (o *Options) validate() error {
	if o.BatchSize < 1 {
		return fmt.Errorf("loader: BatchSize must be >= 1, got %d", o.BatchSize)
	}
	if o.Prefetch < 0 {
		return fmt.Errorf("loader: Prefetch must be >= 0, got %d", o.Prefetch)
	}
	if o.ShuffleBuffer < NoRowShuffle {
		return fmt.Errorf("loader: ShuffleBuffer must be >= 0 or NoRowShuffle, got %d", o.ShuffleBuffer)
	}
	// Rows of a read are indexed with int32 in the shuffle buffer.
	if o.ReadRows < 0 || o.ReadRows > 1<<30 {
		return fmt.Errorf("loader: ReadRows must be in [0, 2^30], got %d", o.ReadRows)
	}
	if o.BatchSize > 1<<30 {
		return fmt.Errorf("loader: BatchSize must be <= 2^30, got %d", o.BatchSize)
	}
	if o.ReadRows == 0 {
		n := defaultReadRows / o.BatchSize
		if n < 1 {
			n = 1
		}
		o.ReadRows = n * o.BatchSize
	}
	if o.Allocator == nil {
		o.Allocator = memory.DefaultAllocator
	}
	return nil
}

// outKind is the representation of a column in a Batch.
type outKind int

const (
	outI32 outKind = iota
	outI64
	outF32
)

// colSpec is one requested feature and how it is read.
type colSpec struct {
	name   string
	feat   *schema.Feature
	ids    bool // categorical ids (I32/I64) rather than values (F32)
	list   bool
	target bool
	binary bool // a binary target: labels must be 0 or 1
	fill   bool // nulls/NaN/Inf replaced by Options.FillNaN
	out    outKind
	// domain check for ids
	checkDomain bool
	max         int64 // valid ids are [0, max]; -1: no upper bound
}

// filePlan is what Open learned about one file.
type filePlan struct {
	path    string
	md      *metadata.FileMetaData
	rows    int64
	rgFirst []int64 // absolute index of the first row of each row group
	leaves  []int   // Parquet leaf column indices to decode, in spec order
	types   []arrow.DataType
	// sel lists the row groups read, ascending (Dataset.Select); nil reads
	// every row group.
	sel []int
}

// Dataset is a Parquet file or folder of files read with a schema. It holds
// the files' metadata only (no open file handles) and is safe for concurrent
// use; each Epoch has its own Iterator.
type Dataset struct {
	opt   Options
	specs []colSpec
	files []*filePlan
	rows  int64
	path  string
}

// Open prepares a dataset at path: one Parquet file, or a folder whose
// Parquet files, as ListFiles lists them, are read in that order. It reads every file's footer and checks that the
// requested columns exist with types the schema allows, so schema/file
// mismatches are reported here rather than in the middle of an epoch.
func Open(path string, s *schema.Schema, opt Options) (*Dataset, error) {
	if s == nil {
		return nil, errors.New("loader: nil schema")
	}
	if err := opt.validate(); err != nil {
		return nil, err
	}
	files, err := ListFiles(path)
	if err != nil {
		return nil, err
	}
	specs, err := buildSpecs(s, opt)
	if err != nil {
		return nil, err
	}
	d := &Dataset{opt: opt, specs: specs, path: path}
	wide := make([]bool, len(specs)) // some file needs 64-bit ids
	for _, f := range files {
		p, err := planFile(f, specs, opt.Allocator)
		if err != nil {
			return nil, err
		}
		for i, t := range p.types {
			if specs[i].ids && needsI64(t) {
				wide[i] = true
			}
		}
		d.files = append(d.files, p)
		d.rows += p.rows
	}
	for i := range d.specs {
		if d.specs[i].ids && wide[i] {
			d.specs[i].out = outI64
		}
	}
	return d, nil
}

// Rows is the total number of rows in all files (in the row groups Select
// chose).
func (d *Dataset) Rows() int64 { return d.rows }

// Shuffles reports whether epochs shuffle the rows (Options.Shuffle); when
// not, rows come in file order, the files in the order of Files.
func (d *Dataset) Shuffles() bool { return d.opt.Shuffle }

// BatchSize is the rows of a batch (Options.BatchSize) and DropLast whether
// an epoch's short last batch is dropped (Options.DropLast).
func (d *Dataset) BatchSize() int { return d.opt.BatchSize }

// DropLast reports Options.DropLast.
func (d *Dataset) DropLast() bool { return d.opt.DropLast }

// Path is the file or folder the dataset was opened from.
func (d *Dataset) Path() string { return d.path }

// Files lists the dataset's files in read order (before shuffling).
func (d *Dataset) Files() []string {
	out := make([]string, len(d.files))
	for i, f := range d.files {
		out[i] = f.path
	}
	return out
}

// Columns lists the feature names each Batch holds, in schema order.
func (d *Dataset) Columns() []string {
	out := make([]string, len(d.specs))
	for i, s := range d.specs {
		out[i] = s.name
	}
	return out
}

// RowGroups is the number of row groups read over all files (those Select
// chose, or all).
func (d *Dataset) RowGroups() int {
	n := 0
	for _, f := range d.files {
		n += len(f.groups())
	}
	return n
}

// groups lists the row groups of f that are read, ascending.
func (f *filePlan) groups() []int {
	if f.sel != nil {
		return f.sel
	}
	all := make([]int, len(f.rgFirst))
	for i := range all {
		all[i] = i
	}
	return all
}

// rgRows is the number of rows of row group rg.
func (f *filePlan) rgRows(rg int) int64 {
	if rg+1 < len(f.rgFirst) {
		return f.rgFirst[rg+1] - f.rgFirst[rg]
	}
	return f.rows - f.rgFirst[rg]
}

// RowGroupRows returns the number of rows of every row group of every file:
// element [f][g] is row group g of file f (of Files), whatever Select chose.
// It is what a partition of the row groups among the ranks of a distributed
// job is computed from.
func (d *Dataset) RowGroupRows() [][]int64 {
	out := make([][]int64, len(d.files))
	for i, f := range d.files {
		out[i] = make([]int64, len(f.rgFirst))
		for g := range f.rgFirst {
			out[i][g] = f.rgRows(g)
		}
	}
	return out
}

// RowGroupID names one row group: the index of its file in Files and its
// index within the file.
type RowGroupID struct{ File, RowGroup int }

// Select returns the dataset reduced to the given row groups (one rank's
// part of a distributed job): its epochs read only them, and Rows and
// RowGroups count only them. The order of ids does not matter. An epoch's
// order is the same function of (Seed, epoch) as for the whole dataset,
// applied to the selected row groups of each file; selecting every row group
// gives exactly the whole dataset's epochs. A later Select replaces the
// selection rather than narrowing it.
func (d *Dataset) Select(ids []RowGroupID) (*Dataset, error) {
	sel := make([][]int, len(d.files))
	for _, id := range ids {
		if id.File < 0 || id.File >= len(d.files) {
			return nil, fmt.Errorf("loader: Select: file %d is not one of the dataset's %d files (%s)", id.File, len(d.files), d.path)
		}
		f := d.files[id.File]
		if id.RowGroup < 0 || id.RowGroup >= len(f.rgFirst) {
			return nil, fmt.Errorf("loader: Select: %s has %d row groups, not row group %d", f.path, len(f.rgFirst), id.RowGroup)
		}
		sel[id.File] = append(sel[id.File], id.RowGroup)
	}
	out := *d
	out.files = make([]*filePlan, len(d.files))
	out.rows = 0
	for i, f := range d.files {
		s := sel[i]
		slices.Sort(s)
		for j := 1; j < len(s); j++ {
			if s[j] == s[j-1] {
				return nil, fmt.Errorf("loader: Select: row group %d of %s is listed twice", s[j], f.path)
			}
		}
		g := *f
		// Files with nothing selected stay in the list (and read nothing),
		// so that the shuffle of the file order draws the same numbers as
		// the whole dataset's.
		g.sel = append([]int{}, s...)
		for _, rg := range g.sel {
			out.rows += g.rgRows(rg)
		}
		out.files[i] = &g
	}
	return &out, nil
}

// CountRows returns the number of rows of the dataset at path (a Parquet
// file or a folder, listed by ListFiles) from the files' footers,
// without reading any data or needing a schema. Callers use it to size
// buffers before they know which columns they will read.
func CountRows(path string) (int64, error) {
	files, err := ListFiles(path)
	if err != nil {
		return 0, err
	}
	var total int64
	for _, f := range files {
		n, err := footerRows(f)
		if err != nil {
			return 0, err
		}
		total += n
	}
	return total, nil
}

func footerRows(path string) (n int64, err error) {
	defer func() {
		if r := recover(); r != nil {
			n, err = 0, corruptErr(path, -1, r)
		}
	}()
	if err := checkMagic(path); err != nil {
		return 0, err
	}
	rdr, err := file.OpenParquetFile(path, false)
	if err != nil {
		var pe *os.PathError
		if errors.As(err, &pe) {
			return 0, fmt.Errorf("loader: %w", err)
		}
		return 0, corruptErr(path, -1, err)
	}
	n = rdr.MetaData().NumRows
	if err := rdr.Close(); err != nil {
		return 0, fmt.Errorf("loader: close %s: %w", path, err)
	}
	if n < 0 {
		return 0, corruptErr(path, -1, fmt.Errorf("footer says %d rows", n))
	}
	return n, nil
}

// IncompleteMarker is the file a writer of dataset folders ('mtlrank
// synth') leaves in a folder while it replaces its files; a folder that
// still holds it was left by an interrupted or failed run and may mix old
// and new part files.
const IncompleteMarker = parquetio.IncompleteMarker

// ErrIncomplete is wrapped by the error of opening a dataset folder that
// holds the IncompleteMarker.
var ErrIncomplete = parquetio.ErrIncomplete

// ListFiles returns the Parquet files of the dataset at path, a file or a
// folder, in read order. It is the one listing of a dataset: Open,
// CountRows, InferSchema, preprocess and the CLI all use it. The rule: a
// file is the dataset whatever its name; a folder's files are its regular
// files (or links to them) named *.parquet or *.pq (any letter case), not
// hidden (".") nor starting with "_" (_SUCCESS, _metadata), not recursive,
// in byte-wise name order. A folder with none is an error wrapping
// ErrNoParquetFiles that names it (and the sub-folders that hold data, if
// any); a folder holding IncompleteMarker is an error wrapping
// ErrIncomplete.
func ListFiles(path string) ([]string, error) {
	files, err := parquetio.List(path)
	if err != nil {
		return nil, fmt.Errorf("loader: %w", err)
	}
	return files, nil
}

// buildSpecs decides, per requested feature, whether it is read as ids or as
// values, and its checks.
func buildSpecs(s *schema.Schema, opt Options) ([]colSpec, error) {
	var feats []*schema.Feature
	if opt.Columns == nil {
		feats = s.Features
	} else {
		seen := map[string]bool{}
		for _, name := range opt.Columns {
			f := s.Feature(name)
			if f == nil {
				return nil, fmt.Errorf("loader: column %q is not in the schema", name)
			}
			if seen[name] {
				return nil, fmt.Errorf("loader: column %q requested twice", name)
			}
			seen[name] = true
		}
		// Keep schema order so that batches look the same whatever order
		// Columns was given in.
		for _, f := range s.Features {
			if seen[f.Name] {
				feats = append(feats, f)
			}
		}
	}
	if len(feats) == 0 {
		return nil, errors.New("loader: no columns to read")
	}
	specs := make([]colSpec, 0, len(feats))
	names := map[string]bool{}
	for _, f := range feats {
		if names[f.Name] {
			return nil, fmt.Errorf("loader: schema lists feature %q twice", f.Name)
		}
		names[f.Name] = true
		sp := colSpec{name: f.Name, feat: f, list: f.IsList(), target: f.IsTarget(), max: -1}
		// A target tagged binary (or binary_classification) is a binary
		// task whatever its other tags, as for the model's outputs.
		sp.binary = sp.target && f.HasTag(schema.TagBinary)
		switch {
		case sp.target:
			sp.ids = false // labels are floats for the losses, whatever their storage
		case f.HasTag(schema.TagCategorical):
			sp.ids = true
		case f.HasTag(schema.TagContinuous):
			sp.ids = false
		default:
			switch f.DType {
			case schema.Int8, schema.Int16, schema.Int32, schema.Int64:
				sp.ids = true
			case schema.Float32, schema.Float64, schema.Bool:
				sp.ids = false
			default:
				return nil, fmt.Errorf("loader: feature %q has no categorical/continuous/target tag and dtype %q: cannot tell ids from values", f.Name, f.DType)
			}
		}
		if sp.ids {
			sp.out = outI32
			sp.checkDomain = opt.CheckDomains
			if f.IntDomain != nil {
				if f.IntDomain.Max < 0 {
					return nil, fmt.Errorf("loader: feature %q: int_domain.max %d is negative", f.Name, f.IntDomain.Max)
				}
				sp.max = f.IntDomain.Max
			}
		} else {
			sp.out = outF32
			sp.fill = !sp.target && opt.FillNaN != nil
		}
		specs = append(specs, sp)
	}
	return specs, nil
}

// planFile reads a file's footer and checks the requested columns.
func planFile(path string, specs []colSpec, mem memory.Allocator) (p *filePlan, err error) {
	defer func() {
		if r := recover(); r != nil {
			p, err = nil, corruptErr(path, -1, r)
		}
	}()
	if err := checkMagic(path); err != nil {
		return nil, err
	}
	// Files mtlrank wrote carry checksums: a flipped byte is an error, not
	// another value.
	if err := pqcrc.Verify(path); err != nil {
		return nil, corruptErr(path, -1, err)
	}
	rdr, err := file.OpenParquetFile(path, false, file.WithReadProps(parquet.NewReaderProperties(mem)))
	if err != nil {
		var pe *os.PathError
		if errors.As(err, &pe) {
			return nil, fmt.Errorf("loader: %w", err)
		}
		return nil, corruptErr(path, -1, err)
	}
	md := rdr.MetaData()
	if err := rdr.Close(); err != nil {
		return nil, fmt.Errorf("loader: close %s: %w", path, err)
	}
	p = &filePlan{path: path, md: md}
	var total int64
	for i := 0; i < md.NumRowGroups(); i++ {
		n := md.RowGroup(i).NumRows()
		if n < 0 {
			return nil, corruptErr(path, i, fmt.Errorf("row group has %d rows", n))
		}
		p.rgFirst = append(p.rgFirst, total)
		total += n
	}
	if total != md.NumRows {
		return nil, corruptErr(path, -1, fmt.Errorf("footer says %d rows but its row groups hold %d", md.NumRows, total))
	}
	p.rows = total

	manifest, err := pqarrow.NewSchemaManifest(md.Schema, md.KeyValueMetadata(), &pqarrow.ArrowReadProperties{})
	if err != nil {
		return nil, corruptErr(path, -1, fmt.Errorf("schema: %w", err))
	}
	byName := make(map[string]*pqarrow.SchemaField, len(manifest.Fields))
	for i := range manifest.Fields {
		f := &manifest.Fields[i]
		if f.Field != nil {
			byName[f.Field.Name] = f
		}
	}
	for _, sp := range specs {
		f, ok := byName[sp.name]
		if !ok {
			return nil, dataErr(path, sp.name, -1, -1, "column is in the schema but not in the file (schema/file mismatch)")
		}
		leaf, t, err := checkField(f, sp)
		if err != nil {
			return nil, &DataError{File: path, Column: sp.name, RowGroup: -1, Row: -1, Msg: err.Error()}
		}
		p.leaves = append(p.leaves, leaf)
		p.types = append(p.types, t)
	}
	return p, nil
}

// checkField checks a file column against its spec and returns its Parquet
// leaf index and Arrow type.
func checkField(f *pqarrow.SchemaField, sp colSpec) (int, arrow.DataType, error) {
	t := f.Field.Type
	elem := t
	leaf := f
	switch lt := t.(type) {
	case *arrow.ListType, *arrow.LargeListType:
		if !sp.list {
			return 0, nil, fmt.Errorf("stored as a list (%s) but the schema says a scalar feature", t)
		}
		elem = lt.(arrow.ListLikeType).Elem()
		if len(f.Children) != 1 {
			return 0, nil, fmt.Errorf("unsupported list layout %s", t)
		}
		leaf = &f.Children[0]
	case *arrow.FixedSizeListType, *arrow.MapType, *arrow.StructType:
		return 0, nil, fmt.Errorf("unsupported nested type %s", t)
	default:
		if sp.list {
			return 0, nil, fmt.Errorf("stored as a scalar %s but the schema says a list feature", t)
		}
	}
	if !leaf.IsLeaf() || len(leaf.Children) != 0 {
		return 0, nil, fmt.Errorf("unsupported nested type %s", t)
	}
	if err := checkElem(elem, sp); err != nil {
		return 0, nil, err
	}
	return leaf.ColIndex, t, nil
}

func checkElem(t arrow.DataType, sp colSpec) error {
	id := t.ID()
	if sp.ids {
		switch id {
		case arrow.INT8, arrow.INT16, arrow.INT32, arrow.INT64,
			arrow.UINT8, arrow.UINT16, arrow.UINT32, arrow.UINT64:
			return nil
		case arrow.STRING, arrow.LARGE_STRING, arrow.BINARY, arrow.LARGE_BINARY, arrow.DICTIONARY, arrow.STRING_VIEW:
			return fmt.Errorf("type %s where integer ids are expected: categorical features must be integer ids (encode them first, e.g. with preprocess Categorify)", t)
		case arrow.FLOAT16, arrow.FLOAT32, arrow.FLOAT64:
			return fmt.Errorf("type %s where integer ids are expected (categorical feature)", t)
		default:
			return fmt.Errorf("unsupported type %s for a categorical feature (want an integer type)", t)
		}
	}
	switch id {
	case arrow.FLOAT32, arrow.FLOAT64, arrow.BOOL,
		arrow.INT8, arrow.INT16, arrow.INT32, arrow.INT64,
		arrow.UINT8, arrow.UINT16, arrow.UINT32, arrow.UINT64:
		return nil
	default:
		what := "continuous feature"
		if sp.target {
			what = "target"
		}
		return fmt.Errorf("type %s where numbers are expected (%s)", t, what)
	}
}

// needsI64 reports whether ids of type t (or list of t) can exceed int32.
func needsI64(t arrow.DataType) bool {
	if lt, ok := t.(arrow.ListLikeType); ok {
		t = lt.Elem()
	}
	switch t.ID() {
	case arrow.INT64, arrow.UINT32, arrow.UINT64:
		return true
	}
	return false
}

// checkMagic gives a clear error for files that are not Parquet at all (a
// CSV renamed, an empty file) before the footer parser does.
func checkMagic(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("loader: %w", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return fmt.Errorf("loader: %w", err)
	}
	const magicLen = 4
	if st.Size() < 2*magicLen+4 {
		return corruptErr(path, -1, fmt.Errorf("not a Parquet file: %d bytes", st.Size()))
	}
	var head, tail [magicLen]byte
	if _, err := f.ReadAt(head[:], 0); err != nil {
		return fmt.Errorf("loader: read %s: %w", path, err)
	}
	if _, err := f.ReadAt(tail[:], st.Size()-magicLen); err != nil {
		return fmt.Errorf("loader: read %s: %w", path, err)
	}
	if string(head[:]) != "PAR1" || (string(tail[:]) != "PAR1" && string(tail[:]) != "PARE") {
		return corruptErr(path, -1, errors.New("not a Parquet file (no PAR1 magic at both ends; truncated or another format)"))
	}
	return nil
}
