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
