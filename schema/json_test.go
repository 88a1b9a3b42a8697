package schema

import (
	"bytes"
	"errors"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func jsonRoundTrip(t *testing.T, s *Schema) (*Schema, string) {
	t.Helper()
	var buf bytes.Buffer
	require.NoError(t, s.WriteJSON(&buf))
	back, err := ParseJSON(bytes.NewReader(buf.Bytes()))
	require.NoError(t, err)
	return back, buf.String()
}

func TestJSONRoundTripTenrec(t *testing.T) {
	s := Tenrec()
	back, text := jsonRoundTrip(t, s)
	assert.Equal(t, s, back)
	// The documented layout.
	assert.True(t, strings.HasPrefix(text, "{\n  \"version\": 1,\n  \"features\": [\n"), text)
	assert.Contains(t, text, `"int_domain": {
        "name": "user_id",
        "min": 0,
        "max": 100000,
        "is_categorical": true
      }`)
}

func TestJSONRoundTripMerlin(t *testing.T) {
	_, s := readMerlin(t)
	back, _ := jsonRoundTrip(t, s)
	assert.Equal(t, exported(s), exported(back))
	// The verbatim pbtxt content travels through JSON too, so converting
	// pbtxt -> json -> pbtxt keeps it.
	assert.Equal(t, s.Feature("item_embedding").pb.nested, back.Feature("item_embedding").pb.nested)
	again := parseString(t, writeString(t, back))
	assert.Equal(t, exported(s), exported(again))
	assert.Equal(t, []string{`comment: "pretrained, \303\251t\303\251 2023"`}, again.Feature("item_embedding").pb.nested["annotation"])
}

func TestJSONProperties(t *testing.T) {
	s := &Schema{Features: []*Feature{{Name: "x", DType: Int64, Properties: map[string]any{
		"n": 3, "list": []int{1, 2}, "m": map[string]any{"nested": true, "nil": nil},
	}}}}
	back, _ := jsonRoundTrip(t, s)
	// Numbers come back as float64, as in a google.protobuf.Struct.
	assert.Equal(t, map[string]any{"n": 3.0, "list": []any{1.0, 2.0}, "m": map[string]any{"nested": true, "nil": nil}},
		back.Features[0].Properties)

	bad := &Schema{Features: []*Feature{{Name: "x", Properties: map[string]any{"f": func() {}}}}}
	require.ErrorContains(t, bad.WriteJSON(&bytes.Buffer{}), `feature "x": property "f"`)
	require.ErrorContains(t, (&Schema{Features: []*Feature{nil}}).WriteJSON(&bytes.Buffer{}), "feature #0 is nil")
}

func TestParseJSONErrors(t *testing.T) {
	cases := []struct {
		name      string
		src       string
		line, col int // 0: no position expected
		msg       string
	}{
		{"syntax", "{\n  \"features\": [\n    {\"name\": \"a\",}\n  ]\n}", 3, 18, "invalid character '}'"},
		{"wrong type", "{\"features\": [{\"name\": 5}]}", 1, 24, "features.name: expected string, got a JSON number"},
		{"unknown key", `{"features": [{"name": "a", "int_domian": {}}]}`, 0, 0, `unknown field "int_domian"`},
		{"trailing data", `{"features": []} {}`, 0, 0, "unexpected data after the schema object"},
		{"empty", ``, 1, 1, "empty JSON document"},
		{"newer version", `{"version": 2, "features": []}`, 0, 0, "version 2 is newer"},
		{"null feature", `{"features": [null]}`, 0, 0, "features[0] is null"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParseJSON(strings.NewReader(tc.src))
			require.Error(t, err)
			assert.Contains(t, err.Error(), tc.msg)
			if tc.line > 0 {
				var pe *ParseError
				require.True(t, errors.As(err, &pe), "%T: %v", err, err)
				assert.Equal(t, tc.line, pe.Line, err.Error())
				assert.Equal(t, tc.col, pe.Col, err.Error())
			}
		})
	}
}
