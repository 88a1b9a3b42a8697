package grpcapi

import (
	"encoding/binary"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/mtlrank/mtlrank/serve"
)

// rawBytes frames elements as the protocol's raw BYTES contents: each after
// a 4-byte little-endian length.
func rawBytes(elems ...string) []byte {
	var b []byte
	for _, e := range elems {
		b = binary.LittleEndian.AppendUint32(b, uint32(len(e)))
		b = append(b, e...)
	}
	return b
}

func TestDecodeRawBytes(t *testing.T) {
	cases := []struct {
		name string
		raw  []byte
		want []string
		err  string
	}{
		{"empty", nil, []string{}, ""},
		{"one", rawBytes("user-7"), []string{"user-7"}, ""},
		{"several with empty elements", rawBytes("", "a", "", "item-12345"), []string{"", "a", "", "item-12345"}, ""},
		{"length cut short", append(rawBytes("ab"), 1, 0), nil, "end inside an element's length"},
		{"element overruns", rawBytes("abc")[:6], nil, "element 0 of 3 bytes runs past the contents"},
		{"second element overruns", append(rawBytes("x"), 9, 0, 0, 0, 'y'), nil, "element 1 of 9 bytes runs past"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			tn := serve.Tensor{Name: "item_id", Datatype: serve.BYTES}
			err := decodeRaw(&tn, c.raw)
			if c.err != "" {
				require.ErrorContains(t, err, c.err)
				require.ErrorContains(t, err, `"item_id"`)
				return
			}
			require.NoError(t, err)
			require.Nil(t, tn.Bytes, "raw BYTES stay packed")
			require.Equal(t, len(c.want), tn.Len())
			got := []string{}
			for i, e := range tn.Packed.All() {
				require.Equal(t, len(got), i)
				got = append(got, string(e))
			}
			require.Equal(t, c.want, got)
		})
	}
}

// An element is a view into the request's buffer; appending to it must not
// write over the next element.
func TestDecodeRawBytesElementsDoNotOverlap(t *testing.T) {
	tn := serve.Tensor{Name: "f", Datatype: serve.BYTES}
	require.NoError(t, decodeRaw(&tn, rawBytes("ab", "cd")))
	var elems [][]byte
	for _, e := range tn.Packed.All() {
		elems = append(elems, e)
	}
	_ = append(elems[0], strings.Repeat("z", 8)...)
	require.Equal(t, "cd", string(elems[1]))
}
