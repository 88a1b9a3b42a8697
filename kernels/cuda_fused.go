//go:build cuda

package kernels

import (
	"fmt"

	"github.com/mtlrank/mtlrank/cublas"
)

// The CUDA device implements the optional interfaces of capabilities.go.
var (
	_ FusedEmbeddingUpdater = (*CUDA)(nil)
	_ GemmBiasActer         = (*CUDA)(nil)
	_ FusedGemm             = (*CUDA)(nil)
	_ AsyncIDChecker        = (*CUDA)(nil)
	_ GraphCapturer         = (*CUDA)(nil)
	_ FusedGater            = (*CUDA)(nil)
	_ MultiTaskLosser       = (*CUDA)(nil)
	_ MetricReducer         = (*CUDA)(nil)
)

// embSources validates srcs against a table and converts them (d.mu held).
func (d *CUDA) embSources(op string, table *Tensor, srcs []EmbeddingSource) {
	if len(srcs) == 0 || len(srcs) > cublas.MaxEmbInputs {
		panic(fmt.Sprintf("kernels: %s: %d sources (1 to %d allowed)", op, len(srcs), cublas.MaxEmbInputs))
	}
	d.embIn = d.embIn[:0]
	for _, s := range srcs {
		checkEmbSource(op, s.Dout, s.Col, table.Cols(), s.IDs, s.Offsets)
		d.embIn = append(d.embIn, d.embInput(s.Dout, s.Col, s.IDs, s.Offsets, s.Comb))
	}
}

func checkState(op string, table *Tensor, state ...*Tensor) {
	for _, s := range state {
		if s.Len() != table.Len() {
			panic(fmt.Sprintf("kernels: %s: state %v for table %v", op, s, table))
		}
	}
}

// EmbeddingUpdateAdam is the fused embedding backward + lazy sparse Adam.
func (d *CUDA) EmbeddingUpdateAdam(table, m, v *Tensor, srcs []EmbeddingSource, p AdamParams) {
	checkState("EmbeddingUpdateAdam", table, m, v)
	d.mu.Lock()
	defer d.mu.Unlock()
	d.embSources("EmbeddingUpdateAdam", table, srcs)
	o := cublas.SparseOpt{Kind: cublas.OptAdam, LR: AdamStepSize(p), Beta1: p.Beta1, Beta2: p.Beta2, Eps: p.Eps, L2: p.L2}
	d.fail(d.x.EmbeddingUpdate(&d.emb, d.ptr(table), d.ptr(m), d.ptr(v), table.Rows(), table.Cols(), d.embIn, o))
}

// EmbeddingUpdateAdagrad is the fused embedding backward + sparse Adagrad.
func (d *CUDA) EmbeddingUpdateAdagrad(table, acc *Tensor, srcs []EmbeddingSource, p AdagradParams) {
	checkState("EmbeddingUpdateAdagrad", table, acc)
	d.mu.Lock()
	defer d.mu.Unlock()
	d.embSources("EmbeddingUpdateAdagrad", table, srcs)
	o := cublas.SparseOpt{Kind: cublas.OptAdagrad, LR: p.LR, Eps: p.Eps, L2: p.L2}
	d.fail(d.x.EmbeddingUpdate(&d.emb, d.ptr(table), d.ptr(acc), 0, table.Rows(), table.Cols(), d.embIn, o))
}

// EmbeddingUpdateSGD is the fused embedding backward + sparse SGD.
func (d *CUDA) EmbeddingUpdateSGD(table *Tensor, srcs []EmbeddingSource, p SGDParams) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.embSources("EmbeddingUpdateSGD", table, srcs)
	o := cublas.SparseOpt{Kind: cublas.OptSGD, LR: p.LR, L2: p.L2}
	d.fail(d.x.EmbeddingUpdate(&d.emb, d.ptr(table), 0, 0, table.Rows(), table.Cols(), d.embIn, o))
}

// GemmBiasActT computes c = act(op(a)*op(b) + bias) with a cuBLASLt
// epilogue (bias, bias + ReLU, or ReLU alone when bias is nil) instead of a
// GEMM followed by BiasAct.
func (d *CUDA) GemmBiasActT(transA, transB bool, a, b, bias, c *Tensor, act Activation) {
	m, n, k := gemmShape("GemmBiasActT", transA, transB, a, b, c)
	if bias != nil && bias.Len() != n {
		panic(fmt.Sprintf("kernels: GemmBiasActT: bias %v for %d columns", bias, n))
	}
	ac := actCode("GemmBiasActT", act, true)
	d.mu.Lock()
	defer d.mu.Unlock()
	d.fail(d.x.GemmBiasAct(transA, transB, m, n, k, d.ptr(a), 0, d.ptr(b), 0, d.ptr(bias), 0, d.ptr(c), 0, 1, ac))
}

