package mtl

import (
	"errors"
	"fmt"
	"math"

	"strings"

	"github.com/mtlrank/mtlrank/dist"
	"github.com/mtlrank/mtlrank/kernels"
	"github.com/mtlrank/mtlrank/layers"
	"github.com/mtlrank/mtlrank/loader"
	"github.com/mtlrank/mtlrank/mtl/internal/step"
	"github.com/mtlrank/mtlrank/schema"
)

// NamedTensor is a tensor with a stable, unique name (used by checkpoints).
type NamedTensor struct {
	Name   string
	Tensor *kernels.Tensor
}

// StepStats reports the loss of one batch. Loss is the full objective
// sum_t lambda_t * TaskLoss[t] + regularisation; TaskLoss[t] is task t's
// weighted mean loss mean_i(w_ti * l_ti) before lambda_t. TaskLoss is
// reused by the next call on the same model or predictor: copy it to keep
// it.
type StepStats struct {
	Loss     float64
	TaskLoss []float64
}

// Model is a multi-task ranking model: its configuration, parameters,
// forward and backward pass, and the engine (package step) that runs its
// training steps, with the optimizer state and one training workspace. A
// Model is not safe for concurrent use; for concurrent inference create
// one Predictor per goroutine (NewPredictor), which shares the weights
// read-only.
type Model struct {
	cfg    Config
	schema *schema.Schema
	dev    kernels.Device
	// ldev is the device the body and towers run on: dev's ShardDevice
	// when dev is a kernels.Sharder (each shard of a batch runs serially
	// in its own goroutine), else dev (step.Caps.Layers).
	ldev    kernels.Device
	tasks   []Task
	featMax map[string]int64
	wide    *wideInputs // the derived inputs of deepfm and wide_n_deep (nil for other models)

	input  *layers.InputBlock
	body   body
	towers []*layers.Tower
	params []layers.Param
	act    kernels.Activation

	// exec runs the model: feeding, shards, loss, optimizer, graphs.
	exec *step.Engine
	// biasSet: the output biases were set by InitOutputBias or
	// SetOutputBias (Config.InitOutputBias then leaves them alone).
	biasSet bool
	// comm is the distributed job the model trains in (nil: one process).
	comm dist.Comm
	// shard is the part of every embedding table this rank holds
	// (NewShardedModel); the zero value: whole tables.
	shard layers.RowShard
}

// body is the architecture between the input block and the towers.
type body interface {
	params() []layers.Param
	newWS(maxRows int, train bool) bodyWS
	outDim() int
	release()
}

// bodyWS is a body's per-caller state.
type bodyWS interface {
	// forward maps the input [B, D] to one representation per task.
	forward(x *kernels.Tensor, mode layers.Mode) []*kernels.Tensor
	// repGrad is where the gradient w.r.t. task t's representation goes,
	// and whether it must be added to what earlier tasks put there.
	repGrad(t int) (*kernels.Tensor, bool)
	// backward writes the input gradient into dx (overwriting it).
	backward(dx *kernels.Tensor)
	grads() []*kernels.Tensor // matching body.params()
	gates() []gateView
	release()
}

// gateView is one gate's weights of the last forward pass.
type gateView struct {
	name string
	w    *kernels.Tensor // [B, E]
}

func parseActivation(s string) (kernels.Activation, error) {
	a, err := kernels.ParseActivation(s)
	if err != nil {
		return 0, configErr("Activation", "%v", err)
	}
	return a, nil
}

func parseCombiner(s string) (kernels.Combiner, error) {
	switch s {
	case "mean":
		return kernels.Mean, nil
	case "sum":
		return kernels.Sum, nil
	case "sqrtn":
		return kernels.SqrtN, nil
	}
	return 0, configErr("ListCombiner", "unknown combiner %q (want mean, sum or sqrtn)", s)
}

// NewModel validates cfg against s and builds the model on dev for batches of
// up to maxBatch rows. Parameters are initialised from cfg.Seed.
//
// On a device that can defer its embedding id checks to Sync
// (kernels.AsyncIDChecker: the CUDA device) NewModel switches the deferral
// on for the whole device, saving a host round trip per lookup: the model
// checks every id on the host before it reaches the device, and reports
// the device's errors, deferred checks included, through Sync at the end
// of every TrainStep, Loss and Predict.
func NewModel(s *schema.Schema, cfg Config, dev kernels.Device, maxBatch int) (*Model, error) {
	return newModel(s, cfg, dev, maxBatch, layers.RowShard{})
}

