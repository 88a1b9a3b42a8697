package loader_test

import (
	"syscall"
	"testing"
	"time"

	"github.com/mtlrank/mtlrank/loader"
	"github.com/mtlrank/mtlrank/loader/synth"
	"github.com/mtlrank/mtlrank/schema"
)

// BenchmarkLoaderTrain measures the loader as 'mtlrank train' drives it: the
// data of 'mtlrank synth --row_group_rows 8192' (the built-in tenrec schema,
// Zipf ids, 16 row groups per file), opened with the CLI's options (shuffle
// on, --shuffle_buffer 0: rows shuffled within each read, which is one row
// group; domain checks on; every column read) at the batch sizes of the
// distributed benchmark's ranks (512) and of one process (1024). One op is
// one epoch over 2^19 rows. Prefetch is 0, so the figure is the cost on one
// core; the prefetch2 variants add the goroutine hand-off of the CLI's
// default --prefetch 2.
//
//	go test ./loader -run XXX -bench LoaderTrain -benchtime 20x -count 3
func BenchmarkLoaderTrain(b *testing.B) {
	const rows = 1 << 19
	dir := b.TempDir()
	s := schema.TenrecWithRows(0)
	cfg := synth.DefaultConfig(rows, 42)
	cfg.RowGroupRows = 8192
	if _, err := synth.WriteDataset(dir, s, cfg); err != nil {
		b.Fatal(err)
	}
	for _, m := range []struct {
		name            string
		batch, prefetch int
	}{
		{"batch512", 512, 0},
		{"batch1024", 1024, 0},
		{"batch512_prefetch2", 512, 2},
	} {
		b.Run(m.name, func(b *testing.B) {
			// The CLI's openDataset: DefaultOptions with the train flags'
			// defaults (--shuffled_train, --shuffle_buffer 0, seed 42).
			opt := loader.DefaultOptions()
			opt.BatchSize = m.batch
			opt.Shuffle = true
			opt.Seed = 42
			opt.ShuffleBuffer = 0
			opt.Prefetch = m.prefetch
			d, err := loader.Open(dir, s, opt)
			if err != nil {
				b.Fatal(err)
			}
			b.ReportAllocs()
			cpu0 := cpuTime(b)
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				loader.RunEpoch(b, d, i, rows)
			}
			b.StopTimer()
			n := float64(rows) * float64(b.N)
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/n, "ns/row")
			// The process's CPU time (the collector's included) moves less
			// than the wall clock when other work shares the cores.
			b.ReportMetric(float64((cpuTime(b)-cpu0).Nanoseconds())/n, "cpu-ns/row")
			b.ReportMetric(float64(rows)*float64(b.N)/b.Elapsed().Seconds(), "rows/s")
		})
	}
}

// cpuTime is the process's user and system CPU time so far.
func cpuTime(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
