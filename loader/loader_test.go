package loader

import (
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"sort"
	"testing"
	"unsafe"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/mtlrank/mtlrank/schema"
)

// expectedSizes is the batch-size sequence of an epoch, computed by hand
// from the row count.
func expectedSizes(rows, batch int, dropLast bool) []int {
	var out []int
	for rows >= batch {
		out = append(out, batch)
		rows -= batch
	}
	if rows > 0 && !dropLast {
		out = append(out, rows)
	}
	return out
}

func seq(n int) []int64 {
	out := make([]int64, n)
	for i := range out {
		out[i] = int64(i)
	}
	return out
}

func TestSequentialEpoch(t *testing.T) {
	cases := []struct {
		name      string
		files     []int
		rowGroup  int
		batch     int
		readRows  int
		dropLast  bool
		prefetch  int
		wantFiles int
	}{
		{name: "one file one row group", files: []int{100}, rowGroup: 1000, batch: 10},
		{name: "batch does not divide rows", files: []int{103}, rowGroup: 1000, batch: 10},
		{name: "drop last", files: []int{103}, rowGroup: 1000, batch: 10, dropLast: true},
		{name: "drop last exact", files: []int{100}, rowGroup: 1000, batch: 10, dropLast: true},
		{name: "batch larger than data", files: []int{7}, rowGroup: 1000, batch: 64},
		{name: "batch larger than data drop last", files: []int{7}, rowGroup: 1000, batch: 64, dropLast: true},
		{name: "batches straddle row groups", files: []int{250}, rowGroup: 64, batch: 100},
		{name: "batches straddle files", files: []int{37, 41, 1, 60}, rowGroup: 16, batch: 25},
		{name: "small reads inside row groups", files: []int{300}, rowGroup: 300, batch: 32, readRows: 50},
		{name: "batch of one", files: []int{5, 3}, rowGroup: 2, batch: 1},
		{name: "empty file among others", files: []int{20, 0, 20}, rowGroup: 8, batch: 6},
		{name: "prefetch", files: []int{37, 41, 60}, rowGroup: 16, batch: 25, prefetch: 3},
		{name: "prefetch drop last", files: []int{37, 41, 60}, rowGroup: 16, batch: 25, prefetch: 1, dropLast: true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dir := writeTestDataset(t, tc.files, tc.rowGroup)
			opt := DefaultOptions()
			opt.BatchSize, opt.DropLast, opt.ReadRows, opt.Prefetch = tc.batch, tc.dropLast, tc.readRows, tc.prefetch
			d, err := Open(dir, testSchema(), opt)
			require.NoError(t, err)
			total := 0
			for _, n := range tc.files {
				total += n
			}
			require.Equal(t, int64(total), d.Rows())
			require.Len(t, d.Files(), len(tc.files))
			sizes, rids := readAll(t, d, 0)
			want := expectedSizes(total, tc.batch, tc.dropLast)
			assert.Equal(t, want, sizes)
			n := 0
			for _, s := range want {
				n += s
			}
			assert.Equal(t, seq(total)[:n], append([]int64{}, rids...), "rows in file order")
		})
	}
}

