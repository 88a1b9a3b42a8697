package cli

import (
	"errors"
	"path/filepath"

	"github.com/mtlrank/mtlrank/internal/tbevents"
)

// tbSink writes the trainer's scalars as TensorBoard event files, one
// folder per run (<dir>/train, <dir>/validation) as Keras' TensorBoard
// callback lays them out. Each scalar is flushed at once, so that a
// running TensorBoard follows the training; there are few of them (one
// every --metrics_log_frequency steps, and the epoch summaries).
type tbSink struct {
	dir     string
	writers map[string]*tbevents.Writer
}

func newTBSink(dir string) *tbSink { return &tbSink{dir: dir, writers: map[string]*tbevents.Writer{}} }

// Scalar implements mtl.EventSink.
func (s *tbSink) Scalar(run, tag string, step int64, v float64) error {
	w := s.writers[run]
	if w == nil {
		var err error
		if w, err = tbevents.Create(filepath.Join(s.dir, run)); err != nil {
			return err
		}
		s.writers[run] = w
	}
	if err := w.Scalar(tag, step, v); err != nil {
		return err
	}
	return w.Flush()
}

// Close closes every event file.
func (s *tbSink) Close() error {
	var errs []error
	for _, w := range s.writers {
		errs = append(errs, w.Close())
	}
	return errors.Join(errs...)
}
