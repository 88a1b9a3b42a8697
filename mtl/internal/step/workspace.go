package step

import (
	"errors"
	"fmt"

	"github.com/mtlrank/mtlrank/kernels"
	"github.com/mtlrank/mtlrank/layers"
	"github.com/mtlrank/mtlrank/loader"
)

// Batches are cut into shards of about ShardRows rows (at most MaxShards
// shards), which run concurrently on a kernels.Sharder device, each through
// the model's Net and the loss on its own state; the input block runs once
// over the whole batch before, and its backward pass once after. The cut
// depends only on the batch size, so results do not depend on the number
// of threads. Inference workspaces may cut small batches finer
// (PredictShardCount).
const (
	ShardRows = 256
	MaxShards = 16
)

// ShardCount is the number of shards of a training batch of rows rows.
func ShardCount(rows int) int {
	return min(max((rows+ShardRows-1)/ShardRows, 1), MaxShards)
}

// PredictShardMin is the fewest rows worth a shard of their own in an
// inference pass: below it, handing rows to another thread costs more than
// it saves.
const PredictShardMin = 32

// PredictShardCount is the number of shards of an inference batch of rows
// rows on a device with threads threads: the training cut, or one shard per
// thread when the batch is too small for that (a serving request of a few
// hundred candidates), so that a request's latency falls with the threads.
// In inference every row is computed on its own, with no sum across rows
// and no dropout, so the cut changes no result (mtl's
// TestPredictThreadIndependent).
func PredictShardCount(rows, threads int) int {
	return max(ShardCount(rows), min(threads, (rows+PredictShardMin-1)/PredictShardMin))
}

// ShardCapacity is the most rows a shard of a batch of at most maxRows rows
// can hold.
func ShardCapacity(maxRows int) int {
	return min(maxRows, max(ShardRows, (maxRows+MaxShards-1)/MaxShards))
}

// Stats is the loss of one batch: Loss the full objective
// sum_t lambda_t * TaskLoss[t] + regularisation, TaskLoss[t] task t's
// weighted mean loss before lambda_t (reused by the next pass).
type Stats struct {
	Loss     float64
	TaskLoss []float64
}

// Workspace is everything one caller writes during a pass: the engine's
// training workspace, or an inference workspace (NewWorkspace).
type Workspace struct {
	e        *Engine
	train    bool
	feed     *feeder
	lossFeed *lossFeed // training workspaces only
	input    *layers.InputWS
	lookup   *rowLookup // the last lookup of a row-sharded job (SetRowComm)
	shards   []*shard
	nShards  int // shards of the current batch
	rows     int
	// lossRows divides the losses of the next loss pass: the rows of the
	// step over all ranks of a distributed job (SetComm), else 0 for the
	// batch's rows.
	lossRows int
	stats    Stats
	lossHost []float32
	reg      *kernels.Tensor // [1] regularisation loss (training workspaces)
	regHost  []float32
	regValue float64 // the regularisation term of the last loss pass
	// grads[i] is the gradient of Spec.Params[i] (nil for embedding
	// tables, whose gradients are the input workspace's sparse gradients):
	// shard 0's buffers, which hold the sum over the shards after backward.
	grads []*kernels.Tensor

	// The pass the shards run (set before RunShards).
	runFn func(int)
	jobFn func(int) // backwardJob
	pass  passKind
	mode  layers.Mode
	x     *kernels.Tensor // input block output of the batch
	out   [][]float32     // predict: the caller's output slices
	// gather: the shards gather their own rows of x before the pass
	// (runShard), instead of input0 gathering the whole batch.
	gather bool
}

type passKind uint8

const (
	passForward  passKind = iota // the Net
	passLoss                     // + loss
	passBackward                 // + loss and backward
	passPredict                  // + output activation, copied to the host
)

// shard is the per-shard state of a workspace.
type shard struct {
	lo, hi int // rows of the current batch
	net    Shard
	outs   []*kernels.Tensor // the task outputs of the last forward pass
	loss   *lossWS
	grads  []*kernels.Tensor // like Workspace.grads, for this shard
	xH     layers.Header     // the shard's rows of the input block output
	dxH    layers.Header     // ... and of its gradient
	rg     layers.RowGather  // the shard's gather of its rows (Workspace.gather)
	err    error             // the shard's gather error in the current pass
}

// NewWorkspace creates an inference workspace for batches of up to
// maxRows rows (the engine's batch size when maxRows < 1).
func (e *Engine) NewWorkspace(maxRows int) *Workspace {
	if maxRows < 1 {
		maxRows = e.spec.MaxBatch
	}
	return e.newWorkspace(maxRows, false)
}