// newModel is NewModel with tables sharded as shard says.
func newModel(s *schema.Schema, cfg Config, dev kernels.Device, maxBatch int, shard layers.RowShard) (*Model, error) {
	cfg = cfg.Clone()
	if err := cfg.Validate(s); err != nil {
		return nil, err
	}
	if dev == nil {
		return nil, errors.New("mtl: NewModel: nil device")
	}
	if maxBatch < 1 {
		return nil, fmt.Errorf("mtl: NewModel: maxBatch must be >= 1, got %d", maxBatch)
	}
	tasks, err := cfg.resolveTasks(s)
	if err != nil {
		return nil, err
	}
	if err := checkAllocatable(s, cfg, dev, maxBatch, shard); err != nil {
		return nil, err
	}
	cfg.Tasks = taskTargets(tasks)
	caps := step.Probe(dev)
	m := &Model{cfg: cfg, schema: s, dev: dev, ldev: caps.Layers, tasks: tasks, featMax: map[string]int64{}, shard: shard}
	m.act, _ = parseActivation(cfg.Activation)
	if err := kernels.CheckActivation(m.ldev, m.act); err != nil {
		m.Release()
		return nil, configErr("Activation", "%v", err)
	}
	comb, _ := parseCombiner(cfg.ListCombiner)
	if err := m.build(comb); err != nil {
		m.Release()
		return nil, err
	}
	if m.exec, err = step.NewEngine(m.engineSpec(caps, maxBatch)); err != nil {
		m.Release()
		return nil, err // it names mtl
	}
	if err := m.SetCUDAGraph(cfg.CUDAGraph); err != nil {
		m.Release()
		return nil, err
	}
	return m, nil
}

// engineSpec describes the model to its engine.
func (m *Model) engineSpec(caps step.Caps, maxBatch int) step.Spec {
	cfg := &m.cfg
	tasks := make([]step.Task, len(m.tasks))
	for i, t := range m.tasks {
		st := step.Task{Name: t.Name, Target: t.Target, Binary: t.Kind == Binary, Lambda: 1, PosWeight: 1,
			WeightColumn: cfg.WeightColumns[t.Target], SpaceColumn: cfg.SampleSpace[t.Target]}
		if v, ok := cfg.LossWeights[t.Target]; ok {
			st.Lambda = v
		}
		if v, ok := cfg.PosClassWeights[t.Target]; ok {
			st.PosWeight = v
		}
		tasks[i] = st
	}
	spec := step.Spec{
		Caps: caps, Input: m.input, FeatureMax: m.featMax, Params: m.params, L2Reg: cfg.L2Reg,
		Tasks: tasks, Net: modelNet{m}, MaxBatch: maxBatch,
		Optimizer: cfg.Optimizer,
		Hyper:     step.Hyper{LearningRate: cfg.LearningRate, Beta1: cfg.AdamBeta1, Beta2: cfg.AdamBeta2, Eps: cfg.AdamEps},
		Seed:      uint64(cfg.Seed),
		Check:     m.checkStats,
	}
	if m.wide != nil {
		// (a nil *wideInputs in the interface would not be a nil Derived)
		spec.Derived = m.wide
	}
	return spec
}

// inputFeatures are the model inputs: every non-target feature tagged
// categorical or continuous, except columns used as sample weights or
// sample spaces (which would leak the weighting into the inputs).
func inputFeatures(s *schema.Schema, cfg *Config) []*schema.Feature {
	skip := map[string]bool{}
	for _, c := range cfg.WeightColumns {
		skip[c] = true
	}
	for _, c := range cfg.SampleSpace {
		skip[c] = true
	}
	var out []*schema.Feature
	for _, f := range s.Features {
		if f.IsTarget() || skip[f.Name] {
			continue
		}
		if f.HasTag(schema.TagCategorical) || f.HasTag(schema.TagContinuous) {
			out = append(out, f)
		}
	}
	return out
}

