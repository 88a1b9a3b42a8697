package readlimit

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestReadFile(t *testing.T) {
	dir := t.TempDir()
	small := filepath.Join(dir, "small")
	require.NoError(t, os.WriteFile(small, []byte("hello"), 0o644))
	b, err := ReadFile(small, 5)
	require.NoError(t, err)
	require.Equal(t, "hello", string(b))

	_, err = ReadFile(small, 4)
	require.ErrorContains(t, err, small+" is 5 bytes, more than the 4")

	// A sparse terabyte is refused without reading it.
	huge := filepath.Join(dir, "huge")
	f, err := os.Create(huge)
	require.NoError(t, err)
	require.NoError(t, f.Truncate(1<<40))
	require.NoError(t, f.Close())
	_, err = ReadFile(huge, 1<<20)
	require.ErrorContains(t, err, "1099511627776 bytes")

	_, err = ReadFile(dir, 1<<20)
	require.ErrorContains(t, err, "is a folder")
	_, err = ReadFile(filepath.Join(dir, "missing"), 1)
	require.ErrorIs(t, err, os.ErrNotExist)
}
