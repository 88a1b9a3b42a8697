package kernels

// Optional device capabilities beyond the Device interface, all in this
// one file. It has no build tag and no CUDA dependency, so that layers and
// the trainer can test for a capability with a type assertion in every
// build and fall back to the plain Device ops (capabilities_ops.go holds
// the entry points that do that for them).
//
//	capability            CPU  CUDA  what it saves
//	Activator             yes  yes   activations beyond Linear/ReLU (SiLU, ...)
//	Sharder               yes  no    per-shard goroutines instead of per-op threads
//	FusedGemm             yes  yes   the bias/activation pass after a Dense GEMM
//	FusedBiasGrad         yes  no    the activation-backward pass before BiasGrad
//	FusedDataGrad         yes  no    the same pass, folded into the data-gradient GEMM
//	GemmSummer            yes  no    a chain of GEMMs into one shared input's gradient
//	GemmBiasActer         no   yes   the same on transposed operands
//	FusedEmbeddingUpdater no   yes   the embedding gradient's host round trip
//	AsyncIDChecker        no   yes   a host round trip per embedding gather
//	GraphCapturer, Graph  no   yes   launch overhead, by replaying a step
//	StepParams(Ops)       no   yes   host reads of step-dependent scalars
//	FusedGater            no   yes   the softmax/combine passes of a gate
//	MultiTaskLosser       no   yes   one launch per task for the losses
//	MetricAccumulator,
//	MetricReducer         no   yes   host copies of predictions for metrics
//	BatchStager,
//	AsyncUploader         no   yes   synchronous host-to-device batch copies
//	PinnedStager, Pinned  no   yes   a host round trip per tensor moved to the host

// Activator is implemented by devices that compute the activations for
// which NeedsActivator is true. A layer with such an activation runs its
// bias add as Linear, keeps the pre-activation x, and calls Activate after
// it and ActivateBackward before the bias gradient.
type Activator interface {
	// Activate writes y = act(x) element-wise (y may alias x).
	Activate(y, x *Tensor, act Activation)
	// ActivateBackward multiplies dy, in place, by act'(x) at the
	// pre-activation x.
	ActivateBackward(dy, x *Tensor, act Activation)
}

// Sharder is implemented by devices on which a batch is best processed as
// shards that run concurrently, each shard's ops running serially in one
// goroutine: on the CPU, a few large independent pieces of work beat
// splitting every small op across threads and joining after each. A caller
// that shards builds its layers on ShardDevice and runs the shards with
// RunShards; callers that do not shard lose nothing.
type Sharder interface {
	// ShardDevice returns a device with the same numerics whose ops all run
	// in the calling goroutine. Tensors of the two devices are
	// interchangeable.
	ShardDevice() Device
	// RunShards calls f(0), ..., f(n-1) on up to Threads() goroutines and
	// returns when all calls have returned. Which goroutine runs which
	// shard is unspecified; low indices start first. It never allocates: f
	// should be a function value made once, not a new closure per call.
	RunShards(n int, f func(shard int))
}

// FusedGemm is implemented by devices that fuse the bias add and activation
// of a Dense layer into its GEMM, saving a pass over the output. Each method
// gives the same result as the unfused pair of ops.
type FusedGemm interface {
	// GemmBiasAct is Gemm(false, false, 1, x, w, 0, y) followed by
	// BiasAct(y, bias, 1, act); bias may be nil (no bias).
	GemmBiasAct(x, w, bias *Tensor, act Activation, y *Tensor)
	// GemmStridedBatchedBiasAct is GemmStridedBatched(false, false, m, n,
	// k, 1, a, strideA, b, strideB, 0, c, m*n, batch) followed by
	// BiasAct(c, bias, batch, act) with bias [batch, n] (nil: no bias).
	GemmStridedBatchedBiasAct(m, n, k int, a *Tensor, strideA int, b *Tensor, strideB int,
		bias *Tensor, act Activation, c *Tensor, batch int)
}

