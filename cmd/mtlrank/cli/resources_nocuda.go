//go:build !cuda

package cli

import "github.com/mtlrank/mtlrank/kernels"

// deviceFreeMemory is the free memory of a GPU device; a build without
// CUDA has none.
func deviceFreeMemory(kernels.Device) (int64, bool) { return 0, false }
