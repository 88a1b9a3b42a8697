package layers

import (
	"errors"
	"fmt"
	"math"
	"sync"
	"testing"

	"github.com/mtlrank/mtlrank/kernels"
	"github.com/stretchr/testify/require"
)

// gatherCut runs BeginForward and then GatherRows over each range of cut
// concurrently (one goroutine and RowGather per range, on the one-thread
// device, as a Sharder's shards do), the output filled with NaN first so
// that a row left out shows. It returns the output and the ranges' errors.
func gatherCut(t *testing.T, f *inputFixture, ws *InputWS, cut [][2]int) ([]float32, []error) {
	out, err := f.block.BeginForward(ws, f.data)
	require.NoError(t, err)
	dev := f.block.dev.(kernels.Sharder).ShardDevice()
	nan := make([]float32, out.Len())
	for i := range nan {
		nan[i] = float32(math.NaN())
	}
	dev.CopyFromHostF32(out, nan)
	errs := make([]error, len(cut))
	var wg sync.WaitGroup
	for i, r := range cut {
		wg.Go(func() {
			var g RowGather
			errs[i] = f.block.GatherRows(ws, &g, dev, r[0], r[1])
		})
	}
	wg.Wait()
	return host(out), errs
}

var gatherCuts = []struct {
	name string
	cut  [][2]int
}{
	{"whole", [][2]int{{0, 5}}},
	{"two", [][2]int{{0, 2}, {2, 5}}},
	{"uneven", [][2]int{{0, 3}, {3, 4}, {4, 5}}},
	{"rows", [][2]int{{0, 1}, {1, 2}, {2, 3}, {3, 4}, {4, 5}}},
}

// GatherRows over any cut of the batch gives every output element the bits
// Forward gives it (which TestInputBlockForwardBackward checks against
// sums in float64), for every combiner: scalars, lists with empty ones and
// duplicates, a table shared by a list and a scalar, a continuous input.
func TestInputBlockGatherRowsMatchesForward(t *testing.T) {
	for _, comb := range []kernels.Combiner{kernels.Mean, kernels.Sum, kernels.SqrtN} {
		for _, c := range gatherCuts {
			t.Run(fmt.Sprintf("comb%d/%s", comb, c.name), func(t *testing.T) {
				f := newInputFixture(t, kernels.NewCPU(2), comb, 0)
				rng := NewRNG(5)
				for _, tb := range f.block.Tables {
					f.block.dev.CopyFromHostF32(tb.W, randHost(rng, tb.W.Len(), 1))
				}
				ref, err := f.block.Forward(f.block.NewWorkspace(5, false), f.data)
				require.NoError(t, err)
				want := host(ref)
				got, errs := gatherCut(t, f, f.block.NewWorkspace(8, true), c.cut)
				for _, err := range errs {
					require.NoError(t, err)
				}
				require.Len(t, got, len(want))
				for i := range want {
					require.Equal(t, math.Float32bits(want[i]), math.Float32bits(got[i]), "element %d (row %d)", i, i/f.block.OutDim)
				}
			})
		}
	}
}

// An id outside its table fails the range that holds it, naming the
// feature and the id's row in the batch (not in the range); the other
// ranges gather.
func TestInputBlockGatherRowsErrors(t *testing.T) {
	cases := []struct {
		name    string
		bad     func(f *inputFixture)
		feature string
		row     int
	}{
		{"scalar", func(f *inputFixture) { f.a[3] = 10 }, `input "a"`, 3},
		{"list", func(f *inputFixture) { f.data.IDs[1].I32[5] = 20 }, `input "b"`, 3},                // b's row 3 is ids 4..7
		{"shared scalar", func(f *inputFixture) { f.data.IDs[1].I32[9+4] = -1 }, `input "c"`, 4},     // c's ids follow b's 9
		{"list without a count", func(f *inputFixture) { f.data.IDs[2].I32[2] = 7 }, `input "e"`, 1}, // e's row 1 is ids 1..2
	}
	for _, tc := range cases {
		for _, c := range gatherCuts {
			t.Run(tc.name+"/"+c.name, func(t *testing.T) {
				f := newInputFixture(t, kernels.NewCPU(2), kernels.Mean, 0)
				tc.bad(f)
				_, errs := gatherCut(t, f, f.block.NewWorkspace(5, false), c.cut)
				for i, r := range c.cut {
					if tc.row < r[0] || tc.row >= r[1] {
						require.NoError(t, errs[i], "rows %v", r)
						continue
					}
					require.ErrorContains(t, errs[i], tc.feature)
					var re *kernels.IDRangeError
					require.True(t, errors.As(errs[i], &re), "%v", errs[i])
					require.Equal(t, tc.row, re.Row)
				}
			})
		}
	}
}
