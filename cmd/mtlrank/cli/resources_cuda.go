//go:build cuda

package cli

import "github.com/mtlrank/mtlrank/kernels"

// deviceFreeMemory is the memory a model may still take on a CUDA device:
// the driver's free memory plus what the allocation pool holds unused.
func deviceFreeMemory(dev kernels.Device) (int64, bool) {
	d, ok := dev.(*kernels.CUDA)
	if !ok {
		return 0, false
	}
	mi, err := d.MemInfo()
	if err != nil {
		return 0, false
	}
	return mi.Free + mi.PoolReserved - mi.PoolUsed, true
}
