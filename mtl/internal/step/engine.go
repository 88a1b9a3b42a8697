package step

import (
	"errors"
	"fmt"

	"github.com/mtlrank/mtlrank/kernels"
	"github.com/mtlrank/mtlrank/layers"
	"github.com/mtlrank/mtlrank/loader"
)

// Net is the model's computation between the input block and the loss
// (its body and towers), as the engine runs it: one Shard per shard of a
// workspace.
type Net interface {
	// NewShard creates the state of one shard of up to maxRows rows (with
	// train, what the backward pass needs too).
	NewShard(maxRows int, train bool) Shard
}

// Shard is one shard's state of a Net.
type Shard interface {
	// Forward maps rows of the input block's output [rows, D] to one
	// output [rows, 1] per task: a logit (binary task) or a value.
	Forward(x *kernels.Tensor, mode layers.Mode) []*kernels.Tensor
	// OutputGrad is where the loss writes the gradient w.r.t. task t's
	// output.
	OutputGrad(t int) *kernels.Tensor
	// Backward, after the loss, computes the gradients and writes the
	// input gradient into dx (overwriting it).
	Backward(dx *kernels.Tensor)
	// Grads are the gradients of the dense parameters, in the order of
	// Spec.Params after the embedding tables.
	Grads() []*kernels.Tensor
	Release()
}

// Task is one output as the engine sees it: its loss and its columns.
type Task struct {
	Name   string // for errors
	Target string // the label column
	// Binary: binary cross-entropy from the logit, and a sigmoid in
	// inference; else squared error and the value.
	Binary bool
	// Lambda weights the task's loss; PosWeight weights its positive
	// labels.
	Lambda, PosWeight float32
	// WeightColumn and SpaceColumn are the task's sample-weight and
	// sample-space columns ("": none).
	WeightColumn, SpaceColumn string
}

// Spec is what the engine needs of a model.
type Spec struct {
	Caps Caps
	// Input is the model's input block; FeatureMax gives each categorical
	// feature's largest id (ids are checked on the host).
	Input      *layers.InputBlock
	FeatureMax map[string]int64
	// Derived computes the inputs of Input that are not columns of the
	// batch; nil when every input is a column.
	Derived Derived
	// Params are the trainable tensors: the input block's embedding
	// tables first (Sparse), then the dense parameters.
	Params []layers.Param
	// L2Reg is the weight of the L2 term of the parameters marked L2.
	L2Reg float32
	Tasks []Task
	Net   Net
	// MaxBatch is the largest batch a step, loss pass or prediction of
	// the engine accepts: the model's batch size lives here.
	MaxBatch int
	// Optimizer is the kind ("adam", "adagrad", "sgd"), Hyper its
	// settings.
	Optimizer string
	Hyper     Hyper
	// Seed gives the dropout seeds: a function of (Seed, step) only.
	Seed uint64
	// Check is called with the loss of a training step before its
	// update: an error refuses the update (a non-finite loss).
	Check func(st Stats, b *loader.Batch, step int) error
}

// Engine runs one model's training steps, loss passes and predictions. It
// is not safe for concurrent use; inference workspaces (NewWorkspace) may
// run concurrently with each other.
type Engine struct {
	spec  Spec
	caps  Caps
	dev   kernels.Device
	jobs  *jobs
	train *Workspace
	upd   *updater
	// stepJobFn is stepJob, made once (no allocation per step).
	stepJobFn func(int)
	// unfused makes a Sharder device's TrainStep run LossPass and then the
	// update, as on other devices (SetFusedStep).
	unfused bool
	step    int
	// graphs captures the training step (SetGraphs; nil: eager).
	graphs *stepGraphs
	// dist is the state of a distributed job (SetComm; nil: one process).
	dist *distState
	// rows is the state of a job with row-sharded tables (SetRowComm).
	rows *rowState
}

// NewEngine creates the engine of spec: its training workspace and
// optimizer state. On a device that can defer its embedding id checks to
// Sync (kernels.AsyncIDChecker: the CUDA device) it switches the deferral
// on for the whole device, saving a host round trip per lookup: every id
// is checked on the host before it reaches the device, and the device's
// errors, deferred checks included, are reported through Sync at the end
// of every step, loss pass and prediction.
func NewEngine(spec Spec) (*Engine, error) {
	if spec.MaxBatch < 1 {
		return nil, fmt.Errorf("mtl: maxBatch must be >= 1, got %d", spec.MaxBatch)
	}
	nt := len(spec.Input.Tables)
	for i, p := range spec.Params {
		if p.Sparse != (i < nt) {
			return nil, errors.New("mtl: the parameters must list the embedding tables first")
		}
	}
	if spec.Check == nil {
		spec.Check = func(Stats, *loader.Batch, int) error { return nil }
	}
	e := &Engine{spec: spec, caps: spec.Caps, dev: spec.Caps.Dev}
	if c := e.caps.IDChecker; c != nil {
		c.SetImmediateIDCheck(false)
	}
	e.jobs = planJobs(e.caps.Sharder, spec.Input.Tables, spec.Params)
	e.train = e.newWorkspace(spec.MaxBatch, true)
	opt, err := NewOptimizer(spec.Optimizer, e.dev, spec.Params, spec.Hyper)
	if err != nil {
		e.Release()
		return nil, err
	}
	e.upd = newUpdater(e, opt, e.train)
	e.stepJobFn = e.stepJob
	return e, nil
}

