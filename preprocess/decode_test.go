package preprocess_test

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/mtlrank/mtlrank/preprocess"
)

// TestWorkflowDecode: ids map back to the raw values of the vocabulary;
// null, unknown, out-of-range and hashed ids map to nothing.
func TestWorkflowDecode(t *testing.T) {
	w, err := preprocess.ParseWorkflow([]byte(`{"format":"mtlrank.preprocess.workflow","version":1,"spec":{},"fit_rows":6,
		"categorical":[
		 {"name":"user","op":"categorify","vocab":["bob","alice","42"],"counts":[3,2,1],"null_rows":0,"tags":["categorical"]},
		 {"name":"city","op":"hash_bucket","num_buckets":4,"null_rows":0,"tags":["categorical"]}]}`))
	require.NoError(t, err)

	values, ok, err := w.Decode("user", []int64{2, 3, 4, 0, 1, 5, -1})
	require.NoError(t, err)
	assert.Equal(t, []string{"bob", "alice", "42", "", "", "", ""}, values)
	assert.Equal(t, []bool{true, true, true, false, false, false, false}, ok)

	// Decode inverts Encode on the vocabulary.
	c := w.Categ("user")
	for _, v := range []string{"bob", "alice", "42"} {
		got, ok := c.Decode(c.Encode(v))
		assert.True(t, ok, v)
		assert.Equal(t, v, got)
	}
	_, ok1 := c.Decode(c.Encode("carol"))
	assert.False(t, ok1, "an unknown value encodes to the OOV id, which decodes to nothing")

	values, ok, err = w.Decode("city", []int64{2, 3})
	require.NoError(t, err)
	assert.Equal(t, []string{"", ""}, values)
	assert.Equal(t, []bool{false, false}, ok)

	_, _, err = w.Decode("nope", []int64{2})
	require.ErrorContains(t, err, `no categorical column "nope"`)
}

// EncodeBytes gives Encode's id without converting to a string, for both
// ops, on a workflow built by hand (no index yet) as on a loaded one.
func TestEncodeBytes(t *testing.T) {
	vocab := &preprocess.Categorical{Name: "user", Op: preprocess.OpCategorify, Vocab: []string{"alice", "bob"}}
	hashed := &preprocess.Categorical{Name: "city", Op: preprocess.OpHashBucket, NumBuckets: 7}
	cases := []struct {
		c     *preprocess.Categorical
		value string
		want  int64
	}{
		{vocab, "alice", preprocess.FirstVocabID},
		{vocab, "bob", preprocess.FirstVocabID + 1},
		{vocab, "carol", preprocess.OOVID},
		{vocab, "", preprocess.OOVID},
		{hashed, "paris", preprocess.FirstVocabID + int64(fnv1a64("paris")%7)},
		{hashed, "", preprocess.FirstVocabID + int64(fnv1a64("")%7)},
	}
	require.Equal(t, uint64(0xaf63dc4c8601ec8c), fnv1a64("a"), "FNV-1a 64 test vector")
	for _, tc := range cases {
		require.Equal(t, tc.want, tc.c.EncodeBytes([]byte(tc.value)), "%s %q", tc.c.Name, tc.value)
		require.Equal(t, tc.c.Encode(tc.value), tc.c.EncodeBytes([]byte(tc.value)), "%s %q", tc.c.Name, tc.value)
	}
}

// fnv1a64 is FNV-1a of 64 bits from its definition (offset basis and
// prime), independent of the package's own.
func fnv1a64(s string) uint64 {
	h := uint64(14695981039346656037)
	for i := 0; i < len(s); i++ {
		h ^= uint64(s[i])
		h *= 1099511628211
	}
	return h
}