// TestZeroCopy checks that batches cut from one read point into the Arrow
// buffers of the record: the slice's data pointer is the buffer's address
// plus the batch's offset.
func TestZeroCopy(t *testing.T) {
	dir := writeTestDataset(t, []int{1000}, 1000)
	for _, fill := range []bool{false, true} {
		opt := DefaultOptions()
		opt.BatchSize, opt.Prefetch = 100, 0
		if fill {
			v := float32(-1)
			opt.FillNaN = &v
		}
		d, err := Open(dir, testSchema(), opt)
		require.NoError(t, err)
		it := d.Epoch(context.Background(), 0)
		for k := 0; ; k++ {
			b, err := it.Next()
			if errors.Is(err, io.EOF) {
				break
			}
			require.NoError(t, err)
			rec := it.p.cur.rec // the record this batch was cut from
			require.NotNil(t, rec)
			off := k * 100
			for i, name := range d.Columns() {
				col := b.Column(name)
				data := rec.Column(i).Data()
				if d.specs[i].list {
					child := data.Children()[0]
					offs := arrow.Int32Traits.CastFromBytes(data.Buffers()[1].Bytes())[data.Offset():]
					buf := child.Buffers()[1].Bytes()
					first := int(offs[off]) + child.Offset()
					switch {
					case col.I32 != nil && len(col.I32) > 0:
						assert.Equal(t, unsafe.Pointer(&buf[first*4]), unsafe.Pointer(&col.I32[0]), "%s batch %d", name, k)
					case col.F32 != nil && len(col.F32) > 0:
						assert.Equal(t, unsafe.Pointer(&buf[first*4]), unsafe.Pointer(&col.F32[0]), "%s batch %d", name, k)
					}
					continue
				}
				buf := data.Buffers()[1].Bytes()
				switch {
				case col.I32 != nil:
					assert.Equal(t, unsafe.Pointer(&buf[(data.Offset()+off)*4]), unsafe.Pointer(&col.I32[0]), "%s batch %d", name, k)
				case col.I64 != nil:
					assert.Equal(t, unsafe.Pointer(&buf[(data.Offset()+off)*8]), unsafe.Pointer(&col.I64[0]), "%s batch %d", name, k)
				case col.F32 != nil:
					assert.Equal(t, unsafe.Pointer(&buf[(data.Offset()+off)*4]), unsafe.Pointer(&col.F32[0]), "%s batch %d", name, k)
				}
			}
			// Views are capacity-limited: appending must not write into the
			// next batch's rows.
			assert.Equal(t, len(b.Column("user_id").I32), cap(b.Column("user_id").I32))
			rowsOf(t, b)
			b.Release()
		}
		require.NoError(t, it.Close())
	}
}

// TestCopyPathsDoNotAlias checks that batches gathered across reads or by the
// shuffle buffer own their memory: they stay intact after the records they
// came from are released and later batches are produced.
func TestCopyPathsDoNotAlias(t *testing.T) {
	dir := writeTestDataset(t, []int{90, 70}, 20)
	for _, shuffle := range []bool{false, true} {
		opt := DefaultOptions()
		opt.BatchSize, opt.Prefetch, opt.Shuffle, opt.ShuffleBuffer, opt.Seed = 30, 0, shuffle, 50, 3
		d, err := Open(dir, testSchema(), opt)
		require.NoError(t, err)
		it := d.Epoch(context.Background(), 0)
		var held []*Batch
		var want [][]int64
		for {
			b, err := it.Next()
			if errors.Is(err, io.EOF) {
				break
			}
			require.NoError(t, err)
			held = append(held, b)
			want = append(want, rowsOf(t, b))
		}
		require.NoError(t, it.Close())
		runtime.GC()
		for i, b := range held {
			assert.Equal(t, want[i], rowsOf(t, b), "batch %d changed after later batches", i)
			b.Release()
		}
	}
}

