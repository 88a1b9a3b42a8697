package step

import (
	"fmt"

	"github.com/mtlrank/mtlrank/kernels"
	"github.com/mtlrank/mtlrank/layers"
)

// Keras defaults the optimizers follow.
const (
	// AdagradInitialAccumulator is the value Adagrad's accumulators start
	// from.
	AdagradInitialAccumulator = 0.1
	adagradEps                = 1e-7
)

// NamedTensor is a tensor with its checkpoint name.
type NamedTensor struct {
	Name   string
	Tensor *kernels.Tensor
}

// Hyper are the optimizer settings besides its kind.
type Hyper struct {
	// LearningRate gives the learning rate of a step (0-based).
	LearningRate func(step int) float32
	// Adam's moment decays and epsilon.
	Beta1, Beta2, Eps float32
}

// Optimizer is one update rule, with its state: Adam, Adagrad or SGD
// (NewOptimizer). The engine's updater decides which parameters it
// updates on which path (one multi-tensor call, per tensor, sparse rows of
// a table, fused with a table's backward, captured in a graph); the
// implementation supplies the rule for each. Parameters are identified by
// their index in Spec.Params (embedding tables first).
type Optimizer interface {
	// State lists the state tensors under their checkpoint names, per
	// parameter in order ("<param>/m", "<param>/v" for Adam,
	// "<param>/accumulator" for Adagrad, nothing for SGD).
	State() []NamedTensor

	// begin sets the scalars of step (0-based) at learning rate lr.
	begin(step int, lr float32)
	// scalars are the values a captured step reads from its
	// kernels.StepParams block (kernels.StepParams.Upload).
	scalars() (lr float32, adam kernels.AdamParams)
	// denseAll updates the dense parameters ps (indices idx) at once.
	denseAll(dev kernels.Device, ps, gs []*kernels.Tensor, idx []int)
	// dense updates parameter i.
	dense(dev kernels.Device, i int, p, g *kernels.Tensor)
	// denseAllSP is denseAll with the step's scalars read from sp.
	denseAllSP(ops kernels.StepParamOps, sp kernels.StepParams, ps, gs []*kernels.Tensor, idx []int)
	// sparse updates the rows of table i its sparse gradient touches.
	sparse(dev kernels.Device, i int, table *kernels.Tensor, g *kernels.SparseGrad)
	// fused updates table i from its embedding sources (the output
	// gradient and the ids).
	fused(f kernels.FusedEmbeddingUpdater, i int, table *kernels.Tensor, srcs []kernels.EmbeddingSource)
	// fusedSP is fused with the step's scalars read from sp.
	fusedSP(ops kernels.StepParamOps, sp kernels.StepParams, i int, table *kernels.Tensor, srcs []kernels.EmbeddingSource)
	release()
}

// kind describes one optimizer kind: the state it keeps per parameter
// (one tensor of the parameter's shape per suffix, named
// "<param>/<suffix>", all starting at init) and its constructor.
type kind struct {
	suffixes []string
	init     float32
	make     func(h Hyper, state [][]*kernels.Tensor, n named) Optimizer
}

// kinds are the optimizers NewOptimizer knows (Config.Optimizer).
var kinds = map[string]kind{
	"adam": {suffixes: []string{"m", "v"},
		make: func(h Hyper, s [][]*kernels.Tensor, n named) Optimizer {
			return &adam{named: n, h: h, m: s[0], v: s[1]}
		}},
	"adagrad": {suffixes: []string{"accumulator"}, init: AdagradInitialAccumulator,
		make: func(_ Hyper, s [][]*kernels.Tensor, n named) Optimizer { return &adagrad{named: n, acc: s[0]} }},
	"sgd": {make: func(_ Hyper, _ [][]*kernels.Tensor, n named) Optimizer { return &sgd{named: n} }},
}

func kindOf(name string) (kind, error) {
	k, ok := kinds[name]
	if !ok {
		return kind{}, fmt.Errorf("mtl: unknown optimizer %q (want adam, adagrad or sgd)", name)
	}
	return k, nil
}

