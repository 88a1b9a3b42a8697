package loader

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/mtlrank/mtlrank/schema"
)

// idSchema is a small schema for the bad-input cases: ids with a domain, a
// list of ids, a continuous feature and a target.
func idSchema() *schema.Schema {
	return &schema.Schema{Features: []*schema.Feature{
		{Name: "item_id", DType: schema.Int32, Tags: []schema.Tag{schema.TagItemID}, IntDomain: &schema.IntDomain{Max: 50}},
		{Name: "genres", DType: schema.Int32, Tags: []schema.Tag{schema.TagCategorical, schema.TagList}, IntDomain: &schema.IntDomain{Max: 5}},
		{Name: "age", DType: schema.Float32, Tags: []schema.Tag{schema.TagContinuous}},
		{Name: "click", DType: schema.Float32, Tags: []schema.Tag{schema.TagBinaryClassification}},
	}}
}

// goodIDCols returns n valid rows of idSchema.
func goodIDCols(n int) map[string]any {
	ids := make([]int32, n)
	genres := make([][]int32, n)
	age := make([]float32, n)
	click := make([]float32, n)
	for i := range ids {
		ids[i] = int32(i % 51)
		genres[i] = []int32{int32(i % 6)}
		age[i] = float32(i)
		click[i] = float32(i % 2)
	}
	return map[string]any{"item_id": ids, "genres": genres, "age": age, "click": click}
}

