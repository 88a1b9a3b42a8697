// Package pathguard keeps a command's outputs away from its inputs and
// finds unwritable outputs before any work is done.
//
// The rule every command and library writer follows: an output may never
// be, contain, or lie inside an input (data, schema, workflow,
// checkpoint). Paths are compared after making them absolute and
// resolving the symbolic links of their longest existing prefix, so that
// "data/../data", a symlink to the data folder, or an output that does not
// exist yet beneath a symlinked folder are all caught.
package pathguard

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/mtlrank/mtlrank/internal/parquetio"
)

// Path is a path given to a command, with what it is for the messages
// ("--predict_data_path", "the prediction data", ...).
type Path struct {
	What, Path string
}

// Resolve returns path made absolute and clean, with the symbolic links of
// its longest existing prefix resolved (the missing rest is appended as
// given, which is what creating it will produce).
func Resolve(path string) (string, error) {
	abs, err := filepath.Abs(path)
	if err != nil {
		return "", err
	}
	var missing []string
	p := abs
	for {
		r, err := filepath.EvalSymlinks(p)
		if err == nil {
			for i := len(missing) - 1; i >= 0; i-- {
				r = filepath.Join(r, missing[i])
			}
			return r, nil
		}
		if !errors.Is(err, fs.ErrNotExist) && !isNotDir(err) {
			return "", err
		}
		parent := filepath.Dir(p)
		if parent == p {
			return abs, nil
		}
		missing = append(missing, filepath.Base(p))
		p = parent
	}
}

// isNotDir reports whether err says a component of the path is not a
// folder (a path beneath a regular file): for resolving, as good as
// missing; Writable reports it.
func isNotDir(err error) bool { return errors.Is(err, syscall.ENOTDIR) }

// within reports whether p is dir or lies beneath it (both resolved).
func within(p, dir string) bool {
	if p == dir {
		return true
	}
	rel, err := filepath.Rel(dir, p)
	return err == nil && rel != ".." && !strings.HasPrefix(rel, ".."+string(filepath.Separator)) && !filepath.IsAbs(rel)
}

// Check returns an error naming both paths when an output is, contains or
// lies inside an input. Empty paths are ignored. It reads nothing but the
// links on the way, so it runs before any work.
func Check(inputs, outputs []Path) error {
	type resolved struct {
		what, path, abs string
	}
	resolve := func(ps []Path) ([]resolved, error) {
		var out []resolved
		for _, p := range ps {
			if p.Path == "" {
				continue
			}
			abs, err := Resolve(p.Path)
			if err != nil {
				return nil, fmt.Errorf("%s %s: %w", p.What, p.Path, err)
			}
			out = append(out, resolved{p.What, p.Path, abs})
		}
		return out, nil
	}
	ins, err := resolve(expandGlobs(inputs))
	if err != nil {
		return err
	}
	outs, err := resolve(outputs)
	if err != nil {
		return err
	}
	for _, o := range outs {
		for _, in := range ins {
			var how string
			switch {
			case o.abs == in.abs:
				how = "is"
			case within(in.abs, o.abs):
				how = "contains"
			case within(o.abs, in.abs):
				how = "lies inside"
			default:
				continue
			}
			return fmt.Errorf("%s %s %s %s %s: writing it would overwrite an input; choose another output path",
				o.what, o.path, how, in.what, in.path)
		}
	}
	return nil
}

// CheckDatasetFolders returns an error when a Parquet output would land
// in the folder of an input that is a single Parquet file. A dataset is
// read as a whole folder, so the next read would take the output for data.
func CheckDatasetFolders(inputs, outputs []Path) error {
	var folders, parquetOuts []Path
	for _, in := range inputs {
		if st, err := os.Stat(in.Path); err == nil && st.Mode().IsRegular() && parquetio.HasExtension(in.Path) {
			folders = append(folders, Path{What: "the dataset folder of " + in.What, Path: filepath.Dir(in.Path)})
		}
	}
	for _, o := range outputs {
		if parquetio.HasExtension(o.Path) {
			parquetOuts = append(parquetOuts, o)
		}
	}
	return Check(folders, parquetOuts)
}

// expandGlobs replaces an input that is a glob pattern (inputs of
// preprocess may be) by the paths it matches, so that each is compared.
func expandGlobs(ps []Path) []Path {
	var out []Path
	for _, p := range ps {
		if strings.ContainsAny(p.Path, "*?[") {
			if _, err := os.Lstat(p.Path); err != nil {
				if matches, err := filepath.Glob(p.Path); err == nil {
					for _, m := range matches {
						out = append(out, Path{What: p.What, Path: m})
					}
					continue
				}
			}
		}
		out = append(out, p)
	}
	return out
}

// Inside returns the nearest folder at or above path (resolved) for which
// match is true, e.g. a checkpoint folder an output must not be written
// into.
func Inside(path string, match func(dir string) bool) (string, bool) {
	abs, err := Resolve(path)
	if err != nil {
		return "", false
	}
	for d := abs; ; {
		if match(d) {
			return d, true
		}
		parent := filepath.Dir(d)
		if parent == d {
			return "", false
		}
		d = parent
	}
}

// probe tries to create and remove a file in the existing folder dir; a
// variable so that tests can inject the failures of a read-only mount.
var probe = func(dir string) error {
	f, err := os.CreateTemp(dir, ".mtlrank-write-probe-*")
	if err != nil {
		return err
	}
	name := f.Name()
	f.Close()
	return os.Remove(name)
}

// Writable reports, before any work, whether path can be created or
// replaced: its nearest existing ancestor must be a folder in which a file
// can be created (not a regular file, not on a read-only mount, writable
// by this user); missing folders on the way are created by the writer. An
// existing path that is a folder must be writable too when it would be
// written into.
func Writable(what, path string) error {
	if path == "" {
		return nil
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return fmt.Errorf("%s %s: %w", what, path, err)
	}
	d := abs
	for {
		st, err := os.Stat(d)
		if err == nil {
			if !st.IsDir() {
				if d == abs {
					// An existing file is replaced through a temporary file
					// beside it: its folder must be writable.
					d = filepath.Dir(d)
					continue
				}
				return fmt.Errorf("%s %s: %s is a file, not a folder", what, path, d)
			}
			if err := probe(d); err != nil {
				return fmt.Errorf("%s %s: cannot write in %s: %w", what, path, d, err)
			}
			return nil
		}
		if !errors.Is(err, fs.ErrNotExist) && !isNotDir(err) {
			return fmt.Errorf("%s %s: %w", what, path, err)
		}
		parent := filepath.Dir(d)
		if parent == d {
			return fmt.Errorf("%s %s: no existing folder on the path", what, path)
		}
		d = parent
	}
}