func TestShuffle(t *testing.T) {
	const rows = 1000
	dir := writeTestDataset(t, []int{300, 250, 450}, 64)
	cases := []struct {
		name    string
		buffer  int
		batch   int
		prefech int
	}{
		{name: "within row groups", buffer: 0, batch: 32},
		{name: "buffer 200", buffer: 200, batch: 32},
		{name: "buffer larger than data", buffer: 5000, batch: 100},
		{name: "no row shuffle", buffer: NoRowShuffle, batch: 32},
		{name: "prefetch", buffer: 300, batch: 50, prefech: 2},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			open := func(seed int64) *Dataset {
				opt := DefaultOptions()
				opt.BatchSize, opt.Shuffle, opt.Seed, opt.ShuffleBuffer, opt.Prefetch = tc.batch, true, seed, tc.buffer, tc.prefech
				d, err := Open(dir, testSchema(), opt)
				require.NoError(t, err)
				return d
			}
			d := open(42)
			sizes0, e0 := readAll(t, d, 0)
			assert.Equal(t, expectedSizes(rows, tc.batch, false), sizes0)
			// A permutation of all rows.
			sorted := slices.Clone(e0)
			slices.Sort(sorted)
			require.Equal(t, seq(rows), sorted)
			assert.NotEqual(t, seq(rows), e0, "epoch is not shuffled")
			// Deterministic per (seed, epoch), also through a new Dataset.
			_, again := readAll(t, open(42), 0)
			assert.Equal(t, e0, again)
			// Different across epochs and seeds.
			_, e1 := readAll(t, d, 1)
			assert.NotEqual(t, e0, e1)
			_, other := readAll(t, open(43), 0)
			assert.NotEqual(t, e0, other)

			if tc.buffer == NoRowShuffle {
				// Rows inside each row group keep their order: every run of
				// a batch is consecutive within a 64-row group.
				assert.Equal(t, 0, countInversionsWithinGroups(e0, dir), "rows reordered within a row group")
			}
			if tc.buffer == 0 {
				// Shuffling within a read keeps each batch's rows from few
				// row groups, but rows of one row group are reordered.
				assert.NotZero(t, countInversionsWithinGroups(e0, dir))
			}
		})
	}
}

// countInversionsWithinGroups counts pairs of consecutive rows of the same
// (file, 64-row group) that appear in decreasing order.
func countInversionsWithinGroups(rids []int64, dir string) int {
	// files of 300, 250, 450 rows with groups of 64
	starts := []int64{0, 300, 550, 1000}
	group := func(r int64) [2]int64 {
		for f := 0; f < 3; f++ {
			if r < starts[f+1] {
				return [2]int64{int64(f), (r - starts[f]) / 64}
			}
		}
		return [2]int64{-1, -1}
	}
	last := map[[2]int64]int64{}
	inv := 0
	for _, r := range rids {
		g := group(r)
		if prev, ok := last[g]; ok && r < prev {
			inv++
		}
		last[g] = r
	}
	return inv
}

// TestShuffleMixes checks that a shuffle buffer larger than a row group mixes
// rows of several row groups within a batch, and file order changes.
func TestShuffleMixes(t *testing.T) {
	dir := writeTestDataset(t, []int{500, 500}, 50)
	opt := DefaultOptions()
	opt.BatchSize, opt.Shuffle, opt.Seed, opt.ShuffleBuffer = 100, true, 1, 400
	d, err := Open(dir, testSchema(), opt)
	require.NoError(t, err)
	it := d.Epoch(context.Background(), 0)
	defer it.Close()
	b, err := it.Next()
	require.NoError(t, err)
	groups := map[int64]bool{}
	for _, r := range rowsOf(t, b) {
		groups[r/50] = true
	}
	b.Release()
	assert.GreaterOrEqual(t, len(groups), 5, "a batch of a 400-row buffer should draw from >= 5 row groups of 50")
}

func TestColumnsSubset(t *testing.T) {
	dir := writeTestDataset(t, []int{50}, 20)
	opt := DefaultOptions()
	opt.Columns = []string{"price", "rid"}
	d, err := Open(dir, testSchema(), opt)
	require.NoError(t, err)
	assert.Equal(t, []string{"rid", "price"}, d.Columns(), "schema order")
	it := d.Epoch(context.Background(), 0)
	defer it.Close()
	b, err := it.Next()
	require.NoError(t, err)
	defer b.Release()
	assert.Len(t, b.Columns, 2)
	assert.Nil(t, b.Column("user_id"))
	for i, r := range b.Column("rid").I64 {
		assert.Equal(t, expPrice(r), b.Column("price").F32[i])
	}

	opt.Columns = []string{"nope"}
	_, err = Open(dir, testSchema(), opt)
	assert.ErrorContains(t, err, `"nope"`)
	opt.Columns = []string{"rid", "rid"}
	_, err = Open(dir, testSchema(), opt)
	assert.ErrorContains(t, err, "twice")
}

