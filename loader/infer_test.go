package loader

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/apache/arrow-go/v18/parquet"
	"github.com/apache/arrow-go/v18/parquet/pqarrow"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/mtlrank/mtlrank/schema"
)

// writeParquet writes rows (JSON objects, as arrow's record builder reads
// them) to path in row groups of rowGroup rows.
func writeInferParquet(t *testing.T, path string, sc *arrow.Schema, rowsJSON string, rowGroup int64, stats bool) {
	t.Helper()
	mem := memory.NewCheckedAllocator(memory.NewGoAllocator())
	b := array.NewRecordBuilder(mem, sc)
	var rows []json.RawMessage
	require.NoError(t, json.Unmarshal([]byte(rowsJSON), &rows))
	for _, r := range rows {
		require.NoError(t, b.UnmarshalJSON(r))
	}
	rec := b.NewRecordBatch()
	b.Release()
	tbl := array.NewTableFromRecords(sc, []arrow.RecordBatch{rec})
	rec.Release()
	f, err := os.Create(path)
	require.NoError(t, err)
	props := parquet.NewWriterProperties(parquet.WithStats(stats), parquet.WithAllocator(mem))
	// WriteTable closes the file.
	require.NoError(t, pqarrow.WriteTable(tbl, f, rowGroup, props, pqarrow.DefaultWriterProps()))
	tbl.Release()
	mem.AssertSize(t, 0)
}

var inferSchema = arrow.NewSchema([]arrow.Field{
	{Name: "user_id", Type: arrow.PrimitiveTypes.Int32, Nullable: true},
	{Name: "item", Type: arrow.PrimitiveTypes.Int64, Nullable: true},
	{Name: "small", Type: arrow.PrimitiveTypes.Int8, Nullable: true},
	{Name: "price", Type: arrow.PrimitiveTypes.Float32, Nullable: true},
	{Name: "genres", Type: arrow.ListOf(arrow.PrimitiveTypes.Int32), Nullable: true},
	{Name: "emb", Type: arrow.LargeListOf(arrow.PrimitiveTypes.Float64), Nullable: true},
	{Name: "empty", Type: arrow.PrimitiveTypes.Int16, Nullable: true},
	{Name: "click", Type: arrow.PrimitiveTypes.Float32, Nullable: true},
	{Name: "watch", Type: arrow.PrimitiveTypes.Float64, Nullable: true},
}, nil)

// Eight rows; row groups of three give groups {0,1,2} {3,4,5} {6,7}.
const inferRows = `[
{"user_id": 3, "item": 10, "small": 1, "price": 0.5,   "genres": [1, 2],    "emb": [0.5, -1],  "empty": null, "click": 0, "watch": 1.5},
{"user_id": 0, "item": 20, "small": 2, "price": 1.5,   "genres": [3],       "emb": [2, 2],     "empty": null, "click": 1, "watch": 0},
{"user_id": 7, "item": 30, "small": 3, "price": -2.25, "genres": [],        "emb": [1, 1],     "empty": null, "click": 0, "watch": 2.5},
{"user_id": 2, "item": 40, "small": 1, "price": 3,     "genres": null,      "emb": [1, 1],     "empty": null, "click": 0, "watch": 10},
{"user_id": 9, "item": 50, "small": 2, "price": 4,     "genres": [4, 5, 6], "emb": [3.5, 1],   "empty": null, "click": 1, "watch": 3},
{"user_id": 1, "item": 60, "small": 3, "price": null,  "genres": [7],       "emb": [1, 1],     "empty": null, "click": 1, "watch": 4},
{"user_id": 4, "item": 70, "small": 1, "price": 2,     "genres": [8, 9],    "emb": [1, -2.5],  "empty": null, "click": 0, "watch": 5},
{"user_id": 5, "item": 15, "small": null, "price": 1,  "genres": [2],       "emb": [1, 1],     "empty": null, "click": 1, "watch": 6}
]`

