//go:build cuda

// Package cublas is the cgo layer over libmtlcuda.so, the CUDA backend of
// mtlrank (csrc/: custom kernels plus wrappers over the CUDA runtime,
// cuBLAS and cuBLASLt), named after the design's cgo layer. It wraps all of
// libmtlcuda: every function of the C API in csrc/mtlcuda.h has its Go
// method here (TestCUDACallsReachLibmtlcuda checks that none is missing and
// that every call lands in the library), not only the BLAS calls the name
// suggests. It translates Go values to the C API and C status codes to Go
// errors; it has no numeric logic of its own. The Device built on it is
// kernels.CUDA.
//
// Files by concern: cublas.go (errors, the context, device queries),
// memory.go (device and pinned memory, copies, fills), streams.go (streams
// and events), graph.go (graph capture and replay, the step-parameter block
// and the kernels that read it), blas.go (GEMMs), elementwise.go
// (element-wise, row and gate kernels), losses.go, optim.go (dense and
// sparse optimizer steps), embedding.go (gather, backward, fused updates),
// fused.go (the fused gate, multi-task loss and metric kernels) and
// symbols.go (which loaded object serves the C API).
//
// Building: `make cuda` builds build/cuda/libmtlcuda.so with CMake and nvcc;
// then `go build -tags cuda`. Binaries find the library through the rpath
// recorded at link time (this checkout's build/cuda, then the binary's own
// directory and its lib/ subdirectory) or through LD_LIBRARY_PATH, e.g.
//
//	LD_LIBRARY_PATH=$PWD/build/cuda ./mtlrank bench --device cuda
//
// `make test-emulated-gpu` builds the same C API for the host
// (build/cuda-emu) and runs the cuda-tagged tests on it.
//
// A Context is not safe for concurrent use; kernels.CUDA serialises calls.
// Device addresses are plain uintptr values; host slices passed to
// synchronous copies are only read or written during the call.
package cublas

/*
#cgo CFLAGS: -I${SRCDIR}/../csrc
#cgo LDFLAGS: -L${SRCDIR}/../build/cuda -lmtlcuda -Wl,-rpath,${SRCDIR}/../build/cuda -Wl,-rpath,$ORIGIN -Wl,-rpath,$ORIGIN/lib
#include "mtlcuda.h"
*/
import "C"

import (
	"errors"
	"fmt"
	"runtime"
)

// Code is a status code of the C API.
type Code int

// Status codes (MTL_ERR_* in mtlcuda.h).
const (
	CodeCUDA     Code = C.MTL_ERR_CUDA
	CodeCUBLAS   Code = C.MTL_ERR_CUBLAS
	CodeInvalid  Code = C.MTL_ERR_INVALID
	CodeNoDevice Code = C.MTL_ERR_NODEVICE
	CodeCapture  Code = C.MTL_ERR_CAPTURE
	CodeNoMemory Code = C.MTL_ERR_NOMEM
)

func (c Code) String() string {
	switch c {
	case CodeCUDA:
		return "CUDA error"
	case CodeCUBLAS:
		return "cuBLAS error"
	case CodeInvalid:
		return "invalid argument"
	case CodeNoDevice:
		return "no CUDA device"
	case CodeCapture:
		return "not allowed during graph capture"
	case CodeNoMemory:
		return "out of memory"
	}
	return fmt.Sprintf("status %d", int(c))
}

// Error is a failed call of the C API. Msg carries the failing CUDA or
// cuBLAS call with its status name and description, as reported by the
// library (for example "cudaMallocAsync(&p, bytes, ctx->compute):
// cudaErrorMemoryAllocation (out of memory)").
type Error struct {
	Op   string // the Go-side operation, e.g. "Gemm"
	Code Code
	Msg  string
}

func (e *Error) Error() string { return fmt.Sprintf("cuda: %s: %s", e.Op, e.Msg) }

// Is makes errors.Is(err, ErrNoDevice) (and the other sentinels) match any
// Error with the same code.
func (e *Error) Is(target error) bool {
	var t *Error
	if errors.As(target, &t) && t.Op == "" && t.Msg == "" {
		return t.Code == e.Code
	}
	return false
}

// Sentinels for errors.Is.
var (
	ErrNoDevice = &Error{Code: CodeNoDevice}
	ErrCapture  = &Error{Code: CodeCapture}
	ErrNoMemory = &Error{Code: CodeNoMemory}
	ErrInvalid  = &Error{Code: CodeInvalid}
)

// Stream selects one of a context's two streams.
type Stream int

const (
	Compute Stream = C.MTL_STREAM_COMPUTE // all kernels and GEMMs
	Copy    Stream = C.MTL_STREAM_COPY    // asynchronous uploads
)