// GemmBiasAct implements FusedGemm (the layers' fused Dense forward):
// y = act(x*w + bias) in one cuBLASLt call; bias may be nil.
func (d *CUDA) GemmBiasAct(x, w, bias *Tensor, act Activation, y *Tensor) {
	d.GemmBiasActT(false, false, x, w, bias, y, act)
}

// GemmStridedBatchedBiasAct implements FusedGemm (the layers' fused expert
// layers): entry i of batch computes C_i = act(A_i*B_i + bias_i) with
// C_i at i*m*n and bias_i = bias[i*n:][:n] (nil: no bias), as one
// strided-batched cuBLASLt call.
func (d *CUDA) GemmStridedBatchedBiasAct(m, n, k int, a *Tensor, strideA int, b *Tensor, strideB int,
	bias *Tensor, act Activation, c *Tensor, batch int) {
	if bias == nil {
		checkBatched("GemmStridedBatchedBiasAct", m, n, k, a, strideA, b, strideB, c, m*n, batch)
		ac := actCode("GemmStridedBatchedBiasAct", act, true)
		if m == 0 || n == 0 || batch == 0 {
			return
		}
		d.mu.Lock()
		defer d.mu.Unlock()
		d.fail(d.x.GemmBiasAct(false, false, m, n, k, d.ptr(a), strideA, d.ptr(b), strideB, 0, 0, d.ptr(c), m*n, batch, ac))
		return
	}
	if bias.Len() != batch*n {
		panic(fmt.Sprintf("kernels: GemmStridedBatchedBiasAct: bias %v for %d entries of %d", bias, batch, n))
	}
	d.GemmBiasActBatched(false, false, m, n, k, a, strideA, b, strideB, bias, n, c, m*n, batch, act)
}

// GemmBiasActBatched is the strided-batched GemmBiasActT: entry i computes
// C_i = act(op(A_i)*op(B_i) + bias_i), bias_i = bias[i*strideBias:][:n]
// (one batch entry per expert).
func (d *CUDA) GemmBiasActBatched(transA, transB bool, m, n, k int, a *Tensor, strideA int, b *Tensor, strideB int,
	bias *Tensor, strideBias int, c *Tensor, strideC, batch int, act Activation) {
	checkBatched("GemmBiasActBatched", m, n, k, a, strideA, b, strideB, c, strideC, batch)
	if batch > 0 && (strideBias < 0 || (batch-1)*strideBias+n > bias.Len()) {
		panic(fmt.Sprintf("kernels: GemmBiasActBatched: bias %v for %d entries of %d with stride %d", bias, batch, n, strideBias))
	}
	ac := actCode("GemmBiasActBatched", act, true)
	if m == 0 || n == 0 || batch == 0 {
		return
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	d.fail(d.x.GemmBiasAct(transA, transB, m, n, k, d.ptr(a), strideA, d.ptr(b), strideB, d.ptr(bias), strideBias,
		d.ptr(c), strideC, batch, ac))
}

// ---------------------------------------------------------------- graphs

// CUDAGraph is a captured sequence of ops (one training or inference step)
// that can be replayed with one launch.
type CUDAGraph struct {
	d     *CUDA
	g     *cublas.Graph
	slots int // id-check slots the captured gathers write
}

// BeginCapture starts recording the ops queued on this device into a graph
// instead of running them. Every tensor the step uses must be allocated
// before (Alloc and Free fail while capturing), and the step must have run
// once eagerly so that scratch buffers have their size. Calls that need the
// host (host copies, Sync, EmbeddingBackward's count) are not allowed;
// EmbeddingGather checks are deferred to the Sync after a Launch. Ops
// whose scalars change between launches must read them from device memory
// (StepParamOps), since a replay repeats the captured kernel arguments.
func (d *CUDA) BeginCapture() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.capturing {
		return fmt.Errorf("kernels: %s BeginCapture: a capture is already in progress", d.Name())
	}
	if err := d.checkIDs("EmbeddingGather"); err != nil {
		return fmt.Errorf("kernels: %s BeginCapture: earlier work failed: %w", d.Name(), err)
	}
	if d.err != nil {
		return fmt.Errorf("kernels: %s BeginCapture: earlier work failed (call Sync): %w", d.Name(), d.err)
	}
	if err := d.x.BeginCapture(); err != nil {
		return err
	}
	d.capturing = true
	return nil
}

