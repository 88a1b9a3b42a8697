// Package pqcrc adds checksums to the Parquet files mtlrank writes and
// verifies them on read.
//
// The Parquet format has an optional CRC per page, but arrow-go (v18.8 and
// v18.9) neither writes nor checks it, so a flipped byte in a data page is
// read as another value without a word. Instead, once a file is complete,
// Seal rewrites its footer with one key-value entry, Key, holding the
// CRC-32C of the data section (everything before the footer) and of the
// footer itself as serialized without that entry. Verify recomputes both.
// Other Parquet readers ignore the entry; files without it (written by
// other tools) are not checked.
package pqcrc

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"strconv"
	"strings"

	"github.com/apache/arrow-go/v18/parquet/metadata"
)

// Key is the footer key-value entry holding the checksums; its value is
// prefix + "<data bytes>:<data crc32c hex>:<footer crc32c hex>". Both the
// key and the value's prefix mark a sealed file, so that one corrupt byte
// cannot make it look unsealed.
const (
	Key    = "mtlrank.crc32c"
	prefix = "mtlrank-crc32c-v1:"
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// ErrMismatch is wrapped by Verify's error for a file whose bytes differ
// from the ones written.
var ErrMismatch = errors.New("checksum mismatch: the file is corrupt")

// footer reads the footer of the Parquet file f of size bytes: the
// metadata, and the offset where it starts (the end of the data section).
func footer(f io.ReaderAt, size int64) (*metadata.FileMetaData, int64, error) {
	if size < 12 {
		return nil, 0, fmt.Errorf("%d bytes is too short for a Parquet file", size)
	}
	var tail [8]byte
	if _, err := f.ReadAt(tail[:], size-8); err != nil {
		return nil, 0, err
	}
	if string(tail[4:]) != "PAR1" {
		return nil, 0, errors.New("no Parquet magic at the end of the file")
	}
	n := int64(binary.LittleEndian.Uint32(tail[:4]))
	start := size - 8 - n
	if n == 0 || start < 4 {
		return nil, 0, fmt.Errorf("footer length %d does not fit in %d bytes", n, size)
	}
	buf := make([]byte, n)
	if _, err := f.ReadAt(buf, start); err != nil {
		return nil, 0, err
	}
	md, err := parseFooter(buf)
	if err != nil {
		return nil, 0, fmt.Errorf("footer: %w", err)
	}
	return md, start, nil
}

// parseFooter decodes a footer; the thrift decoder panics on some corrupt
// input (a list length beyond memory), which is an error here.
func parseFooter(buf []byte) (md *metadata.FileMetaData, err error) {
	defer func() {
		if r := recover(); r != nil {
			md, err = nil, fmt.Errorf("%w (%v)", ErrMismatch, r)
		}
	}()
	return metadata.NewFileMetaData(buf, nil)
}

// dataCRC is the CRC-32C of the first n bytes of f.
func dataCRC(f io.ReaderAt, n int64) (uint32, error) {
	h := crc32.New(castagnoli)
	if _, err := io.Copy(h, io.NewSectionReader(f, 0, n)); err != nil {
		return 0, err
	}
	return h.Sum32(), nil
}

// footerCRC is the CRC-32C of md serialized without the Key entry; md's
// key-value metadata is left without it.
func footerCRC(md *metadata.FileMetaData) (uint32, error) {
	var kept metadata.KeyValueMetadata
	for _, kv := range md.KeyValueMetadata() {
		if kv.Key != Key {
			kept = append(kept, kv)
		}
	}
	md.FileMetaData.KeyValueMetadata = kept
	var buf bytes.Buffer
	if _, err := md.WriteTo(&buf, nil); err != nil {
		return 0, err
	}
	return crc32.Checksum(buf.Bytes(), castagnoli), nil
}

// Seal adds the checksums to the complete Parquet file f (open for reading
// and writing), rewriting its footer in place.
func Seal(f *os.File) error {
	st, err := f.Stat()
	if err != nil {
		return err
	}
	md, start, err := footer(f, st.Size())
	if err != nil {
		return fmt.Errorf("seal %s: %w", f.Name(), err)
	}
	data, err := dataCRC(f, start)
	if err != nil {
		return fmt.Errorf("seal %s: %w", f.Name(), err)
	}
	foot, err := footerCRC(md)
	if err != nil {
		return fmt.Errorf("seal %s: %w", f.Name(), err)
	}
	kv := md.KeyValueMetadata()
	if err := kv.Append(Key, fmt.Sprintf("%s%d:%08x:%08x", prefix, start, data, foot)); err != nil {
		return err
	}
	md.FileMetaData.KeyValueMetadata = kv
	var buf bytes.Buffer
	n, err := md.WriteTo(&buf, nil)
	if err != nil {
		return fmt.Errorf("seal %s: %w", f.Name(), err)
	}
	buf.Write(binary.LittleEndian.AppendUint32(nil, uint32(n)))
	buf.WriteString("PAR1")
	if err := f.Truncate(start); err != nil {
		return fmt.Errorf("seal %s: %w", f.Name(), err)
	}
	if _, err := f.WriteAt(buf.Bytes(), start); err != nil {
		return fmt.Errorf("seal %s: %w", f.Name(), err)
	}
	return nil
}

// Verify checks the checksums of the Parquet file at path when it has
// them (a file without Key passes). It reads the whole file once.
func Verify(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return err
	}
	md, start, err := footer(f, st.Size())
	if err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	var value string
	sealed := false
	for _, kv := range md.KeyValueMetadata() {
		hasPrefix := kv.Value != nil && strings.HasPrefix(*kv.Value, prefix)
		if kv.Key == Key || hasPrefix {
			if kv.Key != Key || !hasPrefix {
				return fmt.Errorf("%s: %w (damaged %s entry)", path, ErrMismatch, Key)
			}
			sealed, value = true, strings.TrimPrefix(*kv.Value, prefix)
		}
	}
	if !sealed {
		return nil
	}
	parts := strings.Split(value, ":")
	if len(parts) != 3 {
		return fmt.Errorf("%s: %w (malformed %s entry)", path, ErrMismatch, Key)
	}
	n, err1 := strconv.ParseInt(parts[0], 10, 64)
	wantData, err2 := strconv.ParseUint(parts[1], 16, 32)
	wantFoot, err3 := strconv.ParseUint(parts[2], 16, 32)
	if err1 != nil || err2 != nil || err3 != nil || n != start {
		return fmt.Errorf("%s: %w (malformed %s entry)", path, ErrMismatch, Key)
	}
	foot, err := footerCRC(md)
	if err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	if foot != uint32(wantFoot) {
		return fmt.Errorf("%s: %w (footer)", path, ErrMismatch)
	}
	data, err := dataCRC(f, start)
	if err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	if data != uint32(wantData) {
		return fmt.Errorf("%s: %w (data pages)", path, ErrMismatch)
	}
	return nil
}
