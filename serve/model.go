package serve

import (
	"context"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/mtlrank/mtlrank/kernels"
	"github.com/mtlrank/mtlrank/mtl"
	"github.com/mtlrank/mtlrank/preprocess"
	"github.com/mtlrank/mtlrank/schema"
	"github.com/mtlrank/mtlrank/serve/batch"
)

// EncodedSuffix names the input that takes a feature already encoded
// (categorical ids, transformed continuous values) when the model has a
// workflow: "user_id__encoded" beside the raw "user_id". Without a
// workflow the feature's own name takes encoded values.
const EncodedSuffix = "__encoded"

// WorkflowFile is the name of the preprocessing workflow in a model
// version's folder.
const WorkflowFile = "workflow.json"

// Platform is the platform a model's metadata reports.
const Platform = "mtlrank"

// ModelOptions configures how a model version is loaded and batched.
type ModelOptions struct {
	// MaxBatch is the largest batch scored at once and the largest
	// request accepted, in rows.
	MaxBatch int
	// MaxQueueDelay is how long a request may wait for others to join its
	// batch (dynamic batching).
	MaxQueueDelay time.Duration
	// DynamicBatching coalesces concurrent requests into one batch.
	DynamicBatching bool
	// Workers is the number of batches scored at once; Threads the
	// device's threads, shared by them (0: GOMAXPROCS both).
	Workers, Threads int
	// Device, when set, is used instead of a CPU device with Threads
	// threads (it is not closed).
	Device kernels.Device
}

// input is one feature the model reads.
type input struct {
	name  string
	float bool
	max   int64                   // categorical ids lie in [0, max]
	categ *preprocess.Categorical // raw values are encoded by this op, or nil
	cont  *preprocess.Continuous  // raw values are transformed by this op, or nil
}

// raw reports whether the feature's own name takes raw values.
func (in *input) raw() bool { return in.categ != nil || in.cont != nil }

// Model is one loaded version of a model: a Scorer, the workflow that
// encodes raw values, and the batcher in front of them.
type Model struct {
	Name, Version string
	Dir           string

	scorer  *mtl.Scorer
	wf      *preprocess.Workflow
	inputs  []input
	byName  map[string]int // tensor name -> input index (raw and encoded names)
	tasks   []mtl.Task
	batcher *batch.Batcher
	metrics *Metrics

	inflight sync.WaitGroup
}

// LoadModel loads the checkpoint in dir (and the workflow.json beside it,
// if any) as version version of model name.
func LoadModel(name, version, dir string, opt ModelOptions, metrics *Metrics) (*Model, error) {
	if opt.MaxBatch < 1 {
		return nil, fmt.Errorf("model %s version %s: max batch %d must be >= 1", name, version, opt.MaxBatch)
	}
	var wf *preprocess.Workflow
	wfPath := filepath.Join(dir, WorkflowFile)
	if _, err := os.Stat(wfPath); err == nil {
		if wf, err = preprocess.LoadWorkflow(wfPath); err != nil {
			return nil, err
		}
	} else if !errors.Is(err, os.ErrNotExist) {
		return nil, err
	}
	dev := opt.Device
	if dev == nil {
		threads := opt.Threads
		if threads < 1 {
			threads = defaultProcs()
		}
		dev = kernels.NewCPU(threads)
	}
	workers := opt.Workers
	if workers < 1 {
		workers = defaultProcs()
	}
	sc, err := mtl.LoadScorer(dir, dev, mtl.ScorerOptions{MaxBatch: opt.MaxBatch, Workers: workers})
	if err != nil {
		return nil, err
	}
	m := &Model{Name: name, Version: version, Dir: dir, scorer: sc, wf: wf, tasks: sc.Tasks(),
		byName: map[string]int{}, metrics: metrics}
	if err := m.buildInputs(); err != nil {
		sc.Close()
		return nil, fmt.Errorf("model %s version %s (%s): %w", name, version, dir, err)
	}
	names := make([]string, len(m.inputs))
	float := make([]bool, len(m.inputs))
	for i, in := range m.inputs {
		names[i], float[i] = in.name, in.float
	}
	var onBatch func(rows, reqs int)
	if metrics != nil {
		onBatch = metrics.batchObserver(name, version)
	}
	m.batcher, err = batch.New(names, float, len(m.tasks), sc.Score, batch.Options{
		MaxRows: opt.MaxBatch, MaxDelay: opt.MaxQueueDelay, Workers: workers,
		Coalesce: opt.DynamicBatching, OnBatch: onBatch,
	})
	if err != nil {
		sc.Close()
		return nil, err
	}
	return m, nil
}

