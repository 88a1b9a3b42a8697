package loader

import (
	"errors"
	"fmt"
	"strings"

	"github.com/mtlrank/mtlrank/internal/parquetio"
)

// ErrNoParquetFiles is returned (wrapped) by ListFiles, and so by Open,
// when a folder holds no Parquet data file.
var ErrNoParquetFiles = parquetio.ErrNoFiles

// ErrCorrupt is wrapped by errors about unreadable Parquet data: a bad footer,
// truncated pages, undecodable values.
var ErrCorrupt = errors.New("corrupt parquet")

// DataError describes bad input: where it is (file, column, row group, row)
// and what is wrong with it. Fields that do not apply are empty or -1. File
// is the path as the caller gave it to Open (a folder's files are joined to
// it), so that the message shows a path the user recognises. Row is the
// absolute row index in the file (counting from 0 across row groups).
//
// Use errors.As to inspect it; Error() names every known location so that a
// message alone is enough to find the offending value.
type DataError struct {
	File     string
	Column   string
	RowGroup int   // -1 when not known
	Row      int64 // -1 when not known
	Msg      string
	Err      error // underlying cause, may be nil
}

func (e *DataError) Error() string {
	var b strings.Builder
	b.WriteString("loader: ")
	if e.File != "" {
		b.WriteString(e.File)
		if e.RowGroup >= 0 {
			fmt.Fprintf(&b, " row group %d", e.RowGroup)
		}
		if e.Row >= 0 {
			fmt.Fprintf(&b, " row %d", e.Row)
		}
	}
	if e.Column != "" {
		if e.File != "" {
			b.WriteString(", ")
		}
		fmt.Fprintf(&b, "column %q", e.Column)
	}
	if e.File != "" || e.Column != "" {
		b.WriteString(": ")
	}
	b.WriteString(e.Msg)
	if e.Err != nil {
		if e.Msg != "" {
			b.WriteString(": ")
		}
		b.WriteString(e.Err.Error())
	}
	return b.String()
}

func (e *DataError) Unwrap() error { return e.Err }

// dataErr builds a DataError; rowGroup and row are -1 when unknown.
func dataErr(file, column string, rowGroup int, row int64, format string, args ...any) *DataError {
	return &DataError{File: file, Column: column, RowGroup: rowGroup, Row: row, Msg: fmt.Sprintf(format, args...)}
}

// corruptErr wraps a decoding failure (an error or a recovered panic) with
// ErrCorrupt and its location.
func corruptErr(file string, rowGroup int, cause any) *DataError {
	var err error
	switch c := cause.(type) {
	case error:
		err = c
	default:
		err = fmt.Errorf("%v", c)
	}
	return &DataError{File: file, RowGroup: rowGroup, Row: -1, Msg: ErrCorrupt.Error(),
		Err: &wrapped{cause: err, kind: ErrCorrupt}}
}

// wrapped makes errors.Is(err, kind) true while printing only cause.
type wrapped struct {
	cause error
	kind  error
}

func (w *wrapped) Error() string   { return w.cause.Error() }
func (w *wrapped) Unwrap() []error { return []error{w.cause, w.kind} }
