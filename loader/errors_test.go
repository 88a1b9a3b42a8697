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
			want:  []string{"nan.parquet", `column "age"`, "row group 2", "row 299", "NaN", "continuous"}},
		{name: "Inf in target", at: "read",
			write: file("inf.parquet", func(c map[string]any) { c["click"].([]float32)[100] = float32(posInf()) }),
			want:  []string{"inf.parquet", `column "click"`, "row group 1", "row 100", "+Inf", "target"}},
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
		{name: "corrupt pages", at: "read", is: ErrCorrupt,
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
			want: []string{"pages.parquet", "row group 0", "corrupt"}},
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
			d, err := Open(path, idSchema(), opt)
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
			var de *DataError
			if c.at == "read" {
				require.True(t, errors.As(err, &de), "read errors are *DataError")
				assert.Equal(t, filepath.Base(path), filepath.Base(de.File))
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

func TestDataErrorFormat(t *testing.T) {
	cases := []struct {
		err  *DataError
		want string
	}{
		{dataErr("/x/a.parquet", "c", 2, 17, "bad %d", 5), `loader: a.parquet row group 2 row 17, column "c": bad 5`},
		{dataErr("/x/a.parquet", "c", -1, -1, "missing"), `loader: a.parquet, column "c": missing`},
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
