package step

import (
	"testing"

	"github.com/stretchr/testify/require"
)

// TestShardPlan: the training cut of a batch into shards, and a workspace
// sized for maxRows holds every batch up to that size.
func TestShardPlan(t *testing.T) {
	for _, c := range []struct{ rows, shards int }{
		{1, 1}, {ShardRows, 1}, {ShardRows + 1, 2}, {4 * ShardRows, 4}, {100 * ShardRows, MaxShards},
	} {
		require.Equal(t, c.shards, ShardCount(c.rows), "rows %d", c.rows)
	}
	// a workspace holds every batch up to its size
	for _, maxRows := range []int{1, 100, ShardRows, 3*ShardRows + 1, 1024, 65536} {
		capRows := ShardCapacity(maxRows)
		for _, rows := range []int{1, maxRows / 3, maxRows/2 + 1, maxRows} {
			if rows < 1 {
				continue
			}
			n := ShardCount(rows)
			require.LessOrEqual(t, n, ShardCount(maxRows))
			for s := range n {
				require.LessOrEqual(t, (s+1)*rows/n-s*rows/n, capRows, "max %d rows %d shard %d", maxRows, rows, s)
			}
		}
	}
}
