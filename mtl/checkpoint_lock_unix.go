//go:build unix

package mtl

import (
	"os"
	"syscall"
)

// lockDir takes an exclusive advisory lock on the folder dir for as long as
// this process writes into it; the kernel drops it when the process dies,
// so a folder left by a killed save is unlocked. Best effort: without the
// lock, the folder is only unprotected from a concurrent clean-up.
func lockDir(dir string) (unlock func()) {
	f, err := os.Open(dir)
	if err != nil {
		return func() {}
	}
	if syscall.Flock(int(f.Fd()), syscall.LOCK_EX) != nil {
		f.Close()
		return func() {}
	}
	return func() { f.Close() } // closing releases the lock
}

// tryLockDir locks dir without waiting; ok is false when another process
// (or this one) holds the lock.
func tryLockDir(dir string) (unlock func(), ok bool) {
	f, err := os.Open(dir)
	if err != nil {
		return nil, false
	}
	if syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB) != nil {
		f.Close()
		return nil, false
	}
	return func() { f.Close() }, true
}
