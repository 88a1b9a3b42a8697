package preprocess

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/mtlrank/mtlrank/internal/atomicfile"
	"github.com/mtlrank/mtlrank/internal/pathguard"
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
// without targets. Giving both eval inputs and a split strategy is an
// error, as in Merlin's script. The whole output is built beside outDir and
// swapped in at the end, so a failure leaves a previous output as it was
// (and an eval or test set this run does not write, which would not match
// the new workflow, goes with the previous output). outDir may not be,
// contain or lie inside an input, and an existing outDir may hold only
// what a preprocessing run writes.
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
	if err := checkOutput(in, outDir); err != nil {
		return nil, fmt.Errorf("preprocess: %w", err)
	}
	// The whole output (train, eval, test, workflow.json) is built in a
	// temporary folder beside outDir and swapped in at the end, so that a
	// failure at any point (a bad row, a full disk while saving the
	// workflow) leaves the previous complete output, never new data beside
	// an old vocabulary.
	if err := os.MkdirAll(filepath.Dir(filepath.Clean(outDir)), 0o755); err != nil {
		return nil, fmt.Errorf("preprocess: output: %w", err)
	}
	stage, err := atomicfile.MkdirTemp(outDir)
	if err != nil {
		return nil, fmt.Errorf("preprocess: output: %w", err)
	}
	defer func() {
		if err != nil {
			os.RemoveAll(stage)
		}
	}()
	trainDir, evalDir, testDir := filepath.Join(stage, "train"), filepath.Join(stage, "eval"), filepath.Join(stage, "test")

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
	var st staged
	defer func() {
		if err != nil {
			st.abort()
		}
	}()
	stageSet := func(inputs []string, dirs [2]string, split *splitter, opt TransformOptions) ([2]*Result, error) {
		res, s, err := w.transform(inputs, dirs, split, opt)
		st = append(st, s...)
		return res, err
	}
	if split.splits() {
		res, err := stageSet(trainInputs, [2]string{trainDir, evalDir}, split, TransformOptions{})
		if err != nil {
			return nil, err
		}
		rep.Train, rep.Eval = res[0], res[1]
	} else {
		res, err := stageSet(trainInputs, [2]string{trainDir}, split, TransformOptions{}) // split only filters
		if err != nil {
			return nil, err
		}
		rep.Train = res[0]
		if len(evalInputs) > 0 {
			qf, err := queryFilter(&spec, evalInputs)
			if err != nil {
				return nil, err
			}
			if res, err = stageSet(evalInputs, [2]string{evalDir}, qf, TransformOptions{}); err != nil {
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
		res, err := stageSet(in.Test, [2]string{testDir}, qf, TransformOptions{SkipTargets: true})
		if err != nil {
			return nil, err
		}
		rep.Test = res[0]
	}
	wf, err := w.encode()
	if err != nil {
		return nil, err
	}
	if err := st.publish(); err != nil {
		return nil, fmt.Errorf("preprocess: %w", err)
	}
	if err := writeFileAtomic(filepath.Join(stage, WorkflowFile), wf); err != nil {
		return nil, fmt.Errorf("preprocess: save workflow: %w", err)
	}
	// The results and their warnings name the final folders; the report
	// is part of the staged output, so it is swapped in with the data.
	rep.WorkflowPath = filepath.Join(outDir, WorkflowFile)
	for _, r := range []*Result{rep.Train, rep.Eval, rep.Test} {
		if r == nil {
			continue
		}
		final := filepath.Join(outDir, filepath.Base(r.Dir))
		for i, msg := range r.Warnings {
			r.Warnings[i] = strings.ReplaceAll(msg, r.Dir, final)
		}
		r.Dir = final
		rep.Warnings = append(rep.Warnings, r.Warnings...)
	}
	report, err := json.MarshalIndent(rep, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("preprocess: report: %w", err)
	}
	if err := writeFileAtomic(filepath.Join(stage, ReportFile), append(report, '\n')); err != nil {
		return nil, fmt.Errorf("preprocess: save report: %w", err)
	}
	if err := atomicfile.ReplaceDir(stage, outDir); err != nil {
		return nil, fmt.Errorf("preprocess: %w", err)
	}
	return rep, nil
}

// WorkflowFile is the name of the fitted workflow in a preprocessing
// output folder.
const WorkflowFile = "workflow.json"

// ReportFile is the name of the Report (JSON) in a preprocessing output
// folder.
const ReportFile = "preprocess_report.json"

// outputEntries are what a preprocessing output folder holds.
var outputEntries = map[string]bool{"train": true, "eval": true, "test": true, WorkflowFile: true, ReportFile: true}

// checkOutput refuses an output folder that is, contains or lies inside
// an input, and one holding anything a preprocessing run did not write
// (replacing the folder would delete it).
func checkOutput(in Inputs, outDir string) error {
	var inputs []pathguard.Path
	for _, set := range []struct {
		what  string
		paths []string
	}{{"training input", in.Train}, {"eval input", in.Eval}, {"test input", in.Test}} {
		for _, p := range set.paths {
			inputs = append(inputs, pathguard.Path{What: "the " + set.what, Path: p})
		}
	}
	if err := pathguard.Check(inputs, []pathguard.Path{{What: "the output", Path: outDir}}); err != nil {
		return err
	}
	st, err := os.Stat(outDir)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("output %s: %w", outDir, err)
	}
	if !st.IsDir() {
		return fmt.Errorf("output %s is not a directory", outDir)
	}
	entries, err := os.ReadDir(outDir)
	if err != nil {
		return fmt.Errorf("output %s: %w", outDir, err)
	}
	for _, e := range entries {
		if !outputEntries[e.Name()] {
			return fmt.Errorf("output %s holds %s, which is not part of a preprocessing output; choose an empty or new directory", outDir, e.Name())
		}
		if e.IsDir() {
			if err := checkReplaceable(filepath.Join(outDir, e.Name())); err != nil {
				return err
			}
		}
	}
	return nil
}
