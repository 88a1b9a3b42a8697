package pathguard

import (
	"errors"
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestCheck(t *testing.T) {
	root := t.TempDir()
	data := filepath.Join(root, "data")
	require.NoError(t, os.MkdirAll(data, 0o755))
	file := filepath.Join(data, "part_0.parquet")
	require.NoError(t, os.WriteFile(file, []byte("x"), 0o644))
	link := filepath.Join(root, "link")
	require.NoError(t, os.Symlink(data, link))
	other := filepath.Join(root, "other")

	tests := []struct {
		name, in, out, want string // want: "" (allowed) or the relation
	}{
		{"same file", file, file, "is"},
		{"same folder", data, data, "is"},
		{"dot-dot spelling", file, filepath.Join(data, "..", "data", "part_0.parquet"), "is"},
		{"output is the data's folder", file, data, "contains"},
		{"output is a parent", data, root, "contains"},
		{"output inside the data folder", data, filepath.Join(data, "predictions.parquet"), "lies inside"},
		{"output through a symlink", file, filepath.Join(link, "part_0.parquet"), "is"},
		{"missing output under a symlink", data, filepath.Join(link, "new", "out"), "lies inside"},
		{"input through a symlink", filepath.Join(link, "part_0.parquet"), data, "contains"},
		{"sibling", data, other, ""},
		{"name prefix is not a parent", data, data + "2", ""},
		{"file beside a data file", file, filepath.Join(data, "x.parquet"), ""},
		{"glob input", filepath.Join(data, "*.parquet"), data, "contains"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := Check([]Path{{"--in", tc.in}}, []Path{{"--out", tc.out}})
			if tc.want == "" {
				require.NoError(t, err)
				return
			}
			require.Error(t, err)
			require.Contains(t, err.Error(), "--out "+tc.out+" "+tc.want+" --in ")
		})
	}
	// Empty paths are not compared.
	require.NoError(t, Check([]Path{{"--in", ""}}, []Path{{"--out", data}}))
}

func TestInside(t *testing.T) {
	root := t.TempDir()
	ck := filepath.Join(root, "ck")
	require.NoError(t, os.MkdirAll(filepath.Join(ck, "sub"), 0o755))
	isCk := func(d string) bool { return filepath.Base(d) == "ck" }
	d, ok := Inside(filepath.Join(ck, "sub", "missing", "out"), isCk)
	require.True(t, ok)
	want, _ := filepath.EvalSymlinks(ck)
	require.Equal(t, want, d)
	_, ok = Inside(filepath.Join(root, "elsewhere"), isCk)
	require.False(t, ok)
}

func TestWritable(t *testing.T) {
	root := t.TempDir()
	file := filepath.Join(root, "file")
	require.NoError(t, os.WriteFile(file, []byte("x"), 0o644))
	tests := []struct {
		name string
		path string
		want string
	}{
		{"new folder", filepath.Join(root, "a", "b"), ""},
		{"existing file replaced", file, ""},
		{"under a regular file", filepath.Join(file, "ck"), "is a file, not a folder"},
		{"deep under a regular file", filepath.Join(file, "a", "b"), "is a file, not a folder"},
		{"file output under a regular file", filepath.Join(file, "p.parquet"), "is a file, not a folder"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := Writable("--out", tc.path)
			if tc.want == "" {
				require.NoError(t, err)
				return
			}
			require.ErrorContains(t, err, tc.want)
			require.ErrorContains(t, err, "--out "+tc.path)
		})
	}

	t.Run("read-only mount", func(t *testing.T) {
		// Root ignores file modes, so the failure of a read-only mount is
		// injected.
		defer func(p func(string) error) { probe = p }(probe)
		probe = func(dir string) error {
			return &os.PathError{Op: "open", Path: dir, Err: syscall.EROFS}
		}
		err := Writable("--save_model_path", filepath.Join(root, "ck"))
		require.Error(t, err)
		require.True(t, errors.Is(err, syscall.EROFS))
		require.ErrorContains(t, err, "cannot write in "+root)
	})
}
