package parquetio

import (
	"bufio"
	"fmt"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/apache/arrow-go/v18/parquet"
	"github.com/apache/arrow-go/v18/parquet/compress"
	"github.com/apache/arrow-go/v18/parquet/pqarrow"

	"github.com/mtlrank/mtlrank/internal/atomicfile"
	"github.com/mtlrank/mtlrank/internal/pqcrc"
)

// WriterOptions configures a Writer. The zero value writes Snappy-compressed
// files without dictionary pages, with arrow-go's row-group limit.
type WriterOptions struct {
	// Compression is "snappy" (default), "zstd", "gzip", "lz4" or "none".
	Compression string
	// Dictionary, when set, says which columns get Parquet dictionary
	// encoding (smaller files for low-cardinality columns, slower decoding).
	// Nil: none.
	Dictionary func(arrow.Field) bool
	// RowGroupRows caps the rows of a row group (0: arrow-go's default).
	RowGroupRows int64
	// StoreSchema keeps the Arrow schema in the file's metadata, so that
	// Arrow readers get back exactly the types written.
	StoreSchema bool
	// CreatedBy is the file's created_by (default "mtlrank").
	CreatedBy string
	// Allocator serves the writer's buffers (default memory.DefaultAllocator).
	Allocator memory.Allocator
}

// Writer writes record batches to one Parquet file. Data goes to a
// temporary file in the destination folder (named ".<name>.tmp-*", which
// List never returns) that Close seals with the checksums of internal/pqcrc,
// syncs and renames into place, so a reader never sees a partial file;
// Abort (or a failed Close) removes it. An I/O error is sticky. A Writer is
// not safe for concurrent use.
type Writer struct {
	path string
	tmp  *atomicfile.File
	buf  *bufio.Writer
	fw   *pqarrow.FileWriter
	rows int64
	err  error // sticky I/O error
	done bool
}

// Create starts writing a Parquet file with schema sch at path (its folder
// must exist).
func Create(path string, sch *arrow.Schema, opt WriterOptions) (*Writer, error) {
	codec, err := Codec(opt.Compression)
	if err != nil {
		return nil, fmt.Errorf("write %s: %w", path, err)
	}
	if opt.RowGroupRows < 0 {
		return nil, fmt.Errorf("write %s: RowGroupRows must be >= 0, got %d", path, opt.RowGroupRows)
	}
	mem := opt.Allocator
	if mem == nil {
		mem = memory.DefaultAllocator
	}
	createdBy := opt.CreatedBy
	if createdBy == "" {
		createdBy = "mtlrank"
	}
	props := []parquet.WriterProperty{
		parquet.WithAllocator(mem),
		parquet.WithCompression(codec),
		parquet.WithDictionaryDefault(false),
		parquet.WithCreatedBy(createdBy),
	}
	if opt.RowGroupRows > 0 {
		props = append(props, parquet.WithMaxRowGroupLength(opt.RowGroupRows))
	}
	if opt.Dictionary != nil {
		for _, f := range sch.Fields() {
			if opt.Dictionary(f) {
				props = append(props, parquet.WithDictionaryFor(f.Name, true))
			}
		}
	}
	arrowProps := []pqarrow.WriterOption{pqarrow.WithAllocator(mem)}
	if opt.StoreSchema {
		arrowProps = append(arrowProps, pqarrow.WithStoreSchema())
	}
	tmp, err := atomicfile.Create(path)
	if err != nil {
		return nil, err
	}
	w := &Writer{path: path, tmp: tmp, buf: bufio.NewWriterSize(tmp, 1<<20)}
	// The sink is wrapped so that pqarrow does not close the file: Close
	// flushes, seals, syncs and renames it itself.
	fw, err := pqarrow.NewFileWriter(sch, struct{ *bufio.Writer }{w.buf},
		parquet.NewWriterProperties(props...), pqarrow.NewArrowWriterProperties(arrowProps...))
	if err != nil {
		_ = tmp.Abort()
		return nil, fmt.Errorf("write %s: %w", path, err)
	}
	w.fw = fw
	return w, nil
}

// Codec maps a compression name of WriterOptions to its codec.
func Codec(name string) (compress.Compression, error) {
	switch name {
	case "", "snappy":
		return compress.Codecs.Snappy, nil
	case "zstd":
		return compress.Codecs.Zstd, nil
	case "gzip":
		return compress.Codecs.Gzip, nil
	case "lz4":
		return compress.Codecs.Lz4Raw, nil
	case "none", "uncompressed":
		return compress.Codecs.Uncompressed, nil
	}
	return 0, fmt.Errorf("unknown compression %q (want snappy, zstd, gzip, lz4 or none)", name)
}

// Path is the file's final path.
func (w *Writer) Path() string { return w.path }

// Rows is the number of rows written so far.
func (w *Writer) Rows() int64 { return w.rows }

// Usable returns the error a Write would fail with before writing anything:
// the writer is closed, or an earlier I/O error.
func (w *Writer) Usable() error {
	if w.done {
		return fmt.Errorf("write %s: writer is closed", w.path)
	}
	return w.err
}

// Write appends rec; its schema must be the writer's.
func (w *Writer) Write(rec arrow.RecordBatch) error {
	if err := w.Usable(); err != nil {
		return err
	}
	if rec.NumRows() == 0 {
		return nil
	}
	if err := w.fw.Write(rec); err != nil {
		w.err = fmt.Errorf("write %s: %w", w.path, err)
		return w.err
	}
	w.rows += rec.NumRows()
	return nil
}

// Close finishes the file and renames it to its final path. On failure the
// temporary file is removed. Close after Close or Abort returns nil.
func (w *Writer) Close() error {
	if w.done {
		return nil
	}
	w.done = true
	if w.err != nil {
		_ = w.fw.Close()
		_ = w.tmp.Abort()
		return w.err
	}
	err := w.fw.Close()
	if err == nil {
		err = w.buf.Flush()
	}
	if err == nil {
		err = pqcrc.Seal(w.tmp.File)
	}
	if err != nil {
		_ = w.tmp.Abort()
		return fmt.Errorf("write %s: %w", w.path, err)
	}
	return w.tmp.Commit()
}

// Abort discards the file. Abort after Close returns nil and keeps the file.
func (w *Writer) Abort() error {
	if w.done {
		return nil
	}
	w.done = true
	_ = w.fw.Close() // its error does not matter: the file is dropped
	return w.tmp.Abort()
}
