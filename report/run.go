// Package report renders the metrics.json of one or several training runs
// ('mtlrank train') as one self-contained HTML page: loss and AUC curves
// per task, the loss curve over the steps, gate weights per expert over the
// epochs, the final metrics next to the oracle where the data records one,
// and the configuration. The page needs no network: its plots are inline
// SVG drawn here, its style is inline, it holds no script, and every string
// read from a file is escaped by html/template.
//
// The package is pure Go (no cgo) and reads metrics.json as a format of its
// own, so that a report can be made where no model can be trained.
package report

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"math"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/mtlrank/mtlrank/internal/readlimit"
	"github.com/mtlrank/mtlrank/mtl/metrics"
)

// maxFileSize bounds a metrics.json read: a run of thousands of epochs with
// its loss curve stays far below it.
const maxFileSize = 256 << 20

// Kind is a task's output type.
type Kind string

// Task kinds, as metrics.json names them.
const (
	Binary     Kind = "binary"
	Regression Kind = "regression"
)

// Task is one output of the model.
type Task struct {
	Name   string `json:"name"`   // "<target>/binary_output"
	Target string `json:"target"` // the target column
	Kind   Kind   `json:"kind"`
}

// StepLoss is one point of a loss curve (mtl.StepLoss).
type StepLoss struct {
	Step     int
	Steps    int
	Loss     float64
	TaskLoss map[string]float64
}

// Epoch is one epoch of a run (mtl.EpochResult).
type Epoch struct {
	Epoch          int
	Steps          int
	Examples       int64
	Loss           float64
	TaskLoss       map[string]float64
	Train          metrics.Results // nil when not recorded
	Validation     metrics.Results // nil without a validation set
	Seconds        float64
	ExamplesPerSec float64
	StepLoss       []StepLoss // nil when not recorded
}

// Oracle holds what synthetic data records of its true probabilities, per
// target column (loader/synth.Oracle).
type Oracle struct {
	AUC          map[string]float64 `json:"auc"`
	LogLoss      map[string]float64 `json:"logloss"`
	RMSE         map[string]float64 `json:"rmse"`
	ConstantRMSE map[string]float64 `json:"constant_rmse"`
	BaseRate     map[string]float64 `json:"base_rate"`
}

// Setting is one configuration entry: a key and its value as JSON text
// (strings unquoted).
type Setting struct {
	Key, Value string
}

// Run is one training run as its metrics.json records it.
type Run struct {
	// Label names the run on the page; Path is the file it was read from.
	Label, Path string
	// Model is the configuration's one-line summary.
	Model          string
	Device         string
	TrainData      string
	EvalData       string
	Args           []string  // the train command line, when recorded
	Config         []Setting // the model configuration, when recorded
	TrainBatchSize int
	Steps          int
	Seconds        float64
	StoppedEarly   bool
	BestEpoch      int
	Tasks          []Task
	Epochs         []Epoch
	// Eval is the evaluation after training (nil without one).
	Eval   metrics.Results
	Oracle *Oracle
}

// rawFile is metrics.json as decoded: pointers where a missing value must
// be told from a zero one.
type rawFile struct {
	Command        *string         `json:"command"`
	Model          string          `json:"model"`
	Device         string          `json:"device"`
	TrainData      string          `json:"train_data"`
	EvalData       string          `json:"eval_data"`
	Args           []string        `json:"args"`
	Config         json.RawMessage `json:"config"`
	Tasks          []Task          `json:"tasks"`
	TrainBatchSize int             `json:"train_batch_size"`
	Steps          int             `json:"steps"`
	Seconds        float64         `json:"seconds"`
	StoppedEarly   bool            `json:"stopped_early"`
	BestEpoch      int             `json:"best_epoch"`
	Epochs         *[]rawEpoch     `json:"epochs"`
	Eval           rawResults      `json:"eval"`
	Oracle         *Oracle         `json:"oracle"`
}

// rawResults is a metrics object as decoded, null kept as nil (decoded
// here rather than by metrics.Results so that a type error names its
// field and line).
type rawResults map[string]*float64

// results converts r, null to NaN (an undefined metric); nil stays nil.
func (r rawResults) results() metrics.Results {
	if r == nil {
		return nil
	}
	out := make(metrics.Results, len(r))
	for k, v := range r {
		out[k] = math.NaN()
		if v != nil {
			out[k] = *v
		}
	}
	return out
}