// TestBadInput checks that every kind of bad data is an error (not a panic)
// that names the file, the column and the row where they apply.
func TestBadInput(t *testing.T) {
	nan := float32(posInf() - posInf())
	type tc struct {
		name string
		// write creates the bad dataset in dir and returns the path to Open.
		write func(t *testing.T, dir string) string
		at    string   // "open" or "read": when the error must appear
		want  []string // substrings of the error
		is    error    // optional errors.Is target
		// schema read with (default idSchema()); the cases written with
		// another schema read with it too.
		schema *schema.Schema
	}
	file := func(name string, mod func(map[string]any)) func(*testing.T, string) string {
		return func(t *testing.T, dir string) string {
			// two good row groups before the bad one, so that the row
			// index must count across row groups
			cols := goodIDCols(300)
			mod(cols)
			p := filepath.Join(dir, name)
			require.NoError(t, WriteParquet(p, idSchema(), cols, 100))
			return p
		}
	}
	withSchema := func(name string, s *schema.Schema, cols map[string]any) func(*testing.T, string) string {
		return func(t *testing.T, dir string) string {
			p := filepath.Join(dir, name)
			require.NoError(t, WriteParquet(p, s, cols, 100))
			return p
		}
	}
	replace := func(col string, f func(*schema.Feature)) *schema.Schema {
		s := idSchema()
		for i, ft := range s.Features {
			if ft.Name == col {
				cp := *ft
				f(&cp)
				s.Features[i] = &cp
			}
		}
		return s
	}
	rawFile := func(name string, field arrow.Field, col func(b builders) arrow.Array, others ...string) func(*testing.T, string) string {
		return func(t *testing.T, dir string) string {
			b := newBuilders(memory.DefaultAllocator)
			good := goodIDCols(4)
			fields := []arrow.Field{field}
			arrs := []arrow.Array{col(b)}
			for _, o := range others {
				switch o {
				case "item_id":
					fields = append(fields, arrow.Field{Name: o, Type: arrow.PrimitiveTypes.Int32})
					arrs = append(arrs, b.int32sNull(good[o].([]int32), nil))
				case "genres":
					fields = append(fields, arrow.Field{Name: o, Type: arrow.ListOf(arrow.PrimitiveTypes.Int32)})
					arrs = append(arrs, b.listInt32(good[o].([][]int32)))
				default:
					fields = append(fields, arrow.Field{Name: o, Type: arrow.PrimitiveTypes.Float32})
					arrs = append(arrs, b.float32sNull(good[o].([]float32), nil))
				}
			}
			p := filepath.Join(dir, name)
			writeArrow(t, p, fields, arrs, 2)
			for _, a := range arrs {
				a.Release()
			}
			return p
		}
	}
	cases := []tc{
		{name: "id above max", at: "read",
			write: file("big.parquet", func(c map[string]any) { c["item_id"].([]int32)[237] = 51 }),
			want:  []string{"big.parquet", `column "item_id"`, "row group 2", "row 237", "id 51 above int_domain.max 50"}},
		{name: "negative id", at: "read",
			write: file("neg.parquet", func(c map[string]any) { c["item_id"].([]int32)[5] = -3 }),
			want:  []string{"neg.parquet", `column "item_id"`, "row group 0", "row 5", "negative id -3"}},
		{name: "list id above max", at: "read",
			write: file("lst.parquet", func(c map[string]any) { c["genres"].([][]int32)[150] = []int32{1, 2, 9} }),
			want:  []string{"lst.parquet", `column "genres"`, "row group 1", "row 150", "id 9 above int_domain.max 5"}},
		{name: "NaN in continuous", at: "read",
			write: file("nan.parquet", func(c map[string]any) { c["age"].([]float32)[299] = nan }),
			want:  []string{"nan.parquet", `column "age"`, "row group 2", "row 299", "NaN", "continuous", "--fill_nan VALUE", "Options.FillNaN"}},
		{name: "Inf in target", at: "read",
			write: file("inf.parquet", func(c map[string]any) { c["click"].([]float32)[100] = float32(posInf()) }),
			want:  []string{"inf.parquet", `column "click"`, "row group 1", "row 100", "+Inf", "target"}},
		{name: "binary label 2", at: "read",
			write: file("two.parquet", func(c map[string]any) { c["click"].([]float32)[201] = 2 }),
			want:  []string{"two.parquet", `column "click"`, "row group 2", "row 201", "label 2 in a binary target", "must be 0 or 1"}},
		{name: "binary soft label", at: "read",
			write: file("soft.parquet", func(c map[string]any) { c["click"].([]float32)[7] = 0.5 }),
			want:  []string{"soft.parquet", `column "click"`, "row group 0", "row 7", "label 0.5 in a binary target"}},
		{name: "negative binary label", at: "read",
			write: file("negbin.parquet", func(c map[string]any) { c["click"].([]float32)[150] = -1 }),
			want:  []string{"negbin.parquet", `column "click"`, "row group 1", "row 150", "label -1 in a binary target"}},
		{name: "binary label 2 stored as int64", at: "read",
			write: withSchema("int.parquet", replace("click", func(f *schema.Feature) { f.DType = schema.Int64 }), func() map[string]any {
				c := goodIDCols(300)
				labels := make([]int64, 300)
				for i := range labels {
					labels[i] = int64(i % 2)
				}
				labels[299] = 2
				c["click"] = labels
				return c
			}()),
			schema: replace("click", func(f *schema.Feature) { f.DType = schema.Int64 }),
			want:   []string{"int.parquet", `column "click"`, "row group 2", "row 299", "label 2 in a binary target"}},
		{name: "NaN in regression target", at: "read",
			write: withSchema("reg.parquet", replace("click", func(f *schema.Feature) { f.Tags = []schema.Tag{schema.TagRegression} }), func() map[string]any {
				c := goodIDCols(300)
				c["click"].([]float32)[120] = nan
				return c
			}()),
			schema: replace("click", func(f *schema.Feature) { f.Tags = []schema.Tag{schema.TagRegression} }),
			want:   []string{"reg.parquet", `column "click"`, "row group 1", "row 120", "NaN in a target"}},
		{name: "missing column", at: "open",
			write: withSchema("miss.parquet", &schema.Schema{Features: idSchema().Features[:3]}, func() map[string]any {
				c := goodIDCols(10)
				delete(c, "click")
				return c
			}()),
			want: []string{"miss.parquet", `column "click"`, "not in the file"}},
		{name: "float where ids expected", at: "open",
			write: withSchema("float.parquet", replace("item_id", func(f *schema.Feature) { f.DType = schema.Float32 }), func() map[string]any {
				c := goodIDCols(10)
				c["item_id"] = make([]float32, 10)
				return c
			}()),
			want: []string{"float.parquet", `column "item_id"`, "float", "integer ids"}},
		{name: "list stored as scalar", at: "open",
			write: withSchema("scalar.parquet", replace("genres", func(f *schema.Feature) { f.Tags = []schema.Tag{schema.TagCategorical} }), func() map[string]any {
				c := goodIDCols(10)
				c["genres"] = make([]int32, 10)
				return c
			}()),
			want: []string{"scalar.parquet", `column "genres"`, "scalar", "list feature"}},
		{name: "scalar stored as list", at: "open",
			write: withSchema("list.parquet", replace("age", func(f *schema.Feature) { f.Tags = append(f.Tags, schema.TagList) }), func() map[string]any {
				c := goodIDCols(10)
				c["age"] = make([][]float32, 10)
				return c
			}()),
			want: []string{"list.parquet", `column "age"`, "list", "scalar feature"}},
		{name: "string where ids expected", at: "open",
			write: rawFile("str.parquet", arrow.Field{Name: "item_id", Type: arrow.BinaryTypes.String},
				func(b builders) arrow.Array { return b.strings("a", "b", "c", "d") }, "genres", "age", "click"),
			want: []string{"str.parquet", `column "item_id"`, "utf8", "integer ids"}},
		{name: "string where numbers expected", at: "open",
			write: rawFile("strf.parquet", arrow.Field{Name: "age", Type: arrow.BinaryTypes.String},
				func(b builders) arrow.Array { return b.strings("1", "2", "3", "4") }, "item_id", "genres", "click"),
			want: []string{"strf.parquet", `column "age"`, "utf8", "numbers"}},
		{name: "null id", at: "read",
			write: rawFile("nullid.parquet", arrow.Field{Name: "item_id", Type: arrow.PrimitiveTypes.Int32, Nullable: true},
				func(b builders) arrow.Array {
					return b.int32sNull([]int32{1, 2, 0, 4}, []bool{true, true, false, true})
				}, "genres", "age", "click"),
			want: []string{"nullid.parquet", `column "item_id"`, "row group 1", "row 2", "null"}},
		{name: "null target", at: "read",
			write: rawFile("nulltarget.parquet", arrow.Field{Name: "click", Type: arrow.PrimitiveTypes.Float32, Nullable: true},
				func(b builders) arrow.Array {
					return b.float32sNull([]float32{1, 0, 0, 1}, []bool{true, true, true, false})
				}, "item_id", "genres", "age"),
			want: []string{"nulltarget.parquet", `column "click"`, "row group 1", "row 3", "null"}},
		{name: "null list", at: "read",
			write: rawFile("nulllist.parquet", arrow.Field{Name: "genres", Type: arrow.ListOf(arrow.PrimitiveTypes.Int32), Nullable: true},
				func(b builders) arrow.Array { return b.listInt32([][]int32{{1}, nil, {}, {2}}) }, "item_id", "age", "click"),
			want: []string{"nulllist.parquet", `column "genres"`, "row group 0", "row 1", "null list"}},
		{name: "truncated file", at: "open", is: ErrCorrupt,
			write: func(t *testing.T, dir string) string {
				p := file("trunc.parquet", func(map[string]any) {})(t, dir)
				data, err := os.ReadFile(p)
				require.NoError(t, err)
				require.NoError(t, os.WriteFile(p, data[:len(data)/2], 0o644))
				return p
			},
			want: []string{"trunc.parquet", "corrupt"}},
		{name: "not parquet", at: "open", is: ErrCorrupt,
			write: func(t *testing.T, dir string) string {
				p := filepath.Join(dir, "text.parquet")
				require.NoError(t, os.WriteFile(p, []byte("user_id,click\n1,0\n"), 0o644))
				return p
			},
			want: []string{"text.parquet", "corrupt"}},
		{name: "corrupt pages", at: "open", is: ErrCorrupt,
			write: func(t *testing.T, dir string) string {
				p := file("pages.parquet", func(map[string]any) {})(t, dir)
				data, err := os.ReadFile(p)
				require.NoError(t, err)
				// Overwrite the data pages (after the 4-byte magic, before
				// the footer) with garbage, keeping the footer intact.
				for i := 4; i < len(data)/2; i++ {
					data[i] = byte(i*131 + 7)
				}
				require.NoError(t, os.WriteFile(p, data, 0o644))
				return p
			},
			// The checksums the Writer adds catch it before any row is read.
			want: []string{"pages.parquet", "corrupt", "checksum mismatch"}},
		{name: "empty folder", at: "open", is: ErrNoParquetFiles,
			write: func(t *testing.T, dir string) string { return dir },
			want:  []string{"no parquet files"}},
		{name: "folder without parquet", at: "open", is: ErrNoParquetFiles,
			write: func(t *testing.T, dir string) string {
				require.NoError(t, os.WriteFile(filepath.Join(dir, "data.csv"), []byte("a\n1\n"), 0o644))
				return dir
			},
			want: []string{"no parquet files"}},
		{name: "no such path", at: "open", is: os.ErrNotExist,
			write: func(t *testing.T, dir string) string { return filepath.Join(dir, "absent") },
			want:  []string{"absent"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			mem := checkedAlloc(t)
			path := c.write(t, t.TempDir())
			opt := DefaultOptions()
			opt.BatchSize, opt.Allocator = 64, mem
			s := idSchema()
			if c.schema != nil {
				s = c.schema
			}
			d, err := Open(path, s, opt)
			if c.at == "open" {
				require.Error(t, err)
			} else {
				require.NoError(t, err)
				err = drain(d)
				require.Error(t, err)
			}
			t.Log(err)
			for _, w := range c.want {
				assert.Contains(t, err.Error(), w)
			}
			if c.is != nil {
				assert.ErrorIs(t, err, c.is)
			}
			// The message shows the path the caller gave, not only its
			// base name.
			assert.Contains(t, err.Error(), path)
			var de *DataError
			if c.at == "read" {
				require.True(t, errors.As(err, &de), "read errors are *DataError")
				assert.Equal(t, path, de.File)
			}
			assertNoLeak(t, mem)
		})
	}
}