// FusedBiasGrad is implemented by devices that fuse the activation's
// backward pass with the bias gradient, saving a pass over dy.
type FusedBiasGrad interface {
	// ActBiasGrad is ActBackward(dy, y, act) followed by
	// BiasGrad(dy, db, groups, accumulate), with the same results.
	ActBiasGrad(dy, y *Tensor, act Activation, db *Tensor, groups int, accumulate bool)
}

// FusedDataGrad is implemented by devices that fold the activation
// backward and the bias gradient of a layer into the GEMM producing that
// layer's output gradient (the data gradient of the layer above it), which
// saves the pass over the gradient that ActBiasGrad makes.
type FusedDataGrad interface {
	// GemmActBiasGrad writes dx = dy * w^T, then does what
	// ActBiasGrad(dx, y, act, db, 1, false) does, with the same results
	// (bit for bit). act is Linear or ReLU.
	GemmActBiasGrad(dy, w, y *Tensor, act Activation, dx, db *Tensor)
}

// GemmSummer is implemented by devices that compute the gradient of an
// input read by several layers, sum_s dy_s * w_s^T, as one GEMM over the
// concatenated depths instead of a chain of GEMMs each adding its rounded
// partial product into dx. Callers use GemmSum, which chains the GEMMs on
// other devices.
type GemmSummer interface {
	// GemmSum writes dx = sum over s of dys[s] * ws[s]^T, or adds the sum
	// to dx when accumulate is set, with dys[s] [m, k_s] and ws[s] [n, k_s]
	// (a Dense layer's output gradient and its kernel [in, out]). Each
	// element is one sum over the terms in order, each term's k in
	// increasing order, from zero, then + dx when accumulating: bit for
	// bit the GEMM of [dys[0] | dys[1] | ...] and [ws[0] | ws[1] | ...]^T.
	// A row of dx depends only on that row of the dys.
	GemmSum(dys, ws []*Tensor, accumulate bool, dx *Tensor)
}

// EmbeddingSource is one feature's gradient for an embedding table:
// columns [Col, Col+dim) of Dout, looked up with IDs, either one id per row
// (Offsets nil) or lists given by Offsets and combined with Comb. Features
// sharing a table pass one source each to the same update.
type EmbeddingSource struct {
	Dout    *Tensor
	Col     int
	IDs     *Tensor
	Offsets *Tensor
	Comb    Combiner
}

// FusedEmbeddingUpdater is implemented by devices that fuse
// EmbeddingBackward with the sparse optimizer step: the gradient of every
// source is accumulated per unique row and the row of the table and its
// optimizer state is updated in the same kernel, with no host round trip.
// The result equals EmbeddingBackward over all sources (summed) followed by
// SparseAdam / SparseAdagrad / SparseSGD.
type FusedEmbeddingUpdater interface {
	EmbeddingUpdateAdam(table, m, v *Tensor, srcs []EmbeddingSource, p AdamParams)
	EmbeddingUpdateAdagrad(table, acc *Tensor, srcs []EmbeddingSource, p AdagradParams)
	EmbeddingUpdateSGD(table *Tensor, srcs []EmbeddingSource, p SGDParams)
}

// GemmBiasActer is implemented by devices with a fused GEMM + bias +
// activation on transposed operands: c = act(op(a)*op(b) + bias), bias [n]
// broadcast over rows (nil: no bias). (FusedGemm, which the layers use, is
// the untransposed form.)
type GemmBiasActer interface {
	GemmBiasActT(transA, transB bool, a, b, bias, c *Tensor, act Activation)
}

// AsyncIDChecker is implemented by devices that can leave EmbeddingGather's
// id check to Sync, which saves a host round trip per gather: with
// SetImmediateIDCheck(false), EmbeddingGather returns nil and the
// *IDRangeError of the first failing gather comes from the next Sync.
type AsyncIDChecker interface {
	SetImmediateIDCheck(on bool)
}

// Graph is a captured sequence of device ops that can be replayed.
type Graph interface {
	Launch() error
	Release()
}

