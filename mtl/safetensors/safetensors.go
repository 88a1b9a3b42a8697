// Package safetensors reads and writes the safetensors file format for the
// dtypes mtlrank stores (F32, I32, I64).
//
// Layout of a file:
//
//	[8 bytes]  N, the header length, unsigned little-endian
//	[N bytes]  a UTF-8 JSON object: for every tensor
//	           "name": {"dtype": "F32", "shape": [rows, cols], "data_offsets": [begin, end]}
//	           and optionally "__metadata__": {"key": "value", ...} (strings only)
//	[rest]     the tensor data, little-endian, row-major; offsets are relative
//	           to the start of this section
//
// Writing: the header is padded with spaces so that the data section starts
// at a multiple of 8 bytes, and tensors are laid out by decreasing element
// size, then by name, so every tensor is aligned to its element size and the
// output is byte-for-byte reproducible. Files are written to a temporary
// name in the destination folder, synced and renamed, so a reader never
// sees a partial file.
//
// Reading is strict: the header length must fit the file, the JSON must be
// an object without duplicate names or unknown fields, every dtype must be
// supported, data_offsets must satisfy begin <= end <= data length and
// end-begin = element size * product(shape), and the tensors must tile the
// data section exactly (no overlap, no hole, no trailing bytes). Every error
// names the file and, where there is one, the tensor.
package safetensors

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"math"
	"os"
	"slices"
	"strings"
	"unicode/utf8"

	"github.com/mtlrank/mtlrank/internal/atomicfile"
)

// DType is a safetensors element type.
type DType string

const (
	F32 DType = "F32"
	I32 DType = "I32"
	I64 DType = "I64"
)

// Size is the width of one element in bytes (0 for an unsupported dtype).
func (d DType) Size() int {
	switch d {
	case F32, I32:
		return 4
	case I64:
		return 8
	}
	return 0
}

// MaxHeaderSize bounds the JSON header read from a file (100 MB, as the
// reference implementation), so a corrupt length cannot exhaust memory.
const MaxHeaderSize = 100 << 20

const metadataKey = "__metadata__"

// ChecksumKey is the metadata entry Encode adds: the CRC-32C of the data
// section, in hex. Decode verifies it when present (files of other
// writers have none) and leaves it out of File.Metadata.
const ChecksumKey = "crc32c"

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// Tensor is one named tensor. Data holds the little-endian bytes of its
// elements (len = DType.Size() * product(Shape)).
type Tensor struct {
	Name  string
	DType DType
	Shape []int
	Data  []byte
}

// NumElements is the product of Shape (1 for a scalar).
func (t Tensor) NumElements() int {
	n := 1
	for _, d := range t.Shape {
		n *= d
	}
	return n
}

// FromF32 builds an F32 tensor; len(data) must equal the product of shape.
func FromF32(name string, shape []int, data []float32) Tensor {
	b := make([]byte, 4*len(data))
	for i, v := range data {
		binary.LittleEndian.PutUint32(b[4*i:], math.Float32bits(v))
	}
	return Tensor{Name: name, DType: F32, Shape: slices.Clone(shape), Data: b}
}

// FromI32 builds an I32 tensor.
func FromI32(name string, shape []int, data []int32) Tensor {
	b := make([]byte, 4*len(data))
	for i, v := range data {
		binary.LittleEndian.PutUint32(b[4*i:], uint32(v))
	}
	return Tensor{Name: name, DType: I32, Shape: slices.Clone(shape), Data: b}
}

// FromI64 builds an I64 tensor.
func FromI64(name string, shape []int, data []int64) Tensor {
	b := make([]byte, 8*len(data))
	for i, v := range data {
		binary.LittleEndian.PutUint64(b[8*i:], uint64(v))
	}
	return Tensor{Name: name, DType: I64, Shape: slices.Clone(shape), Data: b}
}