// StateTensors is the number of state tensors optimizer kind keeps per
// parameter, each of the parameter's shape (the memory estimate's figure).
func StateTensors(name string) (int, error) {
	k, err := kindOf(name)
	return len(k.suffixes), err
}

// NewOptimizer allocates the state of optimizer name ("adam", "adagrad",
// "sgd") for ps on dev. Adam's moments start at zero, Adagrad's
// accumulators at AdagradInitialAccumulator (Keras).
func NewOptimizer(name string, dev kernels.Device, ps []layers.Param, h Hyper) (Optimizer, error) {
	k, err := kindOf(name)
	if err != nil {
		return nil, err
	}
	state := make([][]*kernels.Tensor, len(k.suffixes))
	for j := range state {
		state[j] = make([]*kernels.Tensor, len(ps))
	}
	var n named
	for i, p := range ps {
		for j, suffix := range k.suffixes {
			t := dev.Alloc(kernels.Float32, p.Value.Shape...)
			if k.init != 0 {
				dev.Fill(t, k.init)
			}
			state[j][i] = t
			n.names = append(n.names, NamedTensor{Name: p.Name + "/" + suffix, Tensor: t})
		}
	}
	return k.make(h, state, n), nil
}

// named is the State of every implementation.
type named struct{ names []NamedTensor }

func (n *named) State() []NamedTensor { return append([]NamedTensor(nil), n.names...) }
func (n *named) release() {
	for _, t := range n.names {
		t.Tensor.Release()
	}
}

// adam is Adam with Keras' epsilon placement; embedding tables keep lazy
// moments (only the rows a batch touches move).
type adam struct {
	named
	h    Hyper
	m, v []*kernels.Tensor // per parameter
	p    kernels.AdamParams
	// ms, vs are scratch for the dense multi-tensor calls
	ms, vs []*kernels.Tensor
}

func (a *adam) begin(step int, lr float32) {
	a.p = kernels.AdamParams{LR: lr, Beta1: a.h.Beta1, Beta2: a.h.Beta2, Eps: a.h.Eps, Step: step + 1}
}
func (a *adam) scalars() (float32, kernels.AdamParams) { return a.p.LR, a.p }

// moments returns the moments of the parameters idx (built once: the
// dense parameters do not change).
func (a *adam) moments(idx []int) (ms, vs []*kernels.Tensor) {
	if len(a.ms) != len(idx) {
		a.ms, a.vs = a.ms[:0], a.vs[:0]
		for _, i := range idx {
			a.ms, a.vs = append(a.ms, a.m[i]), append(a.vs, a.v[i])
		}
	}
	return a.ms, a.vs
}

func (a *adam) denseAll(dev kernels.Device, ps, gs []*kernels.Tensor, idx []int) {
	ms, vs := a.moments(idx)
	dev.AdamMulti(ps, gs, ms, vs, a.p)
}
func (a *adam) dense(dev kernels.Device, i int, p, g *kernels.Tensor) {
	dev.Adam(p, g, a.m[i], a.v[i], a.p)
}
func (a *adam) denseAllSP(ops kernels.StepParamOps, sp kernels.StepParams, ps, gs []*kernels.Tensor, idx []int) {
	ms, vs := a.moments(idx)
	ops.AdamMultiSP(ps, gs, ms, vs, a.p, sp)
}
func (a *adam) sparse(dev kernels.Device, i int, table *kernels.Tensor, g *kernels.SparseGrad) {
	dev.SparseAdam(table, a.m[i], a.v[i], g, a.p)
}
func (a *adam) fused(f kernels.FusedEmbeddingUpdater, i int, table *kernels.Tensor, srcs []kernels.EmbeddingSource) {
	f.EmbeddingUpdateAdam(table, a.m[i], a.v[i], srcs, a.p)
}
func (a *adam) fusedSP(ops kernels.StepParamOps, sp kernels.StepParams, i int, table *kernels.Tensor, srcs []kernels.EmbeddingSource) {
	ops.EmbeddingUpdateAdamSP(table, a.m[i], a.v[i], srcs, a.p, sp)
}

