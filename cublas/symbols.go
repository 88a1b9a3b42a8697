//go:build cuda

package cublas

/*
#cgo LDFLAGS: -ldl
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdlib.h>

#include "mtlcuda.h"

// The file of the object (executable or shared library) that defines the
// process-wide symbol name, or NULL.
static const char *symbol_object(const char *name) {
	void *p = dlsym(RTLD_DEFAULT, name);
	Dl_info info;
	if (p == NULL || dladdr(p, &info) == 0) return NULL;
	return info.dli_fname;
}

// The file of the object that holds the code at address p, or NULL.
static const char *address_object(void *p) {
	Dl_info info;
	if (p == NULL || dladdr(p, &info) == 0) return NULL;
	return info.dli_fname;
}
*/
import "C"

import (
	"fmt"
	"unsafe"
)

// SymbolObject returns the file of the loaded object that defines the C
// symbol name as the dynamic linker resolves it for this process (the
// executable or a shared library), so that one can check which
// libmtlcuda.so a binary runs on (the CUDA build or the emulated device) and
// that the C API's calls land in it.
func SymbolObject(name string) (string, error) {
	cs := C.CString(name)
	defer C.free(unsafe.Pointer(cs))
	p := C.symbol_object(cs)
	if p == nil {
		return "", fmt.Errorf("cublas: symbol %s is not defined in this process", name)
	}
	return C.GoString(p), nil
}

// LibraryPath is the file of the libmtlcuda.so this process runs on.
func LibraryPath() (string, error) { return SymbolObject("mtlcuda_last_error") }

// linkedEntryPoints are the addresses this package's calls of some C API
// functions were linked to (the names the CPU kernels of package kernels
// once shared, among others): a definition in the executable would win
// over libmtlcuda.so's, and these addresses would show it.
func linkedEntryPoints() map[string]unsafe.Pointer {
	return map[string]unsafe.Pointer{
		"mtlcuda_adagrad":        unsafe.Pointer(C.mtlcuda_adagrad),
		"mtlcuda_adam":           unsafe.Pointer(C.mtlcuda_adam),
		"mtlcuda_axpy":           unsafe.Pointer(C.mtlcuda_axpy),
		"mtlcuda_bias_act":       unsafe.Pointer(C.mtlcuda_bias_act),
		"mtlcuda_bias_grad":      unsafe.Pointer(C.mtlcuda_bias_grad),
		"mtlcuda_copy_cols":      unsafe.Pointer(C.mtlcuda_copy_cols),
		"mtlcuda_dropout":        unsafe.Pointer(C.mtlcuda_dropout),
		"mtlcuda_mul":            unsafe.Pointer(C.mtlcuda_mul),
		"mtlcuda_scale":          unsafe.Pointer(C.mtlcuda_scale),
		"mtlcuda_sgd":            unsafe.Pointer(C.mtlcuda_sgd),
		"mtlcuda_sigmoid":        unsafe.Pointer(C.mtlcuda_sigmoid),
		"mtlcuda_sparse_adagrad": unsafe.Pointer(C.mtlcuda_sparse_adagrad),
		"mtlcuda_sparse_adam":    unsafe.Pointer(C.mtlcuda_sparse_adam),
		"mtlcuda_sparse_sgd":     unsafe.Pointer(C.mtlcuda_sparse_sgd),
		"mtlcuda_device_count":   unsafe.Pointer(C.mtlcuda_device_count),
	}
}

// objectAt is the file of the loaded object holding address p ("" if none).
func objectAt(p unsafe.Pointer) string {
	if s := C.address_object(p); s != nil {
		return C.GoString(s)
	}
	return ""
}