// Kernel enums, with the values of mtlcuda.h.
const (
	ActLinear    = C.MTL_ACT_LINEAR
	ActReLU      = C.MTL_ACT_RELU
	ActSELU      = C.MTL_ACT_SELU
	ActELU       = C.MTL_ACT_ELU
	ActGELU      = C.MTL_ACT_GELU
	ActTanh      = C.MTL_ACT_TANH
	ActSigmoid   = C.MTL_ACT_SIGMOID
	ActSwish     = C.MTL_ACT_SWISH
	ActLeakyReLU = C.MTL_ACT_LEAKY_RELU

	CombMean  = C.MTL_COMB_MEAN
	CombSum   = C.MTL_COMB_SUM
	CombSqrtN = C.MTL_COMB_SQRTN

	OptSGD     = C.MTL_OPT_SGD
	OptAdagrad = C.MTL_OPT_ADAGRAD
	OptAdam    = C.MTL_OPT_ADAM

	// IDCheckSlots is the number of gathers whose id checks can be
	// deferred to one read-back; later gathers share the last slot.
	IDCheckSlots = C.MTL_IDCHECK_SLOTS
)

// globalErr converts the status of a context-free call; the message is kept
// per OS thread, so the caller must hold the thread (see lockedCall).
func globalErr(op string, rc C.int) error {
	if rc == C.MTL_OK {
		return nil
	}
	return &Error{Op: op, Code: Code(rc), Msg: C.GoString(C.mtlcuda_last_error(nil))}
}

// lockedCall runs a context-free call and reads its message on the same OS
// thread.
func lockedCall(op string, f func() C.int) error {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	return globalErr(op, f())
}

// RuntimeVersion returns the CUDA runtime version the library was built with
// and the driver's version (e.g. 12040 for 12.4); driver is 0 without a
// driver.
func RuntimeVersion() (runtimeVersion, driverVersion int, err error) {
	var r, d C.int
	err = lockedCall("RuntimeVersion", func() C.int { return C.mtlcuda_runtime_version(&r, &d) })
	return int(r), int(d), err
}

// DeviceCount returns the number of visible CUDA devices (0, with a nil
// error, when there is none; an error when the driver is missing or broken).
func DeviceCount() (int, error) {
	var n C.int
	err := lockedCall("DeviceCount", func() C.int { return C.mtlcuda_device_count(&n) })
	return int(n), err
}

// Context is one device with its streams, BLAS handles and scratch memory.
type Context struct {
	c *C.mtlcuda_ctx
}

// NewContext opens device index. The error wraps ErrNoDevice when there is
// no GPU, no driver, or no device with that index.
func NewContext(index int) (*Context, error) {
	var c *C.mtlcuda_ctx
	err := lockedCall("NewContext", func() C.int { return C.mtlcuda_ctx_create(C.int(index), &c) })
	if err != nil {
		return nil, err
	}
	return &Context{c: c}, nil
}

// Close waits for queued work and frees the context. Device memory handed
// out by Malloc must be freed before.
func (x *Context) Close() {
	if x == nil || x.c == nil {
		return
	}
	C.mtlcuda_ctx_destroy(x.c)
	x.c = nil
}

func (x *Context) err(op string, rc C.int) error {
	if rc == C.MTL_OK {
		return nil
	}
	return &Error{Op: op, Code: Code(rc), Msg: C.GoString(C.mtlcuda_last_error(x.c))}
}

// DeviceInfo describes the device of a context.
type DeviceInfo struct {
	Name                 string
	Major, Minor         int // compute capability
	SMs                  int
	TotalMemory          int64
	Runtime, Driver      int // CUDA versions, e.g. 12040
	RuntimeVersionString string
}

// Info returns the device's name, compute capability and memory size.
func (x *Context) Info() (DeviceInfo, error) {
	var buf [256]C.char
	var major, minor, sms C.int
	var total C.size_t
	if err := x.err("Info", C.mtlcuda_device_info(x.c, &buf[0], C.int(len(buf)), &major, &minor, &sms, &total)); err != nil {
		return DeviceInfo{}, err
	}
	r, d, _ := RuntimeVersion()
	return DeviceInfo{
		Name: C.GoString(&buf[0]), Major: int(major), Minor: int(minor), SMs: int(sms), TotalMemory: int64(total),
		Runtime: r, Driver: d, RuntimeVersionString: fmt.Sprintf("%d.%d", r/1000, r%1000/10),
	}, nil
}

// SetTF32 switches SGEMMs to TF32 tensor-core math (faster, 10-bit mantissa
// products: results then differ from the CPU beyond the parity tolerance).
func (x *Context) SetTF32(on bool) error {
	return x.err("SetTF32", C.mtlcuda_set_tf32(x.c, cbool(on)))
}

func cbool(b bool) C.int {
	if b {
		return 1
	}
	return 0
}
