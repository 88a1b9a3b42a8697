package synth

import (
	"testing"

	"github.com/mtlrank/mtlrank/schema"
)

// BenchmarkBatch measures in-memory generation of tenrec rows (rows/s).
func BenchmarkBatch(b *testing.B) {
	g, err := NewGenerator(schema.Tenrec(), DefaultConfig(0, 1))
	if err != nil {
		b.Fatal(err)
	}
	const rows = 16384
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		g.Batch(rows)
	}
	b.ReportMetric(float64(b.N)*rows/b.Elapsed().Seconds(), "rows/s")
}

// BenchmarkWriteDataset measures writing tenrec Parquet datasets (rows/s,
// generation in parallel on GOMAXPROCS workers, Snappy compression).
func BenchmarkWriteDataset(b *testing.B) {
	const rows = 1 << 18
	cfg := DefaultConfig(rows, 1)
	s := schema.Tenrec()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := WriteDataset(b.TempDir(), s, cfg); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N)*rows/b.Elapsed().Seconds(), "rows/s")
}