func TestOptionsValidation(t *testing.T) {
	dir := writeTestDataset(t, []int{5}, 5)
	cases := []struct {
		name string
		mod  func(*Options)
		want string
	}{
		{"batch size", func(o *Options) { o.BatchSize = 0 }, "BatchSize"},
		{"prefetch", func(o *Options) { o.Prefetch = -1 }, "Prefetch"},
		{"shuffle buffer", func(o *Options) { o.ShuffleBuffer = -2 }, "ShuffleBuffer"},
		{"read rows", func(o *Options) { o.ReadRows = -1 }, "ReadRows"},
		{"read rows too large", func(o *Options) { o.ReadRows = 1 << 31 }, "ReadRows"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			opt := DefaultOptions()
			tc.mod(&opt)
			_, err := Open(dir, testSchema(), opt)
			assert.ErrorContains(t, err, tc.want)
		})
	}
	_, err := Open(dir, nil, DefaultOptions())
	assert.ErrorContains(t, err, "nil schema")
}

func TestFolderListing(t *testing.T) {
	dir := writeTestDataset(t, []int{3, 4}, 10)
	// Files that are not data: hidden, Spark markers, other suffixes.
	for _, name := range []string{".part_000.parquet.tmp-1", "_SUCCESS", "_common_metadata.parquet", "notes.txt", ".hidden.parquet"} {
		require.NoError(t, os.WriteFile(filepath.Join(dir, name), []byte("junk"), 0o644))
	}
	require.NoError(t, os.Mkdir(filepath.Join(dir, "sub.parquet"), 0o755))
	d, err := Open(dir, testSchema(), DefaultOptions())
	require.NoError(t, err)
	assert.Equal(t, []string{filepath.Join(dir, "part_000.parquet"), filepath.Join(dir, "part_001.parquet")}, d.Files())
	assert.Equal(t, int64(7), d.Rows())
	assert.Equal(t, 2, d.RowGroups())

	// A single file path.
	d, err = Open(filepath.Join(dir, "part_001.parquet"), testSchema(), DefaultOptions())
	require.NoError(t, err)
	assert.Equal(t, int64(4), d.Rows())
}