// wantInferred is the schema of inferRows, worked out by hand from the rows.
func wantInferred() *schema.Schema {
	return &schema.Schema{Features: []*schema.Feature{
		{Name: "user_id", DType: schema.Int32, Tags: []schema.Tag{schema.TagCategorical}, IntDomain: &schema.IntDomain{Name: "user_id", Max: 9, IsCategorical: true}},
		{Name: "item", DType: schema.Int64, Tags: []schema.Tag{schema.TagCategorical}, IntDomain: &schema.IntDomain{Name: "item", Max: 70, IsCategorical: true}},
		{Name: "small", DType: schema.Int8, Tags: []schema.Tag{schema.TagCategorical}, IntDomain: &schema.IntDomain{Name: "small", Max: 3, IsCategorical: true}},
		{Name: "price", DType: schema.Float32, Tags: []schema.Tag{schema.TagContinuous}, FloatDomain: &schema.FloatDomain{Min: -2.25, Max: 4}},
		{Name: "genres", DType: schema.Int32, Tags: []schema.Tag{schema.TagCategorical, schema.TagList}, IntDomain: &schema.IntDomain{Name: "genres", Max: 9, IsCategorical: true},
			ValueCount: &schema.ValueCount{Min: 0, Max: 3}},
		{Name: "emb", DType: schema.Float64, Tags: []schema.Tag{schema.TagContinuous, schema.TagList}, FloatDomain: &schema.FloatDomain{Min: -2.5, Max: 3.5},
			ValueCount: &schema.ValueCount{Min: 2, Max: 2}},
		{Name: "empty", DType: schema.Int16, Tags: []schema.Tag{schema.TagCategorical}, IntDomain: &schema.IntDomain{Name: "empty", Max: 0, IsCategorical: true}},
		{Name: "click", DType: schema.Float32, Tags: []schema.Tag{schema.TagBinaryClassification, schema.TagTarget}, IntDomain: &schema.IntDomain{Min: 0, Max: 1}},
		{Name: "watch", DType: schema.Float64, Tags: []schema.Tag{schema.TagRegression, schema.TagTarget}, FloatDomain: &schema.FloatDomain{Min: 0, Max: 10}},
	}}
}

var inferTargets = InferOptions{Targets: map[string]schema.Tag{"click": schema.TagBinaryClassification, "watch": schema.TagRegression}}

func TestInferStatisticsAndScan(t *testing.T) {
	dir := t.TempDir()
	withStats := filepath.Join(dir, "stats.parquet")
	noStats := filepath.Join(dir, "nostats.parquet")
	writeInferParquet(t, withStats, inferSchema, inferRows, 3, true)
	writeInferParquet(t, noStats, inferSchema, inferRows, 3, false)

	s, scans, err := inferFiles([]string{withStats}, inferTargets)
	require.NoError(t, err)
	assert.Equal(t, wantInferred(), s)
	// Statistics answer every scalar column; only the two list columns are
	// scanned, once per row group.
	assert.Equal(t, 2*3, scans)

	s, scans, err = inferFiles([]string{noStats}, inferTargets)
	require.NoError(t, err)
	assert.Equal(t, wantInferred(), s)
	// Without statistics every column of every row group is scanned.
	assert.Equal(t, 9*3, scans)

	// The public entry point, with and without options.
	s, err = InferSchema(withStats, inferTargets)
	require.NoError(t, err)
	assert.Equal(t, wantInferred(), s)
	plain, err := InferSchema(withStats, InferOptions{})
	require.NoError(t, err)
	assert.Equal(t, []schema.Tag{schema.TagContinuous}, plain.Feature("click").Tags, "without options a float column is continuous")
	require.NoError(t, plain.Validate())

	// The inferred schema survives a pbtxt round trip.
	var text bytes.Buffer
	require.NoError(t, s.WritePbtxt(&text))
	back, err := schema.ParsePbtxt(bytes.NewReader(text.Bytes()))
	require.NoError(t, err)
	for _, f := range s.Features {
		g := back.Feature(f.Name)
		require.NotNil(t, g, f.Name)
		assert.Equal(t, []any{f.DType, f.Tags, f.IntDomain, f.FloatDomain, f.ValueCount},
			[]any{g.DType, g.Tags, g.IntDomain, g.FloatDomain, g.ValueCount}, f.Name)
	}
}

func TestInferDirectory(t *testing.T) {
	dir := t.TempDir()
	writeInferParquet(t, filepath.Join(dir, "part_0.parquet"), inferSchema, inferRows, 4, true)
	more := `[{"user_id": 120, "item": 1, "small": 0, "price": 9.5, "genres": [1,2,3,4,5,6,7], "emb": [1, 1], "empty": 4, "click": 1, "watch": -3}]`
	writeInferParquet(t, filepath.Join(dir, "part_1.parquet"), inferSchema, more, 4, true)
	require.NoError(t, os.WriteFile(filepath.Join(dir, "schema.pbtxt"), []byte("ignored"), 0o644))

	s, err := InferSchema(dir, inferTargets)
	require.NoError(t, err)
	want := wantInferred()
	want.Feature("user_id").IntDomain.Max = 120
	want.Feature("price").FloatDomain.Max = 9.5
	want.Feature("genres").ValueCount.Max = 7
	want.Feature("empty").IntDomain.Max = 4
	want.Feature("watch").FloatDomain.Min = -3
	assert.Equal(t, want, s)
}