// Release frees the workspaces, the optimizer state and the graphs.
func (e *Engine) Release() {
	e.graphs.release() // before the tensors the graphs use
	e.graphs = nil
	e.dist.release()
	e.dist = nil
	e.rows = nil
	if e.train != nil {
		e.train.Release()
		e.train = nil
	}
	if e.upd != nil {
		e.upd.opt.release()
		e.upd = nil
	}
}

// MaxBatch is the largest batch TrainStep, Loss and Predict accept.
func (e *Engine) MaxBatch() int { return e.spec.MaxBatch }

// Step is the number of optimizer steps taken.
func (e *Engine) Step() int { return e.step }

// SetStep sets the step counter (resuming from a checkpoint).
func (e *Engine) SetStep(step int) { e.step = step }

// OptimizerState lists the optimizer's tensors under their checkpoint
// names.
func (e *Engine) OptimizerState() []NamedTensor { return e.upd.opt.State() }

// Train is the training workspace (TrainStep and Loss run on it).
func (e *Engine) Train() *Workspace { return e.train }

// dropoutSeed is the per-step seed: a function of (Seed, step) only.
func (e *Engine) dropoutSeed() uint64 {
	return layers.MixSeed(e.spec.Seed, uint64(e.step))
}

// TrainStep runs forward, backward and one optimizer update on b and
// returns the batch's loss (computed before the update). When Spec.Check
// refuses the loss it returns that error before the update: parameters,
// optimizer state and the step counter are left as they were. With graphs
// on, a batch no larger than an earlier eager one runs as captured graphs
// (graph.go), with bit-identical results.
func (e *Engine) TrainStep(b *loader.Batch) (Stats, error) {
	if e.rows != nil {
		return e.rowStep(b)
	}
	if e.dist != nil {
		return e.distStep(b)
	}
	if g := e.graphs; g != nil && b.Rows <= g.warmRows && !g.off {
		// the scratch buffers have their size: a captured step
		return e.graphStep(b)
	}
	if e.caps.Sharder != nil && !e.unfused {
		return e.fusedStep(b)
	}
	if err := e.train.LossPass(b, layers.Mode{Train: true, Seed: e.dropoutSeed()}, true); err != nil {
		return Stats{}, err
	}
	st, err := e.finishStep(b)
	if err == nil && e.graphs != nil && b.Rows > e.graphs.warmRows {
		e.graphs.warmRows = b.Rows // the device's scratch buffers have their size
	}
	return st, err
}

// finishStep checks the loss of the pass just run and read on the
// training workspace and applies the update.
func (e *Engine) finishStep(b *loader.Batch) (Stats, error) {
	ws := e.train
	if err := e.spec.Check(ws.stats, b, e.step); err != nil {
		return Stats{}, err
	}
	e.upd.apply(e.step, ws)
	e.step++
	return ws.stats, nil
}

// fusedStep is TrainStep on a kernels.Sharder device (the CPU) in one
// process: the loss is read and checked right after the shards, then each
// of the engine's jobs finishes its gradients and applies its update in
// one go (stepJob). That is one join of the device's goroutines instead of
// two, the jobs balance over the whole step's remaining work, and a
// table's gradient rows are still in the cache when its update reads them.
// Every gradient, parameter and optimizer state gets the bits of LossPass
// followed by finishStep: a job reads and writes only its own table or
// dense parameters and their gradients, in the same order as before
// (TestFusedStepMatchesTwoPhases).
func (e *Engine) fusedStep(b *loader.Batch) (Stats, error) {
	ws := e.train
	if err := ws.input0(b, true); err != nil {
		return Stats{}, err
	}
	if err := ws.run(passBackward, layers.Mode{Train: true, Seed: e.dropoutSeed()}); err != nil {
		return Stats{}, BatchWrap(b, err)
	}
	ws.regLoss()
	e.spec.Input.BeginBackward(ws.input)
	err := ws.readLoss(b)
	if err == nil {
		err = e.spec.Check(ws.stats, b, e.step)
	}
	if err != nil {
		// no update; the gradients are left as LossPass leaves them
		e.jobs.run(ws.jobFn)
		return Stats{}, err
	}
	e.upd.begin(e.step)
	e.upd.ws = ws
	e.jobs.run(e.stepJobFn)
	e.upd.ws = nil
	e.step++
	return ws.stats, nil
}

// SetFusedStep turns the fused step of a kernels.Sharder device (fusedStep,
// the default) on or off; off, a step runs the backward jobs and then the
// update jobs, which tests compare with the fused step.
func (e *Engine) SetFusedStep(on bool) { e.unfused = !on }

// stepJob finishes job j's gradients and applies its update.
func (e *Engine) stepJob(j int) {
	e.train.backwardJob(j)
	e.upd.runJob(j)
}

// Loss computes the loss of b without dropout and without any update.
func (e *Engine) Loss(b *loader.Batch) (Stats, error) {
	if err := e.train.LossPass(b, layers.Mode{}, false); err != nil {
		return Stats{}, err
	}
	return e.train.stats, nil
}

// Predict has the contract of Workspace.Predict, on the training
// workspace.
func (e *Engine) Predict(b *loader.Batch, out [][]float32) error { return e.train.Predict(b, out) }