// GraphCapturer is implemented by devices that can capture the ops queued
// between BeginCapture and EndCapture as a Graph (one launch per training
// step instead of one per op).
//
// A replayed graph repeats the arguments it was captured with, while a
// training step's learning rate, Adam step (bias correction) and dropout
// seed change every step: a captured step therefore uses the StepParamOps
// variants of those ops, which read the scalars from a StepParams block
// that is uploaded before each Launch.
type GraphCapturer interface {
	BeginCapture() error
	EndCapture() (Graph, error)
}

// StepParams is a small device block with the scalars that change every
// training step: the learning rate (Adagrad, SGD), the Adam step size
// AdamStepSize(p) (learning rate and bias correction) and the dropout step
// seed. The StepParamOps variants read them when they run, not when they
// are queued, so a captured graph sees the values of the latest Upload.
type StepParams interface {
	// Upload queues the copy of the values (through pinned host memory) on
	// the compute stream, so it is ordered after the work queued before
	// and before the work (a graph Launch) queued after. adam's LR and
	// Step give the Adam step size (AdamStepSize, computed on the host
	// exactly as the eager ops do); lr is the Adagrad/SGD learning rate.
	// Not allowed while capturing.
	Upload(lr float32, adam AdamParams, seed uint64) error
	Release()
}

// StepParamOps is implemented by devices whose optimizer, fused embedding
// update and dropout ops have variants that read their per-step scalars
// from a StepParams block (for CUDA-graph capture of a training step).
// Each variant equals its eager counterpart bit for bit given the same
// values: the lr, Step and seed arguments of the eager op are replaced by
// the block's values, the other arguments are used as given.
type StepParamOps interface {
	NewStepParams() (StepParams, error)
	// AdamMultiSP is AdamMulti with the step size from sp (p.LR and
	// p.Step are ignored).
	AdamMultiSP(params, grads, ms, vs []*Tensor, p AdamParams, sp StepParams)
	// AdagradSP and SGDSP take the learning rate from sp (p.LR ignored).
	AdagradSP(param, grad, acc *Tensor, p AdagradParams, sp StepParams)
	SGDSP(param, grad *Tensor, p SGDParams, sp StepParams)
	// EmbeddingUpdate*SP are the FusedEmbeddingUpdater ops with the step
	// size or learning rate from sp.
	EmbeddingUpdateAdamSP(table, m, v *Tensor, srcs []EmbeddingSource, p AdamParams, sp StepParams)
	EmbeddingUpdateAdagradSP(table, acc *Tensor, srcs []EmbeddingSource, p AdagradParams, sp StepParams)
	EmbeddingUpdateSGDSP(table *Tensor, srcs []EmbeddingSource, p SGDParams, sp StepParams)
	// DropoutSP is Dropout with seed MixSeed(step seed, site, layer) (the
	// mixing of layers.MixSeed) derived on the device.
	DropoutSP(x, mask *Tensor, rate float32, sp StepParams, site, layer uint64)
}

// FusedGater is implemented by devices with a fused gate: the softmax of
// the gate logits and the weighted sum of the experts in one kernel, and
// the backward of both in one kernel (the gate-weight gradient dw never
// leaves the chip). Callers that do not care whether the device fuses use
// GateForward and GateBackward.
type FusedGater interface {
	// GateForward computes w = softmax(logits / temperature) ([B, E]) and
	// out[b,:] = sum_e w[b,e] * experts[e][b,:]: SoftmaxRows followed by
	// GateCombine.
	GateForward(out, w, logits *Tensor, experts []*Tensor, temperature float32)
	// GateBackward writes the logits' gradient dlogits ([B, E],
	// overwritten) and adds w[b,e] * dout[b,:] to dexperts[e], given the
	// gradient dout of out and the w and experts of the forward pass:
	// GateCombineBackward followed by SoftmaxBackward.
	GateBackward(dlogits, dout, w *Tensor, experts, dexperts []*Tensor, temperature float32)
}