func defaultProcs() int { return runtime.GOMAXPROCS(0) }

// buildInputs lists the model's input features and matches them with the
// workflow's ops.
func (m *Model) buildInputs() error {
	s := m.scorer.Model().Schema()
	for _, name := range m.scorer.Model().InputColumns() {
		f := s.Feature(name)
		if f.IsList() {
			return fmt.Errorf("input %q is a list feature: serving list features is not supported", name)
		}
		in := input{name: name, float: !f.HasTag(schema.TagCategorical)}
		if !in.float {
			if f.IntDomain == nil {
				return fmt.Errorf("input %q: categorical feature without an int domain", name)
			}
			in.max = f.IntDomain.Max
			if in.max > math.MaxInt32 {
				return fmt.Errorf("input %q: ids up to %d do not fit int32", name, in.max)
			}
		}
		if m.wf != nil {
			if c := m.wf.Categ(name); c != nil && !in.float {
				if c.Max() > in.max {
					return fmt.Errorf("input %q: the workflow encodes ids up to %d, the model's domain ends at %d", name, c.Max(), in.max)
				}
				in.categ = c
			} else if c := m.wf.Cont(name); c != nil && in.float {
				in.cont = c
			}
		}
		m.byName[name] = len(m.inputs)
		if in.raw() {
			m.byName[name+EncodedSuffix] = len(m.inputs)
		}
		m.inputs = append(m.inputs, in)
	}
	return nil
}

// TensorMeta describes an input or output tensor in the model's metadata.
type TensorMeta struct {
	Name     string
	Datatype string
	Shape    []int64
}

// Inputs lists the tensors the model takes: for each feature its own name
// (raw values when the workflow transforms it, else encoded values) and,
// for features the workflow transforms, the name with EncodedSuffix.
func (m *Model) Inputs() []TensorMeta {
	var out []TensorMeta
	for _, in := range m.inputs {
		encoded := INT64
		if in.float {
			encoded = FP32
		}
		switch {
		case in.categ != nil:
			out = append(out, TensorMeta{in.name, BYTES, []int64{-1}}, TensorMeta{in.name + EncodedSuffix, encoded, []int64{-1}})
		case in.cont != nil:
			out = append(out, TensorMeta{in.name, FP32, []int64{-1}}, TensorMeta{in.name + EncodedSuffix, encoded, []int64{-1}})
		default:
			out = append(out, TensorMeta{in.name, encoded, []int64{-1}})
		}
	}
	return out
}

// Outputs lists the model's outputs: one FP32 score per row and task, named
// like the prediction columns (e.g. "click/binary_output").
func (m *Model) Outputs() []TensorMeta {
	out := make([]TensorMeta, len(m.tasks))
	for i, t := range m.tasks {
		out[i] = TensorMeta{t.Name, FP32, []int64{-1}}
	}
	return out
}

// MaxBatch is the largest request, in rows.
func (m *Model) MaxBatch() int { return m.scorer.MaxBatch() }

// close waits for the requests in flight, then frees the model.
func (m *Model) close() {
	m.inflight.Wait()
	m.batcher.Close()
	m.scorer.Close()
}

// Infer scores req. Every error is an *Error; bad requests are
// InvalidArgument and name the input and row.
func (m *Model) Infer(ctx context.Context, req *InferRequest) (*InferResponse, error) {
	t0 := time.Now()
	resp, queue, err := m.infer(ctx, req)
	if m.metrics != nil {
		m.metrics.observeInfer(m.Name, m.Version, err, time.Since(t0), queue)
	}
	return resp, err
}

