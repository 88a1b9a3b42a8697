//go:build !cuda

package kernels

import "errors"

// errNoCUDA is what NewCUDADevice returns in a build without the cuda tag.
var errNoCUDA = errors.New("mtlrank was built without CUDA support; rebuild with -tags cuda after make cuda")

// NewCUDADevice returns an error: this binary was built without the cuda
// build tag. (With the tag it opens GPU index; see cuda.go.)
func NewCUDADevice(index int) (Device, error) { return nil, errNoCUDA }
