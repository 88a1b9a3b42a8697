package loader

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"testing"
	"time"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/apache/arrow-go/v18/parquet"
	"github.com/apache/arrow-go/v18/parquet/pqarrow"
	"github.com/stretchr/testify/require"

	"github.com/mtlrank/mtlrank/schema"
)

// testSchema covers every column shape the loader handles: int32 and int64
// ids, a list of ids, a continuous scalar and list, and a binary target. rid
// is a unique row id (the row's index in the whole dataset) so that tests
// can tell rows apart after shuffling.
func testSchema() *schema.Schema {
	return &schema.Schema{Features: []*schema.Feature{
		{Name: "rid", DType: schema.Int64, Tags: []schema.Tag{schema.TagCategorical},
			IntDomain: &schema.IntDomain{Max: 1 << 40}},
		{Name: "user_id", DType: schema.Int32, Tags: []schema.Tag{schema.TagUserID},
			IntDomain: &schema.IntDomain{Max: 99}},
		{Name: "tags", DType: schema.Int32, Tags: []schema.Tag{schema.TagCategorical, schema.TagList},
			IntDomain: &schema.IntDomain{Max: 9}, ValueCount: &schema.ValueCount{Min: 0, Max: 3}},
		{Name: "price", DType: schema.Float32, Tags: []schema.Tag{schema.TagContinuous}},
		{Name: "hist", DType: schema.Float32, Tags: []schema.Tag{schema.TagContinuous, schema.TagList}},
		{Name: "click", DType: schema.Float32, Tags: []schema.Tag{schema.TagBinaryClassification}},
	}}
}

// expected values of row r (dataset-wide index), independent of the loader.
func expUser(r int64) int32 { return int32((r * 7) % 100) }
func expTags(r int64) []int32 {
	n := int(r % 4) // 0..3 elements, including empty lists
	out := make([]int32, n)
	for i := range out {
		out[i] = int32((r + int64(i)) % 10)
	}
	return out
}
func expPrice(r int64) float32 { return float32(r) * 0.5 }
func expHist(r int64) []float32 {
	n := int((r + 1) % 3)
	out := make([]float32, n)
	for i := range out {
		out[i] = float32(r) + float32(i)/4
	}
	return out
}
func expClick(r int64) float32 { return float32(r % 2) }

// testCols builds rows [from, from+n) of the test schema.
func testCols(from int64, n int) map[string]any {
	rid := make([]int64, n)
	user := make([]int32, n)
	tags := make([][]int32, n)
	price := make([]float32, n)
	hist := make([][]float32, n)
	click := make([]float32, n)
	for i := 0; i < n; i++ {
		r := from + int64(i)
		rid[i], user[i], tags[i], price[i], hist[i], click[i] = r, expUser(r), expTags(r), expPrice(r), expHist(r), expClick(r)
	}
	return map[string]any{"rid": rid, "user_id": user, "tags": tags, "price": price, "hist": hist, "click": click}
}

// writeTestDataset writes files with the given row counts (rows numbered
// consecutively across files) into a new folder.
func writeTestDataset(t testing.TB, fileRows []int, rowGroupRows int) string {
	t.Helper()
	dir := t.TempDir()
	var from int64
	for i, n := range fileRows {
		p := filepath.Join(dir, fmt.Sprintf("part_%03d.parquet", i))
		require.NoError(t, WriteParquet(p, testSchema(), testCols(from, n), rowGroupRows))
		from += int64(n)
	}
	return dir
}

