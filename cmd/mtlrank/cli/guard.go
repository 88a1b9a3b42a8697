package cli

import (
	"github.com/mtlrank/mtlrank/internal/pathguard"
	"github.com/mtlrank/mtlrank/mtl"
)

// output is one path a command writes. file: a file whose folder is not
// created for it (it must exist); otherwise missing folders are created.
// checkpoint: the path is a checkpoint folder (which may replace an
// earlier checkpoint at the same path).
type output struct {
	what, path       string
	file, checkpoint bool
}

// checkPaths runs before any work: no output may be, contain or lie inside
// an input (compared after resolving symlinks) or lie inside a checkpoint
// folder (other than the checkpoint it replaces), and every output must be
// writable: not beneath a regular file, not on a read-only mount, its
// folder present where it is not created. Hours of training are then never
// lost to a mistyped path, and no input is overwritten.
func checkPaths(inputs []pathguard.Path, outputs []output) error {
	outs := make([]pathguard.Path, 0, len(outputs))
	for _, o := range outputs {
		if o.path != "" {
			outs = append(outs, pathguard.Path{What: o.what, Path: o.path})
		}
	}
	if err := pathguard.Check(inputs, outs); err != nil {
		return usagef("%v", err)
	}
	for _, o := range outputs {
		if o.path == "" {
			continue
		}
		if err := mtl.CheckOutsideCheckpoint(o.what, o.path, o.checkpoint); err != nil {
			return usagef("%v", err)
		}
		if err := pathguard.Writable(o.what, o.path, o.file); err != nil {
			return err
		}
	}
	return nil
}
