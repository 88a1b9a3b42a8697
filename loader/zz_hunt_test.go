package loader

import (
	"context"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"
	"time"
	"fmt"
)

func TestZZHunt(t *testing.T) {
	if os.Getenv("HUNT") == "" { t.Skip() }
	seeds := fuzzSeeds(t)
	r := rand.New(rand.NewPCG(1, 1))
	dir := t.TempDir()
	var keys []string
	for k := range seeds { keys = append(keys, k) }
	for iter := 0; iter < 20000; iter++ {
		base := seeds[keys[r.IntN(len(keys))]]
		data := append([]byte{}, base...)
		nm := 1 + r.IntN(4)
		for m := 0; m < nm; m++ {
			i := r.IntN(len(data))
			switch r.IntN(3) {
			case 0: data[i] ^= byte(1 << r.IntN(8))
			case 1: data[i] = byte(r.IntN(256))
			case 2: data[i] = []byte{0, 0xff, 0x7f, 0x80}[r.IntN(4)]
			}
		}
		p := filepath.Join(dir, "f.parquet")
		os.WriteFile(p, data, 0o644)
		done := make(chan any, 1)
		go func() {
			defer func() { done <- recover() }()
			for _, shuffle := range []bool{false, true} {
				opt := DefaultOptions()
				opt.BatchSize, opt.Prefetch, opt.Shuffle, opt.ShuffleBuffer = 2, 0, shuffle, 4
				d, err := Open(p, fuzzSchema(), opt)
				if err != nil { return }
				it := d.Epoch(context.Background(), 0)
				for { b, err := it.Next(); if err != nil { break }; b.Release() }
				it.Close()
			}
		}()
		select {
		case v := <-done:
			if v != nil {
				os.WriteFile(fmt.Sprintf("/tmp/panic_%d.parquet", iter), data, 0o644)
				t.Logf("iter %d panic: %v", iter, v)
			}
		case <-time.After(3 * time.Second):
			os.WriteFile("/tmp/hang.parquet", data, 0o644)
			t.Fatalf("iter %d hang", iter)
		}
	}
}
