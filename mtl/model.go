package mtl

import (
	"errors"
	"fmt"
	"math"
	"slices"

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
	cfg    Config
	schema *schema.Schema
	dev    kernels.Device
	// ldev is the device the body and towers run on: dev's ShardDevice
	// when dev is a kernels.Sharder (each shard of a batch runs serially
	// in its own goroutine), else dev.
	ldev     kernels.Device
	sharder  kernels.Sharder // nil: batches are not sharded
	maxBatch int
	tasks    []Task
	featMax  map[string]int64
	wide     *wideInputs // the derived inputs of deepfm and wide_n_deep (nil for other models)

	input  *layers.InputBlock
	body   body
	towers []*layers.Tower
	params []layers.Param
	act    kernels.Activation

	opt  *optimizer
	ws   *workspace
	step int
	// biasSet: the output biases were set by InitOutputBias or
	// SetOutputBias (Config.InitOutputBias then leaves them alone).
	biasSet bool
	// jobs split the work after a batch's shards (finishing the gradients,
	// then the optimizer update) into independent pieces: one per
	// embedding table, largest first, then groups of dense parameters.
	jobs []updateJob
	// graphs captures the training step (Config.CUDAGraph; nil: eager).
	graphs *stepGraphs
}

// updateJob is one embedding table (table >= 0) or the dense parameters
// [lo, hi) in dense order (the order of Model.params without the tables).
type updateJob struct {
	table  int
	lo, hi int
}

// denseJobs is the number of groups the dense parameters are split into.
const denseJobs = 4

// planJobs fills m.jobs.
func (m *Model) planJobs() {
	m.jobs = m.jobs[:0]
	nt := len(m.input.Tables)
	order := make([]int, nt)
	for i := range order {
		order[i] = i
	}
	size := func(t int) int { return m.input.Tables[t].Rows * m.input.Tables[t].Dim }
	slices.SortStableFunc(order, func(a, b int) int { return size(b) - size(a) })
	for _, t := range order {
		m.jobs = append(m.jobs, updateJob{table: t})
	}
	dense := m.params[nt:]
	total := 0
	for _, p := range dense {
		total += p.Value.Len()
	}
	lo, acc := 0, 0
	for i, p := range dense {
		acc += p.Value.Len()
		if g := len(m.jobs) - nt; acc*denseJobs >= (g+1)*total || i == len(dense)-1 {
			m.jobs = append(m.jobs, updateJob{table: -1, lo: lo, hi: i + 1})
			lo = i + 1
		}
	}
}

