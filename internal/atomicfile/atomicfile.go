// Package atomicfile writes files and folders so that a reader sees either
// the previous content or the complete new content, never a partial one:
// everything is written under a temporary name in the destination's folder,
// flushed to disk, and renamed into place.
//
// Unlike os.CreateTemp, which creates files with mode 0600, the temporary
// files are created with mode 0666 and folders with 0777, both reduced by
// the process umask as os.Create and os.Mkdir do: the outputs (data,
// schemas, checkpoints, metrics) are meant to be read by other users and
// tools exactly like files written in place. The umask is applied by the
// kernel at creation, so it is never read or changed (changing it would be
// racy in a multi-threaded process).
package atomicfile

import (
	"bufio"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
)

// File is a file being written under a temporary name beside its final
// path. Write to it (it is an *os.File), then Commit to put it in place or
// Abort to discard it. Commit after Abort and Abort after Commit are no-ops
// returning nil, so `defer f.Abort()` is the usual clean-up.
type File struct {
	*os.File
	path string
	done bool
}

// Create starts writing path: it creates a new temporary file in path's
// folder (which must exist) with mode 0666 minus the umask.
func Create(path string) (*File, error) {
	dir, base := filepath.Split(path)
	if dir == "" {
		dir = "."
	}
	f, err := createUnique(func(suffix string) (*os.File, error) {
		return os.OpenFile(filepath.Join(dir, "."+base+".tmp-"+suffix), os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o666)
	})
	if err != nil {
		return nil, fmt.Errorf("create %s: %w", path, err)
	}
	return &File{File: f, path: path}, nil
}

// createUnique calls create with random suffixes until the name is free.
func createUnique[T any](create func(suffix string) (T, error)) (T, error) {
	var zero T
	for range 100 {
		var b [6]byte
		if _, err := rand.Read(b[:]); err != nil {
			return zero, err
		}
		v, err := create(hex.EncodeToString(b[:]))
		if errors.Is(err, fs.ErrExist) {
			continue
		}
		return v, err
	}
	return zero, errors.New("no free temporary name after 100 tries")
}

// Path is the final path of the file.
func (f *File) Path() string { return f.path }

// Commit syncs and closes the temporary file and renames it over the final
// path. On failure the temporary file is removed and the final path is left
// as it was.
func (f *File) Commit() error {
	if f.done {
		return nil
	}
	f.done = true
	tmp := f.Name()
	err := f.Sync()
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, f.path)
	}
	if err != nil {
		_ = os.Remove(tmp)
		return fmt.Errorf("write %s: %w", f.path, err)
	}
	syncDir(filepath.Dir(f.path))
	return nil
}

// Abort closes and removes the temporary file.
func (f *File) Abort() error {
	if f.done {
		return nil
	}
	f.done = true
	_ = f.Close()
	if err := os.Remove(f.Name()); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("remove %s: %w", f.Name(), err)
	}
	return nil
}

// Write creates path atomically with the content write produces through a
// buffered writer. On any error path is left untouched.
func Write(path string, write func(w io.Writer) error) error {
	f, err := Create(path)
	if err != nil {
		return err
	}
	defer f.Abort()
	bw := bufio.NewWriterSize(f, 1<<20)
	if err := write(bw); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := bw.Flush(); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return f.Commit()
}

// WriteFile creates path atomically with data.
func WriteFile(path string, data []byte) error {
	return Write(path, func(w io.Writer) error {
		_, err := w.Write(data)
		return err
	})
}

// MkdirTemp creates a new folder beside dir (in dir's parent, which must
// exist) named "."+base(dir)+".tmp-*", with mode 0777 minus the umask, and
// returns its path. Fill it, then ReplaceDir it into place.
func MkdirTemp(dir string) (string, error) {
	dir = filepath.Clean(dir)
	parent, base := filepath.Dir(dir), filepath.Base(dir)
	tmp, err := createUnique(func(suffix string) (string, error) {
		p := filepath.Join(parent, "."+base+".tmp-"+suffix)
		return p, os.Mkdir(p, 0o777)
	})
	if err != nil {
		return "", fmt.Errorf("create a temporary folder for %s: %w", dir, err)
	}
	return tmp, nil
}

// ReplaceDir renames the finished folder tmp (from MkdirTemp) to dir. An
// existing dir is first moved aside under a unique name, then removed once
// tmp is in place; if the second rename fails the previous dir is put
// back. (A crash between the two renames leaves the previous folder as
// "."+base(dir)+".old-*" beside dir.) Deciding whether dir may be replaced
// is the caller's business.
func ReplaceDir(tmp, dir string) error {
	dir = filepath.Clean(dir)
	if _, err := os.Lstat(dir); errors.Is(err, fs.ErrNotExist) {
		if err := os.Rename(tmp, dir); err != nil {
			return fmt.Errorf("replace %s: %w", dir, err)
		}
		syncDir(filepath.Dir(dir))
		return nil
	}
	parent, base := filepath.Dir(dir), filepath.Base(dir)
	old, err := createUnique(func(suffix string) (string, error) {
		p := filepath.Join(parent, "."+base+".old-"+suffix)
		// Only the unique name is wanted: os.Rename refuses an existing
		// target folder, so the placeholder is removed right away.
		if err := os.Mkdir(p, 0o700); err != nil {
			return p, err
		}
		return p, os.Remove(p)
	})
	if err != nil {
		return fmt.Errorf("replace %s: %w", dir, err)
	}
	if err := os.Rename(dir, old); err != nil {
		return fmt.Errorf("replace %s: %w", dir, err)
	}
	if err := os.Rename(tmp, dir); err != nil {
		_ = os.Rename(old, dir)
		return fmt.Errorf("replace %s: %w", dir, err)
	}
	syncDir(parent)
	if err := os.RemoveAll(old); err != nil {
		return fmt.Errorf("replace %s: remove the previous folder: %w", dir, err)
	}
	return nil
}

// ReplaceDirKeeping is ReplaceDir for a folder that may also hold files
// its writer does not own (the user's notes beside a checkpoint): the
// entries of an existing dir for which owned is false are first moved into
// tmp, so that replacing dir never deletes them; if the replacement fails
// they are moved back. (A crash while they are in tmp leaves them there,
// in the "."+base(dir)+".tmp-*" folder.)
func ReplaceDirKeeping(tmp, dir string, owned func(name string) bool) (err error) {
	entries, err := os.ReadDir(dir)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("replace %s: %w", dir, err)
	}
	var moved []string
	defer func() {
		if err != nil {
			for _, name := range moved {
				_ = os.Rename(filepath.Join(tmp, name), filepath.Join(dir, name))
			}
		}
	}()
	for _, e := range entries {
		if owned(e.Name()) {
			continue
		}
		if _, serr := os.Lstat(filepath.Join(tmp, e.Name())); serr == nil {
			return fmt.Errorf("replace %s: %s is both kept and written", dir, e.Name())
		}
		if err = os.Rename(filepath.Join(dir, e.Name()), filepath.Join(tmp, e.Name())); err != nil {
			return fmt.Errorf("replace %s: keep %s: %w", dir, e.Name(), err)
		}
		moved = append(moved, e.Name())
	}
	return ReplaceDir(tmp, dir)
}

// syncDir makes a rename in dir durable. Best effort: some file systems
// and platforms cannot sync a folder, and the rename has happened anyway.
func syncDir(dir string) {
	d, err := os.Open(dir)
	if err != nil {
		return
	}
	_ = d.Sync()
	_ = d.Close()
}
