package kernels

import (
	"fmt"
	"math"
	"unsafe"
)

// Entry points for the optional capabilities of capabilities.go: each runs the
// fused op when the device has it and otherwise composes the plain Device
// ops (which is also the CPU reference the fused kernels are tested
// against), so callers need no type assertion of their own.

// GateForward computes w = softmax(logits / temperature) and out[b,:] =
// sum_e w[b,e] * experts[e][b,:] on dev: one fused kernel on a FusedGater,
// else SoftmaxRows followed by GateCombine.
func GateForward(dev Device, out, w, logits *Tensor, experts []*Tensor, temperature float32) {
	if f, ok := dev.(FusedGater); ok {
		f.GateForward(out, w, logits, experts, temperature)
		return
	}
	dev.SoftmaxRows(w, logits, temperature)
	dev.GateCombine(out, w, experts)
}

// GateBackward writes dlogits and adds into dexperts (see
// FusedGater.GateBackward) on dev. dw ([B, E]) is the scratch of the
// composed path (GateCombineBackward then SoftmaxBackward); a FusedGater
// does not touch it, and it may be nil there.
func GateBackward(dev Device, dlogits, dw, dout, w *Tensor, experts, dexperts []*Tensor, temperature float32) {
	if f, ok := dev.(FusedGater); ok {
		f.GateBackward(dlogits, dout, w, experts, dexperts, temperature)
		return
	}
	if dw == nil {
		panic(fmt.Sprintf("kernels: GateBackward on %s: the unfused gate backward needs dw scratch", dev.Name()))
	}
	dev.GateCombineBackward(dout, w, experts, dw, dexperts)
	dev.SoftmaxBackward(dlogits, dw, w, temperature)
}

// GatesCombineBackward runs the combine backward of several gates that mix
// the same experts on dev (see GatesBackwarder): one pass on a
// GatesBackwarder, else zeroed expert gradients and GateCombineBackward gate
// after gate (the reference the pass is tested against).
func GatesCombineBackward(dev Device, douts, ws, dws, experts, dexperts []*Tensor) {
	if f, ok := dev.(GatesBackwarder); ok {
		f.GatesCombineBackward(douts, ws, dws, experts, dexperts)
		return
	}
	for _, dx := range dexperts {
		dev.Zero(dx)
	}
	for g := range douts {
		dev.GateCombineBackward(douts[g], ws[g], experts, dws[g], dexperts)
	}
}

// GemmSum writes (or with accumulate adds into) dx the sum over s of
// dys[s] * ws[s]^T on dev: one GEMM on a GemmSummer where it takes the
// shape, else one Gemm per term, the first with beta 1 only when
// accumulating, the others adding into dx (chainGemmSum).
func GemmSum(dev Device, dys, ws []*Tensor, accumulate bool, dx *Tensor) {
	if f, ok := dev.(GemmSummer); ok {
		f.GemmSum(dys, ws, accumulate, dx)
		return
	}
	checkGemmSum("GemmSum", dys, ws, dx)
	chainGemmSum(dev, dys, ws, accumulate, dx)
}

// chainGemmSum is GemmSum as a chain of GEMMs: each term's rounded
// product added into dx in turn. With no terms it zeroes dx (unless
// accumulating), as a sum over nothing.
func chainGemmSum(dev Device, dys, ws []*Tensor, accumulate bool, dx *Tensor) {
	if len(dys) == 0 && !accumulate {
		dev.Zero(dx)
	}
	for s := range dys {
		var beta float32
		if accumulate || s > 0 {
			beta = 1
		}
		dev.Gemm(false, true, 1, dys[s], ws[s], beta, dx)
	}
}

// checkGemmSum validates the terms of a GemmSum and returns dx's rows m,
// columns n and the total depth k.
func checkGemmSum(op string, dys, ws []*Tensor, dx *Tensor) (m, n, k int) {
	if len(dys) != len(ws) {
		panic(fmt.Sprintf("kernels: %s: %d output gradients for %d kernels", op, len(dys), len(ws)))
	}
	m, n = dx.Rows(), dx.Cols()
	for s := range dys {
		if dys[s].Rows() != m || ws[s].Rows() != n || dys[s].Cols() != ws[s].Cols() {
			panic(fmt.Sprintf("kernels: %s: term %d: dy %v and w %v for dx %v", op, s, dys[s], ws[s], dx))
		}
		k += dys[s].Cols()
	}
	return m, n, k
}