// rowsOf checks every column of b against the expected values of its rid and
// returns the rids.
func rowsOf(t testing.TB, b *Batch) []int64 {
	t.Helper()
	rid := b.Column("rid")
	require.NotNil(t, rid)
	require.Len(t, rid.I64, b.Rows)
	u, tg, pr, hs, cl := b.Column("user_id"), b.Column("tags"), b.Column("price"), b.Column("hist"), b.Column("click")
	require.Len(t, u.I32, b.Rows)
	require.Len(t, pr.F32, b.Rows)
	require.Len(t, cl.F32, b.Rows)
	require.Len(t, tg.Offsets, b.Rows+1)
	require.Len(t, hs.Offsets, b.Rows+1)
	require.Equal(t, int32(0), tg.Offsets[0])
	require.Equal(t, int32(0), hs.Offsets[0])
	require.Len(t, tg.I32, int(tg.Offsets[b.Rows]))
	require.Len(t, hs.F32, int(hs.Offsets[b.Rows]))
	for i, r := range rid.I64 {
		if u.I32[i] != expUser(r) || pr.F32[i] != expPrice(r) || cl.F32[i] != expClick(r) {
			require.Failf(t, "bad row", "row %d (rid %d): user %d price %v click %v", i, r, u.I32[i], pr.F32[i], cl.F32[i])
		}
		require.NotNil(t, tg.I32, "an empty list column still has a non-nil I32")
		require.NotNil(t, hs.F32, "an empty list column still has a non-nil F32")
		require.Equal(t, fmt.Sprint(expTags(r)), fmt.Sprint(tg.I32[tg.Offsets[i]:tg.Offsets[i+1]]), "tags of rid %d", r)
		require.Equal(t, fmt.Sprint(expHist(r)), fmt.Sprint(hs.F32[hs.Offsets[i]:hs.Offsets[i+1]]), "hist of rid %d", r)
	}
	return append([]int64(nil), rid.I64...)
}

// readAll runs one epoch and returns the batch sizes and rids in order.
func readAll(t testing.TB, d *Dataset, epoch int) (sizes []int, rids []int64) {
	t.Helper()
	it := d.Epoch(context.Background(), epoch)
	defer it.Close()
	for {
		b, err := it.Next()
		if errors.Is(err, io.EOF) {
			return sizes, rids
		}
		require.NoError(t, err)
		sizes = append(sizes, b.Rows)
		rids = append(rids, rowsOf(t, b)...)
		b.Release()
	}
}

// drain runs an epoch to its end and returns the first error (nil at EOF).
func drain(d *Dataset) error {
	it := d.Epoch(context.Background(), 0)
	defer it.Close()
	for {
		b, err := it.Next()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		b.Release()
	}
}

// writeArrow writes arbitrary Arrow columns with pqarrow directly, for files
// the Writer refuses to produce (strings, nulls, odd types).
func writeArrow(t testing.TB, path string, fields []arrow.Field, cols []arrow.Array, rowGroupRows int64) {
	t.Helper()
	sc := arrow.NewSchema(fields, nil)
	rec := arrowRecord(sc, cols)
	defer rec.Release()
	f, err := os.Create(path)
	require.NoError(t, err)
	props := parquet.NewWriterProperties(parquet.WithMaxRowGroupLength(rowGroupRows), parquet.WithDictionaryDefault(false))
	w, err := pqarrow.NewFileWriter(sc, f, props, pqarrow.DefaultWriterProps())
	require.NoError(t, err)
	require.NoError(t, w.Write(rec))
	require.NoError(t, w.Close())
}

func arrowRecord(sc *arrow.Schema, cols []arrow.Array) arrow.RecordBatch {
	return array.NewRecordBatch(sc, cols, -1)
}

func checkedAlloc(t testing.TB) *memory.CheckedAllocator {
	return memory.NewCheckedAllocator(memory.NewGoAllocator())
}

// assertNoLeak checks that every Arrow byte went back to mem. Buffers that
// arrow-go's reader pools hold are released by finalizers, so it collects
// garbage first.
func assertNoLeak(t *testing.T, mem *memory.CheckedAllocator) {
	t.Helper()
	for i := 0; i < 20 && mem.CurrentAlloc() != 0; i++ {
		runtime.GC()
		time.Sleep(5 * time.Millisecond)
	}
	mem.AssertSize(t, 0)
}

// waitGoroutines waits for the goroutine count to fall back to want.
func waitGoroutines(t *testing.T, want int) {
	t.Helper()
	n := 0
	for i := 0; i < 200; i++ {
		n = runtime.NumGoroutine()
		if n <= want {
			return
		}
		time.Sleep(5 * time.Millisecond)
	}
	require.LessOrEqual(t, n, want, "goroutines leaked")
}