// F32 decodes an F32 tensor's elements.
func (t Tensor) F32() ([]float32, error) {
	if t.DType != F32 {
		return nil, fmt.Errorf("safetensors: tensor %q has dtype %s, want F32", t.Name, t.DType)
	}
	out := make([]float32, len(t.Data)/4)
	for i := range out {
		out[i] = math.Float32frombits(binary.LittleEndian.Uint32(t.Data[4*i:]))
	}
	return out, nil
}

// I32 decodes an I32 tensor's elements.
func (t Tensor) I32() ([]int32, error) {
	if t.DType != I32 {
		return nil, fmt.Errorf("safetensors: tensor %q has dtype %s, want I32", t.Name, t.DType)
	}
	out := make([]int32, len(t.Data)/4)
	for i := range out {
		out[i] = int32(binary.LittleEndian.Uint32(t.Data[4*i:]))
	}
	return out, nil
}

// I64 decodes an I64 tensor's elements.
func (t Tensor) I64() ([]int64, error) {
	if t.DType != I64 {
		return nil, fmt.Errorf("safetensors: tensor %q has dtype %s, want I64", t.Name, t.DType)
	}
	out := make([]int64, len(t.Data)/8)
	for i := range out {
		out[i] = int64(binary.LittleEndian.Uint64(t.Data[8*i:]))
	}
	return out, nil
}

// File is the decoded content of a safetensors file.
type File struct {
	Metadata map[string]string
	// Tensors in data order (by data offset).
	Tensors []Tensor
}

// Tensor returns the named tensor.
func (f *File) Tensor(name string) (Tensor, bool) {
	for _, t := range f.Tensors {
		if t.Name == name {
			return t, true
		}
	}
	return Tensor{}, false
}

// Names returns the tensor names in data order.
func (f *File) Names() []string {
	out := make([]string, len(f.Tensors))
	for i, t := range f.Tensors {
		out[i] = t.Name
	}
	return out
}

type headerEntry struct {
	DType       DType   `json:"dtype"`
	Shape       []int64 `json:"shape"`
	DataOffsets []int64 `json:"data_offsets"`
}

// checkSpec checks t's name, dtype and shape.
func checkSpec(t Tensor) error {
	if t.Name == "" {
		return errors.New("empty tensor name")
	}
	if t.Name == metadataKey {
		return fmt.Errorf("tensor name %q is reserved", t.Name)
	}
	if !utf8.ValidString(t.Name) {
		return fmt.Errorf("tensor name %q is not valid UTF-8", t.Name)
	}
	if t.DType.Size() == 0 {
		return fmt.Errorf("tensor %q: unsupported dtype %q", t.Name, t.DType)
	}
	for _, d := range t.Shape {
		if d < 0 {
			return fmt.Errorf("tensor %q: negative dimension in shape %v", t.Name, t.Shape)
		}
	}
	return nil
}

// checkTensor is checkSpec and the length of t's data.
func checkTensor(t Tensor) error {
	if err := checkSpec(t); err != nil {
		return err
	}
	if want := t.DType.Size() * t.NumElements(); len(t.Data) != want {
		return fmt.Errorf("tensor %q: %d data bytes, want %d for %s%v", t.Name, len(t.Data), want, t.DType, t.Shape)
	}
	return nil
}

// Encode writes tensors and metadata in the safetensors format to w.
func Encode(w io.Writer, tensors []Tensor, metadata map[string]string) error {
	for _, t := range tensors {
		if err := checkTensor(t); err != nil {
			return fmt.Errorf("safetensors: %w", err)
		}
	}
	// The data section's checksum goes into the metadata, so that a flipped
	// byte in a weight is an error at load, not another model.
	crc := crc32.New(castagnoli)
	for _, i := range dataOrder(tensors) {
		crc.Write(tensors[i].Data)
	}
	meta := make(map[string]string, len(metadata)+1)
	for k, v := range metadata {
		meta[k] = v
	}
	meta[ChecksumKey] = fmt.Sprintf("%08x", crc.Sum32())
	return encode(w, tensors, meta, func(i int, w io.Writer) error {
		_, err := w.Write(tensors[i].Data)
		return err
	})
}

