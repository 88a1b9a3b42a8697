package kernels

import (
	"fmt"
	"math/rand/v2"
	"sort"
	"testing"

	"github.com/stretchr/testify/require"
)

// The sparse gradient depends only on the ids, not on the table: the same
// batch against a small table (bitmap path) and a huge one (sort path)
// gives identical rows and values, they match a map-based reference, and
// the scratch stays O(batch) for the huge table.
func TestEmbeddingBackwardTableSizeIndependent(t *testing.T) {
	rng := rand.New(rand.NewPCG(31, 32))
	const dim = 5
	for _, tc := range []struct {
		name       string
		rows, span int
		list       bool
	}{
		{"scalar_dense_ids", 300, 50, false},
		{"scalar_spread_ids", 1000, 900, false},
		{"list", 200, 120, true},
		{"one_row", 1, 10, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var ids, offs []int32
			if tc.list {
				offs = []int32{3} // ids start past the beginning: base 3
				ids = []int32{7, 7, 7}
				for range tc.rows {
					for range rng.IntN(4) {
						ids = append(ids, int32(rng.IntN(tc.span)))
					}
					offs = append(offs, int32(len(ids)))
				}
			} else {
				for range tc.rows {
					ids = append(ids, int32(rng.IntN(tc.span)))
				}
			}
			dout := randF32(rng, tc.rows*(dim+3), -1, 1)
			// reference: map id -> sum of scaled dout rows, in batch order
			want := map[int32][]float64{}
			for b := range tc.rows {
				lo, hi, sc := b, b+1, 1.0
				if tc.list {
					lo, hi = int(offs[b]), int(offs[b+1])
					if hi > lo {
						sc = 1 / float64(hi-lo) // Mean
					}
				}
				for k := lo; k < hi; k++ {
					g := want[ids[k]]
					if g == nil {
						g = make([]float64, dim)
						want[ids[k]] = g
					}
					for j := range dim {
						g[j] += sc * float64(dout[b*(dim+3)+2+j])
					}
				}
			}
			var wantRows []int32
			for id := range want {
				wantRows = append(wantRows, id)
			}
			sort.Slice(wantRows, func(i, j int) bool { return wantRows[i] < wantRows[j] })

			var results [][]float32
			for _, tableRows := range []int{tc.span, 10_000_000} {
				c := NewCPU(1)
				g := &SparseGrad{Rows: c.Alloc(Int32, len(ids)), Values: c.Alloc(Float32, len(ids), dim)}
				var offT *Tensor
				if tc.list {
					offT = WrapI32(c, offs, len(offs))
				}
				c.EmbeddingBackward(g, WrapF32(c, dout, tc.rows, dim+3), 2, WrapI32(c, ids, len(ids)), offT, Mean, tableRows)
				require.Equal(t, wantRows, g.Rows.I32[:g.N], "table %d: rows", tableRows)
				for i, id := range wantRows {
					for j := range dim {
						require.InDelta(t, want[id][j], g.Values.F32[i*dim+j], 1e-6, fmt.Sprintf("table %d id %d", tableRows, id))
					}
				}
				results = append(results, append([]float32(nil), g.Values.F32[:g.N*dim]...))
				for i := range c.emb {
					require.LessOrEqual(t, len(c.emb[i].bits)*64, max(embDenseRows, 8*len(ids))+63, "bitmap scratch")
					require.LessOrEqual(t, cap(c.emb[i].keys), 2*len(ids), "sort scratch")
				}
			}
			require.Equal(t, results[0], results[1], "small and huge table give the same bits")
		})
	}
}