func (m *Model) infer(ctx context.Context, req *InferRequest) (*InferResponse, time.Duration, error) {
	outIdx, err := m.selectOutputs(req.Outputs)
	if err != nil {
		return nil, 0, err
	}
	r, err := m.encode(req.Inputs)
	if err != nil {
		return nil, 0, err
	}
	queue, err := m.batcher.Do(ctx, r)
	switch {
	case err == nil:
	case errors.Is(err, context.DeadlineExceeded):
		return nil, queue, errorf(DeadlineExceeded, "model %s: request timed out after %v in the queue", m.Name, queue.Round(time.Microsecond))
	case errors.Is(err, context.Canceled):
		return nil, queue, errorf(Canceled, "model %s: request canceled", m.Name)
	case errors.Is(err, batch.ErrClosed):
		return nil, queue, errorf(Unavailable, "model %s version %s is being unloaded", m.Name, m.Version)
	default:
		return nil, queue, errorf(Internal, "model %s: scoring failed: %v", m.Name, err)
	}
	resp := &InferResponse{ModelName: m.Name, ModelVersion: m.Version, ID: req.ID, Outputs: make([]Output, len(outIdx))}
	for i, t := range outIdx {
		resp.Outputs[i] = Output{Name: m.tasks[t].Name, Data: r.Out[t]}
	}
	return resp, queue, nil
}

func (m *Model) selectOutputs(names []string) ([]int, error) {
	if len(names) == 0 {
		idx := make([]int, len(m.tasks))
		for i := range idx {
			idx[i] = i
		}
		return idx, nil
	}
	idx := make([]int, 0, len(names))
	for _, n := range names {
		i := m.taskIndex(n)
		if i < 0 {
			return nil, errorf(InvalidArgument, "model %s has no output %q (outputs: %s)", m.Name, n, strings.Join(m.taskNames(), ", "))
		}
		idx = append(idx, i)
	}
	return idx, nil
}

func (m *Model) taskIndex(name string) int {
	for i, t := range m.tasks {
		if t.Name == name {
			return i
		}
	}
	return -1
}

func (m *Model) taskNames() []string {
	out := make([]string, len(m.tasks))
	for i, t := range m.tasks {
		out[i] = t.Name
	}
	return out
}

// encode checks the input tensors and encodes them into a batch request.
// Every value is checked here, so that a bad request fails alone instead
// of failing the batch it would have joined.
func (m *Model) encode(tensors []Tensor) (*batch.Request, error) {
	if len(tensors) == 0 {
		return nil, errorf(InvalidArgument, "model %s: the request has no inputs (inputs: %s)", m.Name, m.inputNames())
	}
	r := &batch.Request{Cols: make([]batch.Col, len(m.inputs)), Rows: -1}
	given := make([]string, len(m.inputs))
	for ti := range tensors {
		t := &tensors[ti]
		i, ok := m.byName[t.Name]
		if !ok {
			return nil, errorf(InvalidArgument, "model %s has no input %q (inputs: %s)", m.Name, t.Name, m.inputNames())
		}
		if given[i] != "" {
			return nil, errorf(InvalidArgument, "input %q: feature %s is given twice (also as %q)", t.Name, m.inputs[i].name, given[i])
		}
		given[i] = t.Name
		rows, err := rowsOf(t)
		if err != nil {
			return nil, err
		}
		if r.Rows < 0 {
			r.Rows = rows
		} else if rows != r.Rows {
			return nil, errorf(InvalidArgument, "input %q has %d rows, input %q has %d: every input needs the same first dimension", t.Name, rows, tensors[0].Name, r.Rows)
		}
		if rows > m.MaxBatch() {
			return nil, errorf(InvalidArgument, "input %q has %d rows, more than the model's max batch of %d", t.Name, rows, m.MaxBatch())
		}
		in := &m.inputs[i]
		raw := in.raw() && t.Name == in.name
		if err := encodeInput(t, in, raw, &r.Cols[i]); err != nil {
			return nil, err
		}
	}
	var missing []string
	for i, g := range given {
		if g == "" {
			missing = append(missing, m.inputs[i].name)
		}
	}
	if len(missing) > 0 {
		return nil, errorf(InvalidArgument, "model %s: missing input(s) %s", m.Name, strings.Join(missing, ", "))
	}
	r.Out = make([][]float32, len(m.tasks))
	for t := range r.Out {
		r.Out[t] = make([]float32, r.Rows)
	}
	return r, nil
}

func (m *Model) inputNames() string {
	var names []string
	for _, t := range m.Inputs() {
		names = append(names, t.Name)
	}
	return strings.Join(names, ", ")
}

