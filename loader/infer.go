package loader

import (
	"context"
	"errors"
	"fmt"
	"math"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/apache/arrow-go/v18/parquet/file"
	"github.com/apache/arrow-go/v18/parquet/metadata"
	"github.com/apache/arrow-go/v18/parquet/pqarrow"

	"github.com/mtlrank/mtlrank/schema"
)

// InferOptions tunes InferSchema.
type InferOptions struct {
	// Targets names the target columns and their task: schema.TagBinaryClassification
	// (or schema.TagBinary) for a binary task, schema.TagRegression for a regression task.
	Targets map[string]schema.Tag
	// Continuous names integer columns to use as continuous values (counts,
	// ages) instead of categorical ids.
	Continuous []string
	// Exclude names columns to leave out of the schema (e.g. raw strings).
	Exclude []string
}

// InferSchema builds a schema from the dataset at path (a Parquet file, or a
// folder whose files, as ListFiles lists them, have the same columns) and its
// column statistics. It lives beside Open because it reads the files the
// same way; package schema opens no file. Columns
// keep the file's order. Rules, for each top-level column:
//
//   - a column named in opt.Targets becomes a target: binary targets get tags
//     [binary_classification target] and int_domain [0, 1] (values outside
//     [0, 1] are an error); regression targets get [regression target] and a
//     float_domain of the observed range;
//   - a signed integer column (int8..int64) becomes a categorical feature
//     (tag categorical) with int_domain {name: column, min: 0, max: the
//     largest value, is_categorical}; negative values are an error (ids must
//     be >= 0: encode the column first, or name it in opt.Continuous);
//   - an integer column named in opt.Continuous and a float column (float32,
//     float64) become continuous features (tag continuous) with a float_domain
//     of the observed range;
//   - a list (or large list) of integers becomes a categorical list feature
//     (tags categorical, list) and a list of floats a continuous list
//     feature, both with value_count = the shortest and longest list (a null
//     list counts as empty);
//   - anything else (strings, booleans that are not binary targets, unsigned
//     integers, timestamps, structs, nested lists) is an error naming the
//     column; leave such columns out with opt.Exclude.
//
// The dtype is the column's Arrow type (int8..int64, float32, float64, bool
// for boolean binary targets). Min/max come from the row-group statistics;
// a row group without them is scanned. Lengths of list columns are always
// scanned. A column whose values are all null gets max 0 and no float_domain.
func InferSchema(path string, opt InferOptions) (*schema.Schema, error) {
	files, err := ListFiles(path)
	if err != nil {
		return nil, fmt.Errorf("loader: infer schema: %w", err)
	}
	s, _, err := inferFiles(files, opt)
	return s, err
}

// inferFiles is InferSchema on a list of files; it also returns the
// number of column scans, which tests use to check that statistics are used.
func inferFiles(files []string, opt InferOptions) (*schema.Schema, int, error) {
	inf := &inferrer{opt: opt, stats: map[string]*colStats{}, seenExcluded: map[string]bool{}}
	for _, path := range files {
		if err := inf.readFile(path); err != nil {
			return nil, inf.scans, err
		}
	}
	s, err := inf.build()
	return s, inf.scans, err
}

type colKind int

const (
	kindInt colKind = iota
	kindFloat
	kindBool
	kindIntList
	kindFloatList
)

// colStats accumulates what Infer learns about one column over all files.
type colStats struct {
	name   string
	kind   colKind
	dtype  schema.DType
	typ    arrow.DataType // as in the first file
	hasVal bool           // min/max seen
	minI   int64
	maxI   int64
	minF   float64
	maxF   float64
	hasLen bool // list lengths seen
	minLen int64
	maxLen int64
}

func (c *colStats) addInt(lo, hi int64) {
	if !c.hasVal {
		c.minI, c.maxI, c.hasVal = lo, hi, true
		return
	}
	c.minI, c.maxI = min(c.minI, lo), max(c.maxI, hi)
}

