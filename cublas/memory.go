//go:build cuda

package cublas

// Device and pinned host memory, copies and fills (csrc/mtlcuda.cu).

/*
#include "mtlcuda.h"
*/
import "C"

import "unsafe"

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