// EncodeStream is Encode for tensors whose data (their Data is ignored)
// data(i, w) writes to w one tensor at a time, in the file's order, in as
// many pieces as it likes, so that the writer need not hold them all: for
// data larger than memory, or read from a device. The file has no
// ChecksumKey entry (it would need the data before the header): the
// caller checks the file's integrity its own way.
func EncodeStream(w io.Writer, tensors []Tensor, metadata map[string]string, data func(i int, w io.Writer) error) error {
	for _, t := range tensors {
		if err := checkSpec(t); err != nil {
			return fmt.Errorf("safetensors: %w", err)
		}
	}
	if _, ok := metadata[ChecksumKey]; ok {
		return fmt.Errorf("safetensors: metadata key %q is reserved", ChecksumKey)
	}
	return encode(w, tensors, metadata, data)
}

// dataOrder is the order of tensors in a file: largest elements first,
// which keeps every tensor aligned to its element size, then by name.
func dataOrder(tensors []Tensor) []int {
	order := make([]int, len(tensors))
	for i := range order {
		order[i] = i
	}
	slices.SortFunc(order, func(a, b int) int {
		ta, tb := tensors[a], tensors[b]
		if d := tb.DType.Size() - ta.DType.Size(); d != 0 {
			return d
		}
		return strings.Compare(ta.Name, tb.Name)
	})
	return order
}

// encode writes the header of tensors (checked) and meta, then the data
// of each tensor, by data(i, w), in dataOrder.
func encode(w io.Writer, tensors []Tensor, meta map[string]string, data func(i int, w io.Writer) error) error {
	seen := make(map[string]bool, len(tensors))
	for _, t := range tensors {
		if seen[t.Name] {
			return fmt.Errorf("safetensors: duplicate tensor name %q", t.Name)
		}
		seen[t.Name] = true
	}
	order := dataOrder(tensors)
	header := make(map[string]any, len(tensors)+1)
	if len(meta) > 0 {
		header[metadataKey] = meta
	}
	var off int64
	for _, i := range order {
		t := tensors[i]
		shape := make([]int64, len(t.Shape))
		for j, d := range t.Shape {
			shape[j] = int64(d)
		}
		end := off + int64(t.DType.Size()*t.NumElements())
		header[t.Name] = headerEntry{DType: t.DType, Shape: shape, DataOffsets: []int64{off, end}}
		off = end
	}
	hdr, err := json.Marshal(header)
	if err != nil {
		return fmt.Errorf("safetensors: encoding header: %w", err)
	}
	if pad := (8 - len(hdr)%8) % 8; pad > 0 {
		hdr = append(hdr, bytes.Repeat([]byte{' '}, pad)...)
	}
	var n [8]byte
	binary.LittleEndian.PutUint64(n[:], uint64(len(hdr)))
	if _, err := w.Write(n[:]); err != nil {
		return fmt.Errorf("safetensors: %w", err)
	}
	if _, err := w.Write(hdr); err != nil {
		return fmt.Errorf("safetensors: %w", err)
	}
	for _, i := range order {
		cw := &countingWriter{w: w}
		if err := data(i, cw); err != nil {
			return fmt.Errorf("safetensors: tensor %q: %w", tensors[i].Name, err)
		}
		if want := int64(tensors[i].DType.Size() * tensors[i].NumElements()); cw.n != want {
			return fmt.Errorf("safetensors: tensor %q: %d data bytes, want %d", tensors[i].Name, cw.n, want)
		}
	}
	return nil
}

// countingWriter counts what it passes on to w.
type countingWriter struct {
	w io.Writer
	n int64
}

func (c *countingWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}

// Write stores tensors and metadata at path atomically (temporary file in
// the same folder, fsync, rename); the file gets mode 0666 minus the umask,
// as os.Create gives.
func Write(path string, tensors []Tensor, metadata map[string]string) error {
	if err := atomicfile.Write(path, func(w io.Writer) error { return Encode(w, tensors, metadata) }); err != nil {
		return fmt.Errorf("safetensors: %w", err)
	}
	return nil
}

