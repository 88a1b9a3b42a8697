//go:build cuda

// Package cublas is the thin cgo layer over libmtlcuda.so, the CUDA backend
// of mtlrank (csrc/: custom kernels plus wrappers over the CUDA runtime,
// cuBLAS and cuBLASLt). It translates Go values to the C API of
// csrc/mtlcuda.h and C status codes to Go errors; it has no numeric logic of
// its own. The Device built on it is kernels.CUDA.
//
// Building: `make cuda` builds build/cuda/libmtlcuda.so with CMake and nvcc;
// then `go build -tags cuda`. Binaries find the library through the rpath
// recorded at link time (this checkout's build/cuda, then the binary's own
// directory and its lib/ subdirectory) or through LD_LIBRARY_PATH, e.g.
//
//	LD_LIBRARY_PATH=$PWD/build/cuda ./mtlrank bench --device cuda
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
	"unsafe"
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

// ---- memory ----

// Malloc returns bytes of zeroed device memory from the stream-ordered pool
// (0 for 0 bytes).
func (x *Context) Malloc(bytes int) (uintptr, error) {
	var p C.mtlcuda_dptr
	err := x.err("Malloc", C.mtlcuda_malloc(x.c, C.size_t(bytes), &p))
	return uintptr(p), err
}

// Free returns memory from Malloc to the pool (stream-ordered: queued work
// that still reads it completes first).
func (x *Context) Free(p uintptr) error {
	return x.err("Free", C.mtlcuda_free(x.c, C.mtlcuda_dptr(p)))
}

// MemInfo is the device's memory state.
type MemInfo struct {
	Free, Total  int64 // cudaMemGetInfo
	PoolReserved int64 // bytes the allocation pool holds from the driver
	PoolUsed     int64 // bytes of the pool handed out and not yet freed
}

// MemInfo reports device and pool memory.
func (x *Context) MemInfo() (MemInfo, error) {
	var free, total, reserved, used C.size_t
	err := x.err("MemInfo", C.mtlcuda_mem_info(x.c, &free, &total, &reserved, &used))
	return MemInfo{Free: int64(free), Total: int64(total), PoolReserved: int64(reserved), PoolUsed: int64(used)}, err
}

// Trim waits for the compute stream and returns unused pool memory to the
// driver.
func (x *Context) Trim() error { return x.err("Trim", C.mtlcuda_trim(x.c)) }

// HostAlloc returns bytes of pinned (page-locked) host memory, which
// asynchronous copies require.
func (x *Context) HostAlloc(bytes int) (unsafe.Pointer, error) {
	var p unsafe.Pointer
	err := x.err("HostAlloc", C.mtlcuda_host_alloc(x.c, C.size_t(bytes), &p))
	return p, err
}

// HostFree frees memory from HostAlloc.
func (x *Context) HostFree(p unsafe.Pointer) error {
	return x.err("HostFree", C.mtlcuda_host_free(x.c, p))
}

// CopyHtoD copies bytes from host memory to dst on stream s. With sync the
// call returns after the copy (src may then be reused); without, src must
// be pinned memory that stays untouched until the copy completes.
func (x *Context) CopyHtoD(dst uintptr, src unsafe.Pointer, bytes int, s Stream, sync bool) error {
	return x.err("CopyHtoD", C.mtlcuda_memcpy_htod(x.c, C.mtlcuda_dptr(dst), src, C.size_t(bytes), C.int(s), cbool(sync)))
}

// CopyDtoH copies bytes from device memory to host memory on stream s (see
// CopyHtoD for sync).
func (x *Context) CopyDtoH(dst unsafe.Pointer, src uintptr, bytes int, s Stream, sync bool) error {
	return x.err("CopyDtoH", C.mtlcuda_memcpy_dtoh(x.c, dst, C.mtlcuda_dptr(src), C.size_t(bytes), C.int(s), cbool(sync)))
}

// CopyDtoD copies bytes between device buffers on the compute stream.
func (x *Context) CopyDtoD(dst, src uintptr, bytes int) error {
	return x.err("CopyDtoD", C.mtlcuda_memcpy_dtod(x.c, C.mtlcuda_dptr(dst), C.mtlcuda_dptr(src), C.size_t(bytes)))
}

