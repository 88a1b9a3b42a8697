package atomicfile

import (
	"errors"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// withUmask runs the test under a known umask (restored afterwards), so
// that the expected modes do not depend on the environment.
func withUmask(t *testing.T, mask int) {
	old := syscall.Umask(mask)
	t.Cleanup(func() { syscall.Umask(old) })
}

func mode(t *testing.T, path string) fs.FileMode {
	t.Helper()
	st, err := os.Stat(path)
	require.NoError(t, err)
	return st.Mode().Perm()
}

// entries lists the names in dir.
func entries(t *testing.T, dir string) []string {
	t.Helper()
	es, err := os.ReadDir(dir)
	require.NoError(t, err)
	var out []string
	for _, e := range es {
		out = append(out, e.Name())
	}
	return out
}

func TestModeFollowsUmask(t *testing.T) {
	cases := []struct {
		umask         int
		file, dirMode fs.FileMode
	}{
		{0o022, 0o644, 0o755},
		{0o002, 0o664, 0o775},
		{0o077, 0o600, 0o700},
	}
	for _, c := range cases {
		withUmask(t, c.umask)
		dir := t.TempDir()
		p := filepath.Join(dir, "a.json")
		require.NoError(t, WriteFile(p, []byte("{}\n")))
		assert.Equal(t, c.file, mode(t, p), "umask %03o", c.umask)

		tmp, err := MkdirTemp(filepath.Join(dir, "out"))
		require.NoError(t, err)
		require.NoError(t, ReplaceDir(tmp, filepath.Join(dir, "out")))
		assert.Equal(t, c.dirMode, mode(t, filepath.Join(dir, "out")), "umask %03o", c.umask)
	}
}

func TestWriteReplacesAtomically(t *testing.T) {
	withUmask(t, 0o022)
	dir := t.TempDir()
	p := filepath.Join(dir, "x.txt")
	require.NoError(t, os.WriteFile(p, []byte("old"), 0o600))

	// A failing writer leaves the previous content and no temporary file.
	boom := errors.New("boom")
	err := Write(p, func(w io.Writer) error {
		_, _ = w.Write([]byte("partial"))
		return boom
	})
	require.ErrorIs(t, err, boom)
	assert.Contains(t, err.Error(), p)
	got, err := os.ReadFile(p)
	require.NoError(t, err)
	assert.Equal(t, "old", string(got))
	assert.Equal(t, []string{"x.txt"}, entries(t, dir))

	require.NoError(t, WriteFile(p, []byte("new")))
	got, err = os.ReadFile(p)
	require.NoError(t, err)
	assert.Equal(t, "new", string(got))
	assert.Equal(t, fs.FileMode(0o644), mode(t, p), "the new file's mode, not the replaced file's 0600")
	assert.Equal(t, []string{"x.txt"}, entries(t, dir))
}

func TestCreateCommitAbort(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "data.bin")
	f, err := Create(p)
	require.NoError(t, err)
	assert.Equal(t, p, f.Path())
	assert.Equal(t, dir, filepath.Dir(f.Name()), "the temporary file is beside the target (same file system)")
	_, err = f.Write([]byte("abc"))
	require.NoError(t, err)
	_, err = os.Stat(p)
	assert.ErrorIs(t, err, fs.ErrNotExist, "nothing at the final path before Commit")
	require.NoError(t, f.Commit())
	require.NoError(t, f.Abort(), "Abort after Commit keeps the file")
	got, err := os.ReadFile(p)
	require.NoError(t, err)
	assert.Equal(t, "abc", string(got))

	g, err := Create(filepath.Join(dir, "other.bin"))
	require.NoError(t, err)
	require.NoError(t, g.Abort())
	require.NoError(t, g.Commit(), "Commit after Abort does nothing")
	assert.Equal(t, []string{"data.bin"}, entries(t, dir))

	_, err = Create(filepath.Join(dir, "missing", "x"))
	require.Error(t, err)
	assert.Contains(t, err.Error(), filepath.Join(dir, "missing", "x"))
}

func TestReplaceDir(t *testing.T) {
	parent := t.TempDir()
	dir := filepath.Join(parent, "ckpt")
	for i, content := range []string{"first", "second"} {
		tmp, err := MkdirTemp(dir)
		require.NoError(t, err)
		require.NoError(t, WriteFile(filepath.Join(tmp, "f"), []byte(content)))
		require.NoError(t, ReplaceDir(tmp, dir), "round %d", i)
		got, err := os.ReadFile(filepath.Join(dir, "f"))
		require.NoError(t, err)
		assert.Equal(t, content, string(got))
		assert.Equal(t, []string{"ckpt"}, entries(t, parent), "no temporary or previous folder left")
	}
}

// TestReplaceDirKeeping: the entries of the replaced folder that its writer
// does not own are carried over; on a failed replacement they are back
// where they were.
func TestReplaceDirKeeping(t *testing.T) {
	parent := t.TempDir()
	dir := filepath.Join(parent, "out")
	require.NoError(t, os.MkdirAll(filepath.Join(dir, "sub"), 0o755))
	require.NoError(t, os.WriteFile(filepath.Join(dir, "own"), []byte("old"), 0o644))
	require.NoError(t, os.WriteFile(filepath.Join(dir, "notes"), []byte("mine"), 0o644))
	require.NoError(t, os.WriteFile(filepath.Join(dir, "sub", "f"), []byte("deep"), 0o644))
	owned := func(name string) bool { return name == "own" }

	tmp, err := MkdirTemp(dir)
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(filepath.Join(tmp, "own"), []byte("new"), 0o644))
	require.NoError(t, ReplaceDirKeeping(tmp, dir, owned))
	for name, want := range map[string]string{"own": "new", "notes": "mine", "sub/f": "deep"} {
		b, err := os.ReadFile(filepath.Join(dir, name))
		require.NoError(t, err)
		assert.Equal(t, want, string(b), name)
	}
	entries, err := os.ReadDir(parent)
	require.NoError(t, err)
	assert.Len(t, entries, 1, "no temporary or old folder left")

	// A kept name that the new folder also has is refused, and everything
	// stays where it was.
	tmp, err = MkdirTemp(dir)
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(filepath.Join(tmp, "sub"), []byte("clash"), 0o644))
	require.NoError(t, os.WriteFile(filepath.Join(tmp, "own"), []byte("newer"), 0o644))
	err = ReplaceDirKeeping(tmp, dir, owned)
	require.ErrorContains(t, err, "sub is both kept and written")
	b, err := os.ReadFile(filepath.Join(dir, "notes"))
	require.NoError(t, err)
	assert.Equal(t, "mine", string(b), "moved back")
	b, err = os.ReadFile(filepath.Join(dir, "own"))
	require.NoError(t, err)
	assert.Equal(t, "new", string(b), "the previous content stays")
}
