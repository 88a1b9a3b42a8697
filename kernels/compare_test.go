package kernels_test

import (
	"fmt"
	"testing"

	"github.com/mtlrank/mtlrank/kernels"
	"github.com/mtlrank/mtlrank/kernels/kerneltest"
)

// The CPU device against the naive reference device.
func TestCPUMatchesReference(t *testing.T) {
	kerneltest.CompareDevices(t, kerneltest.NewRef(), kernels.NewCPU(2))
}

// Threading must not change results beyond the cross-device tolerance...
func TestCPUThreadsAgree(t *testing.T) {
	kerneltest.CompareDevices(t, kernels.NewCPU(1), kernels.NewCPU(2))
}

// ...and in fact not at all: work is split along fixed boundaries and every
// reduction runs in a fixed order, whatever the thread count.
func TestCPUThreadsBitIdentical(t *testing.T) {
	for _, threads := range []int{2, 3} {
		t.Run(fmt.Sprintf("threads%d", threads), func(t *testing.T) {
			kerneltest.CompareDevicesExact(t, kernels.NewCPU(1), kernels.NewCPU(threads))
		})
	}
}
