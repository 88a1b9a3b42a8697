package mtl

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/mtlrank/mtlrank/loader"
)

// A list column cannot go to a text file: the write fails naming it, and
// aborting leaves nothing behind.
func TestTextSinkRefusesLists(t *testing.T) {
	dir := t.TempDir()
	s, err := newTextSink(filepath.Join(dir, "p.csv"), []string{"hist", "score"}, ',')
	require.NoError(t, err)
	err = s.Write(map[string]any{
		"hist":  &loader.Column{Name: "hist", I32: []int32{1, 2, 3}, Offsets: []int32{0, 1, 3}},
		"score": []float32{0.5, 0.25},
	})
	require.ErrorContains(t, err, `column "hist" is a list`)
	require.NoError(t, s.Abort())
	entries, err := os.ReadDir(dir)
	require.NoError(t, err)
	require.Empty(t, entries)

	// columns of different lengths
	s, err = newTextSink(filepath.Join(dir, "q.tsv"), []string{"a", "b"}, '\t')
	require.NoError(t, err)
	defer s.Abort()
	err = s.Write(map[string]any{"a": []float32{1}, "b": []float32{1, 2}})
	require.ErrorContains(t, err, "rows")
	err = s.Write(map[string]any{"a": []float32{1}})
	require.ErrorContains(t, err, `column "b": no values`)
}
