//go:build !linux

package kernels

// madvise is a no-op where transparent huge pages do not exist.
func madvise(addr, n uintptr) error { return nil }
