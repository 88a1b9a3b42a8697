package loader

import (
	"context"
	"encoding/binary"
	"errors"
	"hash/fnv"
	"io"
	"slices"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestShuffleOrderPinned pins the row order of shuffled epochs to the values
// the loader gave before its shuffle buffer was made allocation-free: the
// order is part of the (seed, epoch) reproducibility promise, so a change of
// mechanism must not move a single row. The hashes are FNV-1a over the rids
// in epoch order.
func TestShuffleOrderPinned(t *testing.T) {
	dir := writeTestDataset(t, []int{300, 250, 450}, 64)
	cases := []struct {
		name     string
		buffer   int
		batch    int
		readRows int
		prefetch int
		want     [2]uint64 // epochs 0 and 1
	}{
		{name: "within reads", buffer: 0, batch: 32, want: [2]uint64{0xf445426fba822801, 0x740870e776469f0d}},
		{name: "buffer 200", buffer: 200, batch: 32, want: [2]uint64{0xfcf8dc6ff451fd5, 0x54fa33b50eadd95}},
		{name: "buffer 200 read 16", buffer: 200, batch: 16, readRows: 16, want: [2]uint64{0xe17371a084e8b279, 0x576ff2823264261d}},
		{name: "buffer larger than data", buffer: 5000, batch: 100, want: [2]uint64{0xe8bde9e4a11dd281, 0xd41e3b2ac6d2491d}},
		{name: "buffer 300 prefetch", buffer: 300, batch: 50, prefetch: 2, want: [2]uint64{0x350dc36443a54e09, 0x98c65f657948345}},
		{name: "no row shuffle", buffer: NoRowShuffle, batch: 32, want: [2]uint64{0xfe43007dc0098d25, 0xb47d6a084a4a3d75}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			opt := DefaultOptions()
			opt.BatchSize, opt.Shuffle, opt.Seed, opt.ShuffleBuffer, opt.Prefetch = tc.batch, true, 42, tc.buffer, tc.prefetch
			opt.ReadRows = tc.readRows
			d, err := Open(dir, testSchema(), opt)
			require.NoError(t, err)
			var got [2]uint64
			for epoch := range got {
				_, rids := readAll(t, d, epoch)
				require.Len(t, rids, 1000)
				h := fnv.New64a()
				for _, r := range rids {
					require.NoError(t, binary.Write(h, binary.LittleEndian, r))
				}
				got[epoch] = h.Sum64()
			}
			assert.Equal(t, tc.want, got, "%#x", got)
		})
	}
}

// TestGatherBurstBounded: a shuffled epoch gathers batches ahead in bursts
// of at most burstRows rows and burstBatches batches, one batch at least,
// and every row still comes once.
func TestGatherBurstBounded(t *testing.T) {
	dir := writeTestDataset(t, []int{3000}, 3000)
	for _, tc := range []struct {
		batch, wantFirst int
	}{
		{batch: 10, wantFirst: burstBatches}, // bounded by batches
		{batch: 1000, wantFirst: 3},          // all the read holds
		{batch: burstRows / 4, wantFirst: 1}, // the read holds less than one
		{batch: 5000, wantFirst: 1},          // the short last batch alone
	} {
		opt := DefaultOptions()
		opt.BatchSize, opt.Shuffle, opt.Prefetch = tc.batch, true, 0
		d, err := Open(dir, testSchema(), opt)
		require.NoError(t, err)
		it := d.Epoch(context.Background(), 0)
		b, err := it.Next()
		require.NoError(t, err)
		rids := rowsOf(t, b)
		rows := b.Rows
		b.Release()
		// The burst's batches; the one handed out is no longer held.
		assert.Len(t, it.p.ready, tc.wantFirst, "batch %d", tc.batch)
		for _, q := range it.p.ready[it.p.readyPos:] {
			rows += q.Rows
		}
		assert.LessOrEqual(t, rows, max(burstRows, tc.batch))
		for {
			b, err := it.Next()
			if errors.Is(err, io.EOF) {
				break
			}
			require.NoError(t, err)
			rids = append(rids, rowsOf(t, b)...)
			b.Release()
		}
		require.NoError(t, it.Close())
		slices.Sort(rids)
		for i, r := range rids {
			require.Equal(t, int64(i), r)
		}
		require.Len(t, rids, 3000)
	}
}
