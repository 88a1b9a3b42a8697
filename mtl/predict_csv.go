package mtl

import (
	"bufio"
	"encoding/csv"
	"fmt"
	"strconv"

	"github.com/apache/arrow-go/v18/arrow"

	"github.com/mtlrank/mtlrank/internal/atomicfile"
	"github.com/mtlrank/mtlrank/loader"
)

// predictionSink receives the columns of predicted batches: the Parquet
// writer of package loader, or a delimited text file.
type predictionSink interface {
	Write(cols map[string]any) error
	Close() error
	Abort() error
}

// textSink writes predictions as delimited text (CSV or TSV): a header of
// the column names, then one line per row. Ids are written as integers and
// floats in the shortest form that reads back to the same float32. The file
// is written under a temporary name and renamed by Close.
type textSink struct {
	f     *atomicfile.File
	bw    *bufio.Writer
	w     *csv.Writer
	names []string
	rec   []string
}

func newTextSink(path string, names []string, comma rune) (*textSink, error) {
	f, err := atomicfile.Create(path)
	if err != nil {
		return nil, err
	}
	bw := bufio.NewWriterSize(f, 1<<20)
	w := csv.NewWriter(bw)
	w.Comma = comma
	s := &textSink{f: f, bw: bw, w: w, names: names, rec: make([]string, len(names))}
	if err := w.Write(names); err != nil {
		s.Abort()
		return nil, fmt.Errorf("write %s: %w", path, err)
	}
	return s, nil
}

// Write appends the rows of cols: every column named at creation, as a
// scalar *loader.Column, a []float32 or an arrow.Array, all of one length.
func (s *textSink) Write(cols map[string]any) error {
	rows := -1
	for _, name := range s.names {
		var n int
		switch c := cols[name].(type) {
		case *loader.Column:
			if c.Offsets != nil {
				return fmt.Errorf("column %q is a list: write predictions as parquet to keep it", name)
			}
			n = max(len(c.I32), len(c.I64), len(c.F32))
		case []float32:
			n = len(c)
		case arrow.Array:
			n = c.Len()
		default:
			return fmt.Errorf("column %q: no values to write", name)
		}
		if rows >= 0 && n != rows {
			return fmt.Errorf("column %q has %d rows, another %d", name, n, rows)
		}
		rows = n
	}
	for i := 0; i < rows; i++ {
		for j, name := range s.names {
			switch c := cols[name].(type) {
			case *loader.Column:
				switch {
				case c.I32 != nil:
					s.rec[j] = strconv.FormatInt(int64(c.I32[i]), 10)
				case c.I64 != nil:
					s.rec[j] = strconv.FormatInt(c.I64[i], 10)
				default:
					s.rec[j] = strconv.FormatFloat(float64(c.F32[i]), 'g', -1, 32)
				}
			case []float32:
				s.rec[j] = strconv.FormatFloat(float64(c[i]), 'g', -1, 32)
			case arrow.Array: // a column read raw: its text, empty for null
				s.rec[j] = ""
				if c.IsValid(i) {
					s.rec[j] = c.ValueStr(i)
				}
			}
		}
		if err := s.w.Write(s.rec); err != nil {
			return fmt.Errorf("write %s: %w", s.f.Path(), err)
		}
	}
	return nil
}

// Close flushes the file and moves it into place.
func (s *textSink) Close() error {
	s.w.Flush()
	if err := s.w.Error(); err != nil {
		s.Abort()
		return fmt.Errorf("write %s: %w", s.f.Path(), err)
	}
	if err := s.bw.Flush(); err != nil {
		s.Abort()
		return fmt.Errorf("write %s: %w", s.f.Path(), err)
	}
	return s.f.Commit()
}

// Abort discards the file.
func (s *textSink) Abort() error { return s.f.Abort() }
