package mtl

import (
	"errors"
	"fmt"
	"testing"

	"github.com/mtlrank/mtlrank/kernels"
	"github.com/mtlrank/mtlrank/schema"
	"github.com/stretchr/testify/require"
)

// A batch of several shards is gathered by its shards, each its own rows
// (step.Workspace.run). An input that fails there fails the step with the
// error of the whole batch: the first bad feature in the block's feature
// order, with the row of its first bad id, whichever shards hold bad ids;
// no update is applied, and the next batch trains. A batch whose input
// fails leaves the workspace's shard plan (Rows, Shards) as it was.
func TestShardGatherErrorIsTheBatchError(t *testing.T) {
	const rows, small = 1024, 500
	for _, threads := range []int{1, 2} {
		t.Run(fmt.Sprint("threads", threads), func(t *testing.T) {
			s := schema.TenrecWithRows(1000)
			cfg := DefaultConfig()
			cfg.Model = "mlp"
			m, err := NewModel(s, cfg, kernels.NewCPU(threads), rows)
			require.NoError(t, err)
			defer m.Release()
			in := m.exec.Train().Input()
			feats := m.input.Features
			// the first two id features of large tables in the block's
			// order: the later one goes bad in the first shard, the
			// earlier one in the last
			var first, second int = -1, -1
			for i, f := range feats {
				if f.Continuous || m.input.Tables[f.Table].Rows < 1000 {
					continue
				}
				if first < 0 {
					first = i
				} else if second < 0 {
					second = i
				}
			}
			require.GreaterOrEqual(t, second, 0)
			b := tenrecBatches(s, 2, rows)
			ids := func(fi int) []int32 { return b[0].Columns[feats[fi].Name].I32 }
			for _, fi := range []int{first, second} {
				for r := range ids(fi) {
					ids(fi)[r] %= small
				}
			}
			ids(second)[100] = small + 7 // shard 0
			ids(first)[1000] = small + 3 // shard 3
			ids(first)[1010] = small + 9

			// the tables of both features cut to their first `small` rows
			tables := make([]*kernels.Tensor, len(m.input.Tables))
			for _, fi := range []int{first, second} {
				tb := m.input.Tables[feats[fi].Table]
				cut := m.dev.Alloc(kernels.Float32, small, tb.Dim)
				m.dev.CopyFromHostF32(cut, tb.W.F32[:small*tb.Dim])
				tables[feats[fi].Table] = cut
			}
			in.SetTables(tables)
			want := fmt.Sprintf("input %q (table %q): id %d at row %d is outside the embedding table [0, %d)",
				feats[first].Name, m.input.Tables[feats[first].Table].Name, small+3, 1000, small)

			_, err = m.TrainStep(b[0])
			require.ErrorContains(t, err, want)
			var re *kernels.IDRangeError
			require.True(t, errors.As(err, &re))
			require.Equal(t, 1000, re.Row)
			require.Equal(t, 0, m.exec.Step(), "no update")
			_, err = m.Loss(b[0])
			require.ErrorContains(t, err, want)

			in.SetTables(nil)
			_, err = m.TrainStep(b[1])
			require.NoError(t, err)
			require.Equal(t, 1, m.exec.Step())

			// a one-shard batch whose input fails (gathered by input0)
			// leaves the last batch's shard plan
			one := tenrecBatches(s, 1, 200)[0]
			for _, fi := range []int{first, second} {
				for r, id := range one.Columns[feats[fi].Name].I32 {
					one.Columns[feats[fi].Name].I32[r] = id % small
				}
			}
			one.Columns[feats[first].Name].I32[7] = small + 1
			in.SetTables(tables)
			_, err = m.TrainStep(one)
			require.ErrorContains(t, err, "at row 7 is outside")
			ws := m.exec.Train()
			require.Equal(t, rows, ws.Rows())
			require.Equal(t, 4, ws.Shards())
		})
	}
}
