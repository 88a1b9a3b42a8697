package mtl

import (
	"errors"
	"fmt"

	"strings"

	"github.com/mtlrank/mtlrank/kernels"
	"github.com/mtlrank/mtlrank/layers"
	"github.com/mtlrank/mtlrank/loader"
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

// Model is a multi-task ranking model: its parameters, its optimizer state
// and one training workspace. A Model is not safe for concurrent use; for
// concurrent inference create one Predictor per goroutine (NewPredictor),
// which shares the weights read-only.
type Model struct {
	cfg      Config
	schema   *schema.Schema
	dev      kernels.Device
	maxBatch int
	tasks    []Task
	featMax  map[string]int64

	input  *layers.InputBlock
	body   body
	towers []*layers.Tower
	params []layers.Param
	act    kernels.Activation

	opt  *optimizer
	ws   *workspace
	step int
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
	switch s {
	case "relu":
		return kernels.ReLU, nil
	case "linear":
		return kernels.Linear, nil
	}
	return 0, configErr("Activation", "unknown activation %q (want relu or linear)", s)
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
func NewModel(s *schema.Schema, cfg Config, dev kernels.Device, maxBatch int) (*Model, error) {
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
	cfg.Tasks = taskTargets(tasks)
	m := &Model{cfg: cfg, schema: s, dev: dev, maxBatch: maxBatch, tasks: tasks, featMax: map[string]int64{}}
	m.act, _ = parseActivation(cfg.Activation)
	comb, _ := parseCombiner(cfg.ListCombiner)
	if err := m.build(comb); err != nil {
		m.Release()
		return nil, err
	}
	m.ws = m.newWorkspace(maxBatch, true)
	m.opt = newOptimizer(m)
	return m, nil
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
	for _, f := range feats {
		if f.IntDomain != nil {
			m.featMax[f.Name] = f.IntDomain.Max
		}
	}
	var err error
	m.input, err = layers.NewInputBlock(m.dev, feats, layers.InputOptions{
		DimMultiplier: cfg.EmbeddingDimMultiplier, Dims: cfg.EmbeddingDims,
		Combiner: comb, BatchL2: cfg.EmbeddingL2Reg,
	}, rng)
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
	}
	if err != nil {
		return fmt.Errorf("mtl: %w", err)
	}
	var towerDims []int
	if cfg.UseTaskTowers {
		towerDims = cfg.TowerLayers
	}
	for _, t := range m.tasks {
		tw, err := layers.NewTower(m.dev, "tower/"+t.Target, m.body.outDim(), towerDims, m.act, cfg.Dropout, rng)
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
func (m *Model) MaxBatch() int { return m.maxBatch }

// Step is the number of optimizer steps taken (it drives the learning-rate
// schedule, Adam's bias correction and the dropout seeds).
func (m *Model) Step() int { return m.step }

// SetStep sets the step counter, e.g. when resuming from a checkpoint.
func (m *Model) SetStep(step int) { m.step = step }

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
func (m *Model) OptimizerState() []NamedTensor { return m.opt.state() }

// GateWeights returns, per gate, the mean weight of each expert over the
// rows of the last forward pass of the model's own workspace (TrainStep,
// Loss or Predict). Gate names are the task target for MMoE and CGC
// ("click") and "level_<l>/<target>" / "level_<l>/shared" for PLE. Models
// without gates return an empty map.
func (m *Model) GateWeights() map[string][]float64 {
	out := map[string][]float64{}
	if m.ws.rows == 0 {
		return out
	}
	for _, g := range m.ws.body.gates() {
		h := make([]float32, g.w.Len())
		m.dev.CopyToHostF32(h, g.w)
		e := g.w.Cols()
		rows := g.w.Rows()
		mean := make([]float64, e)
		for r := 0; r < rows; r++ {
			for j := 0; j < e; j++ {
				mean[j] += float64(h[r*e+j])
			}
		}
		for j := range mean {
			mean[j] /= float64(rows)
		}
		out[g.name] = mean
	}
	return out
}

// Release frees every tensor of the model. Predictors created from it must
// not be used afterwards.
func (m *Model) Release() {
	if m.ws != nil {
		m.ws.release()
	}
	if m.opt != nil {
		m.opt.release()
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

// workspace is everything one caller writes during a pass.
type workspace struct {
	m        *Model
	train    bool
	feed     *feeder
	input    *layers.InputWS
	body     bodyWS
	towers   []*layers.TowerWS
	loss     *lossWS // training workspaces only
	rows     int
	stats    StepStats
	lossHost []float32
	// grads[i] is the gradient of Model.params[i] (nil for embedding
	// tables, whose gradients are the input workspace's sparse gradients).
	grads []*kernels.Tensor
}

func (m *Model) newWorkspace(maxRows int, train bool) *workspace {
	ws := &workspace{
		m:     m,
		train: train,
		feed:  newFeeder(m.dev, m.input, maxRows, m.featMax),
		input: m.input.NewWorkspace(maxRows, train),
		body:  m.body.newWS(maxRows, train),
		stats: StepStats{TaskLoss: make([]float64, len(m.tasks))},
	}
	for _, t := range m.towers {
		ws.towers = append(ws.towers, t.NewWorkspace(maxRows, train))
	}
	if train {
		ws.loss = newLossWS(m, maxRows)
		ws.lossHost = make([]float32, len(m.tasks)+1)
		ws.grads = make([]*kernels.Tensor, len(m.input.Tables), len(m.params))
		ws.grads = append(ws.grads, ws.body.grads()...)
		for _, t := range ws.towers {
			ws.grads = append(ws.grads, t.Grads()...)
		}
		if len(ws.grads) != len(m.params) {
			panic("mtl: gradients do not match parameters")
		}
	}
	return ws
}

func (ws *workspace) release() {
	ws.feed.release()
	ws.input.Release()
	ws.body.release()
	for _, t := range ws.towers {
		t.Release()
	}
	if ws.loss != nil {
		ws.loss.release()
	}
}

// forward runs the model on b; the task outputs are ws.towers[t].Y().
func (ws *workspace) forward(b *loader.Batch, mode layers.Mode) error {
	data, err := ws.feed.feed(b)
	if err != nil {
		return err
	}
	x, err := ws.m.input.Forward(ws.input, data)
	if err != nil {
		return fmt.Errorf("mtl: batch %s: %w", b.Source, err)
	}
	reps := ws.body.forward(x, mode)
	for t, tw := range ws.m.towers {
		tw.Forward(ws.towers[t], reps[t], mode)
	}
	ws.rows = b.Rows
	return nil
}

// lossPass runs forward and the loss (and with backward the gradients) on b.
func (ws *workspace) lossPass(b *loader.Batch, mode layers.Mode, backward bool) error {
	m := ws.m
	if err := ws.loss.feed(ws.feed, b); err != nil {
		return err
	}
	if err := ws.forward(b, mode); err != nil {
		return err
	}
	ws.loss.compute(ws, b.Rows)
	if backward {
		ws.backward()
	}
	m.dev.CopyToHostF32(ws.lossHost, ws.loss.scalars)
	total := float64(ws.lossHost[len(m.tasks)])
	for t := range m.tasks {
		l := float64(ws.lossHost[t])
		ws.stats.TaskLoss[t] = l
		total += float64(ws.loss.tasks[t].lambda) * l
	}
	ws.stats.Loss = total
	return nil
}

func (ws *workspace) backward() {
	m := ws.m
	for t, tw := range m.towers {
		dr, acc := ws.body.repGrad(t)
		tw.Backward(ws.towers[t], dr, acc)
	}
	ws.body.backward(ws.input.DY())
	m.input.Backward(ws.input)
	if m.cfg.L2Reg > 0 {
		for i, p := range m.params {
			if p.L2 {
				m.dev.Axpy(2*m.cfg.L2Reg, p.Value, ws.grads[i])
			}
		}
	}
}

// dropoutSeed is the per-step seed: a function of (Seed, step) only.
func (m *Model) dropoutSeed() uint64 {
	return layers.MixSeed(uint64(m.cfg.Seed), uint64(m.step))
}

// TrainStep runs forward, backward and one optimizer update on b and
// returns the batch's loss (computed before the update).
func (m *Model) TrainStep(b *loader.Batch) (StepStats, error) {
	if err := m.ws.lossPass(b, layers.Mode{Train: true, Seed: m.dropoutSeed()}, true); err != nil {
		return StepStats{}, err
	}
	m.opt.apply(m.step, m.ws)
	m.step++
	return m.ws.stats, nil
}

// Loss computes the loss of b without dropout and without any update
// (validation loss).
func (m *Model) Loss(b *loader.Batch) (StepStats, error) {
	if err := m.ws.lossPass(b, layers.Mode{}, false); err != nil {
		return StepStats{}, err
	}
	return m.ws.stats, nil
}

// Predict writes the model's outputs for b: out[t][i] is the sigmoid
// probability (binary task) or the value (regression task) of task t
// (Tasks order) for row i; out[t] needs room for b.Rows values. Only the
// input columns are read.
func (m *Model) Predict(b *loader.Batch, out [][]float32) error {
	return m.ws.predict(b, out)
}

func (ws *workspace) predict(b *loader.Batch, out [][]float32) error {
	m := ws.m
	if len(out) != len(m.tasks) {
		return fmt.Errorf("mtl: Predict: %d output slices for %d tasks", len(out), len(m.tasks))
	}
	if b != nil {
		for t, o := range out {
			if len(o) < b.Rows {
				return fmt.Errorf("mtl: Predict: output for task %q has room for %d rows, the batch has %d", m.tasks[t].Name, len(o), b.Rows)
			}
		}
	}
	if err := ws.forward(b, layers.Mode{}); err != nil {
		return err
	}
	for t, task := range m.tasks {
		z := ws.towers[t].Y()
		if task.Kind == Binary {
			m.dev.Sigmoid(z, z)
		}
		m.dev.CopyToHostF32(out[t][:b.Rows], z)
	}
	return nil
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
