package kernels

import "syscall"

// madvise marks [addr, addr+n) MADV_HUGEPAGE.
func madvise(addr, n uintptr) error {
	_, _, e := syscall.Syscall(syscall.SYS_MADVISE, addr, n, 14 /* MADV_HUGEPAGE */)
	if e != 0 {
		return e
	}
	return nil
}