// checkLossTasks validates a multi-task loss and returns its row count.
func checkLossTasks(op string, taskLoss, total *Tensor, tasks []LossTask) int {
	if taskLoss != nil && taskLoss.Len() < len(tasks) {
		panic(fmt.Sprintf("kernels: %s: task losses %v for %d tasks", op, taskLoss, len(tasks)))
	}
	if total != nil && total.Len() < 1 {
		panic(fmt.Sprintf("kernels: %s: empty total", op))
	}
	rows := -1
	for t, k := range tasks {
		if k.Kind != LossBCE && k.Kind != LossMSE {
			panic(fmt.Sprintf("kernels: %s: task %d: unknown loss kind %d", op, t, k.Kind))
		}
		if k.Z == nil || k.DZ == nil || k.Y == nil {
			panic(fmt.Sprintf("kernels: %s: task %d: Z, DZ and Y are required", op, t))
		}
		n := k.Z.Len()
		if rows < 0 {
			rows = n
		}
		if n != rows || k.DZ.Len() != n || k.Y.Len() != n || (k.Weight != nil && k.Weight.Len() != n) ||
			(k.Space != nil && k.Space.Len() != n) {
			panic(fmt.Sprintf("kernels: %s: task %d: z %v, dz %v, y %v, weight %v, space %v for %d rows",
				op, t, k.Z, k.DZ, k.Y, k.Weight, k.Space, rows))
		}
	}
	return max(rows, 0)
}

// MultiTaskLossScratch is the number of float32 elements of the scratch
// tensor MultiTaskLoss needs on a device without the fusion.
func MultiTaskLossScratch(rows int) int { return 2*rows + 1 }

// MultiTaskLoss computes the multi-task loss of MultiTaskLosser on dev: one
// launch on a MultiTaskLosser, else composed per task from Fill, Axpy, Mul,
// EqualMask, Copy (the sample weights), BCEWithLogits or MSE, and Scale
// (the loss weight), which is how the models compute it op by op. scratch
// (Float32, at least MultiTaskLossScratch(rows) elements) is used only by
// the composed path; nil there allocates and releases one. The composed
// path allocates view headers; callers that run it every step use a
// LossScratch instead.
func MultiTaskLoss(dev Device, taskLoss, total *Tensor, tasks []LossTask, scale float32, scratch *Tensor) {
	if f, ok := dev.(MultiTaskLosser); ok {
		f.MultiTaskLoss(taskLoss, total, tasks, scale)
		return
	}
	s := &LossScratch{buf: scratch}
	s.composed(dev, taskLoss, total, tasks, scale)
}

// LossScratch is the reusable state of MultiTaskLoss for one caller: on a
// MultiTaskLosser nothing; elsewhere the scratch buffer of the composed
// path and the view headers into it, so that a call allocates nothing. A
// LossScratch serves one call at a time.
type LossScratch struct {
	buf  *Tensor // MultiTaskLossScratch(rows) elements; nil on a MultiTaskLosser
	own  bool    // buf was allocated by NewLossScratch
	hdrs [5]lossView
}

// lossView is a view header of the composed loss (a [n] vector).
type lossView struct {
	t     Tensor
	shape [1]int
}

// set points v at elements [off, off+n) of src (Tensor.ViewInto).
func (v *lossView) set(src *Tensor, off, n int) *Tensor {
	v.shape[0] = n
	return src.ViewInto(&v.t, off, v.shape[:])
}

// NewLossScratch returns the scratch of MultiTaskLoss for up to rows rows
// on dev; it holds device memory only when dev does not fuse the loss.
func NewLossScratch(dev Device, rows int) *LossScratch {
	s := &LossScratch{}
	if _, ok := dev.(MultiTaskLosser); !ok {
		s.buf, s.own = dev.Alloc(Float32, MultiTaskLossScratch(rows)), true
	}
	return s
}

// Release frees the scratch memory.
func (s *LossScratch) Release() {
	if s != nil && s.own {
		s.buf.Release()
		s.buf, s.own = nil, false
	}
}

// MultiTaskLoss is MultiTaskLoss(dev, taskLoss, total, tasks, scale, ...)
// with this scratch: the same results, and no allocation on either path.
func (s *LossScratch) MultiTaskLoss(dev Device, taskLoss, total *Tensor, tasks []LossTask, scale float32) {
	if f, ok := dev.(MultiTaskLosser); ok {
		f.MultiTaskLoss(taskLoss, total, tasks, scale)
		return
	}
	s.composed(dev, taskLoss, total, tasks, scale)
}