// Read loads and validates the file at path. The header is read and
// checked first: a file longer than the data its header describes (a
// corrupt length, a file padded to a terabyte) is refused before the data
// is read.
func Read(path string) (*File, error) {
	return ReadLimit(path, -1)
}

// ReadLimit is Read for a file whose tensors hold at most maxData bytes
// (negative: no bound but the header's), such as a model's parameters: a
// larger file is refused before anything but its header is read.
func ReadLimit(path string, maxData int64) (*File, error) {
	fail := func(err error) (*File, error) { return nil, fmt.Errorf("%s: %w", path, err) }
	fh, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("safetensors: %w", err)
	}
	defer fh.Close()
	st, err := fh.Stat()
	if err != nil {
		return nil, fmt.Errorf("safetensors: %w", err)
	}
	size := st.Size()
	if !st.Mode().IsRegular() {
		return fail(errors.New("safetensors: not a regular file"))
	}
	if size >= 8 {
		var lenBuf [8]byte
		if _, err := io.ReadFull(fh, lenBuf[:]); err != nil {
			return nil, fmt.Errorf("safetensors: %s: %w", path, err)
		}
		n := binary.LittleEndian.Uint64(lenBuf[:])
		if n <= MaxHeaderSize && n <= uint64(size-8) {
			hdr := make([]byte, n)
			if _, err := io.ReadFull(fh, hdr); err != nil {
				return nil, fmt.Errorf("safetensors: %s: %w", path, err)
			}
			data := size - 8 - int64(n)
			if maxData >= 0 && data > maxData {
				return fail(fmt.Errorf("safetensors: %d data bytes, more than the %d the expected tensors hold", data, maxData))
			}
			if end, ok := headerDataEnd(hdr); ok && data > end {
				return fail(fmt.Errorf("safetensors: %d bytes after the last tensor's data", data-end))
			}
		}
		if _, err := fh.Seek(0, io.SeekStart); err != nil {
			return nil, fmt.Errorf("safetensors: %w", err)
		}
	}
	// Decode reports every other defect; the size is now bounded.
	data := make([]byte, size)
	if _, err := io.ReadFull(fh, data); err != nil {
		return nil, fmt.Errorf("safetensors: %s: %w", path, err)
	}
	f, err := Decode(data)
	if err != nil {
		return fail(err)
	}
	return f, nil
}

// headerDataEnd returns the largest end offset a valid header gives (the
// length of the data section it describes); ok is false when the header
// does not parse, which Decode then reports.
func headerDataEnd(hdr []byte) (int64, bool) {
	if !utf8.Valid(hdr) {
		return 0, false
	}
	entries, _, err := parseHeader(hdr)
	if err != nil {
		return 0, false
	}
	var end int64
	for _, e := range entries {
		if len(e.entry.DataOffsets) == 2 {
			end = max(end, e.entry.DataOffsets[1])
		}
	}
	return end, true
}

// Decode parses and validates a safetensors file held in memory. The
// returned tensors' Data alias data.
func Decode(data []byte) (*File, error) {
	if len(data) < 8 {
		return nil, fmt.Errorf("safetensors: file is %d bytes, shorter than the 8-byte header length", len(data))
	}
	n := binary.LittleEndian.Uint64(data[:8])
	if n > MaxHeaderSize {
		return nil, fmt.Errorf("safetensors: header length %d exceeds the limit of %d bytes", n, MaxHeaderSize)
	}
	if n > uint64(len(data)-8) {
		return nil, fmt.Errorf("safetensors: header length %d exceeds the %d bytes after the length field", n, len(data)-8)
	}
	body := data[8+n:]
	l, err := parseLayout(data[8:8+n], int64(len(body)))
	if err != nil {
		return nil, err
	}
	f := &File{Metadata: l.Metadata, Tensors: make([]Tensor, len(l.Tensors))}
	for i, s := range l.Tensors {
		f.Tensors[i] = Tensor{Name: s.Name, DType: s.DType, Shape: s.Shape, Data: body[s.Begin:s.End:s.End]}
	}
	if want, ok := f.Metadata[ChecksumKey]; ok {
		if got := fmt.Sprintf("%08x", crc32.Checksum(body, castagnoli)); got != want {
			return nil, fmt.Errorf("safetensors: checksum mismatch (data crc32c %s, header says %s): the file is corrupt", got, want)
		}
		delete(f.Metadata, ChecksumKey)
		if len(f.Metadata) == 0 {
			f.Metadata = nil
		}
	}
	return f, nil
}

