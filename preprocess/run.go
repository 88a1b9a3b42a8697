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
func Run(spec Spec, trainInputs, evalInputs []string, outDir string) (*Report, error) {
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

	split := newSplitter(&spec)
	w, err := fit(spec, trainInputs, split)
	if err != nil {
		return nil, err
	}
	rep := &Report{OutputDir: outDir, FitRows: w.FitRows, Cardinalities: map[string]int64{}}
	for _, c := range w.Categorical {
		rep.Cardinalities[c.Name] = c.Cardinality()
	}
	switch {
	case split != nil:
		res, err := w.transform(trainInputs, [2]string{trainDir, evalDir}, split, TransformOptions{})
		if err != nil {
			return nil, err
		}
		rep.Train, rep.Eval = res[0], res[1]
	default:
		if rep.Train, err = w.Transform(trainInputs, trainDir); err != nil {
			return nil, err
		}
		if len(evalInputs) > 0 {
			if rep.Eval, err = w.Transform(evalInputs, evalDir); err != nil {
				return nil, err
			}
		} else if _, err := os.Stat(evalDir); err == nil {
			// A stale eval set from an earlier run would not match this
			// workflow (checked above to hold only dataset files).
			if err := os.RemoveAll(evalDir); err != nil {
				return nil, fmt.Errorf("preprocess: remove stale %s: %w", evalDir, err)
			}
		}
	}
	rep.Warnings = append(rep.Warnings, rep.Train.Warnings...)
	if rep.Eval != nil {
		rep.Warnings = append(rep.Warnings, rep.Eval.Warnings...)
	}
	rep.WorkflowPath = filepath.Join(outDir, "workflow.json")
	if err := w.Save(rep.WorkflowPath); err != nil {
		return nil, fmt.Errorf("preprocess: %w", err)
	}
	return rep, nil
}