// composed is the composed path of MultiTaskLoss.
func (s *LossScratch) composed(dev Device, taskLoss, total *Tensor, tasks []LossTask, scale float32) {
	rows := checkLossTasks("MultiTaskLoss", taskLoss, total, tasks)
	if len(tasks) == 0 || rows == 0 {
		return
	}
	scratch := s.buf
	if scratch == nil {
		scratch = dev.Alloc(Float32, MultiTaskLossScratch(rows))
		defer scratch.Release()
	}
	if scratch.Len() < MultiTaskLossScratch(rows) {
		panic(fmt.Sprintf("kernels: MultiTaskLoss: scratch %v for %d rows, want %d elements", scratch, rows,
			MultiTaskLossScratch(rows)))
	}
	w, tmp, one := s.hdrs[0].set(scratch, 0, rows), s.hdrs[1].set(scratch, rows, rows), s.hdrs[2].set(scratch, 2*rows, 1)
	for t, k := range tasks {
		var wt *Tensor
		if k.PosWeight != 1 || k.Weight != nil || k.Space != nil {
			wt = w
			first := true
			if k.PosWeight != 1 {
				dev.Fill(w, 1)
				dev.Axpy(k.PosWeight-1, k.Y, w)
				first = false
			}
			if k.Weight != nil {
				if first {
					dev.Copy(w, k.Weight)
				} else {
					dev.Mul(w, w, k.Weight)
				}
				first = false
			}
			if k.Space != nil {
				if first {
					dev.EqualMask(w, k.Space, 1)
				} else {
					dev.EqualMask(tmp, k.Space, 1)
					dev.Mul(w, w, tmp)
				}
			}
		}
		// Without a total the task's loss goes straight into its slot;
		// with one it goes through a scalar that both receive.
		dst := one
		if total == nil && taskLoss != nil {
			dst = s.hdrs[3].set(taskLoss, t, 1)
		} else {
			dev.Zero(one)
		}
		if k.Kind == LossBCE {
			dev.BCEWithLogits(dst, k.DZ, k.Z, k.Y, wt, scale)
		} else {
			dev.MSE(dst, k.DZ, k.Z, k.Y, wt, scale)
		}
		if k.Lambda != 1 {
			dev.Scale(k.DZ, k.Lambda)
		}
		if dst == one {
			if taskLoss != nil {
				dev.Axpy(1, one, s.hdrs[3].set(taskLoss, t, 1))
			}
			if total != nil {
				dev.Axpy(k.Lambda, one, s.hdrs[4].set(total, 0, 1))
			}
		}
	}
}

// Add adds the metric sums of one batch of one task, computed on the host
// in float64: the definition of MetricSums, and the reference of the device
// reductions. mask may be nil.
func (s *MetricSums) Add(binary bool, pred, label, mask []float32, eps float64, threshold float32) {
	if len(label) != len(pred) || (mask != nil && len(mask) != len(pred)) {
		panic(fmt.Sprintf("kernels: MetricSums.Add: %d predictions, %d labels, %d mask values", len(pred), len(label), len(mask)))
	}
	for i, p := range pred {
		if mask != nil && mask[i] != 1 {
			continue
		}
		y := label[i]
		if binary && y != 0 && y != 1 {
			s.BadLabels++
			continue
		}
		s.Count++
		s.LabelSum += float64(y)
		if binary && y == 1 {
			s.Positives++
		}
		if p != p {
			s.NaN++
			continue
		}
		if !binary {
			e := float64(p) - float64(y)
			s.SqErr += e * e
			s.AbsErr += math.Abs(e)
			continue
		}
		pc := min(max(float64(p), eps), 1-eps)
		hit := p > threshold
		if y == 1 {
			s.LogLoss -= math.Log(pc)
			if hit {
				s.TP++
			} else {
				s.FN++
			}
		} else {
			s.LogLoss -= math.Log(1 - pc)
			if hit {
				s.FP++
			} else {
				s.TN++
			}
		}
	}
}

// checkMetricTasks validates one batch of a metric accumulator of n tasks
// and returns its row count.
func checkMetricTasks(n int, tasks []MetricTask) int {
	if len(tasks) != n {
		panic(fmt.Sprintf("kernels: MetricAccumulator.Add: %d tasks, the accumulator has %d", len(tasks), n))
	}
	rows := -1
	for t, k := range tasks {
		if k.Pred == nil || k.Label == nil {
			panic(fmt.Sprintf("kernels: MetricAccumulator.Add: task %d: Pred and Label are required", t))
		}
		if rows < 0 {
			rows = k.Pred.Len()
		}
		if k.Pred.Len() != rows || k.Label.Len() != rows || (k.Mask != nil && k.Mask.Len() != rows) {
			panic(fmt.Sprintf("kernels: MetricAccumulator.Add: task %d: pred %v, label %v, mask %v for %d rows",
				t, k.Pred, k.Label, k.Mask, rows))
		}
	}
	return max(rows, 0)
}