// TestConversions reads every Parquet type the loader converts and checks the
// values against the ones written.
func TestConversions(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "types.parquet")
	mem := checkedAlloc(t)
	b := newBuilders(mem)
	fields := []arrow.Field{
		{Name: "i8", Type: arrow.PrimitiveTypes.Int8},
		{Name: "i16", Type: arrow.PrimitiveTypes.Int16},
		{Name: "u16", Type: arrow.PrimitiveTypes.Uint16},
		{Name: "u32", Type: arrow.PrimitiveTypes.Uint32},
		{Name: "i64", Type: arrow.PrimitiveTypes.Int64},
		{Name: "f64", Type: arrow.PrimitiveTypes.Float64},
		{Name: "flag", Type: arrow.FixedWidthTypes.Boolean},
		{Name: "label", Type: arrow.PrimitiveTypes.Int64},
		{Name: "l64", Type: arrow.ListOf(arrow.PrimitiveTypes.Int64)},
		{Name: "l16", Type: arrow.ListOf(arrow.PrimitiveTypes.Int16)},
	}
	cols := []arrow.Array{
		b.int8s(1, -2, 3), b.int16s(300, 4, 5), b.uint16s(60000, 1, 2), b.uint32s(4000000000, 0, 7),
		b.int64s(1<<40, 2, 3), b.float64s(0.25, -1.5, 1e10), b.bools(true, false, true), b.int64s(1, 0, 1),
		b.listInt64([][]int64{{1 << 35}, {}, {2, 3}}), b.listInt16([][]int16{{7, 8}, {9}, {}}),
	}
	writeArrow(t, p, fields, cols, 10)
	for _, c := range cols {
		c.Release()
	}
	s := &schema.Schema{Features: []*schema.Feature{
		{Name: "i8", DType: schema.Int8, Tags: []schema.Tag{schema.TagCategorical}},
		{Name: "i16", DType: schema.Int16, Tags: []schema.Tag{schema.TagContinuous}},
		{Name: "u16", DType: schema.Int32, Tags: []schema.Tag{schema.TagCategorical}},
		{Name: "u32", DType: schema.Int64, Tags: []schema.Tag{schema.TagCategorical}},
		{Name: "i64", DType: schema.Int64, Tags: []schema.Tag{schema.TagCategorical}},
		{Name: "f64", DType: schema.Float64, Tags: []schema.Tag{schema.TagContinuous}},
		{Name: "flag", DType: schema.Bool},
		{Name: "label", DType: schema.Int64, Tags: []schema.Tag{schema.TagBinaryClassification}},
		{Name: "l64", DType: schema.Int64, Tags: []schema.Tag{schema.TagCategorical, schema.TagList}},
		{Name: "l16", DType: schema.Int16, Tags: []schema.Tag{schema.TagCategorical, schema.TagList}},
	}}
	opt := DefaultOptions()
	opt.CheckDomains = false // i8 holds a negative id on purpose
	opt.Allocator = mem
	d, err := Open(p, s, opt)
	require.NoError(t, err)
	it := d.Epoch(context.Background(), 0)
	bt, err := it.Next()
	require.NoError(t, err)
	assert.Equal(t, []int32{1, -2, 3}, bt.Column("i8").I32)
	assert.Equal(t, []float32{300, 4, 5}, bt.Column("i16").F32)
	assert.Equal(t, []int32{60000, 1, 2}, bt.Column("u16").I32)
	assert.Equal(t, []int64{4000000000, 0, 7}, bt.Column("u32").I64)
	assert.Equal(t, []int64{1 << 40, 2, 3}, bt.Column("i64").I64)
	assert.Equal(t, []float32{0.25, -1.5, 1e10}, bt.Column("f64").F32)
	assert.Equal(t, []float32{1, 0, 1}, bt.Column("flag").F32)
	assert.Equal(t, []float32{1, 0, 1}, bt.Column("label").F32)
	assert.Equal(t, []int64{1 << 35, 2, 3}, bt.Column("l64").I64)
	assert.Equal(t, []int32{0, 1, 1, 3}, bt.Column("l64").Offsets)
	assert.Equal(t, []int32{7, 8, 9}, bt.Column("l16").I32)
	assert.Equal(t, []int32{0, 2, 3, 3}, bt.Column("l16").Offsets)
	bt.Release()
	_, err = it.Next()
	assert.ErrorIs(t, err, io.EOF)
	require.NoError(t, it.Close())
	assertNoLeak(t, mem)
}

// TestMixedIDWidths: a column stored as int32 in one file and int64 in
// another comes out as I64 from both, so batches that mix the files agree.
func TestMixedIDWidths(t *testing.T) {
	dir := t.TempDir()
	s32 := &schema.Schema{Features: []*schema.Feature{{Name: "id", DType: schema.Int32, Tags: []schema.Tag{schema.TagCategorical}}}}
	s64 := &schema.Schema{Features: []*schema.Feature{{Name: "id", DType: schema.Int64, Tags: []schema.Tag{schema.TagCategorical}}}}
	require.NoError(t, WriteParquet(filepath.Join(dir, "a.parquet"), s32, map[string]any{"id": []int32{1, 2, 3}}, 0))
	require.NoError(t, WriteParquet(filepath.Join(dir, "b.parquet"), s64, map[string]any{"id": []int64{4, 5}}, 0))
	opt := DefaultOptions()
	opt.BatchSize = 5
	d, err := Open(dir, s32, opt)
	require.NoError(t, err)
	it := d.Epoch(context.Background(), 0)
	defer it.Close()
	b, err := it.Next()
	require.NoError(t, err)
	defer b.Release()
	assert.Nil(t, b.Column("id").I32)
	assert.Equal(t, []int64{1, 2, 3, 4, 5}, b.Column("id").I64)
}