// builders makes small Arrow arrays for hand-written test files.
type builders struct{ mem memory.Allocator }

func newBuilders(mem memory.Allocator) builders { return builders{mem} }

func (b builders) int8s(v ...int8) arrow.Array {
	x := array.NewInt8Builder(b.mem)
	defer x.Release()
	x.AppendValues(v, nil)
	return x.NewArray()
}

func (b builders) int16s(v ...int16) arrow.Array {
	x := array.NewInt16Builder(b.mem)
	defer x.Release()
	x.AppendValues(v, nil)
	return x.NewArray()
}

func (b builders) uint16s(v ...uint16) arrow.Array {
	x := array.NewUint16Builder(b.mem)
	defer x.Release()
	x.AppendValues(v, nil)
	return x.NewArray()
}

func (b builders) uint32s(v ...uint32) arrow.Array {
	x := array.NewUint32Builder(b.mem)
	defer x.Release()
	x.AppendValues(v, nil)
	return x.NewArray()
}

func (b builders) int32sNull(v []int32, valid []bool) arrow.Array {
	x := array.NewInt32Builder(b.mem)
	defer x.Release()
	x.AppendValues(v, valid)
	return x.NewArray()
}

func (b builders) int64s(v ...int64) arrow.Array {
	x := array.NewInt64Builder(b.mem)
	defer x.Release()
	x.AppendValues(v, nil)
	return x.NewArray()
}

func (b builders) float32sNull(v []float32, valid []bool) arrow.Array {
	x := array.NewFloat32Builder(b.mem)
	defer x.Release()
	x.AppendValues(v, valid)
	return x.NewArray()
}

func (b builders) float64s(v ...float64) arrow.Array {
	x := array.NewFloat64Builder(b.mem)
	defer x.Release()
	x.AppendValues(v, nil)
	return x.NewArray()
}

func (b builders) bools(v ...bool) arrow.Array {
	x := array.NewBooleanBuilder(b.mem)
	defer x.Release()
	x.AppendValues(v, nil)
	return x.NewArray()
}

func (b builders) strings(v ...string) arrow.Array {
	x := array.NewStringBuilder(b.mem)
	defer x.Release()
	x.AppendValues(v, nil)
	return x.NewArray()
}

func (b builders) listInt64(rows [][]int64) arrow.Array {
	x := array.NewListBuilder(b.mem, arrow.PrimitiveTypes.Int64)
	defer x.Release()
	vb := x.ValueBuilder().(*array.Int64Builder)
	for _, r := range rows {
		x.Append(true)
		vb.AppendValues(r, nil)
	}
	return x.NewArray()
}

func (b builders) listInt16(rows [][]int16) arrow.Array {
	x := array.NewListBuilder(b.mem, arrow.PrimitiveTypes.Int16)
	defer x.Release()
	vb := x.ValueBuilder().(*array.Int16Builder)
	for _, r := range rows {
		x.Append(true)
		vb.AppendValues(r, nil)
	}
	return x.NewArray()
}

// listInt32 builds a list<int32>; a nil row is a null list.
func (b builders) listInt32(rows [][]int32) arrow.Array {
	x := array.NewListBuilder(b.mem, arrow.PrimitiveTypes.Int32)
	defer x.Release()
	vb := x.ValueBuilder().(*array.Int32Builder)
	for _, r := range rows {
		if r == nil {
			x.AppendNull()
			continue
		}
		x.Append(true)
		vb.AppendValues(r, nil)
	}
	return x.NewArray()
}

func (b builders) listFloat32(rows [][]float32) arrow.Array {
	x := array.NewListBuilder(b.mem, arrow.PrimitiveTypes.Float32)
	defer x.Release()
	vb := x.ValueBuilder().(*array.Float32Builder)
	for _, r := range rows {
		x.Append(true)
		vb.AppendValues(r, nil)
	}
	return x.NewArray()
}
