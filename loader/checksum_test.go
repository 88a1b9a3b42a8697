package loader

import (
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/mtlrank/mtlrank/internal/pqcrc"
)

// TestFlippedBytesAreErrors: every Parquet file the Writer produces carries
// checksums, so any single flipped byte, anywhere in the file, makes
// opening or reading the dataset fail with an error naming the file; none
// is read as other values. Files without checksums (other writers) still
// read.
func TestFlippedBytesAreErrors(t *testing.T) {
	dir := writeTestDataset(t, []int{300}, 50)
	path := filepath.Join(dir, "part_000.parquet")
	orig, err := os.ReadFile(path)
	require.NoError(t, err)
	require.NoError(t, pqcrc.Verify(path))
	ds, err := Open(dir, testSchema(), DefaultOptions())
	require.NoError(t, err)
	require.NoError(t, drain(ds))

	rng := rand.New(rand.NewPCG(1, 2))
	const flips = 150
	undetected := 0
	for i := range flips {
		b := append([]byte(nil), orig...)
		pos := rng.IntN(len(b))
		if i < 8 {
			pos = len(b) - 1 - i // the footer length and magic
		}
		b[pos] ^= byte(1 + rng.IntN(255))
		require.NoError(t, os.WriteFile(path, b, 0o644))
		err := func() (err error) {
			defer func() {
				if r := recover(); r != nil {
					t.Fatalf("flip at byte %d of %d: panic %v", pos, len(b), r)
				}
			}()
			ds, err := Open(dir, testSchema(), DefaultOptions())
			if err != nil {
				return err
			}
			return drain(ds)
		}()
		if err == nil {
			undetected++
			t.Errorf("flip at byte %d of %d was read without error", pos, len(b))
			continue
		}
		assert.Contains(t, err.Error(), path)
	}
	t.Logf("%d of %d random byte flips detected", flips-undetected, flips)

	// A file without the entry (another writer) is not checked.
	require.NoError(t, os.WriteFile(path, orig, 0o644))
	other := filepath.Join(t.TempDir(), "other.parquet")
	bld := newBuilders(memory.DefaultAllocator)
	col := bld.int64s(1, 2, 3)
	defer col.Release()
	writeArrow(t, other, []arrow.Field{{Name: "x", Type: arrow.PrimitiveTypes.Int64}}, []arrow.Array{col}, 10)
	raw, err := os.ReadFile(other)
	require.NoError(t, err)
	require.NotContains(t, string(raw), pqcrc.Key)
	require.NoError(t, pqcrc.Verify(other))
}
