package mtl

import (
	"github.com/mtlrank/mtlrank/kernels"
)

// Keras defaults the optimizers follow.
const (
	adagradInitialAccumulator = 0.1
	adagradEps                = 1e-7
)

// optimizer updates the parameters from a training workspace's gradients.
// Dense parameters are updated every step (Adam: one multi-tensor call);
// embedding tables only on the rows the batch touched, and with Adam the
// moments of untouched rows are left alone (lazy Adam) — a documented
// difference from Keras' dense Adam. On a kernels.FusedEmbeddingUpdater
// the tables' gradients are never materialised: the update reads the
// input block's EmbeddingSources (the output gradient and the ids) and
// updates the touched rows in one call per table.
type optimizer struct {
	m     *Model
	kind  string
	fused kernels.FusedEmbeddingUpdater // nil: tables use the SparseGrad path
	// dense parameters, their gradients (from the model's workspace) and
	// state, in Model.params order
	dense, grads []*kernels.Tensor
	s1, s2       []*kernels.Tensor // Adam m and v, or Adagrad accumulators in s1
	denseIdx     []int             // index in Model.params
	// embedding tables (the first len(tables) entries of Model.params)
	tables []*kernels.Tensor
	t1, t2 []*kernels.Tensor
	names  []NamedTensor

	// the update being applied (set before the jobs run)
	ws *workspace
	// sp, when set (a captured training step), makes apply use the
	// kernels.StepParamOps variants, which read the learning rate and the
	// Adam step size from the device instead of from their arguments.
	sp    kernels.StepParams
	adam  kernels.AdamParams
	ada   kernels.AdagradParams
	sgd   kernels.SGDParams
	jobFn func(int)
}

func newOptimizer(m *Model) *optimizer {
	o := &optimizer{m: m, kind: m.cfg.Optimizer}
	o.fused, _ = m.dev.(kernels.FusedEmbeddingUpdater)
	o.jobFn = o.runJob
	state := func(name string, like *kernels.Tensor, init float32) *kernels.Tensor {
		t := m.dev.Alloc(kernels.Float32, like.Shape...)
		if init != 0 {
			m.dev.Fill(t, init)
		}
		o.names = append(o.names, NamedTensor{Name: name, Tensor: t})
		return t
	}
	for i, p := range m.params {
		switch o.kind {
		case "adam":
			a, b := state(p.Name+"/m", p.Value, 0), state(p.Name+"/v", p.Value, 0)
			if p.Sparse {
				o.t1, o.t2 = append(o.t1, a), append(o.t2, b)
			} else {
				o.s1, o.s2 = append(o.s1, a), append(o.s2, b)
			}
		case "adagrad":
			a := state(p.Name+"/accumulator", p.Value, adagradInitialAccumulator)
			if p.Sparse {
				o.t1 = append(o.t1, a)
			} else {
				o.s1 = append(o.s1, a)
			}
		}
		if p.Sparse {
			o.tables = append(o.tables, p.Value)
		} else {
			o.dense = append(o.dense, p.Value)
			o.grads = append(o.grads, m.ws.grads[i])
			o.denseIdx = append(o.denseIdx, i)
		}
	}
	return o
}

func (o *optimizer) state() []NamedTensor { return append([]NamedTensor(nil), o.names...) }

func (o *optimizer) release() {
	for _, n := range o.names {
		n.Tensor.Release()
	}
}

// apply runs the update of step (0-based) with the gradients in ws. On a
// kernels.Sharder device the tables and groups of dense parameters are
// updated concurrently (Model.jobs); every element's update is the same
// either way.
func (o *optimizer) apply(step int, ws *workspace) {
	dev := o.m.dev
	lr := o.setParams(step)
	if o.sp != nil {
		o.applySP(ws)
		return
	}
	if o.m.sharder != nil {
		o.ws = ws
		o.m.runJobs(o.jobFn)
		o.ws = nil
		return
	}
	switch o.kind {
	case "adam":
		p := kernels.AdamParams{LR: lr, Beta1: o.m.cfg.AdamBeta1, Beta2: o.m.cfg.AdamBeta2, Eps: o.m.cfg.AdamEps, Step: step + 1}
		dev.AdamMulti(o.dense, o.grads, o.s1, o.s2, p)
	case "adagrad":
		p := kernels.AdagradParams{LR: lr, Eps: adagradEps}
		for i, t := range o.dense {
			dev.Adagrad(t, o.grads[i], o.s1[i], p)
		}
	case "sgd":
		p := kernels.SGDParams{LR: lr}
		for i, t := range o.dense {
			dev.SGD(t, o.grads[i], p)
		}
	}
	for i := range o.tables {
		o.updateTable(i, ws)
	}
}

