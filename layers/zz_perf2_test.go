package layers

import (
	"fmt"
	"os"
	"testing"

	"github.com/mtlrank/mtlrank/kernels"
)

func TestPerfSmallK(t *testing.T) {
	if os.Getenv("PERF") == "" {
		t.Skip()
	}
	dev := kernels.NewCPU(1)
	rng := NewRNG(1)
	for _, in := range []int{64, 112} {
		for _, e := range []int{1, 3, 4, 5, 7, 8} {
			dy := randTensor(dev, rng, 1, 1024, e)
			w := randTensor(dev, rng, 1, in, e)
			dx := dev.Alloc(kernels.Float32, 1024, in)
			x := randTensor(dev, rng, 1, 1024, in)
			dw := dev.Alloc(kernels.Float32, in, e)
			const reps = 300
			c0 := cpuTime()
			for i := 0; i < reps; i++ {
				dev.Gemm(false, true, 1, dy, w, 0, dx)
			}
			c1 := cpuTime()
			for i := 0; i < reps; i++ {
				dev.Gemm(false, false, 1, x, w, 0, dy)
			}
			c2 := cpuTime()
			for i := 0; i < reps; i++ {
				dev.Gemm(true, false, 1, x, dy, 0, dw)
			}
			c3 := cpuTime()
			fmt.Printf("in %d E %d: dX %v fwd %v dW %v\n", in, e, (c1-c0)/reps, (c2-c1)/reps, (c3-c2)/reps)
		}
	}
}
