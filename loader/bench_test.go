package loader

import (
	"context"
	"io"
	"math/rand/v2"
	"path/filepath"
	"testing"

	"github.com/mtlrank/mtlrank/schema"
)

// writeTenrec writes rows of random tenrec data (ids inside their domains,
// 0/1 labels, watching_times in [0, 5)) to a file in dir.
func writeTenrec(b *testing.B, dir string, rows int, opt WriterOptions) string {
	b.Helper()
	s := schema.Tenrec()
	r := rand.New(rand.NewPCG(1, 2))
	w, err := NewWriter(filepath.Join(dir, "tenrec.parquet"), s, opt)
	if err != nil {
		b.Fatal(err)
	}
	const chunk = 1 << 16
	for done := 0; done < rows; done += chunk {
		n := min(chunk, rows-done)
		cols := map[string]any{}
		for _, f := range s.Features {
			if f.HasTag(schema.TagCategorical) {
				v := make([]int32, n)
				for i := range v {
					v[i] = int32(r.Int64N(f.IntDomain.Max + 1))
				}
				cols[f.Name] = v
				continue
			}
			v := make([]float32, n)
			for i := range v {
				if f.HasTag(schema.TagRegression) {
					v[i] = 5 * r.Float32()
				} else if r.Float32() < 0.3 {
					v[i] = 1
				}
			}
			cols[f.Name] = v
		}
		if err := w.Write(cols); err != nil {
			b.Fatal(err)
		}
	}
	if err := w.Close(); err != nil {
		b.Fatal(err)
	}
	return w.path
}

// BenchmarkLoaderTenrec measures rows/s from a Parquet file on disk with the
// tenrec schema (5 int32 ids + 5 float32 targets) to Batches of 1024 rows.
// One op is one epoch over the file.
func BenchmarkLoaderTenrec(b *testing.B) {
	const rows = 1 << 20
	modes := []struct {
		name string
		w    WriterOptions
		mod  func(*Options)
	}{
		{"zerocopy", WriterOptions{}, func(o *Options) {}},
		{"zerocopy_dict", WriterOptions{Dictionary: true}, func(o *Options) {}},
		{"zerocopy_uncompressed", WriterOptions{Compression: "none"}, func(o *Options) {}},
		{"prefetch2", WriterOptions{}, func(o *Options) { o.Prefetch = 2 }},
		{"shuffle64k", WriterOptions{}, func(o *Options) { o.Shuffle, o.ShuffleBuffer = true, 1<<16 }},
	}
	for _, m := range modes {
		b.Run(m.name, func(b *testing.B) {
			p := writeTenrec(b, b.TempDir(), rows, m.w)
			opt := DefaultOptions()
			opt.Prefetch = 0
			m.mod(&opt)
			d, err := Open(p, schema.Tenrec(), opt)
			if err != nil {
				b.Fatal(err)
			}
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				runEpoch(b, d, i, rows)
			}
			b.ReportMetric(float64(rows)*float64(b.N)/b.Elapsed().Seconds(), "rows/s")
		})
	}
}

// runEpoch reads epoch i of d to its end, releasing every batch, and checks
// that it held the dataset's rows.
func runEpoch(b *testing.B, d *Dataset, i int, rows int) {
	it := d.Epoch(context.Background(), i)
	defer it.Close()
	n := 0
	for {
		bt, err := it.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			b.Fatal(err)
		}
		n += bt.Rows
		bt.Release()
	}
	if n != rows {
		b.Fatalf("read %d rows, want %d", n, rows)
	}
}
