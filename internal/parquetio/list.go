// Package parquetio is the one place that decides which files make up a
// Parquet dataset and the one Parquet writer: the loader, schema inference
// (loader.InferSchema), preprocess, predictions and the CLI all list
// datasets with List and write Parquet with Writer, so that a file is data
// for every reader or for none, and every file written is atomic and
// checksummed the same way.
//
// The listing rule (List):
//
//   - a path that is a file (or a link to one) is the dataset, whatever its
//     name: the user named it;
//   - a folder's data files are its regular files (links to regular files
//     included) whose names end in ".parquet" or ".pq", in any letter case;
//   - names starting with "." (hidden files, the temporary files of a
//     writer) or "_" (_SUCCESS, _metadata, _common_metadata of Spark and
//     Hive) are skipped;
//   - the folder is not descended into: sub-folders are not part of it
//     (a partitioned layout is not supported; give a leaf folder);
//   - files are returned in byte-wise name order, which is the read order;
//   - a folder holding IncompleteMarker is an error (ErrIncomplete), and a
//     folder with no data file is an error (ErrNoFiles) naming the folder
//     and, when it has sub-folders holding data, those.
package parquetio

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
)

// IncompleteMarker is the file a writer of dataset folders ('mtlrank
// synth') leaves in a folder while it replaces its files; a folder that
// still holds it was left by an interrupted or failed run and may mix old
// and new part files.
const IncompleteMarker = ".synth-incomplete"

// ErrIncomplete is wrapped by the error of listing a dataset folder that
// holds the IncompleteMarker.
var ErrIncomplete = errors.New("the folder holds " + IncompleteMarker + ": its writer was interrupted or failed, so it may mix old and new part files; write it again")

// ErrNoFiles is wrapped by the error of listing a folder that holds no
// Parquet data file.
var ErrNoFiles = errors.New("no parquet files")

// Extensions are the file name endings of Parquet data files in a dataset
// folder (compared without regard to letter case).
var Extensions = []string{".parquet", ".pq"}

// IsDataName reports whether a file called name (a base name) in a dataset
// folder is one of the dataset's files by name: a Parquet extension and
// neither hidden nor starting with "_".
func IsDataName(name string) bool {
	if name == "" || name[0] == '.' || name[0] == '_' {
		return false
	}
	return HasExtension(name)
}

// HasExtension reports whether path ends in a Parquet extension.
func HasExtension(path string) bool {
	ext := strings.ToLower(filepath.Ext(path))
	for _, e := range Extensions {
		if ext == e {
			return true
		}
	}
	return false
}

// List returns the Parquet files of the dataset at path (a file or a
// folder) by the rule of the package doc.
func List(path string) ([]string, error) {
	st, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("dataset: %w", err)
	}
	if !st.IsDir() {
		return []string{path}, nil
	}
	entries, err := os.ReadDir(path)
	if err != nil {
		return nil, fmt.Errorf("dataset: %w", err)
	}
	var files, subdirs []string
	for _, e := range entries {
		name := e.Name()
		if name == IncompleteMarker {
			return nil, fmt.Errorf("dataset %s: %w", path, ErrIncomplete)
		}
		if name[0] == '.' || name[0] == '_' {
			continue
		}
		full := filepath.Join(path, name)
		mode := e.Type()
		if mode&os.ModeSymlink != 0 {
			// A link counts as what it points to; a broken one is skipped
			// like any other entry that is not a data file.
			if st, err := os.Stat(full); err == nil {
				mode = st.Mode().Type()
			}
		}
		switch {
		case mode.IsDir():
			subdirs = append(subdirs, name)
		case mode.IsRegular() && HasExtension(name):
			files = append(files, full)
		}
	}
	if len(files) == 0 {
		return nil, noFiles(path, subdirs)
	}
	sort.Strings(files)
	return files, nil
}

// noFiles is the error for a folder without data files; it names the
// sub-folders that hold data, which is the usual mistake (the parent of a
// train/ and valid/ pair, or of a partitioned layout).
func noFiles(path string, subdirs []string) error {
	var withData []string
	for _, d := range subdirs {
		if hasData(filepath.Join(path, d)) {
			withData = append(withData, d)
		}
	}
	if len(withData) == 0 {
		return fmt.Errorf("dataset %s: %w (want files named *.parquet or *.pq, not starting with '.' or '_')", path, ErrNoFiles)
	}
	sort.Strings(withData)
	if len(withData) > 3 {
		withData = append(withData[:3], "...")
	}
	return fmt.Errorf("dataset %s: %w directly in the folder; its sub-folders %s hold some, but a dataset folder is not read recursively: give one of them",
		path, ErrNoFiles, strings.Join(withData, ", "))
}

func hasData(dir string) bool {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return false
	}
	for _, e := range entries {
		if IsDataName(e.Name()) {
			return true
		}
	}
	return false
}