// runJobs calls f for every job, concurrently on a Sharder.
func (m *Model) runJobs(f func(int)) {
	if m.sharder != nil {
		m.sharder.RunShards(len(m.jobs), f)
		return
	}
	for j := range m.jobs {
		f(j)
	}
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
	if err := checkAllocatable(s, cfg, dev, maxBatch); err != nil {
		return nil, err
	}
	cfg.Tasks = taskTargets(tasks)
	m := &Model{cfg: cfg, schema: s, dev: dev, ldev: dev, maxBatch: maxBatch, tasks: tasks, featMax: map[string]int64{}}
	if c, ok := dev.(kernels.AsyncIDChecker); ok {
		c.SetImmediateIDCheck(false)
	}
	if sh, ok := dev.(kernels.Sharder); ok {
		m.sharder, m.ldev = sh, sh.ShardDevice()
	}
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
	m.planJobs()
	m.ws = m.newWorkspace(maxBatch, true)
	m.opt = newOptimizer(m)
	if err := m.SetCUDAGraph(cfg.CUDAGraph); err != nil {
		m.Release()
		return nil, err
	}
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
	opt := layers.InputOptions{
		DimMultiplier: cfg.EmbeddingDimMultiplier, Dims: cloneMap(cfg.EmbeddingDims),
		Combiner: comb, BatchL2: cfg.EmbeddingL2Reg,
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
	ws := m.ws
	if ws.rows == 0 {
		return out
	}
	var h []float32
	for s := 0; s < ws.nShards; s++ {
		for _, g := range ws.shards[s].body.gates() {
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
			mean[j] /= float64(ws.rows)
		}
	}
	return out
}

// Release frees every tensor of the model. Predictors created from it must
// not be used afterwards.
func (m *Model) Release() {
	m.graphs.release() // before the tensors the graphs use
	m.graphs = nil
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

// Batches are cut into shards of about shardRows rows (at most maxShards
// shards), which run concurrently on a kernels.Sharder device, each through
// the body, the towers and the loss on its own workspace; the input block
// runs once over the whole batch before, and its backward pass once after.
// The cut depends only on the batch size, so results do not depend on the
// number of threads. Inference workspaces may cut small batches finer
// (predictShardCount).
const (
	shardRows = 256
	maxShards = 16
)

// shardCount is the number of shards of a batch of rows rows.
func shardCount(rows int) int {
	return min(max((rows+shardRows-1)/shardRows, 1), maxShards)
}

// predictShardMin is the fewest rows worth a shard of their own in an
// inference pass: below it, handing rows to another thread costs more than
// it saves.
const predictShardMin = 32

// predictShardCount is the number of shards of an inference batch of rows
// rows on a device with threads threads: the training cut, or one shard per
// thread when the batch is too small for that (a serving request of a few
// hundred candidates), so that a request's latency falls with the threads.
// In inference every row is computed on its own, with no sum across rows
// and no dropout, so the cut changes no result
// (TestPredictThreadIndependent).
func predictShardCount(rows, threads int) int {
	return max(shardCount(rows), min(threads, (rows+predictShardMin-1)/predictShardMin))
}

// shardCapacity is the most rows a shard of a batch of at most maxRows rows
// can hold.
func shardCapacity(maxRows int) int {
	return min(maxRows, max(shardRows, (maxRows+maxShards-1)/maxShards))
}

// workspace is everything one caller writes during a pass.
type workspace struct {
	m        *Model
	train    bool
	feed     *feeder
	lossFeed *lossFeed // training workspaces only
	input    *layers.InputWS
	shards   []*shard
	nShards  int // shards of the current batch
	rows     int
	stats    StepStats
	lossHost []float32
	reg      *kernels.Tensor // [1] regularisation loss (training workspaces)
	regHost  []float32

	// Shard 0's body and towers, for the callers (and tests) that look at
	// a single-shard batch.
	body   bodyWS
	towers []*layers.TowerWS
	// grads[i] is the gradient of Model.params[i] (nil for embedding
	// tables, whose gradients are the input workspace's sparse gradients):
	// shard 0's buffers, which hold the sum over the shards after backward.
	grads []*kernels.Tensor

	// The pass the shards run (set before RunShards).
	runFn    func(int)
	jobFn    func(int) // backwardJob
	pass     passKind
	mode     layers.Mode
	x        *kernels.Tensor // input block output of the batch
	out      [][]float32     // predict: the caller's output slices
	shardErr []error
}

type passKind uint8

const (
	passForward  passKind = iota // body and towers
	passLoss                     // + loss
	passBackward                 // + loss and backward
	passPredict                  // + output activation, copied to the host
)

// shard is the per-shard state of a workspace.
type shard struct {
	lo, hi int // rows of the current batch
	body   bodyWS
	towers []*layers.TowerWS
	loss   *lossWS
	grads  []*kernels.Tensor // like workspace.grads, for this shard
	xH     layers.Header     // the shard's rows of the input block output
	dxH    layers.Header     // ... and of its gradient
}

func (m *Model) newWorkspace(maxRows int, train bool) *workspace {
	ws := &workspace{
		m:     m,
		train: train,
		feed:  newFeeder(m.dev, m.input, maxRows, m.featMax, m.wide),
		input: m.input.NewWorkspace(maxRows, train),
		stats: StepStats{TaskLoss: make([]float64, len(m.tasks))},
	}
	ws.runFn = ws.runShard
	ws.jobFn = ws.backwardJob
	n, capRows := 1, maxRows
	if m.sharder != nil {
		// Inference cuts at least as many shards as training for every
		// batch size, so no shard outgrows shardCapacity.
		n, capRows = shardCount(maxRows), shardCapacity(maxRows)
		if !train {
			n = predictShardCount(maxRows, m.dev.Threads())
		}
	}
	if train {
		ws.lossFeed = newLossFeed(m)
		ws.lossHost = make([]float32, len(m.tasks))
		ws.reg = m.dev.Alloc(kernels.Float32, 1)
		ws.regHost = make([]float32, 1)
	}
	ws.shardErr = make([]error, n)
	for range n {
		sh := &shard{body: m.body.newWS(capRows, train)}
		for _, t := range m.towers {
			sh.towers = append(sh.towers, t.NewWorkspace(capRows, train))
		}
		if train {
			sh.loss = newLossWS(m, m.ldev, ws.lossFeed, capRows)
			sh.grads = make([]*kernels.Tensor, len(m.input.Tables), len(m.params))
			sh.grads = append(sh.grads, sh.body.grads()...)
			for _, t := range sh.towers {
				sh.grads = append(sh.grads, t.Grads()...)
			}
			if len(sh.grads) != len(m.params) {
				panic("mtl: gradients do not match parameters")
			}
		}
		ws.shards = append(ws.shards, sh)
	}
	ws.body, ws.towers, ws.grads = ws.shards[0].body, ws.shards[0].towers, ws.shards[0].grads
	return ws
}

func (ws *workspace) release() {
	ws.feed.release()
	ws.input.Release()
	for _, sh := range ws.shards {
		sh.body.release()
		for _, t := range sh.towers {
			t.Release()
		}
		if sh.loss != nil {
			sh.loss.release()
		}
	}
	if ws.lossFeed != nil {
		ws.lossFeed.release()
	}
	ws.reg.Release()
}

// plan cuts a batch of rows rows into shards.
func (ws *workspace) plan(rows int) {
	n := 1
	if ws.m.sharder != nil {
		c := shardCount(rows)
		if !ws.train {
			c = predictShardCount(rows, ws.m.dev.Threads())
		}
		n = min(c, len(ws.shards))
	}
	ws.nShards, ws.rows = n, rows
	for s := 0; s < n; s++ {
		sh := ws.shards[s]
		sh.lo, sh.hi = s*rows/n, (s+1)*rows/n
	}
}

// run runs pass on every shard of the current batch and waits.
func (ws *workspace) run(pass passKind, mode layers.Mode) {
	ws.pass, ws.mode = pass, mode
	if ws.nShards == 1 {
		ws.runShard(0)
	} else {
		ws.m.sharder.RunShards(ws.nShards, ws.runFn)
	}
	ws.x, ws.out = nil, nil
}

// runShard runs the current pass on shard s.
func (ws *workspace) runShard(s int) {
	m := ws.m
	sh := ws.shards[s]
	rows, d := sh.hi-sh.lo, ws.x.Cols()
	x := sh.xH.View(ws.x, sh.lo*d, rows, d)
	mode := ws.mode
	if ws.nShards > 1 {
		// each shard draws its own dropout masks
		mode.Seed = layers.MixSeed(mode.Seed, uint64(s))
	}
	reps := sh.body.forward(x, mode)
	for t, tw := range m.towers {
		tw.Forward(sh.towers[t], reps[t], mode)
	}
	switch ws.pass {
	case passPredict:
		for t, task := range m.tasks {
			z := sh.towers[t].Y()
			if task.Kind == Binary {
				m.ldev.Sigmoid(z, z)
			}
			m.ldev.CopyToHostF32(ws.out[t][sh.lo:sh.hi], z)
		}
	case passLoss, passBackward:
		sh.loss.compute(m.ldev, sh.towers, sh.lo, sh.hi, ws.rows)
		if ws.pass == passBackward {
			for t, tw := range m.towers {
				dr, acc := sh.body.repGrad(t)
				tw.Backward(sh.towers[t], dr, acc)
			}
			sh.body.backward(sh.dxH.View(ws.input.DY(), sh.lo*d, rows, d))
		}
	}
}

// input0 feeds b (with loss, the loss columns too: targets, weights,
// sample spaces), runs the input block on it and cuts the batch into
// shards; the caller then runs the shards.
func (ws *workspace) input0(b *loader.Batch, loss bool) error {
	ws.feed.begin()
	if loss {
		if err := ws.lossFeed.feed(ws.feed, b); err != nil {
			return err
		}
	}
	data, err := ws.feed.feed(b)
	if err != nil {
		return err
	}
	if err := ws.feed.commit(b.Rows); err != nil {
		return batchWrap(b, err)
	}
	x, err := ws.m.input.Forward(ws.input, data)
	if err != nil {
		return batchWrap(b, err)
	}
	ws.plan(b.Rows)
	ws.x = x
	return nil
}

// forward runs the model on b; with a single shard (small batches, or a
// device that does not shard) the task outputs are ws.towers[t].Y().
func (ws *workspace) forward(b *loader.Batch, mode layers.Mode) error {
	if err := ws.input0(b, false); err != nil {
		return err
	}
	ws.run(passForward, mode)
	return nil
}

// lossPass runs forward and the loss (and with backward the gradients) on b.
func (ws *workspace) lossPass(b *loader.Batch, mode layers.Mode, backward bool) error {
	if err := ws.input0(b, true); err != nil {
		return err
	}
	pass := passLoss
	if backward {
		pass = passBackward
	}
	ws.run(pass, mode)
	regLoss(ws, ws.reg)
	if backward {
		ws.backward()
	}
	return ws.readLoss(b)
}

// readLoss reads the loss of the pass just queued into ws.stats and waits
// for the device work (the step's only host round trip on a GPU).
func (ws *workspace) readLoss(b *loader.Batch) error {
	m := ws.m
	m.dev.CopyToHostF32(ws.regHost, ws.reg)
	total := float64(ws.regHost[0])
	clear(ws.stats.TaskLoss)
	for s := 0; s < ws.nShards; s++ {
		m.dev.CopyToHostF32(ws.lossHost, ws.shards[s].loss.scalars)
		for t := range m.tasks {
			ws.stats.TaskLoss[t] += float64(ws.lossHost[t])
		}
	}
	for t := range m.tasks {
		total += float64(ws.lossFeed.tasks[t].lambda) * ws.stats.TaskLoss[t]
	}
	ws.stats.Loss = total
	// Errors of the queued device work (faults, deferred id checks) are
	// reported here (a no-op on the CPU).
	if err := m.dev.Sync(); err != nil {
		return batchWrap(b, err)
	}
	return nil
}

// backward finishes a backward pass after the shards: every job of
// m.jobs, concurrently (backwardJob).
func (ws *workspace) backward() {
	ws.m.input.BeginBackward(ws.input)
	ws.m.runJobs(ws.jobFn)
}

// backwardJob finishes job j's gradients: a table's sparse gradient, or for
// a group of dense parameters the sum of the shards' gradients (into shard
// 0's, in shard order) plus the L2 term.
func (ws *workspace) backwardJob(j int) {
	m := ws.m
	job := m.jobs[j]
	if job.table >= 0 {
		// A fused embedding update reads the output gradient itself
		// (optimizer.updateTable).
		if m.opt.fused == nil {
			m.input.BackwardTable(ws.input, job.table)
		}
		return
	}
	nt := len(m.input.Tables)
	for i := nt + job.lo; i < nt+job.hi; i++ {
		g := ws.grads[i]
		for s := 1; s < ws.nShards; s++ {
			m.dev.Axpy(1, ws.shards[s].grads[i], g)
		}
		if p := m.params[i]; p.L2 && m.cfg.L2Reg > 0 {
			m.dev.Axpy(2*m.cfg.L2Reg, p.Value, g)
		}
	}
}

// dropoutSeed is the per-step seed: a function of (Seed, step) only.
func (m *Model) dropoutSeed() uint64 {
	return layers.MixSeed(uint64(m.cfg.Seed), uint64(m.step))
}

// TrainStep runs forward, backward and one optimizer update on b and
// returns the batch's loss (computed before the update). When a task loss
// or the total is NaN or infinite it returns a *NonFiniteLossError before
// the update: parameters, optimizer state and the step counter are left
// as they were. With Config.InitOutputBias the first step (step 0) first
// sets the output biases from b (InitOutputBias). With Config.CUDAGraph a
// batch no larger than an earlier eager one runs as captured CUDA graphs
// (graph.go), with bit-identical results.
func (m *Model) TrainStep(b *loader.Batch) (StepStats, error) {
	var oldBias []float32 // the biases before InitOutputBias, restored if the step fails
	if m.cfg.InitOutputBias && m.step == 0 && !m.biasSet {
		var err error
		if oldBias, err = m.initOutputBias(b); err != nil {
			return StepStats{}, err
		}
	}
	if g := m.graphs; g != nil && b.Rows <= g.warmRows && !g.off {
		// the scratch buffers have their size: a captured step
		return m.graphStep(b)
	}
	err := m.ws.lossPass(b, layers.Mode{Train: true, Seed: m.dropoutSeed()}, true)
	if err == nil {
		err = m.checkFinite(&m.ws.stats, b)
	}
	if err != nil {
		if oldBias != nil {
			m.restoreOutputBias(oldBias)
		}
		return StepStats{}, err
	}
	m.opt.apply(m.step, m.ws)
	m.step++
	if m.graphs != nil && b.Rows > m.graphs.warmRows {
		m.graphs.warmRows = b.Rows // the device's scratch buffers have their size
	}
	return m.ws.stats, nil
}

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

// checkFinite returns a *NonFiniteLossError when st has a loss that is NaN
// or infinite.
func (m *Model) checkFinite(st *StepStats, b *loader.Batch) error {
	if !math.IsNaN(st.Loss) && !math.IsInf(st.Loss, 0) {
		return nil
	}
	e := &NonFiniteLossError{Step: m.step, Value: st.Loss, Source: b.Source}
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
	if err := ws.input0(b, false); err != nil {
		return err
	}
	ws.out = out
	ws.run(passPredict, layers.Mode{})
	if err := m.dev.Sync(); err != nil {
		return batchWrap(b, err)
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