// adagrad is Adagrad (Keras: accumulators from 0.1, epsilon 1e-7).
type adagrad struct {
	named
	acc []*kernels.Tensor // per parameter
	p   kernels.AdagradParams
}

func (a *adagrad) begin(_ int, lr float32) {
	a.p = kernels.AdagradParams{LR: lr, Eps: adagradEps}
}

// scalars: Adagrad's captured ops read only the learning rate.
func (a *adagrad) scalars() (float32, kernels.AdamParams) { return a.p.LR, kernels.AdamParams{} }
func (a *adagrad) denseAll(dev kernels.Device, ps, gs []*kernels.Tensor, idx []int) {
	for k, p := range ps {
		a.dense(dev, idx[k], p, gs[k])
	}
}
func (a *adagrad) dense(dev kernels.Device, i int, p, g *kernels.Tensor) {
	dev.Adagrad(p, g, a.acc[i], a.p)
}
func (a *adagrad) denseAllSP(ops kernels.StepParamOps, sp kernels.StepParams, ps, gs []*kernels.Tensor, idx []int) {
	for k, p := range ps {
		ops.AdagradSP(p, gs[k], a.acc[idx[k]], a.p, sp)
	}
}
func (a *adagrad) sparse(dev kernels.Device, i int, table *kernels.Tensor, g *kernels.SparseGrad) {
	dev.SparseAdagrad(table, a.acc[i], g, a.p)
}
func (a *adagrad) fused(f kernels.FusedEmbeddingUpdater, i int, table *kernels.Tensor, srcs []kernels.EmbeddingSource) {
	f.EmbeddingUpdateAdagrad(table, a.acc[i], srcs, a.p)
}
func (a *adagrad) fusedSP(ops kernels.StepParamOps, sp kernels.StepParams, i int, table *kernels.Tensor, srcs []kernels.EmbeddingSource) {
	ops.EmbeddingUpdateAdagradSP(table, a.acc[i], srcs, a.p, sp)
}

// sgd is plain gradient descent (no state).
type sgd struct {
	named
	p kernels.SGDParams
}

func (s *sgd) begin(_ int, lr float32) {
	s.p = kernels.SGDParams{LR: lr}
}

// scalars: SGD's captured ops read only the learning rate.
func (s *sgd) scalars() (float32, kernels.AdamParams) { return s.p.LR, kernels.AdamParams{} }
func (s *sgd) denseAll(dev kernels.Device, ps, gs []*kernels.Tensor, _ []int) {
	for k, p := range ps {
		dev.SGD(p, gs[k], s.p)
	}
}
func (s *sgd) dense(dev kernels.Device, _ int, p, g *kernels.Tensor) { dev.SGD(p, g, s.p) }
func (s *sgd) denseAllSP(ops kernels.StepParamOps, sp kernels.StepParams, ps, gs []*kernels.Tensor, _ []int) {
	for k, p := range ps {
		ops.SGDSP(p, gs[k], s.p, sp)
	}
}
func (s *sgd) sparse(dev kernels.Device, _ int, table *kernels.Tensor, g *kernels.SparseGrad) {
	dev.SparseSGD(table, g, s.p)
}
func (s *sgd) fused(f kernels.FusedEmbeddingUpdater, _ int, table *kernels.Tensor, srcs []kernels.EmbeddingSource) {
	f.EmbeddingUpdateSGD(table, srcs, s.p)
}
func (s *sgd) fusedSP(ops kernels.StepParamOps, sp kernels.StepParams, _ int, table *kernels.Tensor, srcs []kernels.EmbeddingSource) {
	ops.EmbeddingUpdateSGDSP(table, srcs, s.p, sp)
}

