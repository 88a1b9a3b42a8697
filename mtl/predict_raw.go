package mtl

import (
	"context"
	"errors"
	"fmt"
	"io"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/apache/arrow-go/v18/parquet/file"
	"github.com/apache/arrow-go/v18/parquet/pqarrow"
)

// rawColumns reads kept columns straight from a dataset's Parquet files,
// in file order, with their own Arrow types and nulls.
//
// The loader's batches carry ids and float values only (loader.Column), so
// pass-through columns such as a raw string user id cannot travel through
// it; teaching it strings would weigh on every training batch for a column
// that only predictions need. An unshuffled dataset yields its rows in file
// order, the files in the order of Dataset.Files, so taking the next n rows
// here for a batch of n rows gives that batch's values.
type rawColumns struct {
	ctx   context.Context
	names []string
	files []string
	next  int // index of the next file to open
	path  string
	pf    *file.Reader
	rr    pqarrow.RecordReader
	rec   arrow.RecordBatch // current record, or nil
	off   int64             // rows of rec already taken
	mem   memory.Allocator
}

func newRawColumns(ctx context.Context, files, names []string) *rawColumns {
	return &rawColumns{ctx: ctx, names: names, files: files, mem: memory.DefaultAllocator}
}

// open opens the next file and its record reader over the kept columns.
func (r *rawColumns) open() (err error) {
	r.closeFile()
	r.path = r.files[r.next]
	r.next++
	if r.pf, err = file.OpenParquetFile(r.path, false); err != nil {
		return fmt.Errorf("%s: %w", r.path, err)
	}
	fr, err := pqarrow.NewFileReader(r.pf, pqarrow.ArrowReadProperties{BatchSize: 1 << 16}, r.mem)
	if err != nil {
		return fmt.Errorf("%s: %w", r.path, err)
	}
	idx := make([]int, len(r.names))
	for i, name := range r.names {
		if idx[i] = r.pf.MetaData().Schema.ColumnIndexByName(name); idx[i] < 0 {
			return fmt.Errorf("%s: no column %q to keep", r.path, name)
		}
	}
	if r.rr, err = fr.GetRecordReader(r.ctx, idx, nil); err != nil {
		return fmt.Errorf("%s: %w", r.path, err)
	}
	return nil
}

// take returns the next n rows of each kept column, in names order; the
// caller releases the arrays.
func (r *rawColumns) take(n int) ([]arrow.Array, error) {
	parts := make([][]arrow.Array, len(r.names))
	defer func() {
		for _, p := range parts {
			for _, a := range p {
				a.Release()
			}
		}
	}()
	for got := 0; got < n; {
		if r.rec == nil || r.off == r.rec.NumRows() {
			if err := r.advance(); err != nil {
				return nil, err
			}
			continue
		}
		k := min(int64(n-got), r.rec.NumRows()-r.off)
		for i, name := range r.names {
			c := r.rec.Column(r.rec.Schema().FieldIndices(name)[0])
			parts[i] = append(parts[i], array.NewSlice(c, r.off, r.off+k))
		}
		r.off += k
		got += int(k)
	}
	out := make([]arrow.Array, len(r.names))
	for i, p := range parts {
		if len(p) == 1 {
			p[0].Retain()
			out[i] = p[0]
			continue
		}
		a, err := array.Concatenate(p, r.mem)
		if err != nil {
			releaseArrays(out[:i])
			return nil, fmt.Errorf("kept column %q: %w", r.names[i], err)
		}
		out[i] = a
	}
	return out, nil
}

// advance moves to the next record, opening the next file when the current
// one is done.
func (r *rawColumns) advance() error {
	if r.rec != nil {
		r.rec.Release()
		r.rec = nil
	}
	for {
		if r.rr != nil && r.rr.Next() {
			r.rec = r.rr.RecordBatch()
			r.rec.Retain()
			r.off = 0
			return nil
		}
		if r.rr != nil {
			if err := r.rr.Err(); err != nil && !errors.Is(err, io.EOF) {
				return fmt.Errorf("%s: %w", r.path, err)
			}
		}
		if r.next == len(r.files) {
			return errors.New("the data files hold fewer rows than the loader read")
		}
		if err := r.open(); err != nil {
			return err
		}
	}
}

func (r *rawColumns) closeFile() {
	if r.rr != nil {
		r.rr.Release()
		r.rr = nil
	}
	if r.pf != nil {
		_ = r.pf.Close()
		r.pf = nil
	}
}

// Close releases what the reader holds.
func (r *rawColumns) Close() {
	if r.rec != nil {
		r.rec.Release()
		r.rec = nil
	}
	r.closeFile()
}

func releaseArrays(arrs []arrow.Array) {
	for _, a := range arrs {
		if a != nil {
			a.Release()
		}
	}
}