func (c *colStats) addFloat(lo, hi float64) {
	// Parquet records a zero minimum as -0 (and a zero maximum as +0).
	if lo == 0 {
		lo = 0
	}
	if hi == 0 {
		hi = 0
	}
	if !c.hasVal {
		c.minF, c.maxF, c.hasVal = lo, hi, true
		return
	}
	c.minF, c.maxF = math.Min(c.minF, lo), math.Max(c.maxF, hi)
}

func (c *colStats) addLen(n int64) {
	if !c.hasLen {
		c.minLen, c.maxLen, c.hasLen = n, n, true
		return
	}
	c.minLen, c.maxLen = min(c.minLen, n), max(c.maxLen, n)
}

type inferrer struct {
	scans   int // row-group column scans done (statistics were not enough)
	opt     InferOptions
	readOne bool // a file has been read: later files must match its columns
	order   []string
	stats   map[string]*colStats
	// seenExcluded records the excluded columns found, so that a name in
	// Exclude that matches nothing (a typo) is reported.
	seenExcluded map[string]bool
}

// classify maps an Arrow type to a column kind and dtype; ok is false for
// types Infer does not turn into features.
func classify(t arrow.DataType) (colKind, schema.DType, bool) {
	switch t.ID() {
	case arrow.INT8:
		return kindInt, schema.Int8, true
	case arrow.INT16:
		return kindInt, schema.Int16, true
	case arrow.INT32:
		return kindInt, schema.Int32, true
	case arrow.INT64:
		return kindInt, schema.Int64, true
	case arrow.FLOAT32:
		return kindFloat, schema.Float32, true
	case arrow.FLOAT64:
		return kindFloat, schema.Float64, true
	case arrow.BOOL:
		return kindBool, schema.Bool, true
	case arrow.LIST, arrow.LARGE_LIST:
		elem := t.(arrow.ListLikeType).Elem()
		k, d, ok := classify(elem)
		switch {
		case !ok:
			return 0, "", false
		case k == kindInt:
			return kindIntList, d, true
		case k == kindFloat:
			return kindFloatList, d, true
		}
	}
	return 0, "", false
}

func (inf *inferrer) excluded(name string) bool {
	for _, e := range inf.opt.Exclude {
		if e == name {
			inf.seenExcluded[name] = true
			return true
		}
	}
	return false
}

func (inf *inferrer) readFile(path string) (err error) {
	// arrow-go can panic on corrupt input; report it as an error instead.
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("loader: infer schema: %s: corrupt or unreadable Parquet file: %v", path, r)
		}
	}()
	rdr, err := file.OpenParquetFile(path, false)
	if err != nil {
		return fmt.Errorf("loader: infer schema: %s: %w", path, err)
	}
	defer rdr.Close()
	mem := memory.DefaultAllocator
	fr, err := pqarrow.NewFileReader(rdr, pqarrow.ArrowReadProperties{BatchSize: 1 << 16}, mem)
	if err != nil {
		return fmt.Errorf("loader: infer schema: %s: %w", path, err)
	}
	sc, err := fr.Schema()
	if err != nil {
		return fmt.Errorf("loader: infer schema: %s: %w", path, err)
	}
	first := !inf.readOne
	inf.readOne = true
	present := map[string]bool{}
	for i, field := range sc.Fields() {
		if inf.excluded(field.Name) {
			continue
		}
		present[field.Name] = true
		c := inf.stats[field.Name]
		if c == nil {
			if !first {
				return fmt.Errorf("loader: infer schema: %s: column %q is not in the first file", path, field.Name)
			}
			kind, dtype, ok := classify(field.Type)
			if !ok {
				return fmt.Errorf("loader: infer schema: %s: column %q has type %s, which mtlrank cannot use as a feature "+
					"(encode strings with preprocess/Categorify, cast unsigned integers to signed ones, or list the column in InferOptions.Exclude)",
					path, field.Name, field.Type)
			}
			c = &colStats{name: field.Name, kind: kind, dtype: dtype, typ: field.Type}
			inf.stats[field.Name] = c
			inf.order = append(inf.order, field.Name)
		} else if !arrow.TypeEqual(c.typ, field.Type) {
			return fmt.Errorf("loader: infer schema: %s: column %q has type %s, but %s in the first file", path, field.Name, field.Type, c.typ)
		}
		if i >= len(fr.Manifest.Fields) {
			return fmt.Errorf("loader: infer schema: %s: column %q is missing from the Parquet schema manifest", path, field.Name)
		}
		leaf := leafIndex(&fr.Manifest.Fields[i])
		if leaf < 0 {
			return fmt.Errorf("loader: infer schema: %s: column %q has no leaf column", path, field.Name)
		}
		if err := inf.scanColumn(fr, rdr.MetaData(), c, leaf); err != nil {
			return fmt.Errorf("loader: infer schema: %s: column %q: %w", path, field.Name, err)
		}
	}
	for _, name := range inf.order {
		if !present[name] {
			return fmt.Errorf("loader: infer schema: %s: column %q of the first file is missing", path, name)
		}
	}
	return nil
}

