package schema

import (
	"bytes"
	"math"
	"regexp"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/mtlrank/mtlrank/schema/internal/textpb"
)

// Wire bytes below were assembled by hand from the protobuf encoding rules
// (tag = field<<3 | wire type; Struct.fields = 1, entry key = 1, value = 2;
// Value: null 1, number 2, string 3, bool 4, struct 5, list 6).
var structVectors = []struct {
	name string
	wire string
	want map[string]any
}{
	{"empty", "", map[string]any{}},
	{"bool", "\n\r\n\x07is_list\x12\x02\x20\x00", map[string]any{"is_list": false}},
	{"number", "\n\x1c\n\x0fdtype_item_size\x12\x09\x11\x00\x00\x00\x00\x00\x00\x50\x40",
		map[string]any{"dtype_item_size": 64.0}},
	{"string", "\n\x0b\n\x01s\x12\x06\x1a\x04abcd", map[string]any{"s": "abcd"}},
	{"null", "\n\x07\n\x01n\x12\x02\x08\x00", map[string]any{"n": nil}},
	{"nested list with null", "\n\x1e\n\x05_dims\x12\x15\x32\x13\n\x11\x32\x0f\n\x09\x11\x00\x00\x00\x00\x00\x00\x00\x00\n\x02\x08\x00",
		map[string]any{"_dims": []any{[]any{0.0, nil}}}},
	{"nested struct", "\n\x0e\n\x01e\x12\x09\x2a\x07\n\x05\n\x01b\x12\x00",
		map[string]any{"e": map[string]any{"b": nil}}},
	{"unknown fields are skipped", "\x10\x05\n\x07\n\x01x\x12\x02\x20\x01\x1d\x01\x02\x03\x04",
		map[string]any{"x": true}},
	{"repeated key: last wins", "\n\x07\n\x01k\x12\x02\x20\x00\n\x07\n\x01k\x12\x02\x20\x01",
		map[string]any{"k": true}},
}

func TestDecodeStructVectors(t *testing.T) {
	for _, tc := range structVectors {
		t.Run(tc.name, func(t *testing.T) {
			got, err := decodeStruct([]byte(tc.wire))
			require.NoError(t, err)
			assert.Equal(t, tc.want, got)
		})
	}
}

func TestEncodeStructIsSortedAndDecodable(t *testing.T) {
	// Keys are written in sorted order: "a" before "b".
	got, err := encodeStruct(map[string]any{"b": true, "a": false})
	require.NoError(t, err)
	assert.Equal(t, "\n\x07\n\x01a\x12\x02\x20\x00\n\x07\n\x01b\x12\x02\x20\x01", string(got))

	for _, tc := range structVectors[:7] {
		wire, err := encodeStruct(tc.want)
		require.NoError(t, err, tc.name)
		back, err := decodeStruct(wire)
		require.NoError(t, err, tc.name)
		assert.Equal(t, tc.want, back, tc.name)
	}
	// The single-key vectors are canonical, so encoding reproduces them.
	for _, i := range []int{2, 5} {
		wire, err := encodeStruct(structVectors[i].want)
		require.NoError(t, err)
		assert.Equal(t, structVectors[i].wire, string(wire), structVectors[i].name)
	}
}

func TestDecodeStructErrors(t *testing.T) {
	cases := []struct{ name, wire, msg string }{
		{"truncated length", "\n\x0d\n\x07is_list", "invalid wire-format"},
		{"truncated varint", "\n", "invalid wire-format"},
		{"group wire type", "\x13", "invalid wire-format"},
		{"field number zero", "\x02\x00", "invalid wire-format"},
		{"varint overflow", "\x10\xff\xff\xff\xff\xff\xff\xff\xff\xff\x7f", "invalid wire-format"},
		{"truncated double", "\n\x08\n\x01k\x12\x03\x11\x00\x00", "invalid wire-format"},
		{"invalid utf8 key", "\n\x05\n\x01\xff\x12\x00", "UTF-8"},
		{"invalid utf8 string", "\n\x08\n\x01k\x12\x03\x1a\x01\xff", "UTF-8"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := decodeStruct([]byte(tc.wire))
			require.Error(t, err)
			assert.Contains(t, err.Error(), tc.msg)
		})
	}
}

// TestDecodeStructWrongWireType: a known field number with another wire
// type is an unknown field to protobuf (kept aside, not an error), so its
// value reads as absent.
func TestDecodeStructWrongWireType(t *testing.T) {
	cases := []struct {
		name, wire string
		want       map[string]any
	}{
		{"entry as varint", "\x08\x01", map[string]any{}},
		{"key as varint", "\n\x02\x08\x01", map[string]any{"": nil}},
		{"number as varint", "\n\x05\n\x01k\x12\x00\n\x07\n\x01n\x12\x02\x10\x01", map[string]any{"k": nil, "n": nil}},
	}
	for _, tc := range cases {
		got, err := decodeStruct([]byte(tc.wire))
		require.NoError(t, err, tc.name)
		assert.Equal(t, tc.want, got, tc.name)
	}
}

func TestDecodeStructDepthLimit(t *testing.T) {
	nested := func(depth int) []byte {
		var v any = []any{}
		for range depth {
			v = []any{v}
		}
		wire, err := encodeStruct(map[string]any{"k": v})
		require.NoError(t, err)
		return wire
	}
	// As deep as the text parser allows is read; far deeper is refused.
	_, err := decodeStruct(nested(textpb.MaxNesting - 1))
	require.NoError(t, err)
	_, err = decodeStruct(nested(2 * textpb.MaxNesting))
	require.ErrorContains(t, err, "recursion")
}

