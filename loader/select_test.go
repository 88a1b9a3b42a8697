package loader

import (
	"slices"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestRowGroupRows(t *testing.T) {
	dir := writeTestDataset(t, []int{300, 250, 64}, 64)
	d, err := Open(dir, testSchema(), DefaultOptions())
	require.NoError(t, err)
	require.Equal(t, [][]int64{{64, 64, 64, 64, 44}, {64, 64, 64, 58}, {64}}, d.RowGroupRows())
	require.Equal(t, 10, d.RowGroups())
}

func TestSelect(t *testing.T) {
	dir := writeTestDataset(t, []int{300, 250, 450}, 64)
	open := func(shuffle bool) *Dataset {
		opt := DefaultOptions()
		opt.BatchSize, opt.Shuffle, opt.Seed, opt.ShuffleBuffer, opt.Prefetch = 48, shuffle, 7, 100, 1
		d, err := Open(dir, testSchema(), opt)
		require.NoError(t, err)
		return d
	}
	for _, shuffle := range []bool{false, true} {
		d := open(shuffle)
		var all, even, odd []RowGroupID
		for f, rgs := range d.RowGroupRows() {
			for g := range rgs {
				id := RowGroupID{File: f, RowGroup: g}
				all = append(all, id)
				if (f+g)%2 == 0 {
					even = append(even, id)
				} else {
					odd = append(odd, id)
				}
			}
		}
		// Every row group, listed in any order: exactly the whole
		// dataset's epochs.
		slices.Reverse(all)
		whole, err := d.Select(all)
		require.NoError(t, err)
		for epoch := range 2 {
			wantSizes, want := readAll(t, d, epoch)
			gotSizes, got := readAll(t, whole, epoch)
			require.Equal(t, want, got, "shuffle %v epoch %d", shuffle, epoch)
			require.Equal(t, wantSizes, gotSizes)
		}

		// Two disjoint parts read disjoint rows that together are every
		// row once; Rows and RowGroups count the part.
		var union []int64
		for _, part := range [][]RowGroupID{even, odd} {
			p, err := d.Select(part)
			require.NoError(t, err)
			_, rids := readAll(t, p, 0)
			require.Equal(t, p.Rows(), int64(len(rids)))
			require.Equal(t, len(part), p.RowGroups())
			for _, rid := range rids {
				// rid's file and row group from the layout 300, 250, 450 by 64.
				f, off := 0, rid
				for _, n := range []int64{300, 250} {
					if off < n {
						break
					}
					f, off = f+1, off-n
				}
				require.Contains(t, part, RowGroupID{File: f, RowGroup: int(off / 64)}, "rid %d", rid)
			}
			_, again := readAll(t, p, 0)
			require.Equal(t, rids, again, "a part's epoch is deterministic")
			union = append(union, rids...)
		}
		slices.Sort(union)
		require.Equal(t, seq(1000), union)
	}
}

func TestSelectErrors(t *testing.T) {
	dir := writeTestDataset(t, []int{100, 100}, 64)
	d, err := Open(dir, testSchema(), DefaultOptions())
	require.NoError(t, err)
	tests := []struct {
		name string
		ids  []RowGroupID
		want string
	}{
		{"file", []RowGroupID{{File: 2}}, "file 2 is not one of the dataset's 2 files"},
		{"negative file", []RowGroupID{{File: -1}}, "file -1"},
		{"row group", []RowGroupID{{File: 1, RowGroup: 2}}, "part_001.parquet has 2 row groups, not row group 2"},
		{"twice", []RowGroupID{{File: 0, RowGroup: 1}, {File: 1}, {File: 0, RowGroup: 1}}, "row group 1 of " + dir},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := d.Select(tt.ids)
			require.Error(t, err)
			require.True(t, strings.Contains(err.Error(), tt.want), "%v, want %q", err, tt.want)
		})
	}
	// Nothing selected reads nothing.
	none, err := d.Select(nil)
	require.NoError(t, err)
	_, rids := readAll(t, none, 0)
	require.Empty(t, rids)
	require.Zero(t, none.Rows())
}

// TestBatchesFullButLast: every batch of an epoch holds BatchSize rows but
// the last (dropped with DropLast), whatever the shuffle, the row groups
// and the selection; distributed training computes every rank's rows of a
// step from it (dist.Partition.BatchRows). An empty selection has no batch.
func TestBatchesFullButLast(t *testing.T) {
	dir := writeTestDataset(t, []int{300, 250, 37}, 64)
	for _, c := range []struct {
		shuffle  bool
		buffer   int
		batch    int
		dropLast bool
	}{
		{false, 0, 48, false}, {false, 0, 48, true}, {false, 0, 1000, false},
		{true, 100, 48, false}, {true, 0, 50, false}, {true, NoRowShuffle, 48, false},
		{true, 100, 48, true}, {true, 1 << 20, 7, false},
	} {
		opt := DefaultOptions()
		opt.BatchSize, opt.DropLast, opt.Shuffle, opt.ShuffleBuffer, opt.Seed = c.batch, c.dropLast, c.shuffle, c.buffer, 5
		d, err := Open(dir, testSchema(), opt)
		require.NoError(t, err)
		var odd []RowGroupID
		for f, rgs := range d.RowGroupRows() {
			for g := range rgs {
				if (f+g)%2 == 1 {
					odd = append(odd, RowGroupID{File: f, RowGroup: g})
				}
			}
		}
		part, err := d.Select(odd)
		require.NoError(t, err)
		for _, ds := range []*Dataset{d, part} {
			sizes, _ := readAll(t, ds, 1)
			rows := int(ds.Rows())
			var want []int
			for ; rows >= c.batch; rows -= c.batch {
				want = append(want, c.batch)
			}
			if rows > 0 && !c.dropLast {
				want = append(want, rows)
			}
			require.Equal(t, want, sizes, "%+v, %d rows", c, ds.Rows())
		}
	}
	d, err := Open(dir, testSchema(), DefaultOptions())
	require.NoError(t, err)
	none, err := d.Select(nil)
	require.NoError(t, err)
	require.Zero(t, none.Rows())
	sizes, _ := readAll(t, none, 0)
	require.Empty(t, sizes)
}