func TestInferErrors(t *testing.T) {
	dir := t.TempDir()
	base := filepath.Join(dir, "base.parquet")
	writeInferParquet(t, base, inferSchema, inferRows, 3, true)

	one := func(name string, typ arrow.DataType, rows string) string {
		p := filepath.Join(dir, name+".parquet")
		sc := arrow.NewSchema([]arrow.Field{{Name: name, Type: typ, Nullable: true}}, nil)
		writeInferParquet(t, p, sc, rows, 10, true)
		return p
	}
	negative := one("delta", arrow.PrimitiveTypes.Int32, `[{"delta": 5}, {"delta": -1}]`)
	str := one("title", arrow.BinaryTypes.String, `[{"title": "a"}]`)
	boolean := one("flag", arrow.FixedWidthTypes.Boolean, `[{"flag": true}, {"flag": false}]`)
	unsigned := one("u", arrow.PrimitiveTypes.Uint8, `[{"u": 1}]`)
	nested := one("nested", arrow.ListOf(arrow.ListOf(arrow.PrimitiveTypes.Int32)), `[{"nested": [[1]]}]`)
	otherType := filepath.Join(dir, "other", "a.parquet")
	require.NoError(t, os.MkdirAll(filepath.Dir(otherType), 0o755))
	writeInferParquet(t, otherType, arrow.NewSchema([]arrow.Field{{Name: "user_id", Type: arrow.PrimitiveTypes.Int64}}, nil), `[{"user_id": 1}]`, 10, true)
	corrupt := filepath.Join(dir, "corrupt.parquet")
	require.NoError(t, os.WriteFile(corrupt, []byte("PAR1 definitely not parquet PAR1"), 0o644))

	cases := []struct {
		name  string
		files []string
		opt   InferOptions
		msg   string
	}{
		{"negative ids", []string{negative}, InferOptions{}, `integer column "delta" has negative values (min -1)`},
		{"string", []string{str}, InferOptions{}, `column "title" has type utf8`},
		{"boolean input", []string{boolean}, InferOptions{}, `column "flag" is boolean`},
		{"unsigned", []string{unsigned}, InferOptions{}, `column "u" has type uint8`},
		{"nested list", []string{nested}, InferOptions{}, `column "nested" has type list<element: list`},
		{"unknown target", []string{base}, InferOptions{Targets: map[string]schema.Tag{"nope": schema.TagBinary}}, `Targets names "nope", which is not a column`},
		{"excluded target", []string{base}, InferOptions{Targets: map[string]schema.Tag{"click": schema.TagBinary}, Exclude: []string{"click"}}, `Targets names "click"`},
		{"bad target tag", []string{base}, InferOptions{Targets: map[string]schema.Tag{"click": schema.TagCategorical}}, `Targets["click"] = "categorical"`},
		{"binary target out of range", []string{base}, InferOptions{Targets: map[string]schema.Tag{"watch": schema.TagBinary}}, `binary target "watch" has values in [0, 10]`},
		{"list target", []string{base}, InferOptions{Targets: map[string]schema.Tag{"genres": schema.TagRegression}}, `target column "genres" is a list`},
		{"boolean regression", []string{boolean}, InferOptions{Targets: map[string]schema.Tag{"flag": schema.TagRegression}}, `regression target "flag" is boolean`},
		{"unknown continuous", []string{base}, InferOptions{Continuous: []string{"nope"}}, `Continuous names "nope"`},
		{"unknown exclude", []string{base}, InferOptions{Exclude: []string{"nope"}}, `Exclude names "nope", which is not a column`},
		{"files disagree on type", []string{base, otherType}, InferOptions{}, `column "user_id" has type int64, but int32 in the first file`},
		{"column missing in later file", []string{otherType, negative}, InferOptions{}, `column "delta" is not in the first file`},
		{"corrupt", []string{corrupt}, InferOptions{}, corrupt},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, _, err := inferFiles(tc.files, tc.opt)
			require.Error(t, err)
			assert.Contains(t, err.Error(), tc.msg)
		})
	}

	_, err := InferSchema(filepath.Join(dir, "missing.parquet"), InferOptions{})
	assert.ErrorIs(t, err, os.ErrNotExist)
	empty := t.TempDir()
	_, err = InferSchema(empty, InferOptions{})
	assert.ErrorIs(t, err, ErrNoParquetFiles)
	assert.ErrorContains(t, err, empty)
}

func TestInferOptions(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "mixed.parquet")
	sc := arrow.NewSchema([]arrow.Field{
		{Name: "delta", Type: arrow.PrimitiveTypes.Int32},
		{Name: "title", Type: arrow.BinaryTypes.String},
		{Name: "flag", Type: arrow.FixedWidthTypes.Boolean},
	}, nil)
	writeInferParquet(t, p, sc, `[{"delta": 5, "title": "a", "flag": true}, {"delta": -1, "title": "b", "flag": false}]`, 10, true)
	s, err := InferSchema(p, InferOptions{
		Continuous: []string{"delta"}, Exclude: []string{"title"}, Targets: map[string]schema.Tag{"flag": schema.TagBinary},
	})
	require.NoError(t, err)
	assert.Equal(t, &schema.Schema{Features: []*schema.Feature{
		{Name: "delta", DType: schema.Int32, Tags: []schema.Tag{schema.TagContinuous}, FloatDomain: &schema.FloatDomain{Min: -1, Max: 5}},
		{Name: "flag", DType: schema.Bool, Tags: []schema.Tag{schema.TagBinaryClassification, schema.TagTarget}, IntDomain: &schema.IntDomain{Min: 0, Max: 1}},
	}}, s)
}