func leafIndex(f *pqarrow.SchemaField) int {
	for !f.IsLeaf() {
		if len(f.Children) != 1 {
			return -1
		}
		f = &f.Children[0]
	}
	return f.ColIndex
}

// scanColumn merges one file's statistics for a column into c, reading the
// values of row groups whose statistics are missing (and of lists).
func (inf *inferrer) scanColumn(fr *pqarrow.FileReader, md *metadata.FileMetaData, c *colStats, leaf int) error {
	for rg := 0; rg < md.NumRowGroups(); rg++ {
		if c.kind != kindIntList && c.kind != kindFloatList && c.kind != kindBool {
			done, err := inf.fromStatistics(md, c, rg, leaf)
			if err != nil {
				return err
			}
			if done {
				continue
			}
		}
		if err := inf.scanRowGroup(fr, c, rg, leaf); err != nil {
			return fmt.Errorf("row group %d: %w", rg, err)
		}
	}
	return nil
}

// fromStatistics uses the row group's min/max statistics; it returns false
// when they are absent and the values must be scanned.
func (inf *inferrer) fromStatistics(md *metadata.FileMetaData, c *colStats, rg, leaf int) (bool, error) {
	cc, err := md.RowGroup(rg).ColumnChunk(leaf)
	if err != nil {
		return false, err
	}
	st, err := cc.Statistics()
	if err != nil || st == nil {
		return false, nil // no usable statistics: scan instead
	}
	if !st.HasMinMax() {
		// All values null: nothing to learn. Otherwise scan.
		return st.HasNullCount() && st.NullCount() == md.RowGroup(rg).NumRows(), nil
	}
	switch s := st.(type) {
	case *metadata.Int32Statistics:
		c.addInt(int64(s.Min()), int64(s.Max()))
	case *metadata.Int64Statistics:
		c.addInt(s.Min(), s.Max())
	case *metadata.Float32Statistics:
		lo, hi := float64(s.Min()), float64(s.Max())
		if math.IsNaN(lo) || math.IsNaN(hi) {
			return false, nil
		}
		c.addFloat(lo, hi)
	case *metadata.Float64Statistics:
		if math.IsNaN(s.Min()) || math.IsNaN(s.Max()) {
			return false, nil
		}
		c.addFloat(s.Min(), s.Max())
	default:
		return false, nil
	}
	return true, nil
}