func (e *Engine) newWorkspace(maxRows int, train bool) *Workspace {
	in := e.spec.Input
	ws := &Workspace{
		e:     e,
		train: train,
		feed:  newFeeder(&e.caps, in, maxRows, e.spec.FeatureMax, e.spec.Derived),
		input: in.NewWorkspace(maxRows, train),
		stats: Stats{TaskLoss: make([]float64, len(e.spec.Tasks))},
	}
	ws.runFn = ws.runShard
	ws.jobFn = ws.backwardJob
	n, capRows := 1, maxRows
	if e.caps.Sharder != nil {
		// Inference cuts at least as many shards as training for every
		// batch size, so no shard outgrows ShardCapacity.
		n, capRows = ShardCount(maxRows), ShardCapacity(maxRows)
		if !train {
			n = PredictShardCount(maxRows, e.dev.Threads())
		}
	}
	if train {
		ws.lossFeed = newLossFeed(e.spec.Tasks)
		ws.lossHost = make([]float32, len(e.spec.Tasks))
		ws.reg = e.dev.Alloc(kernels.Float32, 1)
		ws.regHost = make([]float32, 1)
	}
	nt, np := len(in.Tables), len(e.spec.Params)
	for range n {
		sh := &shard{net: e.spec.Net.NewShard(capRows, train)}
		if train {
			sh.loss = newLossWS(e.caps.Layers, ws.lossFeed, capRows)
			sh.grads = make([]*kernels.Tensor, nt, np)
			sh.grads = append(sh.grads, sh.net.Grads()...)
			if len(sh.grads) != np {
				panic("mtl: gradients do not match parameters")
			}
		}
		ws.shards = append(ws.shards, sh)
	}
	ws.grads = ws.shards[0].grads
	return ws
}

// Release frees the workspace.
func (ws *Workspace) Release() {
	if ws.lookup != nil {
		ws.lookup.stage.release()
	}
	ws.feed.release()
	ws.input.Release()
	for _, sh := range ws.shards {
		sh.net.Release()
		if sh.loss != nil {
			sh.loss.release()
		}
	}
	if ws.lossFeed != nil {
		ws.lossFeed.release()
	}
	ws.reg.Release()
}

// shardsFor is the number of shards of a batch of rows rows.
func (ws *Workspace) shardsFor(rows int) int {
	if ws.e.caps.Sharder == nil {
		return 1
	}
	c := ShardCount(rows)
	if !ws.train {
		c = PredictShardCount(rows, ws.e.dev.Threads())
	}
	return min(c, len(ws.shards))
}

// plan cuts a batch of rows rows into shards.
func (ws *Workspace) plan(rows int) {
	n := ws.shardsFor(rows)
	ws.nShards, ws.rows = n, rows
	for s := 0; s < n; s++ {
		sh := ws.shards[s]
		sh.lo, sh.hi = s*rows/n, (s+1)*rows/n
	}
}

// run runs pass on every shard of the current batch and waits. Its error
// is the input block's, when the shards gathered their rows (input0): that
// of the batch's first bad input, as Forward reports it.
func (ws *Workspace) run(pass passKind, mode layers.Mode) error {
	ws.pass, ws.mode = pass, mode
	if ws.nShards == 1 {
		ws.runShard(0)
	} else {
		ws.e.caps.Sharder.RunShards(ws.nShards, ws.runFn)
	}
	ws.x, ws.out = nil, nil
	if !ws.gather {
		return nil
	}
	ws.gather = false
	failed := false
	for _, sh := range ws.shards[:ws.nShards] {
		failed = failed || sh.err != nil
		sh.err = nil
	}
	if !failed {
		return nil
	}
	// A shard's error names its rows only: the serial gather of the whole
	// batch gives the error of a batch that is gathered at once, the same
	// whatever the cut (an error path: its cost does not matter).
	in := ws.e.spec.Input
	if _, err := in.Forward(ws.input, ws.input.Data()); err != nil {
		return err
	}
	return errors.New("mtl: the input block failed in a shard and not over the whole batch")
}