type rawEpoch struct {
	Epoch          int                 `json:"epoch"`
	Steps          int                 `json:"steps"`
	Examples       int64               `json:"examples"`
	Loss           *float64            `json:"loss"`
	TaskLoss       map[string]*float64 `json:"task_loss"`
	Train          rawResults          `json:"train"`
	Validation     rawResults          `json:"validation"`
	Seconds        float64             `json:"seconds"`
	ExamplesPerSec float64             `json:"examples_per_s"`
	StepLoss       []rawStepLoss       `json:"step_loss"`
}

type rawStepLoss struct {
	Step     int                 `json:"step"`
	Steps    int                 `json:"steps"`
	Loss     *float64            `json:"loss"`
	TaskLoss map[string]*float64 `json:"task_loss"`
}

// Load reads the metrics.json that 'mtlrank train' wrote at path. Errors
// name the file.
func Load(path string) (*Run, error) {
	data, err := readlimit.ReadFile(path, maxFileSize)
	if err != nil {
		return nil, err
	}
	r, err := Parse(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	r.Path = path
	r.Label = filepath.Base(filepath.Dir(path))
	return r, nil
}

// Parse reads a train metrics.json and checks it: it must be valid JSON
// (which has no NaN: mtlrank writes an undefined metric as null) from
// 'mtlrank train' with at least one epoch, finite losses, and metrics in
// their ranges. An undefined AUC (null: a task whose labels hold one class)
// is kept as NaN and shown as undefined; a null loss, logloss, RMSE or MAE
// means NaN predictions and is an error.
func Parse(data []byte) (*Run, error) {
	var f rawFile
	if err := json.Unmarshal(data, &f); err != nil {
		return nil, jsonError(data, err)
	}
	switch {
	case f.Command == nil && f.Epochs == nil:
		return nil, errors.New("not a metrics.json of 'mtlrank train': it has neither \"command\" nor \"epochs\"")
	case f.Command != nil && *f.Command == "eval":
		return nil, errors.New("this is the metrics.json of 'mtlrank eval' (one evaluation of a saved model, no training epochs); give the metrics.json that 'mtlrank train' writes in its --output_path")
	case f.Command != nil && *f.Command != "train":
		return nil, fmt.Errorf("not a metrics.json of 'mtlrank train': its command is %q", *f.Command)
	case f.Epochs == nil || len(*f.Epochs) == 0:
		return nil, errors.New("the run records no training epoch (train without --train_data_path only evaluates and predicts): there is nothing to plot")
	}
	r := &Run{Model: f.Model, Device: f.Device, TrainData: f.TrainData, EvalData: f.EvalData, Args: f.Args,
		TrainBatchSize: f.TrainBatchSize, Steps: f.Steps, Seconds: f.Seconds, StoppedEarly: f.StoppedEarly,
		BestEpoch: f.BestEpoch, Eval: f.Eval.results(), Oracle: f.Oracle}
	var err error
	if r.Config, err = settings(f.Config); err != nil {
		return nil, fmt.Errorf("\"config\": %w", err)
	}
	prev := 0
	for i, e := range *f.Epochs {
		if e.Epoch <= prev {
			return nil, fmt.Errorf("\"epochs\"[%d]: epoch %d follows epoch %d: epochs must be numbered from 1 upwards", i, e.Epoch, prev)
		}
		prev = e.Epoch
		ep, err := e.check()
		if err != nil {
			return nil, fmt.Errorf("epoch %d: %w", e.Epoch, err)
		}
		r.Epochs = append(r.Epochs, ep)
	}
	if r.Tasks, err = tasksOf(f.Tasks, r.Epochs); err != nil {
		return nil, err
	}
	if err := checkResults(r.Eval); err != nil {
		return nil, fmt.Errorf("\"eval\": %w", err)
	}
	return r, nil
}

func (e rawEpoch) check() (Epoch, error) {
	out := Epoch{Epoch: e.Epoch, Steps: e.Steps, Examples: e.Examples, Train: e.Train.results(), Validation: e.Validation.results(),
		Seconds: e.Seconds, ExamplesPerSec: e.ExamplesPerSec}
	var err error
	if out.Loss, err = finiteLoss("loss", e.Loss); err != nil {
		return out, err
	}
	if out.TaskLoss, err = finiteLosses("task_loss", e.TaskLoss); err != nil {
		return out, err
	}
	for _, s := range []struct {
		name string
		res  metrics.Results
	}{{"training metrics", out.Train}, {"validation", out.Validation}} {
		if err := checkResults(s.res); err != nil {
			return out, fmt.Errorf("%s: %w", s.name, err)
		}
	}
	prev := 0
	for i, p := range e.StepLoss {
		if p.Step <= prev {
			return out, fmt.Errorf("step_loss[%d]: step %d follows step %d: the steps must increase", i, p.Step, prev)
		}
		prev = p.Step
		sl := StepLoss{Step: p.Step, Steps: p.Steps}
		if sl.Loss, err = finiteLoss(fmt.Sprintf("step_loss[%d].loss", i), p.Loss); err != nil {
			return out, err
		}
		if sl.TaskLoss, err = finiteLosses(fmt.Sprintf("step_loss[%d].task_loss", i), p.TaskLoss); err != nil {
			return out, err
		}
		out.StepLoss = append(out.StepLoss, sl)
	}
	return out, nil
}

func finiteLoss(name string, v *float64) (float64, error) {
	switch {
	case v == nil:
		return 0, fmt.Errorf("%s is missing or null (NaN): the training loss of a run is always a number", name)
	case *v < 0:
		return 0, fmt.Errorf("%s is %v: a loss is never negative", name, *v)
	}
	return *v, nil
}

func finiteLosses(name string, m map[string]*float64) (map[string]float64, error) {
	out := make(map[string]float64, len(m))
	for _, k := range slices.Sorted(maps.Keys(m)) {
		v, err := finiteLoss(fmt.Sprintf("%s[%q]", name, k), m[k])
		if err != nil {
			return nil, err
		}
		out[k] = v
	}
	return out, nil
}

// checkResults refuses values no evaluation produces: a metric out of its
// range, or NaN (null) where it means NaN predictions. An undefined AUC or
// PR-AUC (one class seen) is allowed.
func checkResults(res metrics.Results) error {
	for _, k := range res.Keys() {
		v := res[k]
		last := k[strings.LastIndexByte(k, '/')+1:]
		unit := strings.HasPrefix(k, "gate/")
		nonNeg := false
		switch last {
		case metrics.AUC, metrics.PRAUC, metrics.AUCAvg:
			if math.IsNaN(v) {
				continue // undefined: the task saw one class
			}
			unit = true
		case metrics.Precision, metrics.Recall, metrics.BinaryAccuracy, metrics.PositiveRate:
			unit = true
		case "loss", metrics.LogLoss, metrics.RMSE, metrics.MAE:
			nonNeg = true
		case metrics.Count:
			if math.IsNaN(v) || v < 0 {
				return fmt.Errorf("%s is %s: a count is a number >= 0", k, num(v))
			}
			continue
		}
		switch {
		case math.IsNaN(v) && (unit || nonNeg):
			if res[k[:len(k)-len(last)]+metrics.Count] == 0 && last != "loss" {
				continue // no example of the task: nothing measured
			}
			return fmt.Errorf("%s is null (NaN): the model's predictions or loss were NaN", k)
		case unit && (v < 0 || v > 1):
			return fmt.Errorf("%s is %s, outside [0, 1]", k, num(v))
		case nonNeg && v < 0:
			return fmt.Errorf("%s is %s: it is never negative", k, num(v))
		}
	}
	return nil
}

func num(v float64) string {
	if math.IsNaN(v) {
		return "null"
	}
	return strconv.FormatFloat(v, 'g', -1, 64)
}

// tasksOf returns the tasks metrics.json lists, or, for a file written
// before it listed them, the tasks of the epochs' task losses (in name
// order, as the model orders tasks of a schema), their kind told by the
// name's suffix.
func tasksOf(listed []Task, epochs []Epoch) ([]Task, error) {
	names := slices.Sorted(maps.Keys(epochs[0].TaskLoss))
	for _, e := range epochs[1:] {
		if got := slices.Sorted(maps.Keys(e.TaskLoss)); !slices.Equal(got, names) {
			return nil, fmt.Errorf("epoch %d has the task losses of %s, epoch %d those of %s: one run trains one set of tasks",
				e.Epoch, strings.Join(got, ", "), epochs[0].Epoch, strings.Join(names, ", "))
		}
	}
	if len(listed) > 0 {
		got := make([]string, len(listed))
		for i, t := range listed {
			if t.Kind != Binary && t.Kind != Regression {
				return nil, fmt.Errorf("\"tasks\"[%d] %q: kind %q is neither binary nor regression", i, t.Name, t.Kind)
			}
			got[i] = t.Name
		}
		if !slices.Equal(slices.Sorted(slices.Values(got)), names) {
			return nil, fmt.Errorf("\"tasks\" lists %s but the epochs' task losses are of %s", strings.Join(got, ", "), strings.Join(names, ", "))
		}
		return listed, nil
	}
	if len(names) == 0 {
		return nil, errors.New("the epochs record no task loss, so the run's tasks are unknown")
	}
	tasks := make([]Task, len(names))
	for i, n := range names {
		t := Task{Name: n, Target: n, Kind: Binary}
		switch {
		case strings.HasSuffix(n, "/binary_output"):
			t.Target = strings.TrimSuffix(n, "/binary_output")
		case strings.HasSuffix(n, "/regression_output"):
			t.Target, t.Kind = strings.TrimSuffix(n, "/regression_output"), Regression
		default:
			if _, ok := epochs[0].Validation[metrics.Key(n, metrics.RMSE)]; ok {
				t.Kind = Regression
			}
		}
		tasks[i] = t
	}
	return tasks, nil
}

// settings flattens the configuration object into sorted key/value pairs,
// values as compact JSON (strings unquoted).
func settings(raw json.RawMessage) ([]Setting, error) {
	if len(raw) == 0 || string(raw) == "null" {
		return nil, nil
	}
	var m map[string]json.RawMessage
	if err := json.Unmarshal(raw, &m); err != nil {
		return nil, errors.New("want a JSON object")
	}
	out := make([]Setting, 0, len(m))
	for _, k := range slices.Sorted(maps.Keys(m)) {
		v := m[k]
		var s string
		if json.Unmarshal(v, &s) != nil {
			var b bytes.Buffer
			if err := json.Compact(&b, v); err != nil {
				return nil, err
			}
			s = b.String()
		}
		out = append(out, Setting{k, s})
	}
	return out, nil
}

// jsonError turns a decoding error into one that says where: the line and
// column of a syntax error, the field of a type mismatch, and what to do
// about a NaN or Infinity literal (which JSON does not allow).
func jsonError(data []byte, err error) error {
	var se *json.SyntaxError
	if errors.As(err, &se) {
		if int(se.Offset) >= len(data) {
			line, _ := lineCol(data, len(data))
			return fmt.Errorf("not valid JSON: it ends early, at line %d (a file cut short?)", line)
		}
		at := int(se.Offset) - 1
		line, col := lineCol(data, at)
		if at >= 0 && at < len(data) {
			rest := data[at:]
			for _, lit := range []string{"NaN", "Infinity", "-Infinity", "nan", "inf"} {
				if bytes.HasPrefix(rest, []byte(lit)) {
					return fmt.Errorf("line %d, column %d: %s is not JSON (a NaN or infinite metric; mtlrank writes an undefined metric as null)", line, col, lit)
				}
			}
		}
		return fmt.Errorf("not valid JSON: line %d, column %d: %v", line, col, se)
	}
	var te *json.UnmarshalTypeError
	if errors.As(err, &te) {
		line, col := lineCol(data, int(te.Offset)-1)
		return fmt.Errorf("line %d, column %d: field %q holds a JSON %s, want %s", line, col, te.Field, te.Value, te.Type)
	}
	return fmt.Errorf("not a metrics.json of 'mtlrank train': %w", err)
}

// lineCol returns the 1-based line and column of byte offset at.
func lineCol(data []byte, at int) (line, col int) {
	at = max(0, min(at, len(data)))
	line = 1 + bytes.Count(data[:at], []byte{'\n'})
	col = at - bytes.LastIndexByte(data[:at], '\n')
	return line, col
}