func TestFillNaN(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "nan.parquet")
	mem := checkedAlloc(t)
	bl := newBuilders(mem)
	nan := float32(0)
	nan = nan / nan
	fields := []arrow.Field{
		{Name: "x", Type: arrow.PrimitiveTypes.Float32, Nullable: true},
		{Name: "y", Type: arrow.PrimitiveTypes.Float64},
		{Name: "h", Type: arrow.ListOf(arrow.PrimitiveTypes.Float32)},
	}
	cols := []arrow.Array{bl.float32sNull([]float32{1, 0, nan, 4}, []bool{true, false, true, true}),
		bl.float64s(1, 1e300, 2, 3), bl.listFloat32([][]float32{{1, nan}, {}, {2}, {3}})}
	writeArrow(t, p, fields, cols, 10)
	for _, c := range cols {
		c.Release()
	}
	s := &schema.Schema{Features: []*schema.Feature{
		{Name: "x", DType: schema.Float32, Tags: []schema.Tag{schema.TagContinuous}},
		{Name: "y", DType: schema.Float64, Tags: []schema.Tag{schema.TagContinuous}},
		{Name: "h", DType: schema.Float32, Tags: []schema.Tag{schema.TagContinuous, schema.TagList}},
	}}
	fill := float32(-7)
	opt := DefaultOptions()
	opt.FillNaN = &fill
	opt.Allocator = mem
	d, err := Open(p, s, opt)
	require.NoError(t, err)
	it := d.Epoch(context.Background(), 0)
	b, err := it.Next()
	require.NoError(t, err)
	assert.Equal(t, []float32{1, -7, -7, 4}, b.Column("x").F32)
	assert.Equal(t, []float32{1, -7, 2, 3}, b.Column("y").F32, "1e300 overflows float32 to +Inf")
	assert.Equal(t, []float32{1, -7, 2, 3}, b.Column("h").F32)
	b.Release()
	require.NoError(t, it.Close())
	assertNoLeak(t, mem)

	// Without FillNaN each is an error naming column and row.
	opt.FillNaN = nil
	d, err = Open(p, s, opt)
	require.NoError(t, err)
	err = drain(d)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "nan.parquet")
	assert.Contains(t, err.Error(), `column "x"`)
	assert.Contains(t, err.Error(), "row 1")
	assert.Contains(t, err.Error(), "null")
	assertNoLeak(t, mem)
}

func TestPrefetchStopsOnClose(t *testing.T) {
	dir := writeTestDataset(t, []int{2000}, 100)
	before := runtime.NumGoroutine()
	mem := checkedAlloc(t)
	opt := DefaultOptions()
	opt.BatchSize, opt.Prefetch, opt.Allocator = 10, 4, mem
	d, err := Open(dir, testSchema(), opt)
	require.NoError(t, err)

	// Early close with the queue full.
	it := d.Epoch(context.Background(), 0)
	b, err := it.Next()
	require.NoError(t, err)
	require.NoError(t, it.Close())
	require.NoError(t, it.Close(), "Close is idempotent")
	_, err = it.Next()
	assert.Error(t, err)
	rowsOf(t, b) // a batch taken before Close stays valid
	b.Release()
	waitGoroutines(t, before)
	assertNoLeak(t, mem)

	// Cancellation stops the goroutine even without Close.
	ctx, cancel := context.WithCancel(context.Background())
	it = d.Epoch(ctx, 0)
	b, err = it.Next()
	require.NoError(t, err)
	b.Release()
	cancel()
	_, err = it.Next()
	assert.ErrorIs(t, err, context.Canceled)
	_, err = it.Next()
	assert.ErrorIs(t, err, context.Canceled, "sticky")
	waitGoroutines(t, before) // the goroutine stops on cancellation, before Close
	require.NoError(t, it.Close())
	waitGoroutines(t, before)
	assertNoLeak(t, mem)

	// A full epoch.
	_, rids := readAll(t, d, 0)
	assert.Len(t, rids, 2000)
	waitGoroutines(t, before)
	assertNoLeak(t, mem)
}