// TestDomainCheckOff: with CheckDomains off, out-of-range ids pass through.
func TestDomainCheckOff(t *testing.T) {
	dir := t.TempDir()
	cols := goodIDCols(10)
	cols["item_id"].([]int32)[3] = 1000
	p := filepath.Join(dir, "a.parquet")
	require.NoError(t, WriteParquet(p, idSchema(), cols, 0))
	opt := DefaultOptions()
	opt.CheckDomains = false
	d, err := Open(p, idSchema(), opt)
	require.NoError(t, err)
	require.NoError(t, drain(d))
	opt.CheckDomains = true
	d, err = Open(p, idSchema(), opt)
	require.NoError(t, err)
	assert.ErrorContains(t, drain(d), "id 1000 above")
}

// TestTargetLabels: binary labels must be exactly 0 or 1 (also when stored
// as bool or integers), regression labels only finite; valid data of each
// kind reads without error.
func TestTargetLabels(t *testing.T) {
	regression := idSchema()
	regression.Features[3] = &schema.Feature{Name: "click", DType: schema.Float32, Tags: []schema.Tag{schema.TagRegression}}
	binaryTag := idSchema()
	binaryTag.Features[3] = &schema.Feature{Name: "click", DType: schema.Float32, Tags: []schema.Tag{schema.TagBinary, schema.TagTarget}}
	cases := []struct {
		name   string
		s      *schema.Schema
		labels []float32
		want   string // "" = no error
	}{
		{"binary 0/1", idSchema(), []float32{0, 1, 1, 0}, ""},
		{"regression values", regression, []float32{2.5, -3, 0, 1e6}, ""},
		{"regression Inf", regression, []float32{2.5, 0, float32(posInf()), 1}, "+Inf in a target"},
		{"binary tag (not binary_classification)", binaryTag, []float32{0, 1, 3, 0}, "label 3 in a binary target"},
		{"binary 1.0000001", idSchema(), []float32{0, 1, 1.0000001, 0}, "label 1.0000001 in a binary target"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			cols := goodIDCols(4)
			cols["click"] = c.labels
			p := filepath.Join(t.TempDir(), "t.parquet")
			require.NoError(t, WriteParquet(p, c.s, cols, 0))
			opt := DefaultOptions()
			opt.BatchSize = 4
			d, err := Open(p, c.s, opt)
			require.NoError(t, err)
			err = drain(d)
			if c.want == "" {
				require.NoError(t, err)
				return
			}
			require.Error(t, err)
			assert.Contains(t, err.Error(), c.want)
			assert.Contains(t, err.Error(), "row 2")
		})
	}
	// Bool storage gives 0/1 by construction.
	s := idSchema()
	s.Features[3] = &schema.Feature{Name: "click", DType: schema.Bool, Tags: []schema.Tag{schema.TagBinaryClassification}}
	cols := goodIDCols(4)
	cols["click"] = []bool{true, false, true, true}
	p := filepath.Join(t.TempDir(), "b.parquet")
	require.NoError(t, WriteParquet(p, s, cols, 0))
	d, err := Open(p, s, DefaultOptions())
	require.NoError(t, err)
	require.NoError(t, drain(d))
}