// runShard runs the current pass on shard s.
func (ws *Workspace) runShard(s int) {
	e := ws.e
	ldev := e.caps.Layers
	sh := ws.shards[s]
	rows, d := sh.hi-sh.lo, ws.x.Cols()
	if ws.gather {
		if sh.err = e.spec.Input.GatherRows(ws.input, &sh.rg, ldev, sh.lo, sh.hi); sh.err != nil {
			return
		}
	}
	x := sh.xH.View(ws.x, sh.lo*d, rows, d)
	mode := ws.mode
	if ws.nShards > 1 {
		// each shard draws its own dropout masks
		mode.Seed = layers.MixSeed(mode.Seed, uint64(s))
	}
	sh.outs = sh.net.Forward(x, mode)
	switch ws.pass {
	case passPredict:
		for t := range e.spec.Tasks {
			z := sh.outs[t]
			if e.spec.Tasks[t].Binary {
				ldev.Sigmoid(z, z)
			}
			ldev.CopyToHostF32(ws.out[t][sh.lo:sh.hi], z)
		}
	case passLoss, passBackward:
		total := ws.rows
		if ws.lossRows > 0 {
			total = ws.lossRows
		}
		sh.loss.compute(ldev, sh.net, sh.outs, sh.lo, sh.hi, total)
		if ws.pass == passBackward {
			sh.net.Backward(sh.dxH.View(ws.input.DY(), sh.lo*d, rows, d))
		}
	}
}

// input0 feeds b (with loss, the loss columns too: targets, weights,
// sample spaces), runs the input block on it and cuts the batch into
// shards; the caller then runs the shards.
func (ws *Workspace) input0(b *loader.Batch, loss bool) error {
	data, err := ws.feedBatch(b, loss)
	if r := ws.e.rows; r != nil {
		// Row-sharded tables: every rank joins the lookup, whether its
		// batch fed or not (dist_rows.go).
		data, err = r.lookup(ws, data, err)
	}
	if err != nil {
		return err
	}
	in := ws.e.spec.Input
	// With several shards each gathers its own rows at the start of the
	// pass (runShard): the shards' join is then the only one before the
	// loss, where gathering the batch first would cost one more.
	gather := ws.shardsFor(b.Rows) > 1
	var x *kernels.Tensor
	if gather {
		x, err = in.BeginForward(ws.input, data)
	} else {
		x, err = in.Forward(ws.input, data)
	}
	if err != nil {
		return BatchWrap(b, err)
	}
	ws.plan(b.Rows)
	ws.x, ws.gather = x, gather
	return nil
}

// feedBatch feeds b's columns (with loss, the loss columns too).
func (ws *Workspace) feedBatch(b *loader.Batch, loss bool) (*layers.InputData, error) {
	if b == nil || b.Rows <= 0 {
		return nil, errEmptyBatch
	}
	ws.feed.begin()
	if loss {
		if err := ws.lossFeed.feed(ws.feed, b); err != nil {
			return nil, err
		}
	}
	data, err := ws.feed.feed(b)
	if err != nil {
		return nil, err
	}
	if err := ws.feed.commit(b.Rows); err != nil {
		return nil, BatchWrap(b, err)
	}
	return data, nil
}

// Forward runs the model on b without the loss; with lossColumns (only on
// the training workspace, Engine.Train) it also reads the loss columns,
// which Target then returns. The task outputs are Output(s, t).
func (ws *Workspace) Forward(b *loader.Batch, mode layers.Mode, lossColumns bool) error {
	if err := ws.input0(b, lossColumns); err != nil {
		return err
	}
	if err := ws.run(passForward, mode); err != nil {
		return BatchWrap(b, err)
	}
	return nil
}

// LossPass runs forward and the loss (and with backward the gradients) on
// b; Stats then holds the loss.
func (ws *Workspace) LossPass(b *loader.Batch, mode layers.Mode, backward bool) error {
	if err := ws.input0(b, true); err != nil {
		return err
	}
	pass := passLoss
	if backward {
		pass = passBackward
	}
	if err := ws.run(pass, mode); err != nil {
		return BatchWrap(b, err)
	}
	ws.regLoss()
	if backward {
		ws.backward()
	}
	return ws.readLoss(b)
}

// readLoss reads the loss of the pass just queued into ws.stats and waits
// for the device work (the step's only host round trip on a GPU).
func (ws *Workspace) readLoss(b *loader.Batch) error {
	e := ws.e
	e.dev.CopyToHostF32(ws.regHost, ws.reg)
	total := float64(ws.regHost[0])
	ws.regValue = total
	clear(ws.stats.TaskLoss)
	for s := 0; s < ws.nShards; s++ {
		e.dev.CopyToHostF32(ws.lossHost, ws.shards[s].loss.scalars)
		for t := range ws.stats.TaskLoss {
			ws.stats.TaskLoss[t] += float64(ws.lossHost[t])
		}
	}
	for t := range ws.stats.TaskLoss {
		total += float64(ws.lossFeed.tasks[t].lambda) * ws.stats.TaskLoss[t]
	}
	ws.stats.Loss = total
	// Errors of the queued device work (faults, deferred id checks) are
	// reported here (a no-op on the CPU).
	if err := e.dev.Sync(); err != nil {
		return BatchWrap(b, err)
	}
	return nil
}