// updater applies an Optimizer to the parameters with a training
// workspace's gradients. Dense parameters are updated every step (Adam:
// one multi-tensor call); embedding tables only on the rows the batch
// touched, and with Adam the moments of untouched rows are left alone
// (lazy Adam) — a documented difference from Keras' dense Adam. On a
// kernels.FusedEmbeddingUpdater the tables' gradients are never
// materialised: the update reads the input block's EmbeddingSources (the
// output gradient and the ids) and updates the touched rows in one call
// per table.
type updater struct {
	opt   Optimizer
	lr    func(step int) float32
	dev   kernels.Device
	caps  *Caps
	input *layers.InputBlock
	jobs  *jobs
	// dense parameters, their gradients (from the training workspace) and
	// their indices in Spec.Params
	dense, grads []*kernels.Tensor
	denseIdx     []int
	tables       []*kernels.Tensor // the first len(tables) of Spec.Params
	// merged, when set (a distributed job), are the tables' sparse
	// gradients summed over the ranks, which replace the workspace's.
	merged []*kernels.SparseGrad

	// the update being applied (set before the jobs run)
	ws *Workspace
	// sp, when set (a captured training step), makes apply use the
	// kernels.StepParamOps variants, which read the learning rate and the
	// Adam step size from the device instead of from their arguments.
	sp    kernels.StepParams
	jobFn func(int)
}

func newUpdater(e *Engine, opt Optimizer, ws *Workspace) *updater {
	u := &updater{opt: opt, lr: e.spec.Hyper.LearningRate, dev: e.dev, caps: &e.caps, input: e.spec.Input, jobs: e.jobs}
	u.jobFn = u.runJob
	for i, p := range e.spec.Params {
		if p.Sparse {
			u.tables = append(u.tables, p.Value)
		} else {
			u.dense = append(u.dense, p.Value)
			u.grads = append(u.grads, ws.grads[i])
			u.denseIdx = append(u.denseIdx, i)
		}
	}
	return u
}

// begin sets the optimizer's scalars for step (0-based).
func (u *updater) begin(step int) { u.opt.begin(step, u.lr(step)) }

// apply runs the update of step (0-based) with the gradients in ws. On a
// kernels.Sharder device the tables and groups of dense parameters are
// updated concurrently (the engine's jobs); every element's update is the
// same either way.
func (u *updater) apply(step int, ws *Workspace) {
	u.begin(step)
	if u.sp != nil {
		u.applySP(ws)
		return
	}
	if u.caps.Sharder != nil {
		u.ws = ws
		u.jobs.run(u.jobFn)
		u.ws = nil
		return
	}
	u.opt.denseAll(u.dev, u.dense, u.grads, u.denseIdx)
	for t := range u.tables {
		u.updateTable(t, ws)
	}
}

// updateTable updates embedding table t: fused with its backward on a
// kernels.FusedEmbeddingUpdater, else (and in a distributed job) from the
// table's SparseGrad.
func (u *updater) updateTable(t int, ws *Workspace) {
	if f := u.caps.Fused; f != nil && u.merged == nil {
		u.opt.fused(f, t, u.tables[t], u.input.EmbeddingSources(ws.input, t))
		return
	}
	g := ws.input.SparseGrad(t)
	if u.merged != nil {
		g = u.merged[t]
	}
	u.opt.sparse(u.dev, t, u.tables[t], g)
}

// runJob applies the update to job j.
func (u *updater) runJob(j int) {
	job := u.jobs.jobs[j]
	if t := job.table; t >= 0 {
		u.updateTable(t, u.ws)
		return
	}
	for i := job.lo; i < job.hi; i++ {
		u.opt.dense(u.dev, u.denseIdx[i], u.dense[i], u.grads[i])
	}
}

// applySP is apply on a kernels.StepParamOps device with a
// kernels.FusedEmbeddingUpdater (what graph capture requires), with the
// step's scalars read from u.sp: the same ops in the same order as apply's
// unsharded path, so a replay updates exactly as an eager step.
func (u *updater) applySP(ws *Workspace) {
	ops := u.caps.StepOps
	u.opt.denseAllSP(ops, u.sp, u.dense, u.grads, u.denseIdx)
	for t := range u.tables {
		u.opt.fusedSP(ops, u.sp, t, u.tables[t], u.input.EmbeddingSources(ws.input, t))
	}
}