// GatesBackwarder is implemented by devices that run the combine backward
// of several gates mixing the same experts (MMoE's task gates) in one pass,
// all gates over a block of rows before the next block, so that each
// expert's output and gradient are read and written once per block instead
// of once per gate. Callers that do not care whether the device has it use
// GatesCombineBackward.
type GatesBackwarder interface {
	// GatesCombineBackward writes dws[g] as GateCombineBackward(douts[g],
	// ws[g], experts, dws[g], ...) does, for every gate g, and writes
	// (not adds) dexperts[e][b,:] = 0 + sum over g, in order, of
	// ws[g][b,e] * douts[g][b,:]: bit for bit the result of zeroing
	// dexperts and running GateCombineBackward gate after gate.
	GatesCombineBackward(douts, ws, dws, experts, dexperts []*Tensor)
}

// GateSetsBackwarder is GatesBackwarder for gates that each mix their own
// list of experts out of one set (CGC's and PLE's gates: a task gate its
// task's experts and the shared ones, the shared gate all of them).
type GateSetsBackwarder interface {
	// GateSetsCombineBackward writes dws[g] as GateCombineBackward(douts[g],
	// ws[g], experts[g], dws[g], dexperts[g]) does, for every gate g, and
	// writes (not adds) every expert gradient listed in dexperts: 0 + the
	// sum over the gates that list it, in gate order, of the gate's
	// weight times its dout; bit for bit the result of zeroing them and
	// running GateCombineBackward gate after gate. An expert listed by
	// several gates is the same *Tensor in each list; distinct entries do
	// not overlap.
	GateSetsCombineBackward(douts, ws, dws []*Tensor, experts, dexperts [][]*Tensor)
}

// LossKind is the loss of one task of a multi-task loss.
type LossKind uint8

const (
	LossBCE LossKind = iota // binary cross-entropy from the logit
	LossMSE                 // squared error
)

// LossTask is one task of a multi-task loss. Z, DZ and Y hold one value per
// row (any shape with that many elements). The sample weight of row i is
// w_i = [1 + (PosWeight-1)*y_i] * Weight[i] * [Space[i] == 1], each factor
// present only when set (PosWeight != 1, Weight or Space not nil): the
// positive-class weight, a weight column and a sample-space mask. Both
// float fields are taken as they are, so set them (1 is neutral): a zero
// Lambda gives a zero gradient, a zero PosWeight ignores positive rows.
type LossTask struct {
	Kind      LossKind
	Z, DZ, Y  *Tensor
	Weight    *Tensor // nil: 1
	Space     *Tensor // nil: every row
	PosWeight float32 // positive-class weight; 1: none
	Lambda    float32 // the task's loss weight (1: neutral)
}

// MultiTaskLosser is implemented by devices that compute the loss and the
// output gradient of every task in one launch. For each task t, with l_ti
// the BCE-with-logits or squared error of row i:
//
//	DZ_t[i]       = Lambda_t * scale * w_ti * dl_ti/dz
//	taskLoss[t]  += scale * sum_i w_ti * l_ti        (before Lambda_t)
//	total[0]     += sum_t Lambda_t * scale * sum_i w_ti * l_ti
//
// taskLoss ([len(tasks)]) and total ([1]) may each be nil. Every task has
// the same number of rows. Callers that do not care whether the device
// fuses use MultiTaskLoss.
type MultiTaskLosser interface {
	MultiTaskLoss(taskLoss, total *Tensor, tasks []LossTask, scale float32)
}

// MetricTask is one task's input to a metric reduction: Pred holds
// probabilities (Binary) or predicted values, Label the targets, Mask
// (optional) selects the rows where Mask[i] == 1 (a sample-space column as
// it is). All three have one value per row.
type MetricTask struct {
	Binary            bool
	Pred, Label, Mask *Tensor
}

