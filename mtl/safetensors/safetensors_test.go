package safetensors

import (
	"bytes"
	"encoding/binary"
	"io"
	"math"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestWriteBytesByHand(t *testing.T) {
	path := filepath.Join(t.TempDir(), "m.safetensors")
	err := Write(path, []Tensor{
		FromF32("a", []int{2}, []float32{1, -2}),
		FromI64("b", []int{}, []int64{5}),
		FromI32("c", []int{1, 1}, []int32{-1}),
	}, map[string]string{"format": "pt"})
	require.NoError(t, err)
	got, err := os.ReadFile(path)
	require.NoError(t, err)

	// 8-byte tensors first (b), then 4-byte ones by name (a, c). The header
	// is 215 bytes, padded with 1 space to 216 = 0xd8. The metadata holds
	// the CRC-32C of the 20 data bytes below (computed bit by bit with the
	// reflected polynomial 0x82F63B78: 22f29775).
	hdr := `{"__metadata__":{"crc32c":"22f29775","format":"pt"},` +
		`"a":{"dtype":"F32","shape":[2],"data_offsets":[8,16]},` +
		`"b":{"dtype":"I64","shape":[],"data_offsets":[0,8]},` +
		`"c":{"dtype":"I32","shape":[1,1],"data_offsets":[16,20]}}` + " "
	var want []byte
	want = append(want, 0xd8, 0, 0, 0, 0, 0, 0, 0)
	want = append(want, hdr...)
	want = append(want, 5, 0, 0, 0, 0, 0, 0, 0) // b = 5
	want = append(want, 0, 0, 0x80, 0x3f)       // a[0] = 1.0
	want = append(want, 0, 0, 0, 0xc0)          // a[1] = -2.0
	want = append(want, 0xff, 0xff, 0xff, 0xff) // c = -1
	assert.Equal(t, want, got)

	// No temporary file is left behind.
	entries, err := os.ReadDir(filepath.Dir(path))
	require.NoError(t, err)
	assert.Len(t, entries, 1)
}

func TestRoundTrip(t *testing.T) {
	f32 := make([]float32, 3*5)
	for i := range f32 {
		f32[i] = float32(i)*0.25 - 1
	}
	f32[3] = float32(math.Inf(-1))
	f32[4] = math.SmallestNonzeroFloat32
	in := []Tensor{
		FromF32("input/emb/user_id", []int{3, 5}, f32),
		FromI32("ids", []int{4}, []int32{math.MinInt32, -1, 0, math.MaxInt32}),
		FromI64("step", []int{1}, []int64{math.MaxInt64}),
		FromF32("empty", []int{0, 7}, nil),
		FromF32("odd", []int{3}, []float32{1, 2, 3}),
		FromI64("after_odd", []int{2}, []int64{-7, 7}),
	}
	path := filepath.Join(t.TempDir(), "x.safetensors")
	require.NoError(t, Write(path, in, map[string]string{"mtlrank_version": "1", "note": "é"}))
	f, err := Read(path)
	require.NoError(t, err)
	assert.Equal(t, map[string]string{"mtlrank_version": "1", "note": "é"}, f.Metadata)
	require.Len(t, f.Tensors, len(in))
	for _, want := range in {
		got, ok := f.Tensor(want.Name)
		require.True(t, ok, want.Name)
		assert.Equal(t, want.DType, got.DType, want.Name)
		assert.Equal(t, want.Shape, got.Shape, want.Name)
		assert.Equal(t, want.Data, got.Data, want.Name)
	}
	emb, _ := f.Tensor("input/emb/user_id")
	v, err := emb.F32()
	require.NoError(t, err)
	assert.Equal(t, f32, v)
	ids, _ := f.Tensor("ids")
	iv, err := ids.I32()
	require.NoError(t, err)
	assert.Equal(t, []int32{math.MinInt32, -1, 0, math.MaxInt32}, iv)
	st, _ := f.Tensor("step")
	sv, err := st.I64()
	require.NoError(t, err)
	assert.Equal(t, []int64{math.MaxInt64}, sv)
	_, err = st.F32()
	assert.ErrorContains(t, err, `"step"`)

	// Every tensor is aligned to its element size within the file.
	raw, err := os.ReadFile(path)
	require.NoError(t, err)
	dataStart := 8 + int(binary.LittleEndian.Uint64(raw))
	assert.Zero(t, dataStart%8)
	fromRaw, err := Decode(raw)
	require.NoError(t, err)
	for _, tt := range fromRaw.Tensors {
		if len(tt.Data) == 0 {
			continue
		}
		off := bytesOffset(raw, tt.Data)
		assert.Zero(t, int(off)%tt.DType.Size(), tt.Name)
	}

	// Writing the same content twice gives identical bytes.
	path2 := filepath.Join(t.TempDir(), "y.safetensors")
	require.NoError(t, Write(path2, in, map[string]string{"note": "é", "mtlrank_version": "1"}))
	raw2, err := os.ReadFile(path2)
	require.NoError(t, err)
	assert.Equal(t, raw, raw2)
}

// bytesOffset is the offset of sub inside buf (sub must alias buf).
func bytesOffset(buf, sub []byte) uintptr {
	for i := range buf {
		if &buf[i] == &sub[0] {
			return uintptr(i)
		}
	}
	panic("not a sub-slice")
}

func TestEncodeRejects(t *testing.T) {
	cases := []struct {
		name    string
		tensors []Tensor
		want    string
	}{
		{"duplicate", []Tensor{FromF32("a", []int{1}, []float32{1}), FromF32("a", []int{1}, []float32{1})}, `duplicate tensor name "a"`},
		{"size", []Tensor{{Name: "a", DType: F32, Shape: []int{2}, Data: make([]byte, 4)}}, `tensor "a": 4 data bytes, want 8`},
		{"dtype", []Tensor{{Name: "a", DType: "F16", Shape: []int{1}, Data: make([]byte, 2)}}, `unsupported dtype "F16"`},
		{"empty name", []Tensor{FromF32("", []int{1}, []float32{1})}, "empty tensor name"},
		{"reserved", []Tensor{FromF32("__metadata__", []int{1}, []float32{1})}, "reserved"},
		{"negative", []Tensor{{Name: "a", DType: F32, Shape: []int{-1}}}, "negative dimension"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "bad.safetensors")
			err := Write(path, tc.tensors, nil)
			require.Error(t, err)
			assert.Contains(t, err.Error(), tc.want)
			assert.Contains(t, err.Error(), path)
			entries, _ := os.ReadDir(filepath.Dir(path))
			assert.Empty(t, entries, "no file and no temporary file is left")
		})
	}
}

