package dist

import (
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestRoute(t *testing.T) {
	tests := []struct {
		ids    []int32
		size   int
		send   []int32
		counts []int
		perm   []int
	}{
		{[]int32{7, 2, 4, 9, 3, 6}, 3, []int32{9, 3, 6, 7, 4, 2}, []int{3, 2, 1}, []int{3, 4, 5, 0, 2, 1}},
		{[]int32{5, 5, 1}, 1, []int32{5, 5, 1}, []int{3}, []int{0, 1, 2}},
		{[]int32{1, 3}, 4, []int32{1, 3}, []int{0, 1, 0, 1}, []int{0, 1}},
		{nil, 2, []int32{}, []int{0, 0}, []int{}},
	}
	for _, tt := range tests {
		send, counts, perm, err := Route(tt.ids, tt.size)
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(send, tt.send) || !slices.Equal(counts, tt.counts) || !slices.Equal(perm, tt.perm) {
			t.Errorf("Route(%v, %d) = %v %v %v, want %v %v %v", tt.ids, tt.size, send, counts, perm, tt.send, tt.counts, tt.perm)
		}
		for k, i := range perm {
			if send[k] != tt.ids[i] {
				t.Errorf("send[%d] = %d, ids[perm[%d]] = %d", k, send[k], k, tt.ids[i])
			}
		}
	}
	if _, _, _, err := Route([]int32{1, -4}, 2); err == nil || !strings.Contains(err.Error(), "id -4 at 1") {
		t.Errorf("negative id: %v", err)
	}
	if _, _, _, err := Route(nil, 0); err == nil {
		t.Error("0 ranks: no error")
	}
}

func TestSumRowsByID(t *testing.T) {
	big := float32(1 << 24)
	// Rows of id 5 from three ranks: 2^24, 1, 1. In order, 2^24+1 rounds
	// to 2^24 twice (ties to even); (1+1)+2^24 would be 2^24+2.
	ids := []int32{5, 8, 5, 5, 8}
	rows := []float32{big, -1, 7, 1, 1, 2, 1, 3, 0.5, 4}
	gotIDs, gotRows, err := SumRowsByID(ids, rows, 2)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(gotIDs, []int32{5, 8}) {
		t.Fatalf("ids %v, want [5 8]", gotIDs)
	}
	want := []float32{big, 4, 7.5, 5} // id 5: (2^24+1)+1, (-1+2)+3; id 8: 7+0.5, 1+4
	if err := sameBits(gotRows, want); err != nil {
		t.Fatal(err)
	}
	if math.Float32bits(gotRows[0]) == math.Float32bits(float32(1+1)+big) {
		t.Fatal("the test does not tell orders apart")
	}
	if _, _, err := SumRowsByID([]int32{1}, []float32{1, 2, 3}, 2); err == nil || !strings.Contains(err.Error(), "3 rows of dim 2 for 1 ids") {
		t.Errorf("bad lengths: %v", err)
	}
	if _, _, err := SumRowsByID(nil, nil, 0); err == nil {
		t.Error("dim 0: no error")
	}
}

// randomRows draws a merge's input: fewer than maxIDs ids in [0, n), many
// repeated, and their rows of dim floats of magnitudes 1e-4 to 1e3, so that
// the order of the additions shows in the bits.
func randomRows(rng *rand.Rand, maxIDs int) (n, dim int, ids []int32, rows []float32) {
	n, dim = 1+rng.IntN(40), 1+rng.IntN(6)
	ids = make([]int32, rng.IntN(maxIDs))
	for i := range ids {
		ids[i] = int32(rng.IntN(n))
	}
	rows = make([]float32, len(ids)*dim)
	for i := range rows {
		rows[i] = float32(rng.NormFloat64() * math.Pow(10, float64(rng.IntN(8)-4)))
	}
	return n, dim, ids, rows
}

// requireSameMerge fails t unless a merge gave the ids and the bits of the
// sums wanted.
func requireSameMerge(t *testing.T, wantIDs, gotIDs []int32, wantSums, gotSums []float32, trial int) {
	t.Helper()
	require.Equal(t, wantIDs, gotIDs, "trial %d", trial)
	require.Equal(t, len(wantSums), len(gotSums), "trial %d", trial)
	for i := range wantSums {
		require.Equal(t, math.Float32bits(wantSums[i]), math.Float32bits(gotSums[i]), "trial %d, sum %d", trial, i)
	}
}

// TestRowMerger: RowMerger.Sum gives SumRowsByID's results bit for bit on
// random inputs with repeated ids (reusing its state between calls), and
// refuses ids outside [0, n).
func TestRowMerger(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	var m RowMerger
	for trial := range 50 {
		n, dim, ids, rows := randomRows(rng, 120)
		wantIDs, wantSums, err := SumRowsByID(ids, rows, dim)
		require.NoError(t, err)
		gotIDs, gotSums, err := m.Sum(ids, rows, dim, n)
		require.NoError(t, err)
		requireSameMerge(t, wantIDs, gotIDs, wantSums, gotSums, trial)
	}
	for _, bad := range []int32{-1, 5} {
		_, _, err := m.Sum([]int32{0, bad}, make([]float32, 2), 1, 5)
		require.ErrorContains(t, err, fmt.Sprintf("id %d at 1 is outside [0, 5)", bad))
	}
	// the refused call left no id marked
	ids, sums, err := m.Sum([]int32{0, 0}, []float32{1, 2}, 1, 5)
	require.NoError(t, err)
	require.Equal(t, []int32{0}, ids)
	require.Equal(t, []float32{3}, sums)
}

// TestRowMergerParts: a merge added in parts (Add at random cuts, then
// Take) gives SumRowsByID's results on the whole bit for bit, whatever the
// cuts, with n growing between the parts; a part of another dim, or an id
// outside [0, n), drops the merge and leaves no slot marked for the next.
func TestRowMergerParts(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	var m RowMerger
	for trial := range 60 {
		n, dim, ids, rows := randomRows(rng, 150)
		wantIDs, wantSums, err := SumRowsByID(ids, rows, dim)
		require.NoError(t, err)
		// cuts: 0 to 4 random places, repeats allowed (empty parts)
		cuts := []int{0, len(ids)}
		for range rng.IntN(5) {
			cuts = append(cuts, rng.IntN(len(ids)+1))
		}
		slices.Sort(cuts)
		for i := 1; i < len(cuts); i++ {
			lo, hi := cuts[i-1], cuts[i]
			// n as the part needs it, growing to the whole's
			partN := n
			if i < len(cuts)-1 {
				partN = int(slices.Max(append([]int32{0}, ids[:hi]...))) + 1
			}
			require.NoError(t, m.Add(ids[lo:hi], rows[lo*dim:hi*dim], dim, partN), "trial %d", trial)
		}
		gotIDs, gotSums := m.Take()
		requireSameMerge(t, wantIDs, gotIDs, wantSums, gotSums, trial)
	}

	for _, tc := range []struct {
		name string
		add  func() error
		want string
	}{
		{"another dim", func() error { return m.Add([]int32{1}, []float32{1, 2}, 2, 5) }, "rows of dim 2 added to a merge of dim 1"},
		{"id outside", func() error { return m.Add([]int32{1, 7}, []float32{1, 2}, 1, 5) }, "id 7 at 1 is outside [0, 5)"},
		{"bad lengths", func() error { return m.Add([]int32{1}, []float32{1, 2}, 1, 5) }, "2 rows of dim 1 for 1 ids"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			require.NoError(t, m.Add([]int32{3, 1}, []float32{1, 2}, 1, 5))
			require.ErrorContains(t, tc.add(), tc.want)
			// the dropped merge left no id marked
			require.NoError(t, m.Add([]int32{1, 0, 1}, []float32{1, 2, 4}, 1, 5))
			ids, sums := m.Take()
			require.Equal(t, []int32{1, 0}, ids)
			require.Equal(t, []float32{5, 2}, sums)
		})
	}

	// Sum is a merge of its own: an unfinished Add does not leak into it.
	require.NoError(t, m.Add([]int32{2}, []float32{9}, 1, 5))
	ids, sums, err := m.Sum([]int32{2, 2}, []float32{1, 2}, 1, 5)
	require.NoError(t, err)
	require.Equal(t, []int32{2}, ids)
	require.Equal(t, []float32{3}, sums)
}