func (inf *inferrer) scanRowGroup(fr *pqarrow.FileReader, c *colStats, rg, leaf int) error {
	inf.scans++
	tbl, err := fr.ReadRowGroups(context.Background(), []int{leaf}, []int{rg})
	if err != nil {
		return err
	}
	defer tbl.Release()
	if tbl.NumCols() != 1 {
		return fmt.Errorf("read %d columns, want 1", tbl.NumCols())
	}
	for _, chunk := range tbl.Column(0).Data().Chunks() {
		if err := c.scanArray(chunk); err != nil {
			return err
		}
	}
	return nil
}

func (c *colStats) scanArray(arr arrow.Array) error {
	switch a := arr.(type) {
	case *array.List:
		return c.scanList(a, a.ListValues())
	case *array.LargeList:
		return c.scanList(a, a.ListValues())
	}
	lo, hi, ok, err := valueRange(arr, 0, arr.Len())
	if err != nil {
		return err
	}
	if ok {
		c.addRange(lo, hi)
	}
	return nil
}

func (c *colStats) addRange(lo, hi float64) {
	if c.kind == kindInt || c.kind == kindIntList || c.kind == kindBool {
		c.addInt(int64(lo), int64(hi))
	} else {
		c.addFloat(lo, hi)
	}
}

type offsetsArray interface {
	arrow.Array
	ValueOffsets(i int) (start, end int64)
}

func (c *colStats) scanList(a offsetsArray, values arrow.Array) error {
	for i := 0; i < a.Len(); i++ {
		if a.IsNull(i) {
			c.addLen(0)
			continue
		}
		start, end := a.ValueOffsets(i)
		c.addLen(end - start)
		lo, hi, ok, err := valueRange(values, int(start), int(end))
		if err != nil {
			return err
		}
		if ok {
			c.addRange(lo, hi)
		}
	}
	return nil
}

// valueRange returns the min and max of the non-null, non-NaN values of
// arr[from:to]. Integers up to 2^53 are exact in float64, which covers any
// id an embedding table can have; larger ones are checked separately.
func valueRange(arr arrow.Array, from, to int) (lo, hi float64, ok bool, err error) {
	lo, hi = math.Inf(1), math.Inf(-1)
	visit := func(i int, v float64) {
		if arr.IsNull(i) || math.IsNaN(v) {
			return
		}
		lo, hi, ok = math.Min(lo, v), math.Max(hi, v), true
	}
	switch a := arr.(type) {
	case *array.Int8:
		for i := from; i < to; i++ {
			visit(i, float64(a.Value(i)))
		}
	case *array.Int16:
		for i := from; i < to; i++ {
			visit(i, float64(a.Value(i)))
		}
	case *array.Int32:
		for i := from; i < to; i++ {
			visit(i, float64(a.Value(i)))
		}
	case *array.Int64:
		for i := from; i < to; i++ {
			v := a.Value(i)
			if !a.IsNull(i) && (v > 1<<53 || v < -(1<<53)) {
				return 0, 0, false, fmt.Errorf("value %d at row %d is beyond 2^53", v, i)
			}
			visit(i, float64(v))
		}
	case *array.Float32:
		for i := from; i < to; i++ {
			visit(i, float64(a.Value(i)))
		}
	case *array.Float64:
		for i := from; i < to; i++ {
			visit(i, a.Value(i))
		}
	case *array.Boolean:
		for i := from; i < to; i++ {
			v := 0.0
			if a.Value(i) {
				v = 1
			}
			visit(i, v)
		}
	default:
		return 0, 0, false, fmt.Errorf("unexpected array type %s", arr.DataType())
	}
	return lo, hi, ok, nil
}

