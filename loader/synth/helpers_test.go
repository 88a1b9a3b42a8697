package synth

import (
	"context"
	"math"
	"os"
	"path/filepath"
	"sort"
	"testing"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/apache/arrow-go/v18/parquet/file"
	"github.com/apache/arrow-go/v18/parquet/pqarrow"
	"github.com/stretchr/testify/require"

	"github.com/mtlrank/mtlrank/loader"
)

// pearson is the sample correlation of two equally long series.
func pearson(a, b []float32) float64 {
	n := float64(len(a))
	var ma, mb float64
	for i := range a {
		ma += float64(a[i])
		mb += float64(b[i])
	}
	ma, mb = ma/n, mb/n
	var sab, saa, sbb float64
	for i := range a {
		da, db := float64(a[i])-ma, float64(b[i])-mb
		sab += da * db
		saa += da * da
		sbb += db * db
	}
	return sab / math.Sqrt(saa*sbb)
}

// parquetFile is what a plain arrow-go reader sees in one Parquet file.
type parquetFile struct {
	rowGroups int
	rowGroupN []int64
	cols      map[string]*loader.Column
	rows      int
}

// readParquet reads a file with arrow-go directly (not through the loader),
// converting every column to the Batch layout for comparison.
func readParquet(t *testing.T, path string) parquetFile {
	t.Helper()
	pf, err := file.OpenParquetFile(path, false)
	require.NoError(t, err)
	defer pf.Close()
	out := parquetFile{rowGroups: pf.NumRowGroups(), cols: map[string]*loader.Column{}}
	for i := 0; i < pf.NumRowGroups(); i++ {
		out.rowGroupN = append(out.rowGroupN, pf.RowGroup(i).NumRows())
	}
	fr, err := pqarrow.NewFileReader(pf, pqarrow.ArrowReadProperties{}, memory.DefaultAllocator)
	require.NoError(t, err)
	tbl, err := fr.ReadTable(context.Background())
	require.NoError(t, err)
	defer tbl.Release()
	out.rows = int(tbl.NumRows())
	for i := 0; i < int(tbl.NumCols()); i++ {
		col := tbl.Column(i)
		c := &loader.Column{Name: col.Name()}
		for _, chunk := range col.Data().Chunks() {
			appendArrow(t, c, chunk)
		}
		out.cols[col.Name()] = c
	}
	return out
}

func appendArrow(t *testing.T, c *loader.Column, a arrow.Array) {
	t.Helper()
	if l, ok := a.(*array.List); ok {
		if c.Offsets == nil {
			c.Offsets = []int32{0}
		}
		offs := l.Offsets()
		values := l.ListValues()
		for i := 0; i < l.Len(); i++ {
			start, end := int(offs[i]), int(offs[i+1])
			for j := start; j < end; j++ {
				appendValue(t, c, values, j)
			}
			c.Offsets = append(c.Offsets, int32(lenValues(c)))
		}
		return
	}
	for i := 0; i < a.Len(); i++ {
		appendValue(t, c, a, i)
	}
}

func lenValues(c *loader.Column) int {
	if c.I32 != nil {
		return len(c.I32)
	}
	return len(c.F32)
}

// appendValue converts one value: integer ids to I32 for integer arrays of a
// categorical column... the test decides by the Arrow type: ints -> I32 and
// floats/bools -> F32, matching the generator for the schemas tested.
func appendValue(t *testing.T, c *loader.Column, a arrow.Array, i int) {
	t.Helper()
	require.False(t, a.IsNull(i), "column %s row %d is null", c.Name, i)
	switch v := a.(type) {
	case *array.Int8:
		c.I32 = append(c.I32, int32(v.Value(i)))
	case *array.Int16:
		c.I32 = append(c.I32, int32(v.Value(i)))
	case *array.Int32:
		c.I32 = append(c.I32, v.Value(i))
	case *array.Int64:
		c.I32 = append(c.I32, int32(v.Value(i)))
	case *array.Float32:
		c.F32 = append(c.F32, v.Value(i))
	case *array.Float64:
		c.F32 = append(c.F32, float32(v.Value(i)))
	case *array.Boolean:
		f := float32(0)
		if v.Value(i) {
			f = 1
		}
		c.F32 = append(c.F32, f)
	default:
		t.Fatalf("column %s: unexpected arrow type %s", c.Name, a.DataType())
	}
}

// partFiles lists the *.parquet files of dir, sorted.
func partFiles(t *testing.T, dir string) []string {
	t.Helper()
	m, err := filepath.Glob(filepath.Join(dir, "*.parquet"))
	require.NoError(t, err)
	sort.Strings(m)
	return m
}

// dirNames lists every entry of dir (to spot leftover temporary files).
func dirNames(t *testing.T, dir string) []string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	require.NoError(t, err)
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	sort.Strings(names)
	return names
}

// sliceColumn returns rows [from, to) of a column (values and offsets
// rebased), to compare part of a batch with a file.
func sliceColumn(c *loader.Column, from, to int) *loader.Column {
	out := &loader.Column{Name: c.Name}
	if c.Offsets == nil {
		if c.I32 != nil {
			out.I32 = c.I32[from:to]
		} else {
			out.F32 = c.F32[from:to]
		}
		return out
	}
	lo, hi := c.Offsets[from], c.Offsets[to]
	if c.I32 != nil {
		out.I32 = c.I32[lo:hi]
	} else {
		out.F32 = c.F32[lo:hi]
	}
	out.Offsets = make([]int32, to-from+1)
	for i := range out.Offsets {
		out.Offsets[i] = c.Offsets[from+i] - lo
	}
	return out
}

func sin(x float64) float64  { return math.Sin(x) }
func sqrt(x float64) float64 { return math.Sqrt(x) }