func (m *Model) build(comb kernels.Combiner) error {
	cfg := &m.cfg
	rng := layers.NewRNG(cfg.Seed)
	feats := inputFeatures(m.schema, cfg)
	opt := layers.InputOptions{
		DimMultiplier: cfg.EmbeddingDimMultiplier, Dims: cloneMap(cfg.inputEmbeddingDims(feats)),
		Combiner: comb, BatchL2: cfg.EmbeddingL2Reg, Shard: m.shard,
	}
	var err error
	if m.wide, err = wideDeepInputs(cfg, feats, &opt); err != nil {
		return fmt.Errorf("mtl: %w", err)
	}
	for _, f := range append(feats, opt.Extra...) {
		if f.IntDomain != nil {
			m.featMax[f.Name] = f.IntDomain.Max
		}
	}
	m.input, err = layers.NewInputBlock(m.dev, feats, opt, rng)
	if err != nil {
		return fmt.Errorf("mtl: %w", err)
	}
	switch cfg.Model {
	case "mlp":
		m.body, err = newMLPBody(m, rng)
	case "mmoe":
		m.body, err = newMMoEBody(m, rng)
	case "cgc":
		m.body, err = newPLEBody(m, "cgc", 1, rng)
	case "ple":
		m.body, err = newPLEBody(m, "ple", cfg.PLELayers, rng)
	case "dcn":
		m.body, err = newDCNBody(m, rng)
	case "dlrm":
		m.body, err = newDLRMBody(m, rng)
	case "deepfm", "wide_n_deep":
		m.body, err = newWideDeepBody(m, rng)
	}
	if err != nil {
		return fmt.Errorf("mtl: %w", err)
	}
	var towerDims []int
	if cfg.UseTaskTowers {
		towerDims = cfg.TowerLayers
	}
	for _, t := range m.tasks {
		tw, err := layers.NewTower(m.ldev, "tower/"+t.Target, m.body.outDim(), towerDims, m.act, cfg.Dropout, rng)
		if err != nil {
			return fmt.Errorf("mtl: %w", err)
		}
		m.towers = append(m.towers, tw)
	}
	m.params = m.input.Params("input/emb")
	m.params = append(m.params, m.body.params()...)
	for _, tw := range m.towers {
		m.params = append(m.params, tw.Params()...)
	}
	seen := map[string]bool{}
	for _, p := range m.params {
		if seen[p.Name] {
			return fmt.Errorf("mtl: two parameters named %q", p.Name)
		}
		seen[p.Name] = true
	}
	return nil
}

// Tasks lists the model's outputs in output order.
func (m *Model) Tasks() []Task { return append([]Task(nil), m.tasks...) }

// Config returns the configuration (with Tasks resolved).
func (m *Model) Config() Config { return m.cfg.Clone() }

// Schema returns the schema the model was built for.
func (m *Model) Schema() *schema.Schema { return m.schema }

// Device returns the device the model lives on.
func (m *Model) Device() kernels.Device { return m.dev }

// MaxBatch is the largest batch TrainStep, Loss and Predict accept.
func (m *Model) MaxBatch() int { return m.exec.MaxBatch() }

// Step is the number of optimizer steps taken (it drives the learning-rate
// schedule, Adam's bias correction and the dropout seeds).
func (m *Model) Step() int { return m.exec.Step() }

// SetStep sets the step counter, e.g. when resuming from a checkpoint.
func (m *Model) SetStep(step int) { m.exec.SetStep(step) }

// Params lists every trainable tensor with a stable unique name, embeddings
// first ("input/emb/<domain>"), then the architecture
// ("mmoe/experts/0/kernel" [E, in, out], "mmoe/gate/click/logits/kernel",
// ...), then the towers ("tower/click/mlp/0/kernel", "tower/click/head/bias").
func (m *Model) Params() []NamedTensor {
	out := make([]NamedTensor, len(m.params))
	for i, p := range m.params {
		out[i] = NamedTensor{Name: p.Name, Tensor: p.Value}
	}
	return out
}

// OptimizerState lists the optimizer's tensors ("<param>/m", "<param>/v" for
// Adam, "<param>/accumulator" for Adagrad, nothing for SGD).
func (m *Model) OptimizerState() []NamedTensor {
	st := m.exec.OptimizerState()
	out := make([]NamedTensor, len(st))
	for i, t := range st {
		out[i] = NamedTensor(t)
	}
	return out
}

// gateNames lists the model's gates, known without a batch (unlike their
// weights): from a body workspace of one row, made for the purpose.
func (m *Model) gateNames() []string {
	if m.body == nil {
		return nil
	}
	ws := m.body.newWS(1, false)
	defer ws.release()
	var names []string
	for _, g := range ws.gates() {
		names = append(names, g.name)
	}
	return names
}