func (inf *inferrer) build() (*schema.Schema, error) {
	for _, name := range inf.opt.Exclude {
		if !inf.seenExcluded[name] {
			return nil, fmt.Errorf("loader: infer schema: InferOptions.Exclude names %q, which is not a column", name)
		}
	}
	for name := range inf.opt.Targets {
		if inf.stats[name] == nil {
			return nil, fmt.Errorf("loader: infer schema: InferOptions.Targets names %q, which is not a column (or is excluded)", name)
		}
	}
	continuous := map[string]bool{}
	for _, name := range inf.opt.Continuous {
		c := inf.stats[name]
		if c == nil {
			return nil, fmt.Errorf("loader: infer schema: InferOptions.Continuous names %q, which is not a column (or is excluded)", name)
		}
		if c.kind != kindInt && c.kind != kindIntList && c.kind != kindFloat && c.kind != kindFloatList {
			return nil, fmt.Errorf("loader: infer schema: InferOptions.Continuous names %q, which is not numeric", name)
		}
		continuous[name] = true
	}
	s := &schema.Schema{}
	var errs []error
	for _, name := range inf.order {
		c := inf.stats[name]
		f := &schema.Feature{Name: name, DType: c.dtype}
		isList := c.kind == kindIntList || c.kind == kindFloatList
		if isList {
			vc := schema.ValueCount{}
			if c.hasLen {
				vc = schema.ValueCount{Min: c.minLen, Max: c.maxLen}
			}
			f.ValueCount = &vc
		}
		lo, hi := c.minF, c.maxF
		if c.kind == kindInt || c.kind == kindIntList || c.kind == kindBool {
			lo, hi = float64(c.minI), float64(c.maxI)
		}
		floatDomain := func() {
			if c.hasVal {
				f.FloatDomain = &schema.FloatDomain{Min: lo, Max: hi}
			}
		}
		if tag, ok := inf.opt.Targets[name]; ok {
			if isList {
				errs = append(errs, fmt.Errorf("loader: infer schema: target column %q is a list", name))
				continue
			}
			switch tag {
			case schema.TagBinaryClassification, schema.TagBinary:
				if c.hasVal && (lo < 0 || hi > 1) {
					errs = append(errs, fmt.Errorf("loader: infer schema: binary target %q has values in [%g, %g], want 0 or 1", name, lo, hi))
					continue
				}
				f.Tags = []schema.Tag{schema.TagBinaryClassification, schema.TagTarget}
				f.IntDomain = &schema.IntDomain{Min: 0, Max: 1}
			case schema.TagRegression:
				if c.kind == kindBool {
					errs = append(errs, fmt.Errorf("loader: infer schema: regression target %q is boolean", name))
					continue
				}
				f.Tags = []schema.Tag{schema.TagRegression, schema.TagTarget}
				floatDomain()
			default:
				errs = append(errs, fmt.Errorf("loader: infer schema: InferOptions.Targets[%q] = %q: want %q, %q or %q",
					name, tag, schema.TagBinaryClassification, schema.TagBinary, schema.TagRegression))
				continue
			}
			s.Features = append(s.Features, f)
			continue
		}
		switch {
		case c.kind == kindBool:
			errs = append(errs, fmt.Errorf("loader: infer schema: column %q is boolean: only binary targets may be (name it in InferOptions.Targets, cast it, or exclude it)", name))
			continue
		case continuous[name] || c.kind == kindFloat || c.kind == kindFloatList:
			f.Tags = []schema.Tag{schema.TagContinuous}
			floatDomain()
		default: // integer ids
			if c.hasVal && c.minI < 0 {
				errs = append(errs, fmt.Errorf("loader: infer schema: integer column %q has negative values (min %d): categorical ids must be >= 0 "+
					"(encode it first, or name it in InferOptions.Continuous)", name, c.minI))
				continue
			}
			f.Tags = []schema.Tag{schema.TagCategorical}
			f.IntDomain = &schema.IntDomain{Name: name, Min: 0, Max: c.maxI, IsCategorical: true}
		}
		if isList {
			f.Tags = append(f.Tags, schema.TagList)
		}
		s.Features = append(s.Features, f)
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	if err := s.Validate(); err != nil {
		return nil, fmt.Errorf("loader: infer schema: the inferred schema is invalid: %w", err)
	}
	return s, nil
}
