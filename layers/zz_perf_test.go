package layers

import (
	"fmt"
	"os"
	"syscall"
	"testing"
	"time"

	"github.com/mtlrank/mtlrank/kernels"
)

func cpuTime() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func TestPerfGemm(t *testing.T) {
	if os.Getenv("PERF") == "" {
		t.Skip()
	}
	dev := kernels.NewCPU(1)
	rng := NewRNG(1)
	x := randTensor(dev, rng, 1, 1024, 112)
	for _, n := range []int{1, 4, 5, 64, 256, 320, 576} {
		w := randTensor(dev, rng, 1, 112, n)
		y := dev.Alloc(kernels.Float32, 1024, n)
		const reps = 200
		c0 := cpuTime()
		for i := 0; i < reps; i++ {
			dev.Gemm(false, false, 1, x, w, 0, y)
		}
		c := (cpuTime() - c0) / reps
		fmt.Printf("gemm 1024x112x%d: %v  %.1f GFLOP/s\n", n, c, float64(2*1024*112*n)/c.Seconds()/1e9)
		dw := dev.Alloc(kernels.Float32, 112, n)
		c0 = cpuTime()
		for i := 0; i < reps; i++ {
			dev.Gemm(true, false, 1, x, y, 0, dw)
		}
		c = (cpuTime() - c0) / reps
		fmt.Printf("  dW (T,N): %v  %.1f GFLOP/s\n", c, float64(2*1024*112*n)/c.Seconds()/1e9)
		dx := dev.Alloc(kernels.Float32, 1024, 112)
		c0 = cpuTime()
		for i := 0; i < reps; i++ {
			dev.Gemm(false, true, 1, y, w, 0, dx)
		}
		c = (cpuTime() - c0) / reps
		fmt.Printf("  dX (N,T): %v  %.1f GFLOP/s\n", c, float64(2*1024*112*n)/c.Seconds()/1e9)
	}
	w := randTensor(dev, rng, 1, 4, 112, 64)
	y := dev.Alloc(kernels.Float32, 4, 1024, 64)
	c0 := cpuTime()
	for i := 0; i < 200; i++ {
		dev.GemmStridedBatched(false, false, 1024, 64, 112, 1, x, 0, w, 112*64, 0, y, 1024*64, 4)
	}
	c := (cpuTime() - c0) / 200
	fmt.Printf("batched 4x 1024x112x64: %v  %.1f GFLOP/s\n", c, float64(4*2*1024*112*64)/c.Seconds()/1e9)
	for _, n := range []int{4096, 65536, 458752} {
		a := dev.Alloc(kernels.Float32, n)
		b := dev.Alloc(kernels.Float32, n)
		c0 := cpuTime()
		for i := 0; i < 200; i++ {
			dev.Axpy(1, a, b)
		}
		c := (cpuTime() - c0) / 200
		fmt.Printf("axpy %d: %v (%.2f GB/s)\n", n, c, float64(12*n)/c.Seconds()/1e9)
	}
}
