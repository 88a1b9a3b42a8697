package preprocess

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"sort"
	"strconv"
	"unicode/utf8"
)

// JSON cannot hold bytes that are not UTF-8: encoding/json writes them as
// U+FFFD, so a categorical value read from a Latin-1 CSV or a binary
// Parquet column would come back as another value (out-of-vocabulary when
// the workflow is applied to the very data it was fitted on), and two such
// values could even become one ("appears twice in the vocabulary").
//
// A vocabulary therefore keeps every value in "vocab" as before (invalid
// bytes shown as U+FFFD, for people reading the file), and the values that
// are not valid UTF-8 are repeated byte for byte in "vocab_base64", keyed
// by their index in "vocab". Files without the key (every earlier file,
// and any vocabulary of valid UTF-8 values) read as before; a reader that
// does not know the key refuses the file instead of silently using the
// U+FFFD forms.

// categoricalJSON is Categorical's JSON form.
type categoricalJSON struct {
	*categoricalFields
	VocabBase64 map[string]string `json:"vocab_base64,omitempty"`
}

// categoricalFields has Categorical's fields without its JSON methods.
type categoricalFields Categorical

// MarshalJSON writes the vocabulary values that are not valid UTF-8 to
// vocab_base64 as well.
func (c *Categorical) MarshalJSON() ([]byte, error) {
	out := categoricalJSON{categoricalFields: (*categoricalFields)(c)}
	for i, v := range c.Vocab {
		if !utf8.ValidString(v) {
			if out.VocabBase64 == nil {
				out.VocabBase64 = map[string]string{}
			}
			out.VocabBase64[strconv.Itoa(i)] = base64.StdEncoding.EncodeToString([]byte(v))
		}
	}
	return json.Marshal(out)
}

// UnmarshalJSON reads what MarshalJSON writes: the vocab_base64 values
// replace their vocab entries.
func (c *Categorical) UnmarshalJSON(b []byte) error {
	in := categoricalJSON{categoricalFields: (*categoricalFields)(c)}
	if err := strictUnmarshal(b, &in); err != nil {
		return err
	}
	keys := make([]string, 0, len(in.VocabBase64))
	for k := range in.VocabBase64 {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		i, err := strconv.Atoi(k)
		if err != nil || i < 0 || i >= len(c.Vocab) || strconv.Itoa(i) != k {
			return fmt.Errorf("categorical %q: vocab_base64 key %q is not an index of the %d vocabulary values", c.Name, k, len(c.Vocab))
		}
		raw, err := base64.StdEncoding.DecodeString(in.VocabBase64[k])
		if err != nil {
			return fmt.Errorf("categorical %q: vocab_base64[%s]: %w", c.Name, k, err)
		}
		if utf8.Valid(raw) {
			return fmt.Errorf("categorical %q: vocab_base64[%s] is valid UTF-8; it belongs in vocab", c.Name, k)
		}
		c.Vocab[i] = string(raw)
	}
	return nil
}

// strictUnmarshal decodes b into v refusing unknown fields, as
// ParseWorkflow does for the whole file (a custom UnmarshalJSON does not
// inherit the outer decoder's setting).
func strictUnmarshal(b []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	return dec.Decode(v)
}