// GateWeights returns, per gate, the mean weight of each expert over the
// rows of the last forward pass of the model's own workspace (TrainStep,
// Loss or Predict). Gate names are the task target for MMoE and CGC
// ("click") and "level_<l>/<target>" / "level_<l>/shared" for PLE. Models
// without gates return an empty map.
func (m *Model) GateWeights() map[string][]float64 {
	out := map[string][]float64{}
	ws := m.exec.Train()
	if ws.Rows() == 0 {
		return out
	}
	var h []float32
	for s := 0; s < ws.Shards(); s++ {
		for _, g := range ws.Net(s).(*netShard).body.gates() {
			if cap(h) < g.w.Len() {
				h = make([]float32, g.w.Len())
			}
			h = h[:g.w.Len()]
			m.dev.CopyToHostF32(h, g.w)
			e, rows := g.w.Cols(), g.w.Rows()
			sum := out[g.name]
			if sum == nil {
				sum = make([]float64, e)
				out[g.name] = sum
			}
			for r := 0; r < rows; r++ {
				for j := 0; j < e; j++ {
					sum[j] += float64(h[r*e+j])
				}
			}
		}
	}
	for _, mean := range out {
		for j := range mean {
			mean[j] /= float64(ws.Rows())
		}
	}
	return out
}

// Release frees every tensor of the model. Predictors created from it must
// not be used afterwards.
func (m *Model) Release() {
	if m.exec != nil {
		m.exec.Release() // before the tensors its graphs use
	}
	if m.input != nil {
		m.input.Release()
	}
	if m.body != nil {
		m.body.release()
	}
	for _, t := range m.towers {
		t.Release()
	}
	*m = Model{}
}

// modelNet is the model's body and towers as the engine runs them (step.Net).
type modelNet struct{ m *Model }

// netShard is one shard's workspaces of the body and the towers.
type netShard struct {
	m      *Model
	body   bodyWS
	towers []*layers.TowerWS
	outs   []*kernels.Tensor
	grads  []*kernels.Tensor // the body's, then each tower's
	// the towers' input gradients: towers over one representation (mlp's)
	// share its gradient, computed as one sum
	sums layers.GradSums
}

func (n modelNet) NewShard(maxRows int, train bool) step.Shard {
	m := n.m
	sh := &netShard{m: m, body: m.body.newWS(maxRows, train), outs: make([]*kernels.Tensor, len(m.towers))}
	for _, t := range m.towers {
		sh.towers = append(sh.towers, t.NewWorkspace(maxRows, train))
	}
	if train {
		sh.grads = append(sh.grads, sh.body.grads()...)
		for _, t := range sh.towers {
			sh.grads = append(sh.grads, t.Grads()...)
		}
	}
	return sh
}

func (s *netShard) Forward(x *kernels.Tensor, mode layers.Mode) []*kernels.Tensor {
	reps := s.body.forward(x, mode)
	for t, tw := range s.m.towers {
		tw.Forward(s.towers[t], reps[t], mode)
		s.outs[t] = s.towers[t].Y()
	}
	return s.outs
}

func (s *netShard) OutputGrad(t int) *kernels.Tensor { return s.towers[t].DY() }

func (s *netShard) Backward(dx *kernels.Tensor) {
	for t, tw := range s.m.towers {
		dr, acc := s.body.repGrad(t)
		tw.BackwardTo(s.towers[t], &s.sums, dr, acc)
	}
	s.sums.Flush()
	s.body.backward(dx)
}

func (s *netShard) Grads() []*kernels.Tensor { return s.grads }

func (s *netShard) Release() {
	s.body.release()
	for _, t := range s.towers {
		t.Release()
	}
}

// TrainStep runs forward, backward and one optimizer update on b and
// returns the batch's loss (computed before the update). When a task loss
// or the total is NaN or infinite it returns a *NonFiniteLossError before
// the update: parameters, optimizer state and the step counter are left
// as they were. With Config.InitOutputBias the first step (step 0) first
// sets the output biases from b (InitOutputBias). With Config.CUDAGraph a
// batch no larger than an earlier eager one runs as captured CUDA graphs
// (package step), with bit-identical results.
func (m *Model) TrainStep(b *loader.Batch) (StepStats, error) {
	var oldBias []float32 // the biases before InitOutputBias, restored if the step fails
	if m.cfg.InitOutputBias && m.Step() == 0 && !m.biasSet {
		var err error
		if oldBias, err = m.initOutputBias(b); err != nil {
			return StepStats{}, err
		}
	}
	st, err := m.exec.TrainStep(b)
	if err != nil {
		if oldBias != nil {
			m.restoreOutputBias(oldBias)
		}
		return StepStats{}, err
	}
	return StepStats(st), nil
}