// Memset sets bytes of device memory to a byte value on the compute stream.
func (x *Context) Memset(dst uintptr, value byte, bytes int) error {
	return x.err("Memset", C.mtlcuda_memset(x.c, C.mtlcuda_dptr(dst), C.int(value), C.size_t(bytes)))
}

// FillF32 writes v (bit pattern preserved) to n 4-byte elements.
func (x *Context) FillF32(dst uintptr, n int, v float32) error {
	return x.err("Fill", C.mtlcuda_fill_f32(x.c, C.mtlcuda_dptr(dst), C.int64_t(n), C.float(v)))
}

// FillI32 writes v to n int32 elements.
func (x *Context) FillI32(dst uintptr, n int, v int32) error {
	return x.err("Fill", C.mtlcuda_fill_i32(x.c, C.mtlcuda_dptr(dst), C.int64_t(n), C.int32_t(v)))
}

// ---- streams, events, graphs ----

// StreamSync waits for the work queued on s and reports its faults.
func (x *Context) StreamSync(s Stream) error {
	return x.err("Sync", C.mtlcuda_stream_sync(x.c, C.int(s)))
}

// Event is a CUDA event of one context.
type Event struct {
	x *Context
	e *C.mtlcuda_event
}

// NewEvent creates an event; timing events can measure elapsed time.
func (x *Context) NewEvent(timing bool) (*Event, error) {
	var e *C.mtlcuda_event
	if err := x.err("NewEvent", C.mtlcuda_event_create(x.c, cbool(timing), &e)); err != nil {
		return nil, err
	}
	return &Event{x: x, e: e}, nil
}

// Release destroys the event.
func (e *Event) Release() {
	if e == nil || e.e == nil {
		return
	}
	C.mtlcuda_event_destroy(e.e)
	e.e = nil
}

// Record marks the current end of stream s.
func (e *Event) Record(s Stream) error {
	return e.x.err("EventRecord", C.mtlcuda_event_record(e.x.c, e.e, C.int(s)))
}

// WaitOn makes stream s wait (on the device, not the host) for the event.
func (e *Event) WaitOn(s Stream) error {
	return e.x.err("StreamWaitEvent", C.mtlcuda_stream_wait_event(e.x.c, C.int(s), e.e))
}

// Sync blocks the host until the event has happened.
func (e *Event) Sync() error { return e.x.err("EventSync", C.mtlcuda_event_sync(e.x.c, e.e)) }

// Done reports whether the event has happened, without blocking.
func (e *Event) Done() (bool, error) {
	var d C.int
	err := e.x.err("EventQuery", C.mtlcuda_event_query(e.x.c, e.e, &d))
	return d != 0, err
}

// ElapsedMs is the time between two recorded timing events.
func ElapsedMs(start, end *Event) (float32, error) {
	var ms C.float
	err := start.x.err("EventElapsedTime", C.mtlcuda_event_elapsed_ms(start.x.c, start.e, end.e, &ms))
	return float32(ms), err
}

// BeginCapture starts capturing the compute stream into a graph.
func (x *Context) BeginCapture() error { return x.err("BeginCapture", C.mtlcuda_capture_begin(x.c)) }

// Capturing reports whether a capture is in progress.
func (x *Context) Capturing() bool { return C.mtlcuda_capturing(x.c) != 0 }

// Graph is an instantiated CUDA graph.
type Graph struct {
	x *Context
	g *C.mtlcuda_graph
}

// EndCapture ends the capture and instantiates the graph.
func (x *Context) EndCapture() (*Graph, error) {
	var g *C.mtlcuda_graph
	if err := x.err("EndCapture", C.mtlcuda_capture_end(x.c, &g)); err != nil {
		return nil, err
	}
	return &Graph{x: x, g: g}, nil
}

// Launch queues the graph on the compute stream.
func (g *Graph) Launch() error { return g.x.err("GraphLaunch", C.mtlcuda_graph_launch(g.x.c, g.g)) }