// updateTable applies the update (o.adam, o.ada or o.sgd) to embedding
// table t: fused with its backward on a kernels.FusedEmbeddingUpdater,
// else from the table's SparseGrad.
func (o *optimizer) updateTable(t int, ws *workspace) {
	dev := o.m.dev
	if o.fused != nil {
		srcs := o.m.input.EmbeddingSources(ws.input, t)
		switch o.kind {
		case "adam":
			o.fused.EmbeddingUpdateAdam(o.tables[t], o.t1[t], o.t2[t], srcs, o.adam)
		case "adagrad":
			o.fused.EmbeddingUpdateAdagrad(o.tables[t], o.t1[t], srcs, o.ada)
		case "sgd":
			o.fused.EmbeddingUpdateSGD(o.tables[t], srcs, o.sgd)
		}
		return
	}
	switch o.kind {
	case "adam":
		dev.SparseAdam(o.tables[t], o.t1[t], o.t2[t], ws.input.SparseGrad(t), o.adam)
	case "adagrad":
		dev.SparseAdagrad(o.tables[t], o.t1[t], ws.input.SparseGrad(t), o.ada)
	case "sgd":
		dev.SparseSGD(o.tables[t], ws.input.SparseGrad(t), o.sgd)
	}
}

// setParams sets o.adam, o.ada and o.sgd for step (0-based) and returns
// its learning rate.
func (o *optimizer) setParams(step int) float32 {
	lr := o.m.cfg.LearningRate(step)
	o.adam = kernels.AdamParams{LR: lr, Beta1: o.m.cfg.AdamBeta1, Beta2: o.m.cfg.AdamBeta2, Eps: o.m.cfg.AdamEps, Step: step + 1}
	o.ada = kernels.AdagradParams{LR: lr, Eps: adagradEps}
	o.sgd = kernels.SGDParams{LR: lr}
	return lr
}

// runJob applies the update to job j of Model.jobs.
func (o *optimizer) runJob(j int) {
	dev := o.m.dev
	job := o.m.jobs[j]
	if t := job.table; t >= 0 {
		o.updateTable(t, o.ws)
		return
	}
	for i := job.lo; i < job.hi; i++ {
		switch o.kind {
		case "adam":
			dev.Adam(o.dense[i], o.grads[i], o.s1[i], o.s2[i], o.adam)
		case "adagrad":
			dev.Adagrad(o.dense[i], o.grads[i], o.s1[i], o.ada)
		case "sgd":
			dev.SGD(o.dense[i], o.grads[i], o.sgd)
		}
	}
}

// applySP is apply on a kernels.StepParamOps device with a
// kernels.FusedEmbeddingUpdater (what graph capture requires), with the
// step's scalars read from o.sp: the same ops in the same order as apply's
// unsharded path, so a replay updates exactly as an eager step.
func (o *optimizer) applySP(ws *workspace) {
	ops := o.m.dev.(kernels.StepParamOps)
	switch o.kind {
	case "adam":
		ops.AdamMultiSP(o.dense, o.grads, o.s1, o.s2, o.adam, o.sp)
	case "adagrad":
		for i, t := range o.dense {
			ops.AdagradSP(t, o.grads[i], o.s1[i], o.ada, o.sp)
		}
	case "sgd":
		for i, t := range o.dense {
			ops.SGDSP(t, o.grads[i], o.sgd, o.sp)
		}
	}
	for t := range o.tables {
		srcs := o.m.input.EmbeddingSources(ws.input, t)
		switch o.kind {
		case "adam":
			ops.EmbeddingUpdateAdamSP(o.tables[t], o.t1[t], o.t2[t], srcs, o.adam, o.sp)
		case "adagrad":
			ops.EmbeddingUpdateAdagradSP(o.tables[t], o.t1[t], srcs, o.ada, o.sp)
		case "sgd":
			ops.EmbeddingUpdateSGDSP(o.tables[t], srcs, o.sgd, o.sp)
		}
	}
}