// setComm makes the model one rank of the distributed job c
// (TrainerOptions.Comm): see step.Engine.SetComm. Every rank calls it.
func (m *Model) setComm(c dist.Comm) error {
	if c == nil || c.Size() == 1 || m.RowSharded() {
		// (a row-sharded model joined its job when it was built)
		return nil
	}
	if err := m.exec.SetComm(c); err != nil {
		return err
	}
	// InitOutputBias's first batch is then the ranks' first batches
	// together.
	m.comm = c
	return nil
}

// CommBytes is the bytes this rank received in the collectives of its
// training steps in a distributed job (TrainerOptions.Comm; 0 in one
// process): the measure of docs/DISTRIBUTED.md's bytes per step.
func (m *Model) CommBytes() int64 { return m.exec.CommBytes() }

// NonFiniteLossError is returned by TrainStep when the batch's loss is NaN
// or infinite; the update was not applied.
type NonFiniteLossError struct {
	Step   int     // the step (Model.Step) whose update was refused
	Task   string  // the first task whose loss is not finite; "" when only the total is (regularisation)
	Value  float64 // that loss
	Source string  // the batch's source, if known
}

func (e *NonFiniteLossError) Error() string {
	where := fmt.Sprintf("step %d", e.Step)
	if e.Source != "" {
		where += " (batch " + e.Source + ")"
	}
	if e.Task == "" {
		return fmt.Sprintf("mtl: loss is %v at %s while every task loss is finite: the regularisation term overflowed; the update was not applied", e.Value, where)
	}
	return fmt.Sprintf("mtl: loss of task %s is %v at %s: training diverged (lower the learning rate, check the data for extreme values); the update was not applied", e.Task, e.Value, where)
}

// checkStats is the engine's check of a step's loss before its update
// (step.Spec.Check): a *NonFiniteLossError when a loss is NaN or infinite.
func (m *Model) checkStats(st step.Stats, b *loader.Batch, stepNo int) error {
	if !math.IsNaN(st.Loss) && !math.IsInf(st.Loss, 0) {
		return nil
	}
	e := &NonFiniteLossError{Step: stepNo, Value: st.Loss, Source: b.Source}
	for i, l := range st.TaskLoss {
		if math.IsNaN(l) || math.IsInf(l, 0) {
			e.Task, e.Value = m.tasks[i].Name, l
			break
		}
	}
	return e
}

// Loss computes the loss of b without dropout and without any update
// (validation loss).
func (m *Model) Loss(b *loader.Batch) (StepStats, error) {
	st, err := m.exec.Loss(b)
	return StepStats(st), err
}

// Predict writes the model's outputs for b: out[t][i] is the sigmoid
// probability (binary task) or the value (regression task) of task t
// (Tasks order) for row i; out[t] needs room for b.Rows values. Only the
// input columns are read.
func (m *Model) Predict(b *loader.Batch, out [][]float32) error {
	return m.exec.Predict(b, out)
}

// Summary describes the architecture and parameter counts.
func (m *Model) Summary() string {
	var sb strings.Builder
	fmt.Fprintf(&sb, "%s\n", m.cfg.String())
	var dense, emb int
	for _, p := range m.params {
		if p.Sparse {
			emb += p.Value.Len()
		} else {
			dense += p.Value.Len()
		}
	}
	fmt.Fprintf(&sb, "inputs: %d columns -> %d features wide; %d embedding tables (%d values); %d dense parameters\n",
		len(m.input.Features), m.input.OutDim, len(m.input.Tables), emb, dense)
	for _, t := range m.tasks {
		fmt.Fprintf(&sb, "task %s (%s)\n", t.Name, t.Kind)
	}
	return sb.String()
}

// SetCUDAGraph turns capture of the training step on or off
// (Config.CUDAGraph; a loaded checkpoint starts with it off). Turning it
// on fails on a device that cannot capture the step.
func (m *Model) SetCUDAGraph(on bool) error {
	if err := m.exec.SetGraphs(on); err != nil {
		return err
	}
	m.cfg.CUDAGraph = on
	return nil
}

// GraphSteps returns how many training steps ran as captured CUDA graphs
// (0 without Config.CUDAGraph), and the error that turned capture off, if
// any (the steps then run eagerly).
func (m *Model) GraphSteps() (int, error) { return m.exec.GraphSteps() }