// Layout is the header of a file: its tensors without their data.
type Layout struct {
	// Metadata is the header's metadata, ChecksumKey included.
	Metadata map[string]string
	// Tensors in data order (by data offset); they tile the data section.
	Tensors []Span
	// DataStart is the offset of the data section in the file.
	DataStart int64
}

// Span is one tensor of a Layout: its data are the bytes [Begin, End) of
// the data section.
type Span struct {
	Name       string
	DType      DType
	Shape      []int
	Begin, End int64
}

// ReadLayout reads and validates, as Decode does, the header of a file of
// size bytes from r, positioned at the file's start, and leaves r at the
// start of the data section: for a reader that streams the tensors' data
// instead of holding the file in memory. The data's checksum is not
// verified (it needs the data: the caller's business).
func ReadLayout(r io.Reader, size int64) (*Layout, error) {
	if size < 8 {
		return nil, fmt.Errorf("safetensors: file is %d bytes, shorter than the 8-byte header length", size)
	}
	var lenBuf [8]byte
	if _, err := io.ReadFull(r, lenBuf[:]); err != nil {
		return nil, fmt.Errorf("safetensors: %w", err)
	}
	n := binary.LittleEndian.Uint64(lenBuf[:])
	if n > MaxHeaderSize {
		return nil, fmt.Errorf("safetensors: header length %d exceeds the limit of %d bytes", n, MaxHeaderSize)
	}
	if n > uint64(size-8) {
		return nil, fmt.Errorf("safetensors: header length %d exceeds the %d bytes after the length field", n, size-8)
	}
	hdr := make([]byte, n)
	if _, err := io.ReadFull(r, hdr); err != nil {
		return nil, fmt.Errorf("safetensors: %w", err)
	}
	l, err := parseLayout(hdr, size-8-int64(n))
	if err != nil {
		return nil, err
	}
	l.DataStart = 8 + int64(n)
	return l, nil
}

