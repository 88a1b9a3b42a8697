package mtl

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"

	"github.com/mtlrank/mtlrank/internal/atomicfile"
	"github.com/mtlrank/mtlrank/internal/pathguard"
)

// checkpointFiles are the files SaveCheckpoint writes; everything else in a
// checkpoint folder (notes, metrics, ...) belongs to the user and is kept.
var checkpointFiles = []string{configFile, schemaFile, modelFile, optimizerFile, stateFile}

// CheckOutsideCheckpoint returns an error when path lies inside a
// checkpoint folder: a file written there would sit among the model's
// files. replacing tells that path is itself a checkpoint about to be
// saved, which may replace an earlier checkpoint at path (then only the
// folders above it count). what names the path in the message.
func CheckOutsideCheckpoint(what, path string, replacing bool) error {
	abs, err := pathguard.Resolve(path)
	if err != nil {
		return fmt.Errorf("%s %s: %w", what, path, err)
	}
	start := abs
	if replacing {
		start = filepath.Dir(abs)
	}
	if d, ok := pathguard.Inside(start, IsCheckpoint); ok {
		return fmt.Errorf("%s %s lies inside the checkpoint folder %s; choose a path outside it", what, path, d)
	}
	return nil
}

// checkReplaceable allows saving into dir when it is missing, an empty
// folder or a checkpoint, and when no folder above it is a checkpoint.
func checkReplaceable(dir string) error {
	if err := CheckOutsideCheckpoint("checkpoint folder", dir, true); err != nil {
		return err
	}
	st, err := os.Stat(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	if !st.IsDir() {
		return fmt.Errorf("%s exists and is not a folder", dir)
	}
	if IsCheckpoint(dir) {
		return nil
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	if len(entries) > 0 {
		return fmt.Errorf("%s is a non-empty folder that is not a checkpoint (it holds %s); refusing to replace it", dir, entries[0].Name())
	}
	return nil
}

// writeDirAtomic fills a temporary folder beside dir and swaps it in for
// dir. The entries of an existing dir that are not checkpoint files (the
// user's) are moved into the new folder before the swap, so that nothing
// SaveCheckpoint did not write is ever deleted; if the swap fails they are
// moved back. The temporary folder is locked while it is filled, so that
// removeStaleTemps of a concurrent save leaves it alone.
func writeDirAtomic(dir string, fill func(tmp string) error) (err error) {
	dir = filepath.Clean(dir)
	if err := os.MkdirAll(filepath.Dir(dir), 0o755); err != nil {
		return err
	}
	removeStaleTemps(dir)
	tmp, err := atomicfile.MkdirTemp(dir)
	if err != nil {
		return err
	}
	unlock := lockDir(tmp)
	defer unlock()
	defer func() {
		if err != nil {
			os.RemoveAll(tmp)
		}
	}()
	if err = fill(tmp); err != nil {
		return err
	}
	return atomicfile.ReplaceDirKeeping(tmp, dir, isCheckpointFile)
}

// staleName matches the temporary ("tmp") and set-aside ("old") folders
// atomicfile names after a checkpoint folder: "."+base+".tmp-"+12 hex.
func staleName(base string) *regexp.Regexp {
	return regexp.MustCompile(`^\.` + regexp.QuoteMeta(base) + `\.(tmp|old)-[0-9a-f]{12}$`)
}

// ownTempFile matches atomicfile's temporary names of checkpoint files
// (".model.safetensors.tmp-<hex>").
var ownTempFile = regexp.MustCompile(`^\.(` + strings.Join(quoteMetaAll(slices.Concat(checkpointFiles, []string{manifestFile})), "|") + `|shard-[0-9]{5,}-of-[0-9]{5,}\.safetensors)\.tmp-[0-9a-f]{12}$`)

func quoteMetaAll(s []string) []string {
	out := make([]string, len(s))
	for i, v := range s {
		out[i] = regexp.QuoteMeta(v)
	}
	return out
}

// removeStaleTemps removes what a save killed before it finished left
// beside dir: hidden temporary folders of our own naming that hold only
// checkpoint files (a folder holding anything else, such as the user's
// files a save was moving, is kept), are not locked by a save in progress,
// and, for a previous checkpoint set aside, only while dir holds a
// checkpoint (otherwise it is the only copy). Best effort: a failure only
// leaves the folder.
func removeStaleTemps(dir string) {
	parent, base := filepath.Dir(dir), filepath.Base(dir)
	entries, err := os.ReadDir(parent)
	if err != nil {
		return
	}
	re := staleName(base)
	for _, e := range entries {
		m := re.FindStringSubmatch(e.Name())
		if m == nil || !e.IsDir() {
			continue
		}
		if m[1] == "old" && !IsCheckpoint(dir) {
			continue
		}
		p := filepath.Join(parent, e.Name())
		if !onlyCheckpointFiles(p) {
			continue
		}
		unlock, ok := tryLockDir(p)
		if !ok {
			continue // a save in progress
		}
		_ = os.RemoveAll(p)
		unlock()
	}
}

// onlyCheckpointFiles reports whether the folder holds nothing but
// checkpoint files and their temporary files.
func onlyCheckpointFiles(dir string) bool {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return false
	}
	for _, e := range entries {
		if !e.Type().IsRegular() || !(isCheckpointFile(e.Name()) || ownTempFile.MatchString(e.Name())) {
			return false
		}
	}
	return true
}