// Release destroys the graph.
func (g *Graph) Release() {
	if g == nil || g.g == nil {
		return
	}
	C.mtlcuda_graph_destroy(g.g)
	g.g = nil
}

// ---- BLAS (row-major) ----

// Gemm computes C[m,n] = alpha*op(A)*op(B) + beta*C.
func (x *Context) Gemm(transA, transB bool, m, n, k int, alpha float32, a, b uintptr, beta float32, c uintptr) error {
	return x.err("Gemm", C.mtlcuda_gemm(x.c, cbool(transA), cbool(transB), C.int(m), C.int(n), C.int(k), C.float(alpha),
		C.mtlcuda_dptr(a), C.mtlcuda_dptr(b), C.float(beta), C.mtlcuda_dptr(c)))
}

// GemmStridedBatched runs batch GEMMs with element strides.
func (x *Context) GemmStridedBatched(transA, transB bool, m, n, k int, alpha float32, a uintptr, strideA int,
	b uintptr, strideB int, beta float32, c uintptr, strideC int, batch int) error {
	return x.err("GemmStridedBatched", C.mtlcuda_gemm_strided_batched(x.c, cbool(transA), cbool(transB), C.int(m), C.int(n),
		C.int(k), C.float(alpha), C.mtlcuda_dptr(a), C.int64_t(strideA), C.mtlcuda_dptr(b), C.int64_t(strideB), C.float(beta),
		C.mtlcuda_dptr(c), C.int64_t(strideC), C.int(batch)))
}

// GemmBiasAct computes C_i = act(op(A_i)*op(B_i) + bias_i) with a cuBLASLt
// epilogue (SGEMM + bias kernel when cuBLASLt has no algorithm).
func (x *Context) GemmBiasAct(transA, transB bool, m, n, k int, a uintptr, strideA int, b uintptr, strideB int,
	bias uintptr, strideBias int, c uintptr, strideC int, batch int, act int) error {
	return x.err("GemmBiasAct", C.mtlcuda_gemm_bias_act(x.c, cbool(transA), cbool(transB), C.int(m), C.int(n), C.int(k),
		C.mtlcuda_dptr(a), C.int64_t(strideA), C.mtlcuda_dptr(b), C.int64_t(strideB), C.mtlcuda_dptr(bias), C.int64_t(strideBias),
		C.mtlcuda_dptr(c), C.int64_t(strideC), C.int(batch), C.int(act)))
}

// ---- element-wise and row kernels ----

// BiasAct adds bias [groups, n] to x [groups, rows, n] and applies act.
func (x *Context) BiasAct(xp, bias uintptr, groups, rows, n, act int) error {
	return x.err("BiasAct", C.mtlcuda_bias_act(x.c, C.mtlcuda_dptr(xp), C.mtlcuda_dptr(bias), C.int(groups), C.int64_t(rows),
		C.int(n), C.int(act)))
}

// ActBackward masks dy by the activation's derivative at output y.
func (x *Context) ActBackward(dy, y uintptr, n, act int) error {
	return x.err("ActBackward", C.mtlcuda_act_backward(x.c, C.mtlcuda_dptr(dy), C.mtlcuda_dptr(y), C.int64_t(n), C.int(act)))
}

// Activate writes y = act(x) for n elements (y may equal x); act is any
// Act* constant.
func (x *Context) Activate(y, xp uintptr, n, act int) error {
	return x.err("Activate", C.mtlcuda_activate(x.c, C.mtlcuda_dptr(y), C.mtlcuda_dptr(xp), C.int64_t(n), C.int(act)))
}

// ActivateBackward multiplies dy by act'(x) at the pre-activation x.
func (x *Context) ActivateBackward(dy, xp uintptr, n, act int) error {
	return x.err("ActivateBackward", C.mtlcuda_activate_backward(x.c, C.mtlcuda_dptr(dy), C.mtlcuda_dptr(xp), C.int64_t(n),
		C.int(act)))
}