// file builds a safetensors file from a raw header and data section.
func file(header string, data []byte) []byte {
	var b bytes.Buffer
	var n [8]byte
	binary.LittleEndian.PutUint64(n[:], uint64(len(header)))
	b.Write(n[:])
	b.WriteString(header)
	b.Write(data)
	return b.Bytes()
}

func TestDecodeCorrupt(t *testing.T) {
	ok := `{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}`
	cases := []struct {
		name string
		data []byte
		want string
	}{
		{"short", []byte{1, 2, 3}, "shorter than the 8-byte header length"},
		{"header beyond file", file(ok, make([]byte, 8))[:20], "exceeds the 12 bytes"},
		{"huge header length", append([]byte{0, 0, 0, 0, 0, 0, 0, 0x7f}, make([]byte, 10)...), "exceeds the limit"},
		{"not json", file("{nope", nil), "header"},
		{"array", file("[1,2]", nil), "not a JSON object"},
		{"invalid utf8", file("{\"\xff\":1}", nil), "UTF-8"},
		{"duplicate", file(`{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}`, make([]byte, 8)), `duplicate entry "a"`},
		{"dtype", file(`{"a":{"dtype":"BF16","shape":[2],"data_offsets":[0,4]}}`, make([]byte, 4)), `tensor "a": unsupported dtype "BF16"`},
		{"missing dtype", file(`{"a":{"shape":[2],"data_offsets":[0,8]}}`, make([]byte, 8)), `tensor "a": unsupported dtype ""`},
		{"missing shape", file(`{"a":{"dtype":"F32","data_offsets":[0,4]}}`, make([]byte, 4)), `tensor "a": missing shape`},
		{"offsets count", file(`{"a":{"dtype":"F32","shape":[1],"data_offsets":[0]}}`, make([]byte, 4)), "data_offsets must have 2 entries"},
		{"offsets beyond data", file(ok, make([]byte, 4)), `tensor "a": data_offsets [0, 8] outside the 4 data bytes`},
		{"offsets reversed", file(`{"a":{"dtype":"F32","shape":[0],"data_offsets":[4,0]}}`, make([]byte, 4)), "outside"},
		{"size mismatch", file(`{"a":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}}`, make([]byte, 8)), `tensor "a": data_offsets [0, 8] hold 8 bytes, but F32[3] needs 12`},
		{"negative dim", file(`{"a":{"dtype":"F32","shape":[-2],"data_offsets":[0,8]}}`, make([]byte, 8)), "negative dimension"},
		{"huge shape", file(`{"a":{"dtype":"F32","shape":[4611686018427387904,4],"data_offsets":[0,8]}}`, make([]byte, 8)), "too large"},
		{"unknown field", file(`{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8],"extra":1}}`, make([]byte, 8)), `tensor "a"`},
		{"overlap", file(`{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}`, make([]byte, 8)), "overlaps"},
		{"hole", file(`{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"b":{"dtype":"F32","shape":[1],"data_offsets":[8,12]}}`, make([]byte, 12)), "hole"},
		{"trailing", file(ok, make([]byte, 12)), "4 bytes after the last tensor"},
		{"metadata not strings", file(`{"__metadata__":{"a":1}}`, nil), "__metadata__"},
		{"trailing header garbage", file(ok+" x", make([]byte, 8)), "header"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Decode(tc.data)
			require.Error(t, err)
			assert.Contains(t, err.Error(), tc.want)
		})
	}
	// A valid file decodes; the same file with a byte cut off does not.
	good := file(ok, make([]byte, 8))
	_, err := Decode(good)
	require.NoError(t, err)
	_, err = Decode(good[:len(good)-1])
	require.Error(t, err)
}

func TestReadNamesFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "c.safetensors")
	require.NoError(t, os.WriteFile(path, []byte("garbage!!"), 0o644))
	_, err := Read(path)
	require.Error(t, err)
	assert.True(t, strings.HasPrefix(err.Error(), path), err.Error())
	_, err = Read(filepath.Join(t.TempDir(), "missing.safetensors"))
	require.Error(t, err)
}

func FuzzDecode(f *testing.F) {
	var buf bytes.Buffer
	require.NoError(f, Encode(&buf, []Tensor{
		FromF32("a", []int{2}, []float32{1, 2}),
		FromI64("b", []int{1}, []int64{3}),
	}, map[string]string{"k": "v"}))
	f.Add(buf.Bytes())
	f.Add(file(`{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}`, make([]byte, 4)))
	f.Fuzz(func(t *testing.T, data []byte) {
		file, err := Decode(data)
		if err != nil {
			return
		}
		// Whatever decodes must re-encode and decode to the same tensors.
		var out bytes.Buffer
		require.NoError(t, Encode(&out, file.Tensors, file.Metadata))
		back, err := Decode(out.Bytes())
		require.NoError(t, err)
		require.Equal(t, len(file.Tensors), len(back.Tensors))
		for _, tt := range file.Tensors {
			got, ok := back.Tensor(tt.Name)
			require.True(t, ok)
			require.Equal(t, tt.Data, got.Data)
		}
	})
}

// TestWriteModeAndFailure: the file gets 0666 minus the umask (not a
// temporary file's 0600); a failed write leaves the previous file alone.
func TestWriteModeAndFailure(t *testing.T) {
	old := syscall.Umask(0o022)
	defer syscall.Umask(old)
	dir := t.TempDir()
	path := filepath.Join(dir, "m.safetensors")
	require.NoError(t, Write(path, []Tensor{FromF32("a", []int{1}, []float32{1})}, nil))
	st, err := os.Stat(path)
	require.NoError(t, err)
	assert.Equal(t, os.FileMode(0o644), st.Mode().Perm())
	before, err := os.ReadFile(path)
	require.NoError(t, err)

	// An invalid tensor fails while encoding: nothing changes.
	err = Write(path, []Tensor{{Name: "bad", DType: F32, Shape: []int{3}, Data: []byte{1}}}, nil)
	require.Error(t, err)
	assert.Contains(t, err.Error(), path)
	after, err := os.ReadFile(path)
	require.NoError(t, err)
	assert.Equal(t, before, after)
	entries, err := os.ReadDir(dir)
	require.NoError(t, err)
	assert.Len(t, entries, 1, "no temporary file left")
}