// parseLayout parses and validates a header whose data section has
// bodyLen bytes.
func parseLayout(hdr []byte, bodyLen int64) (*Layout, error) {
	if !utf8.Valid(hdr) {
		return nil, errors.New("safetensors: header is not valid UTF-8")
	}
	entries, meta, err := parseHeader(hdr)
	if err != nil {
		return nil, fmt.Errorf("safetensors: header: %w", err)
	}
	spans := make([]Span, 0, len(entries))
	for _, e := range entries {
		size := e.entry.DType.Size()
		if size == 0 {
			return nil, fmt.Errorf("safetensors: tensor %q: unsupported dtype %q (want F32, I32 or I64)", e.name, e.entry.DType)
		}
		if e.entry.Shape == nil {
			return nil, fmt.Errorf("safetensors: tensor %q: missing shape", e.name)
		}
		if len(e.entry.DataOffsets) != 2 {
			return nil, fmt.Errorf("safetensors: tensor %q: data_offsets must have 2 entries, got %d", e.name, len(e.entry.DataOffsets))
		}
		begin, end := e.entry.DataOffsets[0], e.entry.DataOffsets[1]
		if begin < 0 || end < begin || end > bodyLen {
			return nil, fmt.Errorf("safetensors: tensor %q: data_offsets [%d, %d] outside the %d data bytes", e.name, begin, end, bodyLen)
		}
		elems := int64(1)
		shape := make([]int, len(e.entry.Shape))
		for i, d := range e.entry.Shape {
			if d < 0 {
				return nil, fmt.Errorf("safetensors: tensor %q: negative dimension in shape %v", e.name, e.entry.Shape)
			}
			if d > 0 && elems > math.MaxInt64/8/d {
				return nil, fmt.Errorf("safetensors: tensor %q: shape %v is too large", e.name, e.entry.Shape)
			}
			elems *= d
			shape[i] = int(d)
		}
		if want := elems * int64(size); end-begin != want {
			return nil, fmt.Errorf("safetensors: tensor %q: data_offsets [%d, %d] hold %d bytes, but %s%v needs %d",
				e.name, begin, end, end-begin, e.entry.DType, e.entry.Shape, want)
		}
		spans = append(spans, Span{Name: e.name, DType: e.entry.DType, Shape: shape, Begin: begin, End: end})
	}
	// The tensors must tile the data section: sorted by offset, each starts
	// where the previous ended and the last ends at the end of the file.
	slices.SortStableFunc(spans, func(a, b Span) int {
		if a.Begin != b.Begin {
			return cmpInt64(a.Begin, b.Begin)
		}
		return cmpInt64(a.End, b.End)
	})
	var pos int64
	prev := ""
	for _, s := range spans {
		switch {
		case s.Begin < pos:
			return nil, fmt.Errorf("safetensors: tensor %q: data [%d, %d) overlaps tensor %q (ends at %d)", s.Name, s.Begin, s.End, prev, pos)
		case s.Begin > pos:
			return nil, fmt.Errorf("safetensors: tensor %q: hole in the data section between byte %d and %d", s.Name, pos, s.Begin)
		}
		pos = s.End
		prev = s.Name
	}
	if pos != bodyLen {
		return nil, fmt.Errorf("safetensors: %d bytes after the last tensor's data", bodyLen-pos)
	}
	return &Layout{Metadata: meta, Tensors: spans}, nil
}

func cmpInt64(a, b int64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

type namedEntry struct {
	name  string
	entry headerEntry
}

// parseHeader decodes the header object token by token, so that duplicate
// names are detected (encoding/json would silently keep the last one).
func parseHeader(hdr []byte) ([]namedEntry, map[string]string, error) {
	dec := json.NewDecoder(bytes.NewReader(hdr))
	dec.UseNumber()
	tok, err := dec.Token()
	if err != nil {
		return nil, nil, err
	}
	if d, ok := tok.(json.Delim); !ok || d != '{' {
		return nil, nil, fmt.Errorf("not a JSON object")
	}
	var entries []namedEntry
	var meta map[string]string
	seen := map[string]bool{}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return nil, nil, err
		}
		name, ok := tok.(string)
		if !ok {
			return nil, nil, fmt.Errorf("unexpected token %v", tok)
		}
		if seen[name] {
			return nil, nil, fmt.Errorf("duplicate entry %q", name)
		}
		seen[name] = true
		var raw json.RawMessage
		if err := dec.Decode(&raw); err != nil {
			return nil, nil, fmt.Errorf("entry %q: %w", name, err)
		}
		if name == metadataKey {
			if err := json.Unmarshal(raw, &meta); err != nil {
				return nil, nil, fmt.Errorf("__metadata__ must map strings to strings: %w", err)
			}
			continue
		}
		var e headerEntry
		d := json.NewDecoder(bytes.NewReader(raw))
		d.DisallowUnknownFields()
		if err := d.Decode(&e); err != nil {
			return nil, nil, fmt.Errorf("tensor %q: %w", name, err)
		}
		entries = append(entries, namedEntry{name, e})
	}
	if _, err := dec.Token(); err != nil { // closing brace
		return nil, nil, err
	}
	// Only padding may follow the object.
	if rest := hdr[dec.InputOffset():]; len(bytes.TrimRight(rest, " \t\r\n")) > 0 {
		return nil, nil, fmt.Errorf("trailing bytes after the header object")
	}
	return entries, meta, nil
}