// TestErrorNamesGivenPath: for a folder, errors name the folder as given
// joined with the file, so that a relative path stays recognisable.
func TestErrorNamesGivenPath(t *testing.T) {
	root := t.TempDir()
	t.Chdir(root)
	require.NoError(t, os.MkdirAll(filepath.Join("data", "train"), 0o755))
	cols := goodIDCols(10)
	cols["age"].([]float32)[4] = float32(posInf())
	require.NoError(t, WriteParquet(filepath.Join("data", "train", "part_0001.parquet"), idSchema(), cols, 0))
	d, err := Open(filepath.Join("data", "train"), idSchema(), DefaultOptions())
	require.NoError(t, err)
	err = drain(d)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "loader: data/train/part_0001.parquet row group 0 row 4")
}

func TestDataErrorFormat(t *testing.T) {
	cases := []struct {
		err  *DataError
		want string
	}{
		{dataErr("/x/a.parquet", "c", 2, 17, "bad %d", 5), `loader: /x/a.parquet row group 2 row 17, column "c": bad 5`},
		{dataErr("data/a.parquet", "c", -1, -1, "missing"), `loader: data/a.parquet, column "c": missing`},
		{dataErr("", "c", -1, -1, "oops"), `loader: column "c": oops`},
		{dataErr("a.parquet", "", 1, -1, "x"), `loader: a.parquet row group 1: x`},
	}
	for _, c := range cases {
		assert.Equal(t, c.want, c.err.Error())
	}
	e := corruptErr("f.parquet", 3, "index out of range")
	assert.ErrorIs(t, e, ErrCorrupt)
	assert.Equal(t, "loader: f.parquet row group 3: corrupt parquet: index out of range", e.Error())
}
