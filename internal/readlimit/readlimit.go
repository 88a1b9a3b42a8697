// Package readlimit reads whole files whose format bounds their size, such
// as a checkpoint's config.json or a schema, refusing a larger one before
// reading it: os.ReadFile sizes its buffer by the file, so a corrupt or
// hostile 1 TB file would end the process with the Go runtime's fatal "out
// of memory" instead of an error.
package readlimit

import (
	"fmt"
	"io"
	"os"
)

// ReadFile returns the content of path when it is at most limit bytes.
// The size is checked before reading and the read is bounded too, for a
// file that grows meanwhile or a special file without a size.
func ReadFile(path string, limit int64) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if st.IsDir() {
		return nil, fmt.Errorf("%s is a folder, not a file", path)
	}
	if st.Size() > limit {
		return nil, tooLarge(path, st.Size(), limit)
	}
	b, err := io.ReadAll(io.LimitReader(f, limit+1))
	if err != nil {
		return nil, err
	}
	if int64(len(b)) > limit {
		return nil, tooLarge(path, int64(len(b)), limit)
	}
	return b, nil
}

func tooLarge(path string, size, limit int64) error {
	return fmt.Errorf("%s is %d bytes, more than the %d such a file can hold: it is corrupt or not the file expected", path, size, limit)
}