// TestChecksumDetectsFlips: a flipped byte in the data section is an
// error naming the checksum; files without the entry (other writers) load.
func TestChecksumDetectsFlips(t *testing.T) {
	var buf bytes.Buffer
	require.NoError(t, Encode(&buf, []Tensor{FromF32("w", []int{64}, make([]float32, 64))}, map[string]string{"k": "v"}))
	good := buf.Bytes()
	f, err := Decode(good)
	require.NoError(t, err)
	assert.Equal(t, map[string]string{"k": "v"}, f.Metadata, "the checksum entry is not shown")
	dataStart := len(good) - 64*4
	for pos := dataStart; pos < len(good); pos += 7 {
		b := bytes.Clone(good)
		b[pos] ^= 0x10
		_, err := Decode(b)
		require.ErrorContains(t, err, "checksum mismatch", "flip at %d", pos)
	}
	// A file written without the entry decodes.
	hdr := []byte(`{"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}`)
	var plain []byte
	plain = binary.LittleEndian.AppendUint64(plain, uint64(len(hdr)))
	plain = append(append(plain, hdr...), 0, 0, 0x80, 0x3f)
	f, err = Decode(plain)
	require.NoError(t, err)
	v, err := f.Tensors[0].F32()
	require.NoError(t, err)
	assert.Equal(t, []float32{1}, v)
}

// TestEncodeStreamAndReadLayout: EncodeStream writes the file Encode
// writes but for the checksum entry, asking for each tensor's data once in
// the file's order; ReadLayout reads the header Decode reads and leaves
// the reader at the data, and refuses what Decode refuses.
func TestEncodeStreamAndReadLayout(t *testing.T) {
	in := []Tensor{
		FromF32("z", []int{2, 2}, []float32{1, 2, 3, 4}),
		FromI64("b", []int{1}, []int64{7}),
		FromF32("a", []int{3}, []float32{-1, 0, 1}),
	}
	var asked []string
	var stream bytes.Buffer
	err := EncodeStream(&stream, []Tensor{{Name: "z", DType: F32, Shape: []int{2, 2}}, {Name: "b", DType: I64, Shape: []int{1}}, {Name: "a", DType: F32, Shape: []int{3}}},
		map[string]string{"k": "v"}, func(i int, w io.Writer) error {
			asked = append(asked, in[i].Name)
			for _, b := range in[i].Data { // in pieces
				if _, err := w.Write([]byte{b}); err != nil {
					return err
				}
			}
			return nil
		})
	require.NoError(t, err)
	assert.Equal(t, []string{"b", "a", "z"}, asked, "8-byte elements first, then by name")
	f, err := Decode(stream.Bytes())
	require.NoError(t, err)
	assert.Equal(t, map[string]string{"k": "v"}, f.Metadata)
	var enc bytes.Buffer
	require.NoError(t, Encode(&enc, in, map[string]string{"k": "v"}))
	g, err := Decode(enc.Bytes())
	require.NoError(t, err)
	assert.Equal(t, g.Tensors, f.Tensors)

	r := bytes.NewReader(enc.Bytes())
	l, err := ReadLayout(r, int64(enc.Len()))
	require.NoError(t, err)
	assert.Equal(t, int64(enc.Len()-r.Len()), l.DataStart, "the reader is at the data")
	require.Len(t, l.Tensors, 3)
	for i, s := range l.Tensors {
		assert.Equal(t, g.Tensors[i].Name, s.Name)
		assert.Equal(t, g.Tensors[i].Shape, s.Shape)
		assert.Equal(t, g.Tensors[i].Data, enc.Bytes()[l.DataStart+s.Begin:l.DataStart+s.End])
	}
	assert.Contains(t, l.Metadata, ChecksumKey)

	// A file cut short: the header no longer fits, or the data do not.
	for _, n := range []int{4, 20, enc.Len() - 4} {
		_, err := ReadLayout(bytes.NewReader(enc.Bytes()[:n]), int64(n))
		assert.Error(t, err, "%d bytes", n)
	}
	// Data of the wrong length, and a reserved key.
	err = EncodeStream(io.Discard, []Tensor{{Name: "a", DType: F32, Shape: []int{3}}}, nil, func(_ int, w io.Writer) error {
		_, err := w.Write(make([]byte, 8))
		return err
	})
	assert.ErrorContains(t, err, `tensor "a": 8 data bytes, want 12`)
	err = EncodeStream(io.Discard, nil, map[string]string{ChecksumKey: "x"}, nil)
	assert.ErrorContains(t, err, "reserved")
}