// EndCapture stops recording and returns the graph (a *CUDAGraph). If any
// op failed while capturing, the graph is discarded and the first failure
// returned.
func (d *CUDA) EndCapture() (Graph, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if !d.capturing {
		return nil, fmt.Errorf("kernels: %s EndCapture: no capture in progress", d.Name())
	}
	d.capturing = false
	slots := d.slots
	d.slots = 0
	g, err := d.x.EndCapture()
	if err == nil && d.err != nil {
		g.Release()
		err = d.err
	}
	d.err = nil
	if err != nil {
		return nil, fmt.Errorf("kernels: %s EndCapture: %w", d.Name(), err)
	}
	return &CUDAGraph{d: d, g: g, slots: slots}, nil
}

// Launch queues the captured step on the device's stream. Errors of the
// step (faults, id checks) are reported by the next Sync.
func (g *CUDAGraph) Launch() error {
	d := g.d
	d.mu.Lock()
	defer d.mu.Unlock()
	if g.g == nil {
		return fmt.Errorf("kernels: %s graph launch: the graph was released", d.Name())
	}
	if err := g.g.Launch(); err != nil {
		return err
	}
	d.slots = max(d.slots, g.slots)
	return nil
}

// Release frees the graph (not the tensors it uses).
func (g *CUDAGraph) Release() {
	if g == nil || g.g == nil {
		return
	}
	g.d.mu.Lock()
	defer g.d.mu.Unlock()
	g.g.Release()
	g.g = nil
}

// ---------------------------------------------------------------- gate