// MetricSums are the sums a MetricAccumulator collects for one task. A row
// counts when it is inside the mask. For a binary task a label other than 0
// or 1 adds only to BadLabels; a NaN prediction adds only to Count,
// Positives, LabelSum and NaN. LogLoss sums -log(p) (label 1) or
// -log(1-p) with p clipped to [eps, 1-eps]; a prediction is positive when
// p > threshold. For a regression task SqErr and AbsErr sum (p-y)^2 and
// |p-y| in float64. Counts are exact below 2^53.
type MetricSums struct {
	Count, Positives, LabelSum float64
	LogLoss                    float64
	TP, FP, TN, FN             float64
	SqErr, AbsErr              float64
	NaN, BadLabels             float64
}

// MetricAccumulator sums metrics of a fixed list of tasks over the batches
// of an evaluation pass. Add queues work only (no host round trip on a
// GPU); Sums waits and reads the totals.
type MetricAccumulator interface {
	// Add adds one batch; tasks has the accumulator's number of tasks, in
	// the same order on every call, and every task the same rows.
	Add(tasks []MetricTask)
	// Sums returns the totals of every task since the last Reset, and the
	// first error of the device work since then.
	Sums() ([]MetricSums, error)
	// Reset sets the totals to zero.
	Reset()
	// Release frees the accumulator's memory.
	Release()
}

// MetricReducer is implemented by devices that reduce metrics on the device
// (NewMetricAccumulator falls back to host sums for the others).
type MetricReducer interface {
	// NewMetricAccumulator creates an accumulator for tasks tasks with the
	// logloss clipping eps and the decision threshold.
	NewMetricAccumulator(tasks int, eps float64, threshold float32) (MetricAccumulator, error)
}

// BatchStager uploads the columns of a batch through pinned staging memory
// on a copy stream, double-buffered, so that the copies of batch k+1
// overlap the compute of batch k (the CUDA device's *Stager). The caller
// keeps one set of device input tensors per slot (Slot: 0 or 1), uploads
// the batch into the current slot's tensors, then Commits, which orders the
// compute queued afterwards behind those copies and switches slots.
type BatchStager interface {
	Slot() int
	UploadF32Async(dst *Tensor, src []float32) error
	UploadI32Async(dst *Tensor, src []int32) error
	Commit() error
	Release()
}

// AsyncUploader is implemented by devices with asynchronous batch uploads.
// Callers without it (or on other devices) use CopyFromHostF32/I32.
type AsyncUploader interface {
	// NewBatchStager allocates a stager whose two slots hold slotBytes each
	// (every upload is rounded up to 256 bytes).
	NewBatchStager(slotBytes int) (BatchStager, error)
}

// Pinned is n 4-byte elements of pinned (page-locked) host memory of one
// device, which tensors are copied to and from asynchronously, in order
// with the device's other ops: many tensors cross in one host round trip.
// Queue the downloads, Sync the device once, read; or write, queue the
// uploads, and the ops queued after them see the data. NewPinned gives one
// on every device (host memory and synchronous copies where the device has
// no PinnedStager). A Pinned serves one goroutine.
type Pinned interface {
	// F32 and I32 are the memory (n elements), as float32 and as int32:
	// the same bytes, so an int32 tensor downloaded there is read as I32,
	// or moved as float32 bit patterns.
	F32() []float32
	I32() []int32
	// Download queues p[off:off+n] = the first n elements of src (float32
	// or int32), after the ops queued before it. The host may read them
	// after the device's next Sync, not before.
	Download(off int, src *Tensor, n int)
	// Upload queues the first n elements of dst = p[off:off+n], before the
	// ops queued after it. The host must not write p[off:off+n] again
	// before the device's next Sync.
	Upload(dst *Tensor, off, n int)
	// Release waits for the copies in flight and frees the memory.
	Release()
}

// PinnedStager is implemented by devices whose memory the host cannot
// address (the CUDA device): NewPinned allocates pinned host memory whose
// copies are queued on the device's compute stream. Failures of the
// copies, like those of other ops, are reported by the next Sync.
type PinnedStager interface {
	NewPinned(n int) (Pinned, error)
}
