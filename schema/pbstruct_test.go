package schema

import (
	"math"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
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
			got, err := decodeStruct([]byte(tc.wire), 0)
			require.NoError(t, err)
			assert.Equal(t, tc.want, got)
		})
	}
}

func TestEncodeStructIsSortedAndDecodable(t *testing.T) {
	// Keys are written in sorted order: "a" before "b".
	got := encodeStruct(map[string]any{"b": true, "a": false})
	assert.Equal(t, "\n\x07\n\x01a\x12\x02\x20\x00\n\x07\n\x01b\x12\x02\x20\x01", string(got))

	for _, tc := range structVectors[:7] {
		back, err := decodeStruct(encodeStruct(tc.want), 0)
		require.NoError(t, err, tc.name)
		assert.Equal(t, tc.want, back, tc.name)
	}
	// The single-key vectors are canonical, so encoding reproduces them.
	assert.Equal(t, structVectors[5].wire, string(encodeStruct(structVectors[5].want)))
	assert.Equal(t, structVectors[2].wire, string(encodeStruct(structVectors[2].want)))
}

func TestDecodeStructErrors(t *testing.T) {
	cases := []struct{ name, wire, msg string }{
		{"truncated length", "\n\x0d\n\x07is_list", "runs past the end"},
		{"truncated varint", "\n", "truncated varint"},
		{"entry with varint", "\x08\x01", "Struct field 1 has wire type 0"},
		{"key as varint", "\n\x02\x08\x01", "Struct entry field 1 has wire type 0"},
		{"number as varint", "\n\x05\n\x01k\x12\x00\n\x07\n\x01n\x12\x02\x10\x01", "Value field 2 has wire type 0"},
		{"group wire type", "\x13", "unsupported wire type 3"},
		{"field number zero", "\x02\x00", "field number 0"},
		{"varint overflow", "\x10\xff\xff\xff\xff\xff\xff\xff\xff\xff\x7f", "overflows"},
		{"truncated double", "\n\x08\n\x01k\x12\x03\x11\x00\x00", "truncated fixed64"},
		{"invalid utf8 key", "\n\x05\n\x01\xff\x12\x00", "not valid UTF-8"},
		{"invalid utf8 string", "\n\x08\n\x01k\x12\x03\x1a\x01\xff", "not valid UTF-8"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := decodeStruct([]byte(tc.wire), 0)
			require.Error(t, err)
			assert.Contains(t, err.Error(), tc.msg)
		})
	}
}

func TestDecodeStructDepthLimit(t *testing.T) {
	// A list nested in lists, deeper than the limit.
	v := encodeValue([]any{})
	for i := 0; i < maxNesting; i++ {
		v = appendBytesField(nil, 6, appendBytesField(nil, 1, v))
	}
	wire := appendBytesField(nil, 1, append(appendBytesField(nil, 1, []byte("k")), appendBytesField(nil, 2, v)...))
	_, err := decodeStruct(wire, 0)
	require.ErrorContains(t, err, "nested deeper")
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