// BenchmarkRowMergerParts merges one table's gradient rows of 2 ranks as
// the replicated step does (1024 ids of 48 floats each, a third of them
// touched by both ranks): each rank's part added where it lies ("parts"),
// against the parts first copied into one slice and summed ("copy").
func BenchmarkRowMergerParts(b *testing.B) {
	const ranks, ids, dim, n = 2, 1024, 48, 179281
	rng := rand.New(rand.NewPCG(7, 8))
	partIDs := make([][]int32, ranks)
	partRows := make([][]float32, ranks)
	for r := range ranks {
		partIDs[r] = make([]int32, ids)
		for i := range partIDs[r] {
			partIDs[r][i] = int32(r*ids*2/3 + i) // the ranks share ids/3 ids
		}
		partRows[r] = make([]float32, ids*dim)
		for i := range partRows[r] {
			partRows[r][i] = rng.Float32()
		}
	}
	b.Run("parts", func(b *testing.B) {
		var m RowMerger
		for range b.N {
			for r := range ranks {
				if err := m.Add(partIDs[r], partRows[r], dim, n); err != nil {
					b.Fatal(err)
				}
			}
			m.Take()
		}
	})
	b.Run("copy", func(b *testing.B) {
		var m RowMerger
		var allIDs []int32
		var allRows []float32
		for range b.N {
			allIDs, allRows = allIDs[:0], allRows[:0]
			for r := range ranks {
				allIDs = append(allIDs, partIDs[r]...)
				allRows = append(allRows, partRows[r]...)
			}
			if _, _, err := m.Sum(allIDs, allRows, dim, n); err != nil {
				b.Fatal(err)
			}
		}
	})
}
