package schema

import (
	"errors"
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestSaveLoad(t *testing.T) {
	// Saved files get 0666 minus the umask (shared like the data beside
	// them); a known umask makes the expected mode fixed.
	old := syscall.Umask(0o022)
	defer syscall.Umask(old)
	dir := t.TempDir()
	s := Tenrec()
	cases := []struct {
		name string
		save string // path given to Save
		load string // path given to Load
	}{
		{"pbtxt file", "a.pbtxt", "a.pbtxt"},
		{"json file", "b.json", "b.json"},
		{"txt extension", "c.txt", "c.txt"},
		{"directory", ".", "."},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			require.NoError(t, Save(filepath.Join(dir, tc.save), s))
			back, err := Load(filepath.Join(dir, tc.load))
			require.NoError(t, err)
			assert.Equal(t, s, exported(back))
		})
	}
	// Saving into a directory wrote schema.pbtxt there.
	_, err := os.Stat(filepath.Join(dir, PbtxtFile))
	require.NoError(t, err)
	// No temporary files are left behind.
	entries, err := os.ReadDir(dir)
	require.NoError(t, err)
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	assert.ElementsMatch(t, []string{"a.pbtxt", "b.json", "c.txt", PbtxtFile}, names)
	st, err := os.Stat(filepath.Join(dir, "a.pbtxt"))
	require.NoError(t, err)
	assert.Equal(t, os.FileMode(0o644), st.Mode().Perm())
}

func TestLoadDirectoryPreference(t *testing.T) {
	dir := t.TempDir()
	js := &Schema{Features: []*Feature{{Name: "from_json", DType: Int64}}}
	require.NoError(t, Save(filepath.Join(dir, JSONFile), js))
	s, err := Load(dir)
	require.NoError(t, err)
	assert.Equal(t, "from_json", s.Features[0].Name)

	pb := &Schema{Features: []*Feature{{Name: "from_pbtxt", DType: Int64}}}
	require.NoError(t, Save(filepath.Join(dir, PbtxtFile), pb))
	s, err = Load(dir)
	require.NoError(t, err)
	assert.Equal(t, "from_pbtxt", s.Features[0].Name, "schema.pbtxt is preferred")
}

func TestLoadSniffsFormat(t *testing.T) {
	dir := t.TempDir()
	require.NoError(t, Save(filepath.Join(dir, "s.json"), Tenrec()))
	data, err := os.ReadFile(filepath.Join(dir, "s.json"))
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(filepath.Join(dir, "schema"), data, 0o644))
	s, err := Load(filepath.Join(dir, "schema"))
	require.NoError(t, err)
	assert.Equal(t, Tenrec(), s)
}

func TestLoadErrors(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.pbtxt")
	require.NoError(t, os.WriteFile(bad, []byte("feature {\n  name: \"x\"\n  int_domain { max: oops }\n}\n"), 0o644))
	_, err := Load(bad)
	require.Error(t, err)
	var pe *ParseError
	require.True(t, errors.As(err, &pe))
	assert.Equal(t, bad, pe.File)
	assert.Contains(t, err.Error(), bad+`:3:21: feature "x": int_domain: field "max": expected an integer, got oops`)

	badJSON := filepath.Join(dir, "bad.json")
	require.NoError(t, os.WriteFile(badJSON, []byte("{\n  \"features\": [}\n"), 0o644))
	_, err = Load(badJSON)
	assert.ErrorContains(t, err, badJSON+":2:16: invalid character '}'")

	_, err = Load(filepath.Join(dir, "missing.pbtxt"))
	assert.ErrorIs(t, err, os.ErrNotExist)
	empty := filepath.Join(dir, "empty")
	require.NoError(t, os.Mkdir(empty, 0o755))
	_, err = Load(empty)
	assert.ErrorContains(t, err, "holds neither schema.pbtxt nor schema.json")
}

func TestSaveErrors(t *testing.T) {
	dir := t.TempDir()
	assert.ErrorContains(t, Save(filepath.Join(dir, "s.yaml"), Tenrec()), "unknown extension")
	assert.ErrorContains(t, Save(filepath.Join(dir, "s.pbtxt"), nil), "nil schema")
	assert.Error(t, Save(filepath.Join(dir, "no", "such", "dir", "s.pbtxt"), Tenrec()))
	bad := &Schema{Features: []*Feature{{Name: "x", Properties: map[string]any{"c": make(chan int)}}}}
	assert.ErrorContains(t, Save(filepath.Join(dir, "s.pbtxt"), bad), `property "c"`)
	_, err := os.Stat(filepath.Join(dir, "s.pbtxt"))
	assert.ErrorIs(t, err, os.ErrNotExist, "a failed save leaves nothing behind")

	// A failed save keeps the previous file intact.
	path := filepath.Join(dir, "keep.pbtxt")
	require.NoError(t, Save(path, Tenrec()))
	before, err := os.ReadFile(path)
	require.NoError(t, err)
	require.Error(t, Save(path, bad))
	after, err := os.ReadFile(path)
	require.NoError(t, err)
	assert.Equal(t, before, after)
}

func TestClone(t *testing.T) {
	_, s := readMerlin(t)
	c := s.Clone()
	require.Equal(t, s, c)

	// Mutate every nested part of the clone; the original must not change.
	f := c.Feature("user_id")
	f.Name = "changed"
	f.Tags[0] = "changed"
	f.IntDomain.Max = 1
	f.Properties["cat_path"] = "changed"
	f.Properties["embedding_sizes"].(map[string]any)["dimension"] = 1.0
	f.pb.metaRaw[0] = "changed"
	f.pb.metaSnap["dtype_item_size"] = 1.0
	c.Feature("item_genres").ValueCount.Max = 99
	c.Feature("age").FloatDomain.Min = 99
	c.Feature("age").Raw[0] = "changed"
	c.Feature("item_embedding").pb.nested["annotation"][0] = "changed"
	c.Raw[0] = "changed"
	c.Features = c.Features[:1]

	assert.Equal(t, wantMerlin(), exported(s))
	again, err := ParsePbtxt(mustOpen(t, merlinSchemaFile))
	require.NoError(t, err)
	assert.Equal(t, again, s)

	var nilSchema *Schema
	assert.Nil(t, nilSchema.Clone())
	assert.Equal(t, &Schema{}, (&Schema{}).Clone())
}

func mustOpen(t *testing.T, path string) *os.File {
	t.Helper()
	f, err := os.Open(path)
	require.NoError(t, err)
	t.Cleanup(func() { _ = f.Close() })
	return f
}