// GateForward is the fused gate (csrc/fused.cu): one warp per row computes
// the softmax of the row's logits and mixes the experts with the weights
// held on chip. It equals SoftmaxRows followed by GateCombine (which run
// instead beyond cublas.MaxExperts experts).
func (d *CUDA) GateForward(out, w, logits *Tensor, experts []*Tensor, temperature float32) {
	rows, dim, ne := checkGate("GateForward", out, w, experts)
	if logits.Len() != rows*ne {
		panic(fmt.Sprintf("kernels: GateForward: logits %v for %d rows and %d experts", logits, rows, ne))
	}
	if rows == 0 {
		return
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	d.ptrs = d.appendPtrs(d.ptrs, experts)
	d.fail(d.x.GateForward(d.ptr(out), d.ptr(w), d.ptr(logits), d.ptrs, rows, dim, temperature))
}

// GateBackward is the fused gate backward: one warp per row computes the
// gate-weight gradient in registers, adds the expert gradients and writes
// the softmax backward. It equals GateCombineBackward followed by
// SoftmaxBackward. Beyond cublas.MaxExperts experts it runs those two with
// a temporary [B, E] tensor, which cannot be allocated while capturing a
// graph (an error then).
func (d *CUDA) GateBackward(dlogits, dout, w *Tensor, experts, dexperts []*Tensor, temperature float32) {
	rows, dim, ne := checkGate("GateBackward", dout, w, experts)
	if dlogits.Len() != rows*ne || len(dexperts) != ne {
		panic(fmt.Sprintf("kernels: GateBackward: dlogits %v, %d expert gradients for %d rows and %d experts",
			dlogits, len(dexperts), rows, ne))
	}
	for e, ex := range dexperts {
		if ex.Len() != rows*dim {
			panic(fmt.Sprintf("kernels: GateBackward: expert gradient %d is %v, want %d x %d", e, ex, rows, dim))
		}
	}
	if rows == 0 {
		return
	}
	var scratch *Tensor
	if ne > cublas.MaxExperts {
		d.mu.Lock()
		capturing := d.capturing
		d.mu.Unlock()
		if capturing {
			d.mu.Lock()
			d.fail(fmt.Errorf("kernels: %s GateBackward: %d experts (more than %d) need scratch memory, which cannot be allocated while capturing a graph",
				d.Name(), ne, cublas.MaxExperts))
			d.mu.Unlock()
			return
		}
		scratch = d.Alloc(Float32, rows, ne)
		defer scratch.Release()
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	d.ptrs = d.appendPtrs(d.ptrs, experts)
	d.ptrs2 = d.appendPtrs(d.ptrs2, dexperts)
	d.fail(d.x.GateBackward(d.ptr(dlogits), d.ptr(dout), d.ptr(w), d.ptrs, d.ptrs2, rows, dim, temperature,
		d.ptr(scratch)))
}

// ---------------------------------------------------------------- multi-task loss

func lossCode(k LossKind) int {
	if k == LossMSE {
		return cublas.LossMSE
	}
	return cublas.LossBCE
}

// MultiTaskLoss is the fused multi-task loss (csrc/fused.cu): the sample
// weights, the loss, the gradient and the loss weight of every task in one
// launch (per cublas.MaxLossTasks tasks), with float64 sums reduced in a
// fixed order by the last block. No host round trip; graph-capturable.
func (d *CUDA) MultiTaskLoss(taskLoss, total *Tensor, tasks []LossTask, scale float32) {
	rows := checkLossTasks("MultiTaskLoss", taskLoss, total, tasks)
	if len(tasks) == 0 || rows == 0 {
		return
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	d.lossTs = d.lossTs[:0]
	for _, k := range tasks {
		d.lossTs = append(d.lossTs, cublas.LossTask{Kind: lossCode(k.Kind), Z: d.ptr(k.Z), DZ: d.ptr(k.DZ), Y: d.ptr(k.Y),
			Weight: d.ptr(k.Weight), Space: d.ptr(k.Space), PosWeight: k.PosWeight, Lambda: k.Lambda})
	}
	d.fail(d.x.MultiTaskLoss(&d.loss, d.ptr(taskLoss), d.ptr(total), d.lossTs, rows, scale))
}

// ---------------------------------------------------------------- metrics

// cudaMetrics accumulates metric sums in device memory: float64
// [tasks, cublas.MetricFields], stored in a Float32 tensor of twice the
// size (so that the device's allocation accounting covers it).
type cudaMetrics struct {
	d         *CUDA
	acc       *Tensor
	n         int
	eps       float64
	threshold float32
	buf       cublas.MetricBuffer
	ts        []cublas.MetricTask
	host      []float64
}

// NewMetricAccumulator implements MetricReducer: each Add is one launch
// (per cublas.MaxMetricTasks tasks) that adds the batch's sums to device
// memory; Sums reads them back.
func (d *CUDA) NewMetricAccumulator(tasks int, eps float64, threshold float32) (MetricAccumulator, error) {
	if err := checkMetricArgs(tasks, eps); err != nil {
		return nil, err
	}
	return &cudaMetrics{d: d, acc: d.Alloc(Float32, 2*tasks*cublas.MetricFields), n: tasks, eps: eps,
		threshold: threshold, host: make([]float64, tasks*cublas.MetricFields)}, nil
}

func (m *cudaMetrics) Add(tasks []MetricTask) {
	rows := checkMetricTasks(m.n, tasks)
	if rows == 0 {
		return
	}
	d := m.d
	d.mu.Lock()
	defer d.mu.Unlock()
	m.ts = m.ts[:0]
	for _, k := range tasks {
		m.ts = append(m.ts, cublas.MetricTask{Binary: k.Binary, Pred: d.ptr(k.Pred), Label: d.ptr(k.Label), Mask: d.ptr(k.Mask)})
	}
	d.fail(d.x.MetricAccumulate(&m.buf, d.ptr(m.acc), m.ts, rows, m.eps, m.threshold))
}

// Sums waits for the queued work and reads the sums. A failure recorded by
// the device since its last Sync is returned (and still reported by Sync).
func (m *cudaMetrics) Sums() ([]MetricSums, error) {
	d := m.d
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.capturing {
		return nil, fmt.Errorf("kernels: %s metric sums: not allowed while capturing a graph", d.Name())
	}
	if err := d.x.CopyDtoHF64(m.host, d.ptr(m.acc)); err != nil {
		d.fail(err)
		return nil, fmt.Errorf("kernels: %s metric sums: %w", d.Name(), err)
	}
	if d.err != nil {
		return nil, fmt.Errorf("kernels: %s metric sums: earlier work failed: %w", d.Name(), d.err)
	}
	out := make([]MetricSums, m.n)
	for t := range out {
		f := m.host[t*cublas.MetricFields : (t+1)*cublas.MetricFields]
		out[t] = MetricSums{
			Count: f[cublas.MetricCount], Positives: f[cublas.MetricPositives], LabelSum: f[cublas.MetricLabelSum],
			LogLoss: f[cublas.MetricLogLoss],
			TP:      f[cublas.MetricTP], FP: f[cublas.MetricFP], TN: f[cublas.MetricTN], FN: f[cublas.MetricFN],
			SqErr: f[cublas.MetricSqErr], AbsErr: f[cublas.MetricAbsErr],
			NaN: f[cublas.MetricNaN], BadLabels: f[cublas.MetricBadLabels],
		}
	}
	return out, nil
}

func (m *cudaMetrics) Reset() {
	d := m.d
	d.mu.Lock()
	defer d.mu.Unlock()
	d.fail(d.x.Memset(d.ptr(m.acc), 0, 4*m.acc.Len()))
}

func (m *cudaMetrics) Release() {
	m.acc.Release()
	clear(m.host)
}
