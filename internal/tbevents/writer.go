// Package tbevents writes TensorBoard event files: TFRecord framing (a
// little-endian length, its masked CRC-32C, the payload and its masked
// CRC-32C) around tensorflow.Event protos holding scalar summaries. The few
// proto fields needed are encoded by hand, which spares a dependency on
// TensorFlow's generated code:
//
//	Event   { double wall_time = 1; int64 step = 2; string file_version = 3; Summary summary = 5; }
//	Summary { repeated Value value = 1; }
//	Value   { string tag = 1; float simple_value = 2; }
package tbevents

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"math"
	"os"
	"path/filepath"
	"time"
)

// FileVersion is the version string of the first event of every file.
const FileVersion = "brain.Event:2"

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// MaskedCRC is TFRecord's masked CRC-32C of b.
func MaskedCRC(b []byte) uint32 {
	c := crc32.Checksum(b, castagnoli)
	return (c>>15 | c<<17) + 0xa282ead8
}

// Writer appends events to one new event file. It is not safe for
// concurrent use.
type Writer struct {
	f    *os.File
	w    *bufio.Writer
	path string
	buf  []byte
	now  func() time.Time
}

// Create makes dir (and its parents) and a new event file in it, named as
// TensorFlow names them so that TensorBoard finds it; an existing file is
// never overwritten.
func Create(dir string) (*Writer, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("tensorboard: %w", err)
	}
	host, err := os.Hostname()
	if err != nil || host == "" {
		host = "localhost"
	}
	now := time.Now()
	var f *os.File
	var path string
	for n := 0; ; n++ {
		path = filepath.Join(dir, fmt.Sprintf("events.out.tfevents.%d.%s.%d.%d.v2", now.Unix(), host, os.Getpid(), n))
		f, err = os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
		if err == nil {
			break
		}
		if !errors.Is(err, os.ErrExist) || n > 1000 {
			return nil, fmt.Errorf("tensorboard: %w", err)
		}
	}
	w := &Writer{f: f, w: bufio.NewWriter(f), path: path, now: time.Now}
	if err := w.event(0, func(b []byte) []byte { return appendString(b, 3, FileVersion) }); err != nil {
		f.Close()
		return nil, err
	}
	return w, nil
}

// Path is the event file's path.
func (w *Writer) Path() string { return w.path }

// Scalar writes one scalar summary.
func (w *Writer) Scalar(tag string, step int64, value float64) error {
	return w.event(step, func(b []byte) []byte {
		var v []byte
		v = appendString(v, 1, tag)
		v = binary.AppendUvarint(v, 2<<3|5) // fixed32
		v = binary.LittleEndian.AppendUint32(v, math.Float32bits(float32(value)))
		var s []byte
		s = appendBytes(s, 1, v)
		return appendBytes(b, 5, s)
	})
}

// event writes an Event with wall time and step, plus the fields body adds.
func (w *Writer) event(step int64, body func([]byte) []byte) error {
	t := w.now()
	e := w.buf[:0]
	e = binary.AppendUvarint(e, 1<<3|1) // fixed64
	e = binary.LittleEndian.AppendUint64(e, math.Float64bits(float64(t.UnixNano())/1e9))
	if step != 0 {
		e = binary.AppendUvarint(e, 2<<3|0)
		e = binary.AppendUvarint(e, uint64(step))
	}
	e = body(e)
	w.buf = e
	var head [12]byte
	binary.LittleEndian.PutUint64(head[:8], uint64(len(e)))
	binary.LittleEndian.PutUint32(head[8:], MaskedCRC(head[:8]))
	var tail [4]byte
	binary.LittleEndian.PutUint32(tail[:], MaskedCRC(e))
	for _, p := range [][]byte{head[:], e, tail[:]} {
		if _, err := w.w.Write(p); err != nil {
			return fmt.Errorf("tensorboard: write %s: %w", w.path, err)
		}
	}
	return nil
}

// Flush writes buffered events to the file, so that a running TensorBoard
// sees them.
func (w *Writer) Flush() error {
	if err := w.w.Flush(); err != nil {
		return fmt.Errorf("tensorboard: write %s: %w", w.path, err)
	}
	return nil
}

// Close flushes and closes the file.
func (w *Writer) Close() error {
	err := w.Flush()
	if cerr := w.f.Close(); err == nil && cerr != nil {
		err = fmt.Errorf("tensorboard: close %s: %w", w.path, cerr)
	}
	return err
}

func appendBytes(b []byte, field int, v []byte) []byte {
	b = binary.AppendUvarint(b, uint64(field)<<3|2)
	b = binary.AppendUvarint(b, uint64(len(v)))
	return append(b, v...)
}

func appendString(b []byte, field int, s string) []byte {
	b = binary.AppendUvarint(b, uint64(field)<<3|2)
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}
