package preprocess

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
)

// Report summarises a Run.
type Report struct {
	OutputDir    string `json:"output_dir"`
	WorkflowPath string `json:"workflow_path"`
	// FitRows is the number of rows the workflow was fitted on.
	FitRows int64   `json:"fit_rows"`
	Train   *Result `json:"train"`
	Eval    *Result `json:"eval,omitempty"`
	// Cardinalities gives, per categorical column, the embedding rows it
	// needs (int_domain.max + 1).
	Cardinalities map[string]int64 `json:"cardinalities"`
	Warnings      []string         `json:"warnings,omitempty"`
}

// Run fits spec on trainInputs and writes outDir/train, outDir/eval and
// outDir/workflow.json. With evalInputs, eval is those inputs transformed;
// without them and with a split strategy, the training inputs are split
// (the workflow is fitted on the train side only); otherwise only
// outDir/train is written (and a previous outDir/eval removed). Giving both
// eval inputs and a split strategy is an error, as in Merlin's script.
func Run(spec Spec, trainInputs, evalInputs []string, outDir string) (rep *Report, err error) {
	if err := spec.Validate(); err != nil {
		return nil, err
	}
	if spec.SplitStrategy != SplitNone && len(evalInputs) > 0 {
		return nil, fmt.Errorf("invalid preprocessing spec: eval inputs and the %q split strategy are both given; use one", spec.SplitStrategy)
	}
	if outDir == "" {
		return nil, errors.New("preprocess: empty output directory")
	}
	trainDir, evalDir := filepath.Join(outDir, "train"), filepath.Join(outDir, "eval")
	// Fail before the long passes when the output cannot be written.
	for _, d := range []string{trainDir, evalDir} {
		if err := checkReplaceable(d); err != nil {
			return nil, fmt.Errorf("preprocess: %w", err)
		}
	}
	if st, err := os.Stat(outDir); err == nil && !st.IsDir() {
		return nil, fmt.Errorf("preprocess: output %s is not a directory", outDir)
	}

	// A folder this run creates is removed again if it fails before
	// writing anything into it.
	if _, statErr := os.Stat(outDir); errors.Is(statErr, os.ErrNotExist) {
		defer func() {
			if err != nil {
				_ = os.Remove(outDir) // only if empty
			}
		}()
	}

	split := newSplitter(&spec)
	w, err := fit(spec, trainInputs, split)
	if err != nil {
		return nil, err
	}
	rep = &Report{OutputDir: outDir, FitRows: w.FitRows, Cardinalities: map[string]int64{}}
	for _, c := range w.Categorical {
		rep.Cardinalities[c.Name] = c.Cardinality()
	}
	// The datasets and the workflow are written to temporary names first
	// and moved into place together at the end: a failure (a bad row in
	// the eval data, say) leaves the previous output as it was instead of
	// new train data beside an old workflow.
	var st staged
	defer func() {
		if err != nil {
			st.abort()
		}
	}()
	stage := func(inputs []string, dirs [2]string, split *splitter) ([2]*Result, error) {
		res, s, err := w.transform(inputs, dirs, split, TransformOptions{})
		st = append(st, s...)
		return res, err
	}
	if split != nil {
		res, err := stage(trainInputs, [2]string{trainDir, evalDir}, split)
		if err != nil {
			return nil, err
		}
		rep.Train, rep.Eval = res[0], res[1]
	} else {
		res, err := stage(trainInputs, [2]string{trainDir}, nil)
		if err != nil {
			return nil, err
		}
		rep.Train = res[0]
		if len(evalInputs) > 0 {
			if res, err = stage(evalInputs, [2]string{evalDir}, nil); err != nil {
				return nil, err
			}
			rep.Eval = res[0]
		}
	}
	rep.Warnings = append(rep.Warnings, rep.Train.Warnings...)
	if rep.Eval != nil {
		rep.Warnings = append(rep.Warnings, rep.Eval.Warnings...)
	}
	rep.WorkflowPath = filepath.Join(outDir, "workflow.json")
	wf, err := w.encode()
	if err != nil {
		return nil, err
	}
	if rep.Eval == nil {
		// A stale eval set from an earlier run would not match this
		// workflow (checked above to hold only dataset files).
		if err := os.RemoveAll(evalDir); err != nil {
			return nil, fmt.Errorf("preprocess: remove stale %s: %w", evalDir, err)
		}
	}
	if err := st.publish(); err != nil {
		return nil, fmt.Errorf("preprocess: %w", err)
	}
	if err := writeFileAtomic(rep.WorkflowPath, wf); err != nil {
		return nil, fmt.Errorf("preprocess: save workflow: %w", err)
	}
	return rep, nil
}