// BiasGrad writes (or adds) the row sums of dy [groups, rows, n] to db.
func (x *Context) BiasGrad(dy, db uintptr, groups, rows, n int, accumulate bool) error {
	return x.err("BiasGrad", C.mtlcuda_bias_grad(x.c, C.mtlcuda_dptr(dy), C.mtlcuda_dptr(db), C.int(groups), C.int64_t(rows),
		C.int(n), cbool(accumulate)))
}

// Dropout applies the counter-based dropout pattern (see mtlcuda.h).
func (x *Context) Dropout(xp, mask uintptr, n int, threshold uint64, scale float32, seed uint64) error {
	return x.err("Dropout", C.mtlcuda_dropout(x.c, C.mtlcuda_dptr(xp), C.mtlcuda_dptr(mask), C.int64_t(n), C.uint64_t(threshold),
		C.float(scale), C.uint64_t(seed)))
}

// Mul is dst = a*b.
func (x *Context) Mul(dst, a, b uintptr, n int) error {
	return x.err("Mul", C.mtlcuda_mul(x.c, C.mtlcuda_dptr(dst), C.mtlcuda_dptr(a), C.mtlcuda_dptr(b), C.int64_t(n)))
}

// Axpy is y += alpha*x.
func (x *Context) Axpy(alpha float32, xp, y uintptr, n int) error {
	return x.err("Axpy", C.mtlcuda_axpy(x.c, C.float(alpha), C.mtlcuda_dptr(xp), C.mtlcuda_dptr(y), C.int64_t(n)))
}

// Scale is x *= alpha.
func (x *Context) Scale(xp uintptr, n int, alpha float32) error {
	return x.err("Scale", C.mtlcuda_scale(x.c, C.mtlcuda_dptr(xp), C.int64_t(n), C.float(alpha)))
}

// EqualMask is dst = (src == value).
func (x *Context) EqualMask(dst, src uintptr, n int, value float32) error {
	return x.err("EqualMask", C.mtlcuda_equal_mask(x.c, C.mtlcuda_dptr(dst), C.mtlcuda_dptr(src), C.int64_t(n), C.float(value)))
}

// Sigmoid is y = 1/(1+exp(-x)).
func (x *Context) Sigmoid(y, xp uintptr, n int) error {
	return x.err("Sigmoid", C.mtlcuda_sigmoid(x.c, C.mtlcuda_dptr(y), C.mtlcuda_dptr(xp), C.int64_t(n)))
}

// CopyCols copies (or adds) width columns between row-major matrices.
func (x *Context) CopyCols(dst uintptr, dstCols, dstCol int, src uintptr, srcCols, srcCol, rows, width int, accumulate bool) error {
	return x.err("CopyCols", C.mtlcuda_copy_cols(x.c, C.mtlcuda_dptr(dst), C.int(dstCols), C.int(dstCol), C.mtlcuda_dptr(src),
		C.int(srcCols), C.int(srcCol), C.int64_t(rows), C.int(width), cbool(accumulate)))
}

// SoftmaxRows is y = softmax(x / temperature) per row.
func (x *Context) SoftmaxRows(y, xp uintptr, rows, cols int, temperature float32) error {
	return x.err("SoftmaxRows", C.mtlcuda_softmax_rows(x.c, C.mtlcuda_dptr(y), C.mtlcuda_dptr(xp), C.int64_t(rows), C.int(cols),
		C.float(temperature)))
}

// SoftmaxBackward computes dx from dy and the softmax output y.
func (x *Context) SoftmaxBackward(dx, dy, y uintptr, rows, cols int, temperature float32) error {
	return x.err("SoftmaxBackward", C.mtlcuda_softmax_backward(x.c, C.mtlcuda_dptr(dx), C.mtlcuda_dptr(dy), C.mtlcuda_dptr(y),
		C.int64_t(rows), C.int(cols), C.float(temperature)))
}

func dptrs(p []uintptr) *C.mtlcuda_dptr {
	if len(p) == 0 {
		return nil
	}
	return (*C.mtlcuda_dptr)(unsafe.Pointer(&p[0]))
}

