package preprocess

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// Report summarises a Run.
type Report struct {
	OutputDir    string `json:"output_dir"`
	WorkflowPath string `json:"workflow_path"`
	// FitRows is the number of rows the workflow was fitted on.
	FitRows int64   `json:"fit_rows"`
	Train   *Result `json:"train"`
	Eval    *Result `json:"eval,omitempty"`
	// Test is the test set: features only, no targets (Inputs.Test).
	Test *Result `json:"test,omitempty"`
	// Cardinalities gives, per categorical column, the embedding rows it
	// needs (int_domain.max + 1).
	Cardinalities map[string]int64 `json:"cardinalities"`
	// Filter says what the row filters removed (nil without filters).
	Filter   *FilterReport `json:"filter,omitempty"`
	Warnings []string      `json:"warnings,omitempty"`
}

// Inputs lists the files, folders or glob patterns of a preprocessing run.
type Inputs struct {
	// Train is the data the workflow is fitted on (required).
	Train []string
	// Eval is data already split from Train, encoded with its targets.
	Eval []string
	// Test is data to be scored, encoded without targets (its target
	// columns, if any, are not read), as Merlin's --test_data_path.
	Test []string
}

// Run fits spec on trainInputs and writes outDir/train, outDir/eval and
// outDir/workflow.json; it is RunInputs without test inputs.
func Run(spec Spec, trainInputs, evalInputs []string, outDir string) (*Report, error) {
	return RunInputs(spec, Inputs{Train: trainInputs, Eval: evalInputs}, outDir)
}

// RunInputs fits spec on in.Train and writes outDir/train, outDir/eval,
// outDir/test and outDir/workflow.json. With in.Eval, eval is those inputs
// transformed; without them and with a split strategy, the training inputs
// are split (the workflow is fitted on the train side only); otherwise no
// eval set is written. With in.Test, test is those inputs transformed
// without targets. A previous eval or test set that this run does not
// write is removed: it would not match the new workflow. Giving both eval
// inputs and a split strategy is an error, as in Merlin's script. Nothing
// is moved into outDir before everything has been encoded, so a failure
// leaves a previous output as it was.
func RunInputs(spec Spec, in Inputs, outDir string) (rep *Report, err error) {
	trainInputs, evalInputs := in.Train, in.Eval
	if err := spec.Validate(); err != nil {
		return nil, err
	}
	if spec.SplitStrategy != SplitNone && len(evalInputs) > 0 {
		return nil, fmt.Errorf("invalid preprocessing spec: eval inputs and the %q split strategy are both given; use one", spec.SplitStrategy)
	}
	if outDir == "" {
		return nil, errors.New("preprocess: empty output directory")
	}
	trainDir, evalDir, testDir := filepath.Join(outDir, "train"), filepath.Join(outDir, "eval"), filepath.Join(outDir, "test")
	// Fail before the long passes when the output cannot be written.
	for _, d := range []string{trainDir, evalDir, testDir} {
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

	trainFiles, err := expandInputs(trainInputs, spec.InputFormat)
	if err != nil {
		return nil, fmt.Errorf("preprocess: %w", err)
	}
	filter, err := buildFilter(&spec, trainFiles)
	if err != nil {
		return nil, err
	}
	if filter != nil && filter.RemainingRows == 0 {
		return nil, fmt.Errorf("filter: no training rows of %s are left after the filters (%d removed by the query, %d by frequency): %w",
			strings.Join(trainInputs, ", "), filter.RemovedQuery, filter.RemovedFreq, ErrEmptyInput)
	}
	split := newSplitter(&spec, filter)
	w, err := fit(spec, trainInputs, split)
	if err != nil {
		return nil, err
	}
	rep = &Report{OutputDir: outDir, FitRows: w.FitRows, Cardinalities: map[string]int64{}}
	if filter != nil {
		rep.Filter = &filter.FilterReport
	}
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
	stage := func(inputs []string, dirs [2]string, split *splitter, opt TransformOptions) ([2]*Result, error) {
		res, s, err := w.transform(inputs, dirs, split, opt)
		st = append(st, s...)
		return res, err
	}
	if split.splits() {
		res, err := stage(trainInputs, [2]string{trainDir, evalDir}, split, TransformOptions{})
		if err != nil {
			return nil, err
		}
		rep.Train, rep.Eval = res[0], res[1]
	} else {
		res, err := stage(trainInputs, [2]string{trainDir}, split, TransformOptions{}) // split only filters
		if err != nil {
			return nil, err
		}
		rep.Train = res[0]
		if len(evalInputs) > 0 {
			qf, err := queryFilter(&spec, evalInputs)
			if err != nil {
				return nil, err
			}
			if res, err = stage(evalInputs, [2]string{evalDir}, qf, TransformOptions{}); err != nil {
				return nil, err
			}
			rep.Eval = res[0]
		}
	}
	if len(in.Test) > 0 {
		qf, err := queryFilter(&spec, in.Test)
		if err != nil {
			return nil, err
		}
		res, err := stage(in.Test, [2]string{testDir}, qf, TransformOptions{SkipTargets: true})
		if err != nil {
			return nil, err
		}
		rep.Test = res[0]
	}
	for _, r := range []*Result{rep.Train, rep.Eval, rep.Test} {
		if r != nil {
			rep.Warnings = append(rep.Warnings, r.Warnings...)
		}
	}
	rep.WorkflowPath = filepath.Join(outDir, "workflow.json")
	wf, err := w.encode()
	if err != nil {
		return nil, err
	}
	for _, stale := range []struct {
		res *Result
		dir string
	}{{rep.Eval, evalDir}, {rep.Test, testDir}} {
		// A set from an earlier run would not match this workflow
		// (checked above to hold only dataset files).
		if stale.res == nil {
			if err := os.RemoveAll(stale.dir); err != nil {
				return nil, fmt.Errorf("preprocess: remove stale %s: %w", stale.dir, err)
			}
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
