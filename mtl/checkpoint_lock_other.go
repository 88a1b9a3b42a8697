//go:build !unix

package mtl

// lockDir is a no-op where flock is not available.
func lockDir(string) func() { return func() {} }

// tryLockDir never removes a folder where a save in progress cannot be
// told from a killed one.
func tryLockDir(string) (func(), bool) { return nil, false }
