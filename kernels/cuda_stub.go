//go:build !cuda

package kernels

// NewCUDADevice returns an error: this binary was built without the cuda
// build tag. (With the tag it opens GPU index; see cuda.go.)
func NewCUDADevice(index int) (Device, error) { return nil, ErrNoCUDA }

// CUDADevices returns an error: this binary was built without the cuda
// build tag.
func CUDADevices() (int, error) { return 0, ErrNoCUDA }
