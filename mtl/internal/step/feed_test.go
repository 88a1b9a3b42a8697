package step

import (
	"testing"

	"github.com/mtlrank/mtlrank/kernels"
	"github.com/mtlrank/mtlrank/layers"
	"github.com/mtlrank/mtlrank/loader"
	"github.com/mtlrank/mtlrank/schema"
	"github.com/stretchr/testify/require"
)

// derivedFuncs is a Derived given by a map of functions.
type derivedFuncs map[string]DeriveFunc

func (d derivedFuncs) Deriver(name string) DeriveFunc { return d[name] }

// TestFeederDerived: the feeder reads a derived input from its DeriveFunc
// instead of a column of the batch, and checks what it returns as it checks
// a column (shape and id range), so that no Derived can hand a device an
// id outside its table.
func TestFeederDerived(t *testing.T) {
	dev := kernels.NewCPU(1)
	cat := func(name string, max int64, list bool) *schema.Feature {
		f := &schema.Feature{Name: name, DType: schema.Int32, Tags: []schema.Tag{schema.TagCategorical},
			IntDomain: &schema.IntDomain{Name: name, Max: max}}
		if list {
			f.Tags = append(f.Tags, schema.TagList)
			f.ValueCount = &schema.ValueCount{Max: 4}
		}
		return f
	}
	feats := []*schema.Feature{cat("a", 9, false), cat("d", 4, false), cat("l", 4, true)}
	block, err := layers.NewInputBlock(dev, feats, layers.InputOptions{Dims: map[string]int{"a": 2, "d": 2, "l": 2}}, layers.NewRNG(1))
	require.NoError(t, err)
	defer block.Release()
	featMax := map[string]int64{"a": 9, "d": 4, "l": 4}
	batch := func() *loader.Batch {
		return loader.NewBatch(3, map[string]*loader.Column{"a": {Name: "a", I32: []int32{9, 0, 5}}}, "part_7.parquet", nil)
	}
	good := derivedFuncs{
		// d = a mod 5 from column a; l a list per row: [a/3], [], [1, 2]
		"d": func(b *loader.Batch) ([]int32, []int32, error) {
			a := b.Column("a").I32
			return []int32{a[0] % 5, a[1] % 5, a[2] % 5}, nil, nil
		},
		"l": func(*loader.Batch) ([]int32, []int32, error) {
			return []int32{3, 1, 2}, []int32{0, 1, 1, 3}, nil
		},
	}
	caps := Probe(dev)
	fd := newFeeder(&caps, block, 4, featMax, good)
	defer fd.release()
	data, err := fd.feed(batch())
	require.NoError(t, err)
	host := func(x *kernels.Tensor) []int32 {
		out := make([]int32, x.Len())
		dev.CopyToHostI32(out, x)
		return out
	}
	got := map[string][2][]int32{}
	for ti, tb := range block.Tables {
		var offs []int32
		if data.Offsets[ti] != nil {
			offs = host(data.Offsets[ti])
		}
		got[tb.Name] = [2][]int32{host(data.IDs[ti]), offs}
	}
	require.Equal(t, [2][]int32{{9, 0, 5}, nil}, got["a"], "a column is read from the batch")
	require.Equal(t, [2][]int32{{4, 0, 0}, nil}, got["d"])
	require.Equal(t, [2][]int32{{3, 1, 2}, {0, 1, 1, 3}}, got["l"])

	for _, c := range []struct {
		name, input string
		f           DeriveFunc
		want        string
	}{
		{"id above the max", "d", func(*loader.Batch) ([]int32, []int32, error) { return []int32{1, 5, 2}, nil, nil },
			`batch part_7.parquet: column "d" row 1: id 5 outside [0, 4]`},
		{"negative id in a list", "l", func(*loader.Batch) ([]int32, []int32, error) { return []int32{1, -1}, []int32{0, 0, 0, 2}, nil },
			`column "l" row 2: id -1 outside [0, 4]`},
		{"scalar returns lists", "d", func(*loader.Batch) ([]int32, []int32, error) { return []int32{1, 2, 3}, []int32{0, 1, 2, 3}, nil },
			`column "d" is a scalar feature in the schema but holds lists`},
		{"list without offsets", "l", func(*loader.Batch) ([]int32, []int32, error) { return []int32{1, 2, 3}, nil, nil },
			`column "l" is a list feature in the schema but has no list offsets`},
		{"short", "d", func(*loader.Batch) ([]int32, []int32, error) { return []int32{1, 2}, nil, nil },
			`column "d": 2 values for 3 rows`},
		{"offsets past the values", "l", func(*loader.Batch) ([]int32, []int32, error) { return []int32{1}, []int32{0, 1, 1, 3}, nil },
			`column "l" row 2: list offsets [1, 3) are not inside the 1 values`},
	} {
		t.Run(c.name, func(t *testing.T) {
			d := derivedFuncs{"d": good["d"], "l": good["l"]}
			d[c.input] = c.f
			fd := newFeeder(&caps, block, 4, featMax, d)
			defer fd.release()
			_, err := fd.feed(batch())
			require.ErrorContains(t, err, c.want)
		})
	}
}