func TestSyncCancel(t *testing.T) {
	dir := writeTestDataset(t, []int{500}, 100)
	mem := checkedAlloc(t)
	opt := DefaultOptions()
	opt.BatchSize, opt.Prefetch, opt.Allocator = 10, 0, mem
	d, err := Open(dir, testSchema(), opt)
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	it := d.Epoch(ctx, 0)
	b, err := it.Next()
	require.NoError(t, err)
	b.Release()
	cancel()
	_, err = it.Next()
	assert.ErrorIs(t, err, context.Canceled)
	require.NoError(t, it.Close())
	assertNoLeak(t, mem)
}

// TestNoLeaks runs full epochs, early closes and errors with a checked
// allocator in every read mode.
func TestNoLeaks(t *testing.T) {
	dir := writeTestDataset(t, []int{130, 70}, 32)
	bad := t.TempDir()
	cols := testCols(0, 100)
	cols["price"].([]float32)[77] = float32(posInf())
	require.NoError(t, WriteParquet(filepath.Join(bad, "a.parquet"), testSchema(), testCols(1000, 50), 16))
	require.NoError(t, WriteParquet(filepath.Join(bad, "b.parquet"), testSchema(), cols, 16))
	modes := []struct {
		name string
		mod  func(*Options)
	}{
		{"sequential", func(o *Options) {}},
		{"prefetch", func(o *Options) { o.Prefetch = 3 }},
		{"shuffle", func(o *Options) { o.Shuffle, o.ShuffleBuffer = true, 50 }},
		{"shuffle prefetch", func(o *Options) { o.Shuffle, o.ShuffleBuffer, o.Prefetch = true, 100, 2 }},
		{"no row shuffle", func(o *Options) { o.Shuffle, o.ShuffleBuffer = true, NoRowShuffle }},
		{"shuffle drop last", func(o *Options) { o.Shuffle, o.ShuffleBuffer, o.DropLast = true, 40, true }},
		{"drop last small reads", func(o *Options) { o.DropLast, o.ReadRows = true, 10 }},
	}
	for _, m := range modes {
		t.Run(m.name, func(t *testing.T) {
			mem := checkedAlloc(t)
			opt := DefaultOptions()
			opt.BatchSize, opt.Prefetch, opt.Allocator = 24, 0, mem
			m.mod(&opt)
			d, err := Open(dir, testSchema(), opt)
			require.NoError(t, err)
			_, rids := readAll(t, d, 0)
			if opt.DropLast {
				require.Len(t, rids, 192)
			} else {
				require.Len(t, rids, 200)
			}
			assertNoLeak(t, mem)

			for _, stop := range []int{0, 1, 5} {
				it := d.Epoch(context.Background(), 1)
				for i := 0; i < stop; i++ {
					b, err := it.Next()
					require.NoError(t, err)
					b.Release()
				}
				require.NoError(t, it.Close())
				assertNoLeak(t, mem)
			}

			d, err = Open(bad, testSchema(), opt)
			require.NoError(t, err)
			err = drain(d)
			require.Error(t, err)
			assert.Contains(t, err.Error(), "b.parquet")
			assert.Contains(t, err.Error(), "row 77")
			assertNoLeak(t, mem)
		})
	}
}

func posInf() float64 { var z float64; return 1 / z }