// GateCombine is out[b,:] = sum_e w[b,e]*experts[e][b,:].
func (x *Context) GateCombine(out, w uintptr, experts []uintptr, rows, d int) error {
	return x.err("GateCombine", C.mtlcuda_gate_combine(x.c, C.mtlcuda_dptr(out), C.mtlcuda_dptr(w), dptrs(experts),
		C.int(len(experts)), C.int64_t(rows), C.int(d)))
}

// GateCombineBackward writes dw and accumulates into dexperts.
func (x *Context) GateCombineBackward(dout, w uintptr, experts []uintptr, dw uintptr, dexperts []uintptr, rows, d int) error {
	if len(dexperts) != len(experts) {
		return &Error{Op: "GateCombineBackward", Code: CodeInvalid,
			Msg: fmt.Sprintf("%d expert gradients for %d experts", len(dexperts), len(experts))}
	}
	return x.err("GateCombineBackward", C.mtlcuda_gate_combine_backward(x.c, C.mtlcuda_dptr(dout), C.mtlcuda_dptr(w), dptrs(experts),
		C.mtlcuda_dptr(dw), dptrs(dexperts), C.int(len(experts)), C.int64_t(rows), C.int(d)))
}

// ---- losses ----

// BCEWithLogits adds scale*sum w*bce to loss[0] and writes dz (w = 0 means
// no weights).
func (x *Context) BCEWithLogits(loss, dz, z, y, w uintptr, n int, scale float32) error {
	return x.err("BCEWithLogits", C.mtlcuda_bce_with_logits(x.c, C.mtlcuda_dptr(loss), C.mtlcuda_dptr(dz), C.mtlcuda_dptr(z),
		C.mtlcuda_dptr(y), C.mtlcuda_dptr(w), C.int64_t(n), C.float(scale)))
}

// MSE adds scale*sum w*(z-y)^2 to loss[0] and writes dz.
func (x *Context) MSE(loss, dz, z, y, w uintptr, n int, scale float32) error {
	return x.err("MSE", C.mtlcuda_mse(x.c, C.mtlcuda_dptr(loss), C.mtlcuda_dptr(dz), C.mtlcuda_dptr(z), C.mtlcuda_dptr(y), C.mtlcuda_dptr(w),
		C.int64_t(n), C.float(scale)))
}

// SumSquares adds scale*sum x^2 to loss[0].
func (x *Context) SumSquares(loss, xp uintptr, n int, scale float32) error {
	return x.err("SumSquares", C.mtlcuda_sum_squares(x.c, C.mtlcuda_dptr(loss), C.mtlcuda_dptr(xp), C.int64_t(n), C.float(scale)))
}

// ---- optimizers ----

// OptTensor is one dense tensor of a multi-tensor optimizer call: M is the
// first moment (Adam) or the accumulator (Adagrad); V the second moment.
type OptTensor struct {
	Param, Grad, M, V uintptr
	N                 int
}

// optTensors converts ts into buf (reused between calls).
func optTensors(buf *[]C.mtlcuda_opt_tensor, ts []OptTensor) *C.mtlcuda_opt_tensor {
	if len(ts) == 0 {
		return nil
	}
	b := (*buf)[:0]
	for _, t := range ts {
		b = append(b, C.mtlcuda_opt_tensor{param: C.mtlcuda_dptr(t.Param), grad: C.mtlcuda_dptr(t.Grad), m: C.mtlcuda_dptr(t.M),
			v: C.mtlcuda_dptr(t.V), n: C.int64_t(t.N)})
	}
	*buf = b
	return &b[0]
}

// OptBuffer holds the C-side copy of a tensor list between calls, so that
// steady-state optimizer calls do not allocate.
type OptBuffer struct{ b []C.mtlcuda_opt_tensor }

// Adam updates every tensor with the bias-corrected step size lrT.
func (x *Context) Adam(buf *OptBuffer, ts []OptTensor, lrT, beta1, beta2, eps, l2 float32) error {
	p := C.mtlcuda_adam_params{lr_t: C.float(lrT), beta1: C.float(beta1), beta2: C.float(beta2), eps: C.float(eps), l2: C.float(l2)}
	return x.err("Adam", C.mtlcuda_adam(x.c, optTensors(&buf.b, ts), C.int(len(ts)), &p))
}

