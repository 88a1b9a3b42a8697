package preprocess

import (
	"context"
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
)

// writeFile writes content to dir/name and returns the path.
func writeFile(t testing.TB, dir, name, content string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	require.NoError(t, os.WriteFile(p, []byte(content), 0o644))
	return p
}

// dataset is a transformed dataset read back: column -> values as float64,
// and the Arrow type of each column.
type dataset struct {
	rows  int
	cols  map[string][]float64
	types map[string]arrow.DataType
	order []string
}

// readDataset reads every part_*.parquet of dir, in name order, independently
// of the package's own reader.
func readDataset(t testing.TB, dir string) dataset {
	t.Helper()
	parts, err := filepath.Glob(filepath.Join(dir, "part_*.parquet"))
	require.NoError(t, err)
	require.NotEmpty(t, parts, "no parts in %s", dir)
	sort.Slice(parts, func(i, j int) bool { return partIndex(parts[i]) < partIndex(parts[j]) })
	ds := dataset{cols: map[string][]float64{}, types: map[string]arrow.DataType{}}
	for _, p := range parts {
		pf, err := file.OpenParquetFile(p, false)
		require.NoError(t, err)
		fr, err := pqarrow.NewFileReader(pf, pqarrow.ArrowReadProperties{}, memory.DefaultAllocator)
		require.NoError(t, err)
		tbl, err := fr.ReadTable(context.Background())
		require.NoError(t, err)
		ds.rows += int(tbl.NumRows())
		for i := 0; i < int(tbl.NumCols()); i++ {
			c := tbl.Column(i)
			name := c.Name()
			if _, ok := ds.types[name]; !ok {
				ds.order = append(ds.order, name)
			}
			ds.types[name] = c.DataType()
			for _, chunk := range c.Data().Chunks() {
				require.Zero(t, chunk.NullN(), "column %s has nulls", name)
				switch a := chunk.(type) {
				case *array.Int32:
					for _, v := range a.Int32Values() {
						ds.cols[name] = append(ds.cols[name], float64(v))
					}
				case *array.Int64:
					for _, v := range a.Int64Values() {
						ds.cols[name] = append(ds.cols[name], float64(v))
					}
				case *array.Float32:
					for _, v := range a.Float32Values() {
						ds.cols[name] = append(ds.cols[name], float64(v))
					}
				default:
					t.Fatalf("column %s: unexpected type %s", name, chunk.DataType())
				}
			}
		}
		tbl.Release()
		require.NoError(t, pf.Close())
	}
	return ds
}

func partIndex(p string) int {
	var n int
	base := filepath.Base(p)
	for _, c := range base[len("part_"):] {
		if c < '0' || c > '9' {
			break
		}
		n = n*10 + int(c-'0')
	}
	return n
}

// parquetColumn is one column of a Parquet file written by tests.
type parquetColumn struct {
	name  string
	typ   arrow.DataType
	vals  []any // nil entries are nulls
	dict  bool  // dictionary-encode a string column
	field *arrow.Field
}

// writeParquet writes cols to path with rowGroup rows per row group.
func writeParquet(t testing.TB, path string, rowGroup int, cols ...parquetColumn) {
	t.Helper()
	mem := memory.DefaultAllocator
	fields := make([]arrow.Field, len(cols))
	arrs := make([]arrow.Array, len(cols))
	n := len(cols[0].vals)
	for i, c := range cols {
		require.Len(t, c.vals, n)
		typ := c.typ
		if c.dict {
			typ = &arrow.DictionaryType{IndexType: arrow.PrimitiveTypes.Int32, ValueType: c.typ}
		}
		fields[i] = arrow.Field{Name: c.name, Type: typ, Nullable: true}
		b := array.NewBuilder(mem, typ)
		for _, v := range c.vals {
			if v == nil {
				b.AppendNull()
				continue
			}
			switch bb := b.(type) {
			case *array.StringBuilder:
				bb.Append(v.(string))
			case *array.BinaryDictionaryBuilder:
				require.NoError(t, bb.AppendString(v.(string)))
			case *array.Int64Builder:
				bb.Append(int64(v.(int)))
			case *array.Int32Builder:
				bb.Append(int32(v.(int)))
			case *array.Int8Builder:
				bb.Append(int8(v.(int)))
			case *array.Float64Builder:
				bb.Append(v.(float64))
			case *array.Float32Builder:
				bb.Append(float32(v.(float64)))
			case *array.BooleanBuilder:
				bb.Append(v.(bool))
			default:
				t.Fatalf("writeParquet: unsupported builder %T", b)
			}
		}
		arrs[i] = b.NewArray()
		b.Release()
	}
	sch := arrow.NewSchema(fields, nil)
	rec := array.NewRecordBatch(sch, arrs, int64(n))
	defer rec.Release()
	for _, a := range arrs {
		a.Release()
	}
	f, err := os.Create(path)
	require.NoError(t, err)
	fw, err := pqarrow.NewFileWriter(sch, f, nil, pqarrow.NewArrowWriterProperties(pqarrow.WithStoreSchema()))
	require.NoError(t, err)
	for off := 0; off < n; off += rowGroup {
		end := min(off+rowGroup, n)
		s := rec.NewSlice(int64(off), int64(end))
		require.NoError(t, fw.Write(s))
		s.Release()
	}
	if n == 0 {
		require.NoError(t, fw.Write(rec))
	}
	require.NoError(t, fw.Close())
}