// TestConcurrentEpochs reads two epochs of one Dataset at the same time from
// two goroutines (run under -race in CI) and checks both against a
// sequential read.
func TestConcurrentEpochs(t *testing.T) {
	dir := writeTestDataset(t, []int{120, 80}, 30)
	opt := DefaultOptions()
	opt.BatchSize, opt.Shuffle, opt.Seed, opt.ShuffleBuffer, opt.Prefetch = 16, true, 9, 50, 2
	d, err := Open(dir, testSchema(), opt)
	require.NoError(t, err)
	_, want0 := readAll(t, d, 0)
	_, want1 := readAll(t, d, 1)
	got := make([][]int64, 2)
	done := make(chan struct{})
	for e := 0; e < 2; e++ {
		go func() {
			defer func() { done <- struct{}{} }()
			it := d.Epoch(context.Background(), e)
			defer it.Close()
			for {
				b, err := it.Next()
				if err != nil {
					return
				}
				got[e] = append(got[e], b.Column("rid").I64...)
				b.Release()
			}
		}()
	}
	<-done
	<-done
	assert.Equal(t, want0, got[0])
	assert.Equal(t, want1, got[1])
}

func TestNilContext(t *testing.T) {
	dir := writeTestDataset(t, []int{10}, 10)
	d, err := Open(dir, testSchema(), DefaultOptions())
	require.NoError(t, err)
	it := d.Epoch(nil, 0) //nolint:staticcheck // SA1012: a nil context is accepted on purpose
	defer it.Close()
	b, err := it.Next()
	require.NoError(t, err)
	b.Release()
}

// TestHugeBatchOnSmallData: a batch size far above the dataset's rows gives
// one batch of every row and allocates for the rows that exist only, not
// for BatchSize rows (the Parquet reader reserves ReadRows values per
// column, and the batch assembly reserves BatchSize row references).
func TestHugeBatchOnSmallData(t *testing.T) {
	dir := writeTestDataset(t, []int{30, 20}, 16)
	for _, shuffle := range []bool{false, true} {
		opt := DefaultOptions()
		opt.BatchSize = 1 << 24 // 16M rows: 128 MiB per int64 column if reserved
		opt.Shuffle, opt.Seed, opt.ShuffleBuffer = shuffle, 3, 1<<24
		d, err := Open(dir, testSchema(), opt)
		require.NoError(t, err)
		runtime.GC()
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		sizes, rids := readAll(t, d, 0)
		runtime.ReadMemStats(&after)
		assert.Equal(t, []int{50}, sizes, "shuffle %v", shuffle)
		assert.ElementsMatch(t, seq(50), rids)
		alloc := after.TotalAlloc - before.TotalAlloc
		assert.Less(t, alloc, uint64(16<<20), "shuffle %v: allocated %d bytes for 50 rows", shuffle, alloc)
	}
}

func TestCountRows(t *testing.T) {
	dir := writeTestDataset(t, []int{30, 20, 7}, 16)
	n, err := CountRows(dir)
	require.NoError(t, err)
	assert.Equal(t, int64(57), n)
	files, err := filepath.Glob(filepath.Join(dir, "*.parquet"))
	require.NoError(t, err)
	sort.Strings(files)
	n, err = CountRows(files[0])
	require.NoError(t, err)
	assert.Equal(t, int64(30), n)

	_, err = CountRows(filepath.Join(dir, "absent"))
	assert.ErrorIs(t, err, os.ErrNotExist)
	_, err = CountRows(t.TempDir())
	assert.ErrorIs(t, err, ErrNoParquetFiles)
	bad := filepath.Join(t.TempDir(), "bad.parquet")
	require.NoError(t, os.WriteFile(bad, []byte("not parquet at all"), 0o644))
	_, err = CountRows(bad)
	assert.ErrorIs(t, err, ErrCorrupt)
	assert.Contains(t, err.Error(), bad)
}
