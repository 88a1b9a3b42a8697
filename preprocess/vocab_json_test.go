package preprocess

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestNonUTF8VocabularyRoundTrips: categorical values that are not valid
// UTF-8 keep their bytes through workflow.json, so applying the saved
// workflow to the data it was fitted on gives the fitted ids (none
// out-of-vocabulary), and two such values stay two.
func TestNonUTF8VocabularyRoundTrips(t *testing.T) {
	dir := t.TempDir()
	var b strings.Builder
	b.WriteString("c,y\n")
	values := []string{"a\xff", "a\xfe", "ok", "caf\xe9", "a\xff", "a\xff", "a\xfe", "ok"}
	for i, v := range values {
		b.WriteString(v + "," + []string{"0", "1"}[i%2] + "\n")
	}
	csv := writeFile(t, dir, "latin1.csv", b.String())
	out := filepath.Join(dir, "out")
	spec := Spec{Categorical: []string{"c"}, BinaryTargets: []string{"y"}, CSVHeader: true}
	rep, err := Run(spec, []string{csv}, nil, out)
	require.NoError(t, err)
	fitted := readDataset(t, rep.Train.Dir).cols["c"]

	raw, err := os.ReadFile(rep.WorkflowPath)
	require.NoError(t, err)
	assert.Contains(t, string(raw), `"vocab_base64"`)

	w, err := LoadWorkflow(rep.WorkflowPath)
	require.NoError(t, err, "two distinct invalid values load")
	c := w.Categ("c")
	ids := map[int64]string{}
	for _, v := range []string{"a\xff", "a\xfe", "ok", "caf\xe9"} {
		id := c.Encode(v)
		require.GreaterOrEqual(t, id, int64(FirstVocabID), "%q is in the vocabulary", v)
		require.NotContains(t, ids, id, "%q and %q share id %d", v, ids[id], id)
		ids[id] = v
	}
	assert.Equal(t, int64(OOVID), c.Encode("a\ufffd"), "the U+FFFD form is another value")

	res, err := w.Transform([]string{csv}, filepath.Join(dir, "again"))
	require.NoError(t, err)
	assert.Zero(t, res.OOVRows["c"])
	assert.Equal(t, fitted, readDataset(t, res.Dir).cols["c"], "serving encodes as training did")

	// A second save of the loaded workflow is byte-identical.
	again := filepath.Join(dir, "again.json")
	require.NoError(t, w.Save(again))
	raw2, err := os.ReadFile(again)
	require.NoError(t, err)
	assert.Equal(t, string(raw), string(raw2))
}

// TestVocabBase64Errors: a hand-edited vocab_base64 that does not fit the
// vocabulary is an error naming the column.
func TestVocabBase64Errors(t *testing.T) {
	base := `{"name":"c","op":"categorify","vocab":["x","y"],"counts":[2,1],"null_rows":0,"tags":["categorical"]%s}`
	cases := []struct{ extra, want string }{
		{`,"vocab_base64":{"2":"/w=="}`, `key "2" is not an index`},
		{`,"vocab_base64":{"01":"/w=="}`, `key "01" is not an index`},
		{`,"vocab_base64":{"0":"!!"}`, "vocab_base64[0]"},
		{`,"vocab_base64":{"0":"eA=="}`, "is valid UTF-8"},
		{`,"mystery":1`, "mystery"},
	}
	for _, tc := range cases {
		var c Categorical
		err := c.UnmarshalJSON([]byte(strings.Replace(base, "%s", tc.extra, 1)))
		require.Error(t, err, tc.extra)
		assert.Contains(t, err.Error(), tc.want)
	}
	var c Categorical
	require.NoError(t, c.UnmarshalJSON([]byte(strings.Replace(base, "%s", `,"vocab_base64":{"1":"/w=="}`, 1))))
	assert.Equal(t, []string{"x", "\xff"}, c.Vocab)
}