func checkMetricArgs(tasks int, eps float64) error {
	if tasks < 1 {
		return fmt.Errorf("kernels: NewMetricAccumulator: %d tasks, want at least 1", tasks)
	}
	if !(eps >= 0 && eps < 0.5) {
		return fmt.Errorf("kernels: NewMetricAccumulator: eps %g outside [0, 0.5)", eps)
	}
	return nil
}

// NewMetricAccumulator returns an accumulator of tasks tasks on dev: the
// device's own (sums on the device, one launch per batch) when dev is a
// MetricReducer, else one that copies each batch to the host and sums there
// with MetricSums.Add.
func NewMetricAccumulator(dev Device, tasks int, eps float64, threshold float32) (MetricAccumulator, error) {
	if r, ok := dev.(MetricReducer); ok {
		return r.NewMetricAccumulator(tasks, eps, threshold)
	}
	if err := checkMetricArgs(tasks, eps); err != nil {
		return nil, err
	}
	return &hostMetrics{dev: dev, eps: eps, threshold: threshold, sums: make([]MetricSums, tasks)}, nil
}

// hostMetrics is the MetricAccumulator of devices without a reduction.
type hostMetrics struct {
	dev               Device
	eps               float64
	threshold         float32
	sums              []MetricSums
	pred, label, mask []float32
}

func grow32(b []float32, n int) []float32 {
	if cap(b) < n {
		return make([]float32, n)
	}
	return b[:n]
}

func (h *hostMetrics) Add(tasks []MetricTask) {
	rows := checkMetricTasks(len(h.sums), tasks)
	h.pred, h.label = grow32(h.pred, rows), grow32(h.label, rows)
	for t, k := range tasks {
		h.dev.CopyToHostF32(h.pred, k.Pred)
		h.dev.CopyToHostF32(h.label, k.Label)
		var mask []float32
		if k.Mask != nil {
			h.mask = grow32(h.mask, rows)
			h.dev.CopyToHostF32(h.mask, k.Mask)
			mask = h.mask
		}
		h.sums[t].Add(k.Binary, h.pred, h.label, mask, h.eps, h.threshold)
	}
}

func (h *hostMetrics) Sums() ([]MetricSums, error) {
	if err := h.dev.Sync(); err != nil {
		return nil, fmt.Errorf("kernels: metric sums: %w", err)
	}
	return append([]MetricSums(nil), h.sums...), nil
}

func (h *hostMetrics) Reset() { clear(h.sums) }

func (h *hostMetrics) Release() { h.sums = nil }

// NewPinned returns n elements of host memory for the asynchronous copies
// of Pinned: pinned memory on a PinnedStager; elsewhere (the CPU device)
// plain host memory whose Download and Upload are the Device's synchronous
// host copies.
func NewPinned(dev Device, n int) (Pinned, error) {
	if n < 0 {
		return nil, fmt.Errorf("kernels: NewPinned: %d elements", n)
	}
	if s, ok := dev.(PinnedStager); ok {
		return s.NewPinned(n)
	}
	return &hostPinned{dev: dev, f: make([]float32, n)}, nil
}

// hostPinned is NewPinned's buffer on a device without a PinnedStager.
type hostPinned struct {
	dev   Device
	f     []float32
	view  Tensor // the first n elements of a tensor (no allocation per copy)
	shape [1]int
}

func (h *hostPinned) F32() []float32 { return h.f }
func (h *hostPinned) I32() []int32   { return f32AsI32(h.f) }

func (h *hostPinned) prefix(t *Tensor, n int) *Tensor {
	h.shape[0] = n
	return t.ViewInto(&h.view, 0, h.shape[:])
}

func (h *hostPinned) Download(off int, src *Tensor, n int) {
	if n == 0 {
		return
	}
	if src.DType == Int32 {
		h.dev.CopyToHostI32(h.I32()[off:off+n], h.prefix(src, n))
		return
	}
	h.dev.CopyToHostF32(h.f[off:off+n], h.prefix(src, n))
}

func (h *hostPinned) Upload(dst *Tensor, off, n int) {
	if n == 0 {
		return
	}
	if dst.DType == Int32 {
		h.dev.CopyFromHostI32(h.prefix(dst, n), h.I32()[off:off+n])
		return
	}
	h.dev.CopyFromHostF32(h.prefix(dst, n), h.f[off:off+n])
}

func (h *hostPinned) Release() { h.f = nil }

// f32AsI32 is the memory of f as int32 (the same bytes).
func f32AsI32(f []float32) []int32 {
	if len(f) == 0 {
		return nil
	}
	return unsafe.Slice((*int32)(unsafe.Pointer(&f[0])), len(f))
}