func TestNormalizeValue(t *testing.T) {
	type point struct{ X int }
	got, err := normalizeValue(map[string]any{
		"i": 3, "u": uint8(4), "f32": float32(0.5), "s": []string{"a"}, "m": map[string]int{"x": 1},
		"arr": [2]int64{1, 2}, "nilslice": []int(nil), "ptr": new(int), "nilptr": (*int)(nil),
	}, 0)
	require.NoError(t, err)
	assert.Equal(t, map[string]any{
		"i": 3.0, "u": 4.0, "f32": 0.5, "s": []any{"a"}, "m": map[string]any{"x": 1.0},
		"arr": []any{1.0, 2.0}, "nilslice": []any{}, "ptr": 0.0, "nilptr": nil,
	}, got)

	for _, bad := range []any{point{1}, map[int]string{1: "a"}, []any{make(chan int)}, math.Sqrt} {
		_, err := normalizeValue(bad, 0)
		assert.Error(t, err, "%T", bad)
	}
}

// TestStructAnyRoundTrip writes properties of every kind a Struct holds
// into schema.pbtxt and checks the extra_metadata written with the
// protobuf module itself (an anypb.Any whose Struct equals the one
// structpb builds from the properties), then that parsing gives them back.
func TestStructAnyRoundTrip(t *testing.T) {
	props := map[string]any{
		"s": "héllo \"quoted\"\n", "n": -2.5, "zero": 0.0, "big": 1e300, "t": true, "f": false, "null": nil,
		"list":   []any{1.0, "two", nil, []any{}, map[string]any{"k": true}},
		"nested": map[string]any{"inner": map[string]any{"x": []any{0.5}}, "empty": map[string]any{}},
	}
	s := &Schema{Features: []*Feature{{Name: "x", DType: Int32, Tags: []Tag{TagCategorical},
		IntDomain: &IntDomain{Max: 3}, Properties: props}}}
	text := writeString(t, s)

	// The value the writer recorded, decoded by anypb and structpb.
	m := regexp.MustCompile(`(?s)extra_metadata \{\s*type_url: ("[^"]*")\s*value: ("(?:[^"\\]|\\.)*")`).FindStringSubmatch(text)
	require.NotNil(t, m, text)
	parsed, _, err := textpb.Parse([]byte("u: " + m[1] + " v: " + m[2]))
	require.NoError(t, err)
	a := &anypb.Any{TypeUrl: parsed.Fields[0].Values[0].Str, Value: []byte(parsed.Fields[1].Values[0].Str)}
	got := &structpb.Struct{}
	require.NoError(t, a.UnmarshalTo(got))
	want := map[string]any{"dtype_item_size": 32.0, "is_list": false, "is_ragged": false, "_dims": []any{[]any{0.0, nil}}}
	for k, v := range props {
		want[k] = v
	}
	wantPB, err := structpb.NewStruct(want)
	require.NoError(t, err)
	assert.True(t, proto.Equal(wantPB, got), "recorded %v\nwant %v", got, wantPB)

	back := parseString(t, text)
	assert.Equal(t, props, back.Features[0].Properties)
	assert.Equal(t, text, writeString(t, back), "unchanged properties are written back as read")
}

// TestStructAnyForms reads extra_metadata in the forms protobuf's text
// format allows: {type_url, value}, the expanded Any, and Anys of other
// types, which are kept verbatim and give no properties.
func TestStructAnyForms(t *testing.T) {
	expanded := `feature { name: "x" type: INT annotation { extra_metadata {
  [type.googleapis.com/google.protobuf.Struct] {
    fields { key: "list" value { list_value { values { number_value: 1 } values { null_value: NULL_VALUE } values { string_value: "a" } } } }
    fields { key: "obj" value { struct_value { fields { key: "b" value { bool_value: true } } } } }
  }
} } }`
	s := parseString(t, expanded)
	assert.Equal(t, map[string]any{"list": []any{1.0, nil, "a"}, "obj": map[string]any{"b": true}}, s.Features[0].Properties)

	other := `feature { name: "y" type: INT annotation { extra_metadata { type_url: "type.googleapis.com/google.protobuf.Int64Value" value: "\010\007" } } }`
	s = parseString(t, other)
	assert.Empty(t, s.Features[0].Properties)
	assert.Contains(t, writeString(t, s), `type_url: "type.googleapis.com/google.protobuf.Int64Value" value: "\010\007"`)

	bare := `feature { name: "z" type: INT annotation { extra_metadata { type_url: "type.googleapis.com/google.protobuf.Struct" } } }`
	s = parseString(t, bare)
	assert.Empty(t, s.Features[0].Properties, "an Any without a value holds an empty Struct")

	// A string a Struct cannot hold is refused when writing, naming the feature.
	bad := &Schema{Features: []*Feature{{Name: "w", DType: Int64, Tags: []Tag{TagCategorical},
		IntDomain: &IntDomain{Max: 1}, Properties: map[string]any{"p": "\xff"}}}}
	var buf bytes.Buffer
	err := bad.WritePbtxt(&buf)
	require.Error(t, err)
	assert.Contains(t, err.Error(), `feature "w"`)
}
