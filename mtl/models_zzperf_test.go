package mtl

import (
	"fmt"
	"os"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/mtlrank/mtlrank/kernels"
	"github.com/mtlrank/mtlrank/schema"
)

func cpuTime() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func TestPerfSteps(t *testing.T) {
	if os.Getenv("PERF") == "" {
		t.Skip()
	}
	th, _ := strconv.Atoi(os.Getenv("PERF"))
	s := schema.Tenrec()
	batches := tenrecBatches(s, 8, 1024)
	for _, model := range []string{"mlp", "mmoe", "cgc", "ple"} {
		cfg := DefaultConfig()
		cfg.Model = model
		m, _ := NewModel(s, cfg, kernels.NewCPU(th), 1024)
		for i := 0; i < 3; i++ {
			m.TrainStep(batches[i])
		}
		const reps = 30
		c0, w0 := cpuTime(), time.Now()
		for i := 0; i < reps; i++ {
			m.TrainStep(batches[i%8])
		}
		c, w := (cpuTime()-c0)/reps, time.Since(w0)/reps
		p := m.NewPredictor(1024)
		out := make([][]float32, 5)
		for i := range out {
			out[i] = make([]float32, 1024)
		}
		c1, w1 := cpuTime(), time.Now()
		for i := 0; i < reps; i++ {
			p.Predict(batches[i%8], out)
		}
		fmt.Printf("%s: train cpu %v wall %v; predict cpu %v wall %v\n", model, c, w, (cpuTime()-c1)/reps, time.Since(w1)/reps)
		m.Release()
	}
}

func TestPerfProfile(t *testing.T) {
	model := os.Getenv("PERFMODEL")
	if model == "" {
		t.Skip()
	}
	s := schema.Tenrec()
	batches := tenrecBatches(s, 8, 1024)
	cfg := DefaultConfig()
	cfg.Model = model
	m, _ := NewModel(s, cfg, kernels.NewCPU(1), 1024)
	for i := 0; i < 200; i++ {
		m.TrainStep(batches[i%8])
	}
}