// rowsOf checks a tensor's shape ([rows] or [rows, 1]) against its data.
func rowsOf(t *Tensor) (int, error) {
	if len(t.Shape) == 0 || len(t.Shape) > 2 || len(t.Shape) == 2 && t.Shape[1] != 1 {
		return 0, errorf(InvalidArgument, "input %q: shape %v: want [rows] or [rows, 1]", t.Name, t.Shape)
	}
	if t.Shape[0] < 1 {
		return 0, errorf(InvalidArgument, "input %q: shape %v: want at least one row", t.Name, t.Shape)
	}
	if int64(t.Len()) != t.Shape[0] {
		return 0, errorf(InvalidArgument, "input %q: shape %v holds %d elements, the data has %d", t.Name, t.Shape, t.Shape[0], t.Len())
	}
	return int(t.Shape[0]), nil
}

// encodeInput writes tensor t, for feature in, into c: raw values through
// the workflow when raw, else values already encoded.
func encodeInput(t *Tensor, in *input, raw bool, c *batch.Col) error {
	n := t.Len()
	bad := func(row int, format string, args ...any) error {
		return errorf(InvalidArgument, "input %q, row %d: %s", t.Name, row, fmt.Sprintf(format, args...))
	}
	if in.float {
		c.F32 = make([]float32, n)
		if t.isBytes() {
			return errorf(InvalidArgument, "input %q: datatype %s: a continuous feature takes numbers", t.Name, t.Datatype)
		}
		for i := range n {
			v := t.number(i)
			if !raw {
				f := float32(v)
				if math.IsNaN(v) || math.IsInf(float64(f), 0) {
					return bad(i, "value %v is not a finite float32", v)
				}
				c.F32[i] = f
				continue
			}
			var f float32
			if math.IsNaN(v) { // a null
				var err error
				if f, err = in.cont.ApplyNull(); err != nil {
					return bad(i, "NaN (null): %v", err)
				}
			} else {
				if math.IsInf(v, 0) {
					return bad(i, "value %v is not finite", v)
				}
				f = in.cont.Apply(v)
			}
			if math.IsInf(float64(f), 0) || math.IsNaN(float64(f)) {
				return bad(i, "value %v becomes %v after the workflow's transforms, outside float32's range", v, f)
			}
			c.F32[i] = f
		}
		return nil
	}
	c.I32 = make([]int32, n)
	if !raw {
		if t.isBytes() || t.F32 != nil || t.F64 != nil {
			return errorf(InvalidArgument, "input %q: datatype %s: encoded ids are integers (INT32 or INT64)", t.Name, t.Datatype)
		}
		for i := range n {
			id := t.integer(i)
			if id < 0 || id > in.max {
				return bad(i, "id %d outside the feature's domain [0, %d]", id, in.max)
			}
			c.I32[i] = int32(id)
		}
		return nil
	}
	if t.Packed != nil {
		for i, e := range t.Packed.All() {
			c.I32[i] = int32(in.categ.EncodeBytes(e))
		}
		return nil
	}
	var buf []byte
	for i := range n {
		var id int64
		switch {
		case t.Bytes != nil:
			id = in.categ.EncodeBytes(t.Bytes[i])
		case t.I32 != nil || t.I64 != nil:
			buf = strconv.AppendInt(buf[:0], t.integer(i), 10)
			id = in.categ.EncodeBytes(buf)
		default:
			v := t.number(i)
			if math.IsNaN(v) {
				id = preprocess.NullID
				break
			}
			// The canonical form of a float key, as preprocessing writes it.
			buf = strconv.AppendFloat(buf[:0], v, 'g', -1, 64)
			id = in.categ.EncodeBytes(buf)
		}
		c.I32[i] = int32(id)
	}
	return nil
}

// number returns element i as a float64 (numeric tensors).
func (t *Tensor) number(i int) float64 {
	switch {
	case t.F32 != nil:
		return float64(t.F32[i])
	case t.F64 != nil:
		return t.F64[i]
	case t.I32 != nil:
		return float64(t.I32[i])
	}
	return float64(t.I64[i])
}

// integer returns element i of an integer tensor.
func (t *Tensor) integer(i int) int64 {
	if t.I32 != nil {
		return int64(t.I32[i])
	}
	return t.I64[i]
}