// backward finishes a backward pass after the shards: every job of the
// engine's plan, concurrently (backwardJob).
func (ws *Workspace) backward() {
	ws.e.spec.Input.BeginBackward(ws.input)
	ws.e.jobs.run(ws.jobFn)
}

// backwardJob finishes job j's gradients: a table's sparse gradient, or for
// a group of dense parameters the sum of the shards' gradients (into shard
// 0's, in shard order) plus the L2 term.
func (ws *Workspace) backwardJob(j int) {
	e := ws.e
	job := e.jobs.jobs[j]
	if job.table >= 0 {
		// A fused embedding update reads the output gradient itself
		// (updater.updateTable), except in a distributed job, which sums
		// the ranks' sparse gradients first.
		if e.caps.Fused == nil || e.dist != nil {
			e.spec.Input.BackwardTable(ws.input, job.table)
		}
		return
	}
	nt := len(e.spec.Input.Tables)
	for i := nt + job.lo; i < nt+job.hi; i++ {
		g := ws.grads[i]
		for s := 1; s < ws.nShards; s++ {
			e.dev.Axpy(1, ws.shards[s].grads[i], g)
		}
		if e.dist == nil {
			// distributed: added once, after the ranks' sum (addL2Grads)
			e.addL2Grad(i)
		}
	}
}

// addL2Grad adds the gradient of the L2 term of Spec.Params[i] (if any)
// to its gradient.
func (e *Engine) addL2Grad(i int) {
	if p := e.spec.Params[i]; p.L2 && e.spec.L2Reg > 0 {
		e.dev.Axpy(2*e.spec.L2Reg, p.Value, e.train.grads[i])
	}
}

// Predict writes the outputs for b: out[t][i] is the sigmoid probability
// (binary task) or the value (regression task) of task t for row i; out[t]
// needs room for b.Rows values. Only the input columns are read.
func (ws *Workspace) Predict(b *loader.Batch, out [][]float32) error {
	tasks := ws.e.spec.Tasks
	if len(out) != len(tasks) {
		return fmt.Errorf("mtl: Predict: %d output slices for %d tasks", len(out), len(tasks))
	}
	if b != nil {
		for t, o := range out {
			if len(o) < b.Rows {
				return fmt.Errorf("mtl: Predict: output for task %q has room for %d rows, the batch has %d", tasks[t].Name, len(o), b.Rows)
			}
		}
	}
	if err := ws.input0(b, false); err != nil {
		return err
	}
	ws.out = out
	if err := ws.run(passPredict, layers.Mode{}); err != nil {
		return BatchWrap(b, err)
	}
	if err := ws.e.dev.Sync(); err != nil {
		return BatchWrap(b, err)
	}
	return nil
}

// Stats is the loss of the last LossPass (or training step).
func (ws *Workspace) Stats() Stats { return ws.stats }

// Rows is the size of the last batch (0 before the first).
func (ws *Workspace) Rows() int { return ws.rows }

// Shards is the number of shards the last batch was cut into.
func (ws *Workspace) Shards() int { return ws.nShards }

// ShardRows are the rows [lo, hi) of the last batch that shard s ran.
func (ws *Workspace) ShardRows(s int) (lo, hi int) { return ws.shards[s].lo, ws.shards[s].hi }

// Net is shard s's state of the model's Net.
func (ws *Workspace) Net(s int) Shard { return ws.shards[s].net }

// Output is task t's output [rows, 1] of shard s in the last forward pass
// (logits of binary tasks; after Predict, probabilities).
func (ws *Workspace) Output(s, t int) *kernels.Tensor { return ws.shards[s].outs[t] }

// ShardLoss is shard s's share of each task loss [T] of the last loss pass.
func (ws *Workspace) ShardLoss(s int) *kernels.Tensor { return ws.shards[s].loss.scalars }

// Target returns task t's label column and sample-space column (nil when
// the task has none) of the last batch read with its loss columns (the
// training workspace only).
func (ws *Workspace) Target(t int) (y, space *kernels.Tensor) {
	tl := ws.lossFeed.tasks[t]
	if tl.space != nil {
		space = tl.spaceT
	}
	return tl.yT, space
}

// Grad is the gradient of Spec.Params[i] after a backward pass (nil for an
// embedding table: see Input).
func (ws *Workspace) Grad(i int) *kernels.Tensor { return ws.grads[i] }

// Input is the workspace of the input block (the tables' sparse
// gradients, the block's output).
func (ws *Workspace) Input() *layers.InputWS { return ws.input }