// Adagrad updates every tensor (accumulator in M).
func (x *Context) Adagrad(buf *OptBuffer, ts []OptTensor, lr, eps, l2 float32) error {
	p := C.mtlcuda_adagrad_params{lr: C.float(lr), eps: C.float(eps), l2: C.float(l2)}
	return x.err("Adagrad", C.mtlcuda_adagrad(x.c, optTensors(&buf.b, ts), C.int(len(ts)), &p))
}

// SGD updates every tensor.
func (x *Context) SGD(buf *OptBuffer, ts []OptTensor, lr, l2 float32) error {
	p := C.mtlcuda_sgd_params{lr: C.float(lr), l2: C.float(l2)}
	return x.err("SGD", C.mtlcuda_sgd(x.c, optTensors(&buf.b, ts), C.int(len(ts)), &p))
}

// SparseAdam updates rows[i] of table, m and v for i < n.
func (x *Context) SparseAdam(table, m, v uintptr, tableRows, dim int, rows, values uintptr, n int, lrT, beta1, beta2, eps, l2 float32) error {
	p := C.mtlcuda_adam_params{lr_t: C.float(lrT), beta1: C.float(beta1), beta2: C.float(beta2), eps: C.float(eps), l2: C.float(l2)}
	return x.err("SparseAdam", C.mtlcuda_sparse_adam(x.c, C.mtlcuda_dptr(table), C.mtlcuda_dptr(m), C.mtlcuda_dptr(v), C.int64_t(tableRows),
		C.int(dim), C.mtlcuda_dptr(rows), C.mtlcuda_dptr(values), C.int64_t(n), &p))
}

// SparseAdagrad updates rows[i] of table and acc for i < n.
func (x *Context) SparseAdagrad(table, acc uintptr, tableRows, dim int, rows, values uintptr, n int, lr, eps, l2 float32) error {
	p := C.mtlcuda_adagrad_params{lr: C.float(lr), eps: C.float(eps), l2: C.float(l2)}
	return x.err("SparseAdagrad", C.mtlcuda_sparse_adagrad(x.c, C.mtlcuda_dptr(table), C.mtlcuda_dptr(acc), C.int64_t(tableRows),
		C.int(dim), C.mtlcuda_dptr(rows), C.mtlcuda_dptr(values), C.int64_t(n), &p))
}

// SparseSGD updates rows[i] of table for i < n.
func (x *Context) SparseSGD(table uintptr, tableRows, dim int, rows, values uintptr, n int, lr, l2 float32) error {
	p := C.mtlcuda_sgd_params{lr: C.float(lr), l2: C.float(l2)}
	return x.err("SparseSGD", C.mtlcuda_sparse_sgd(x.c, C.mtlcuda_dptr(table), C.int64_t(tableRows), C.int(dim), C.mtlcuda_dptr(rows),
		C.mtlcuda_dptr(values), C.int64_t(n), &p))
}

// ---- embeddings ----

// EmbeddingGather writes the (combined) embeddings of a batch into columns
// [col, col+dim) of out; offsets == 0 means one id per row. Bad ids and
// offsets are recorded in id-check slot `slot` (see IDCheckFetch).
func (x *Context) EmbeddingGather(out uintptr, outCols, col int, table uintptr, tableRows, dim int, ids uintptr,
	numIDs int, offsets uintptr, batch, comb, slot int) error {
	return x.err("EmbeddingGather", C.mtlcuda_embedding_gather(x.c, C.mtlcuda_dptr(out), C.int(outCols), C.int(col),
		C.mtlcuda_dptr(table), C.int64_t(tableRows), C.int(dim), C.mtlcuda_dptr(ids), C.int64_t(numIDs), C.mtlcuda_dptr(offsets),
		C.int64_t(batch), C.int(comb), C.int(slot)))
}

// IDCheck is the finding of IDCheckFetch.
type IDCheck struct {
	Kind      int // 0 clean, 1 id out of range, 2 malformed offsets
	Slot      int
	Pos, Row  int64
	ID        int64
	TableRows int64
}

// IDCheckFetch reads and clears the first slots id-check slots
// (synchronises the compute stream).
func (x *Context) IDCheckFetch(slots int) (IDCheck, error) {
	var found, slot C.int
	var pos, row, id, rows C.int64_t
	err := x.err("IDCheck", C.mtlcuda_idcheck_fetch(x.c, C.int(slots), &found, &slot, &pos, &row, &id, &rows))
	return IDCheck{Kind: int(found), Slot: int(slot), Pos: int64(pos), Row: int64(row), ID: int64(id), TableRows: int64(rows)}, err
}

// EmbInput is one source of gradient rows for a table (see mtlcuda_emb_input).
type EmbInput struct {
	Dout          uintptr
	DoutCols, Col int
	IDs           uintptr
	NumIDs        int
	Offsets       uintptr // 0: one id per row
	Batch         int
	Comb          int
}

// EmbBuffer holds the C-side copy of an input list between calls.
type EmbBuffer struct{ b []C.mtlcuda_emb_input }

func embInputs(buf *EmbBuffer, in []EmbInput) *C.mtlcuda_emb_input {
	if len(in) == 0 {
		return nil
	}
	b := buf.b[:0]
	for _, e := range in {
		b = append(b, C.mtlcuda_emb_input{dout: C.mtlcuda_dptr(e.Dout), dout_cols: C.int(e.DoutCols), col: C.int(e.Col),
			ids: C.mtlcuda_dptr(e.IDs), num_ids: C.int64_t(e.NumIDs), offsets: C.mtlcuda_dptr(e.Offsets), batch: C.int64_t(e.Batch),
			comb: C.int(e.Comb)})
	}
	buf.b = b
	return &b[0]
}

// EmbeddingBackward writes the sparse gradient of a table into at most
// capacity rows. With exact it waits for and returns the number of unique
// rows (which may exceed capacity: the caller must check); otherwise it pads
// the output with row -1 up to min(total ids, capacity) and returns that.
func (x *Context) EmbeddingBackward(buf *EmbBuffer, outRows, outValues uintptr, capacity, tableRows, dim int, in []EmbInput, exact bool) (int, error) {
	var n C.int64_t
	var np *C.int64_t
	if exact {
		np = &n
	}
	err := x.err("EmbeddingBackward", C.mtlcuda_embedding_backward(x.c, C.mtlcuda_dptr(outRows), C.mtlcuda_dptr(outValues),
		C.int64_t(capacity), C.int64_t(tableRows), C.int(dim), embInputs(buf, in), C.int(len(in)), np))
	if err != nil || exact {
		return int(n), err
	}
	total := 0
	for _, e := range in {
		total += e.NumIDs
	}
	return min(total, capacity), nil
}

// SparseOpt selects the update of EmbeddingUpdate; LR is the
// bias-corrected step size for Adam.
type SparseOpt struct {
	Kind                      int
	LR, Beta1, Beta2, Eps, L2 float32
}

// EmbeddingUpdate is the fused backward + sparse optimizer step of a table.
func (x *Context) EmbeddingUpdate(buf *EmbBuffer, table, s1, s2 uintptr, tableRows, dim int, in []EmbInput, o SparseOpt) error {
	p := C.mtlcuda_sparse_opt{kind: C.int(o.Kind), lr: C.float(o.LR), beta1: C.float(o.Beta1), beta2: C.float(o.Beta2),
		eps: C.float(o.Eps), l2: C.float(o.L2)}
	return x.err("EmbeddingUpdate", C.mtlcuda_embedding_update(x.c, C.mtlcuda_dptr(table), C.mtlcuda_dptr(s1), C.mtlcuda_dptr(s2),
		C.int64_t(tableRows), C.int(dim), embInputs(buf, in), C.int(len(in)), &p))
}

// MaxExperts etc. are the per-launch limits of the library (larger counts
// are split into several launches by the library).
const (
	MaxExperts   = C.MTL_MAX_EXPERTS
	MaxEmbInputs = C.MTL_MAX_EMB_INPUTS
)
