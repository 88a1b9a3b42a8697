package kernels

import (
	"fmt"
	"math"
	"math/bits"
	"runtime"
	"slices"
	"sync"
	"unsafe"

	"github.com/mtlrank/mtlrank/internal/splitmix"
)

// CPU is the host Device: tensors are Go slices; GEMMs go to the
// small-GEMM kernels of cpu_gemm.c (thin shapes, AVX-512 or AVX2) or to
// single-threaded OpenBLAS (cpu_gemm.go); the element-wise, embedding, gate
// and optimizer loops are C compiled for the machine's vector width
// (cpu_kernels.c, and cpu_math.c for exp and log). Work large enough to pay
// for the hand-off is split across a fixed pool of goroutines. A caller that
// runs many small ops per batch does better to shard the batch
// (CPU.ShardDevice and CPU.RunShards, the Sharder interface) than to let
// every op split itself.
//
// A CPU may be used from several goroutines at once (for example one
// inference workspace per goroutine over shared weights) as long as no two
// calls write the same tensor. Calls that find the worker pool busy run
// serially in their own goroutine rather than wait.
//
// Results do not depend on the number of threads: work is split along fixed
// boundaries that depend only on the shapes (GEMMs are cut into whole rows or
// columns of C, so each dot product stays in one call), and every reduction
// runs in a fixed order; NewCPU(1) and NewCPU(2) produce identical bits
// (TestCPUThreadsBitIdentical).
type CPU struct {
	threads int
	pool    *pool // nil with one thread
	serial  *CPU  // ShardDevice: this device with one thread (itself when threads == 1)

	// EmbeddingBackward scratch (O(batch), see embScratch), one slot per
	// concurrent call.
	emb [4]embScratch
}

var _ Device = (*CPU)(nil)

// NewCPU returns a CPU device that spreads work over threads goroutines
// (OpenBLAS itself always runs single-threaded, see blas.go). threads <= 0
// means GOMAXPROCS.
func NewCPU(threads int) *CPU {
	if threads <= 0 {
		threads = runtime.GOMAXPROCS(0)
	}
	c := &CPU{threads: threads}
	c.serial = c
	if threads > 1 {
		c.pool = newPool(threads)
		runtime.AddCleanup(c, func(p *pool) { p.close() }, c.pool)
		c.serial = &CPU{threads: 1}
		c.serial.serial = c.serial
	}
	return c
}

var _ Sharder = (*CPU)(nil)

// ShardDevice implements Sharder: a one-thread CPU device (c itself when c
// has one thread).
func (c *CPU) ShardDevice() Device { return c.serial }

// RunShards implements Sharder on the device's worker pool: each of up to
// Threads() goroutines takes the next shard not yet started until none is
// left. When the pool is busy (another goroutine is running a parallel op
// or shards on this device) the shards run one after the other in the
// caller.
func (c *CPU) RunShards(n int, f func(shard int)) {
	if n <= 0 {
		return
	}
	if n > 1 && c.pool != nil && c.pool.mu.TryLock() {
		p := c.pool
		p.shards.f, p.shards.n = f, int64(n)
		p.shards.next.Store(0)
		th := min(n, c.threads)
		p.runLocked(&p.shards, th, 1, th)
		p.shards.f = nil
		p.unlock()
		return
	}
	for i := range n {
		f(i)
	}
}

// Name implements Device.
func (c *CPU) Name() string { return "cpu" }

// Threads implements Device.
func (c *CPU) Threads() int { return c.threads }

// WrapF32 returns a Float32 tensor on dev that borrows data[:prod(shape)]
// without copying it (Release is a no-op). It panics if data is too short.
func WrapF32(dev *CPU, data []float32, shape ...int) *Tensor {
	n := shapeLen(shape)
	if len(data) < n {
		panic(fmt.Sprintf("kernels: WrapF32: %d values for shape %v", len(data), shape))
	}
	return &Tensor{Shape: append([]int(nil), shape...), DType: Float32, Dev: dev, F32: data[:n:n]}
}

// WrapI32 returns an Int32 tensor on dev that borrows data[:prod(shape)]
// without copying it (Release is a no-op). It panics if data is too short.
func WrapI32(dev *CPU, data []int32, shape ...int) *Tensor {
	n := shapeLen(shape)
	if len(data) < n {
		panic(fmt.Sprintf("kernels: WrapI32: %d values for shape %v", len(data), shape))
	}
	return &Tensor{Shape: append([]int(nil), shape...), DType: Int32, Dev: dev, I32: data[:n:n]}
}

func shapeLen(shape []int) int {
	n := 1
	for _, d := range shape {
		if d < 0 {
			panic(fmt.Sprintf("kernels: negative dimension in shape %v", shape))
		}
		n *= d
	}
	return n
}

// ---------------------------------------------------------------- memory

// Alloc implements Device. The storage is a zeroed Go slice.
func (c *CPU) Alloc(dt DType, shape ...int) *Tensor {
	n := shapeLen(shape)
	t := NewTensor(c, dt, shape)
	switch dt {
	case Float32:
		t.F32 = make([]float32, n)
		adviseHuge(unsafe.Pointer(unsafe.SliceData(t.F32)), 4*n)
	case Int32:
		t.I32 = make([]int32, n)
		adviseHuge(unsafe.Pointer(unsafe.SliceData(t.I32)), 4*n)
	default:
		panic(fmt.Sprintf("kernels: Alloc: unsupported dtype %v", dt))
	}
	return t
}

// hugeMin is the smallest allocation backed by transparent huge pages.
const hugeMin = 4 << 20

// adviseHuge asks the kernel to back the 2 MB-aligned interior of a large,
// not yet touched allocation with transparent huge pages (effective when
// the system's THP mode is "always" or "madvise"). Embedding tables and
// their optimizer state are read and written at random rows: with 4 KB
// pages nearly every row access of a large table is also a TLB miss.
// Failure (no THP support) is harmless.
func adviseHuge(p unsafe.Pointer, size int) {
	if size < hugeMin {
		return
	}
	const huge = 2 << 20
	start := (uintptr(p) + huge - 1) &^ (huge - 1)
	end := (uintptr(p) + uintptr(size)) &^ (huge - 1)
	if end > start {
		_ = madvise(start, end-start)
	}
}

// Free implements Device: it drops the references to the storage.
func (c *CPU) Free(t *Tensor) {
	t.F32 = nil
	t.I32 = nil
}

// CopyFromHostF32 implements Device: dst[:len(src)] = src.
func (c *CPU) CopyFromHostF32(dst *Tensor, src []float32) {
	checkRoom("CopyFromHostF32", dst.Len(), len(src))
	copy(dst.F32, src)
}

// CopyFromHostI32 implements Device: dst[:len(src)] = src.
func (c *CPU) CopyFromHostI32(dst *Tensor, src []int32) {
	checkRoom("CopyFromHostI32", dst.Len(), len(src))
	copy(dst.I32, src)
}

// CopyToHostF32 implements Device: dst[:src.Len()] = src.
func (c *CPU) CopyToHostF32(dst []float32, src *Tensor) {
	checkRoom("CopyToHostF32", len(dst), src.Len())
	copy(dst, src.F32)
}

// CopyToHostI32 implements Device: dst[:src.Len()] = src.
func (c *CPU) CopyToHostI32(dst []int32, src *Tensor) {
	checkRoom("CopyToHostI32", len(dst), src.Len())
	copy(dst, src.I32)
}

func checkRoom(op string, room, n int) {
	if n > room {
		panic(fmt.Sprintf("kernels: %s: %d elements do not fit in %d", op, n, room))
	}
}

// Copy implements Device.
func (c *CPU) Copy(dst, src *Tensor) {
	if dst.DType != src.DType || dst.Len() != src.Len() {
		panic(fmt.Sprintf("kernels: Copy: %v to %v", src, dst))
	}
	if src.DType == Int32 {
		copy(dst.I32, src.I32)
		return
	}
	copy(dst.F32, src.F32)
}

// Zero implements Device.
func (c *CPU) Zero(t *Tensor) {
	if t.DType == Int32 {
		clear(t.I32)
		return
	}
	clear(t.F32)
}

// Fill implements Device. An Int32 tensor gets int32(v).
func (c *CPU) Fill(t *Tensor, v float32) {
	if t.DType == Int32 {
		iv := int32(v)
		for i := range t.I32 {
			t.I32[i] = iv
		}
		return
	}
	c.ew(ewFill, t.F32, nil, nil, v)
}

// Sync implements Device; CPU ops are synchronous.
func (c *CPU) Sync() error { return nil }

// ---------------------------------------------------------------- GEMM

// Gemm implements Device.
func (c *CPU) Gemm(transA, transB bool, alpha float32, a, b *Tensor, beta float32, cm *Tensor) {
	m, n, k := gemmShape("Gemm", transA, transB, a, b, cm)
	if m == 0 || n == 0 {
		return
	}
	if k == 0 {
		c.scaleOut(cm.F32[:m*n], beta)
		return
	}
	c.gemm(transA, transB, m, n, k, alpha, a.F32, 0, a.Cols(), b.F32, 0, b.Cols(), beta, cm.F32, 0, n, 1)
}

// scaleOut applies C = beta*C the way BLAS does: beta == 0 overwrites (so
// NaNs in uninitialised output do not survive).
func (c *CPU) scaleOut(x []float32, beta float32) {
	if beta == 0 {
		clear(x)
		return
	}
	if beta != 1 {
		c.ew(ewScale, x, nil, nil, beta)
	}
}

// GemmStridedBatched implements Device.
func (c *CPU) GemmStridedBatched(transA, transB bool, m, n, k int, alpha float32,
	a *Tensor, strideA int, b *Tensor, strideB int,
	beta float32, cm *Tensor, strideC int, batch int) {
	checkBatched("GemmStridedBatched", m, n, k, a, strideA, b, strideB, cm, strideC, batch)
	if m == 0 || n == 0 || batch == 0 {
		return
	}
	if k == 0 {
		for i := range batch {
			c.scaleOut(cm.F32[i*strideC:i*strideC+m*n], beta)
		}
		return
	}
	lda, ldb := k, n
	if transA {
		lda = m
	}
	if transB {
		ldb = k
	}
	c.gemm(transA, transB, m, n, k, alpha, a.F32, strideA, lda, b.F32, strideB, ldb, beta, cm.F32, strideC, n, batch)
}

// ---------------------------------------------------------------- element-wise

type ewOp uint8

const (
	ewFill ewOp = iota
	ewScale
	ewAxpy
	ewMul
	ewEqual
	ewSigmoid
	ewReLUBwd
	ewActFwd // dst = act(a)
	ewActBwd // dst *= act'(a)
)

// ewTask is an element-wise op over [lo, hi) of its slices.
type ewTask struct {
	op    ewOp
	dst   []float32
	a, b  []float32
	alpha float32
	act   Activation
}

func (t *ewTask) run(lo, hi int) {
	dst := t.dst[lo:hi]
	switch t.op {
	case ewFill:
		cFill(dst, t.alpha)
	case ewScale:
		cScale(dst, t.alpha)
	case ewAxpy:
		cAxpy(dst, t.a[lo:hi], t.alpha)
	case ewMul:
		cMul(dst, t.a[lo:hi], t.b[lo:hi])
	case ewEqual:
		cEqual(dst, t.a[lo:hi], t.alpha)
	case ewReLUBwd:
		cReluBwd(dst, t.a[lo:hi])
	case ewSigmoid:
		cSigmoid(dst, t.a[lo:hi])
	case ewActFwd:
		cActFwd(dst, t.a[lo:hi], t.act)
	case ewActBwd:
		cActBwd(dst, t.a[lo:hi], t.act)
	}
}

// ew runs an element-wise op over all of dst, in parallel when large.
func (c *CPU) ew(op ewOp, dst, a, b []float32, alpha float32) { c.ewAct(op, dst, a, b, alpha, Linear) }

// ewAct is ew with an activation for ewActFwd and ewActBwd.
func (c *CPU) ewAct(op ewOp, dst, a, b []float32, alpha float32, act Activation) {
	n := len(dst)
	t := ewTask{op: op, dst: dst, a: a, b: b, alpha: alpha, act: act}
	cost := 1
	switch op {
	case ewSigmoid, ewActFwd, ewActBwd:
		cost = costExpC
	}
	if ch := c.chunksFor(n, cost); ch > 1 && runPooled(c.pool, &c.pool.ew, t, n, 64, ch) {
		return
	}
	t.run(0, n)
}

func sameLen(op string, ts ...*Tensor) int {
	n := ts[0].Len()
	for _, t := range ts[1:] {
		if t.Len() != n {
			panic(fmt.Sprintf("kernels: %s: length mismatch: %v vs %v", op, ts[0], t))
		}
	}
	return n
}

// Mul implements Device.
func (c *CPU) Mul(dst, a, b *Tensor) {
	sameLen("Mul", dst, a, b)
	c.ew(ewMul, dst.F32, a.F32, b.F32, 0)
}

// Axpy implements Device.
func (c *CPU) Axpy(alpha float32, x, y *Tensor) {
	sameLen("Axpy", x, y)
	c.ew(ewAxpy, y.F32, x.F32, nil, alpha)
}

// Scale implements Device.
func (c *CPU) Scale(x *Tensor, alpha float32) { c.ew(ewScale, x.F32, nil, nil, alpha) }

// EqualMask implements Device.
func (c *CPU) EqualMask(dst, src *Tensor, value float32) {
	sameLen("EqualMask", dst, src)
	c.ew(ewEqual, dst.F32, src.F32, nil, value)
}

// Sigmoid implements Device.
func (c *CPU) Sigmoid(y, x *Tensor) {
	sameLen("Sigmoid", y, x)
	c.ew(ewSigmoid, y.F32, x.F32, nil, 0)
}

// ActBackward implements Device.
func (c *CPU) ActBackward(dy, y *Tensor, act Activation) {
	sameLen("ActBackward", dy, y)
	switch act {
	case Linear:
	case ReLU:
		c.ew(ewReLUBwd, dy.F32, y.F32, nil, 0)
	default:
		panic(fmt.Sprintf("kernels: ActBackward: unknown activation %d", act))
	}
}

var _ Activator = (*CPU)(nil)

// Activate implements Activator.
func (c *CPU) Activate(y, x *Tensor, act Activation) {
	sameLen("Activate", y, x)
	if act >= numActivations {
		panic(fmt.Sprintf("kernels: Activate: unknown activation %d", act))
	}
	c.ewAct(ewActFwd, y.F32, x.F32, nil, 0, act)
}

// ActivateBackward implements Activator.
func (c *CPU) ActivateBackward(dy, x *Tensor, act Activation) {
	sameLen("ActivateBackward", dy, x)
	if act >= numActivations {
		panic(fmt.Sprintf("kernels: ActivateBackward: unknown activation %d", act))
	}
	c.ewAct(ewActBwd, dy.F32, x.F32, nil, 0, act)
}

// ---------------------------------------------------------------- bias

type biasActTask struct {
	x, bias []float32
	rows, n int // rows per group, columns
	act     Activation
}

// run covers global rows [lo, hi) of x viewed as [groups*rows, n].
func (t *biasActTask) run(lo, hi int) {
	n := t.n
	for r := lo; r < hi; {
		g := r / t.rows
		end := min(hi, (g+1)*t.rows)
		cBiasAct(t.x[r*n:end*n], t.bias[g*n:g*n+n], end-r, n, t.act == ReLU)
		r = end
	}
}

// BiasAct implements Device.
func (c *CPU) BiasAct(x, bias *Tensor, groups int, act Activation) {
	if act != Linear && act != ReLU {
		panic(fmt.Sprintf("kernels: BiasAct: unknown activation %d", act))
	}
	if groups <= 0 || bias.Len()%groups != 0 {
		panic(fmt.Sprintf("kernels: BiasAct: bias %v not divisible into %d groups", bias, groups))
	}
	n := bias.Len() / groups
	if n == 0 || x.Len()%(groups*n) != 0 {
		panic(fmt.Sprintf("kernels: BiasAct: x %v is not [%d, rows, %d]", x, groups, n))
	}
	rows := x.Len() / (groups * n)
	total := groups * rows
	if total == 0 {
		return
	}
	t := biasActTask{x: x.F32, bias: bias.F32, rows: rows, n: n, act: act}
	if ch := c.chunksFor(total, n); ch > 1 && runPooled(c.pool, &c.pool.bias, t, total, 1, ch) {
		return
	}
	t.run(0, total)
}

// biasGradBlock is the number of columns one BiasGrad item sums (the C
// kernel's accumulator width).
const biasGradBlock = 64

type biasGradTask struct {
	dy, db        []float32
	rows, n, nblk int
	accumulate    bool
}

// run covers items [lo, hi); item i is column block i%nblk of group i/nblk.
// Each column is summed over rows in float64, in row order, by one goroutine,
// so the result does not depend on how items are split.
func (t *biasGradTask) run(lo, hi int) {
	n := t.n
	for it := lo; it < hi; it++ {
		g, blk := it/t.nblk, it%t.nblk
		c0 := blk * biasGradBlock
		w := min(biasGradBlock, n-c0)
		base, end := g*t.rows*n, (g+1)*t.rows*n
		cBiasGrad(t.dy[min(base+c0, end):end], t.rows, n, w, t.db[g*n+c0:g*n+c0+w], t.accumulate)
	}
}

// BiasGrad implements Device.
func (c *CPU) BiasGrad(dy, db *Tensor, groups int, accumulate bool) {
	if groups <= 0 || db.Len()%groups != 0 {
		panic(fmt.Sprintf("kernels: BiasGrad: db %v not divisible into %d groups", db, groups))
	}
	n := db.Len() / groups
	if n == 0 || dy.Len()%(groups*n) != 0 {
		panic(fmt.Sprintf("kernels: BiasGrad: dy %v is not [%d, rows, %d]", dy, groups, n))
	}
	rows := dy.Len() / (groups * n)
	nblk := (n + biasGradBlock - 1) / biasGradBlock
	items := groups * nblk
	t := biasGradTask{dy: dy.F32, db: db.F32, rows: rows, n: n, nblk: nblk, accumulate: accumulate}
	if ch := c.chunksFor(items, rows*biasGradBlock); ch > 1 && runPooled(c.pool, &c.pool.bgrad, t, items, 1, ch) {
		return
	}
	t.run(0, items)
}

var _ FusedBiasGrad = (*CPU)(nil)

type actBiasGradTask struct {
	dy, y, db     []float32
	rows, n, nblk int
	accumulate    bool
	relu          bool
}

// run covers items [lo, hi) like biasGradTask.
func (t *actBiasGradTask) run(lo, hi int) {
	n := t.n
	for it := lo; it < hi; it++ {
		g, blk := it/t.nblk, it%t.nblk
		c0 := blk * biasGradBlock
		w := min(biasGradBlock, n-c0)
		off := g*t.rows*n + c0
		var y []float32
		if t.relu {
			y = t.y[off:]
		}
		cReluBwdBiasGrad(t.dy[off:], y, t.rows, n, w, t.db[g*n+c0:g*n+c0+w], t.accumulate, t.relu)
	}
}

// ActBiasGrad implements FusedBiasGrad.
func (c *CPU) ActBiasGrad(dy, y *Tensor, act Activation, db *Tensor, groups int, accumulate bool) {
	sameLen("ActBiasGrad", dy, y)
	if act != Linear && act != ReLU {
		panic(fmt.Sprintf("kernels: ActBiasGrad: unknown activation %d", act))
	}
	if groups <= 0 || db.Len()%groups != 0 {
		panic(fmt.Sprintf("kernels: ActBiasGrad: db %v not divisible into %d groups", db, groups))
	}
	n := db.Len() / groups
	if n == 0 || dy.Len()%(groups*n) != 0 {
		panic(fmt.Sprintf("kernels: ActBiasGrad: dy %v is not [%d, rows, %d]", dy, groups, n))
	}
	rows := dy.Len() / (groups * n)
	if rows == 0 {
		c.BiasGrad(dy, db, groups, accumulate)
		return
	}
	nblk := (n + biasGradBlock - 1) / biasGradBlock
	items := groups * nblk
	t := actBiasGradTask{dy: dy.F32, y: y.F32, db: db.F32, rows: rows, n: n, nblk: nblk, accumulate: accumulate, relu: act == ReLU}
	if ch := c.chunksFor(items, 2*rows*biasGradBlock); ch > 1 && runPooled(c.pool, &c.pool.actBias, t, items, 1, ch) {
		return
	}
	t.run(0, items)
}

// ---------------------------------------------------------------- dropout

// DropoutHash is the counter-based random function behind Dropout: a
// SplitMix64 finaliser applied to seed + (i+1)*0x9E3779B97F4A7C15, where i is
// the element's index in the tensor. It needs no state, so any device (and
// any split of the work across threads) reproduces the same pattern bit for
// bit from (seed, i).
func DropoutHash(seed, i uint64) uint64 { return splitmix.At(seed, i) }

// DropoutThreshold returns the integer threshold and the keep scale Dropout
// uses for a rate: element i is dropped when DropoutHash(seed, i)>>40 (a
// uniform 24-bit integer) is < threshold = floor(rate * 2^24), and otherwise
// multiplied by scale = 1/(1-rate) computed in float32. The threshold is an
// integer so that every device makes exactly the same keep decisions.
func DropoutThreshold(rate float32) (threshold uint64, scale float32) {
	switch {
	case !(rate > 0): // also NaN
		return 0, 1
	case rate >= 1:
		return 1 << 24, 0
	}
	return uint64(rate * (1 << 24)), 1 / (1 - rate)
}

type dropoutTask struct {
	x, mask []float32
	thr     uint64
	scale   float32
	seed    uint64
}

func (t *dropoutTask) run(lo, hi int) {
	cDropout(t.x[lo:hi], t.mask[lo:hi], lo, t.seed, t.thr, t.scale)
}

// Dropout implements Device with DropoutHash and DropoutThreshold. A rate of
// 0 (or less) keeps everything (mask 1); a rate of 1 or more drops everything.
func (c *CPU) Dropout(x, mask *Tensor, rate float32, seed uint64) {
	n := sameLen("Dropout", x, mask)
	thr, scale := DropoutThreshold(rate)
	t := dropoutTask{x: x.F32, mask: mask.F32, thr: thr, scale: scale, seed: seed}
	if ch := c.chunksFor(n, 8); ch > 1 && runPooled(c.pool, &c.pool.drop, t, n, 64, ch) {
		return
	}
	t.run(0, n)
}

// ---------------------------------------------------------------- softmax

type softmaxTask struct {
	y, x, dy, dx []float32
	cols         int
	invT         float32
	backward     bool
}

func (t *softmaxTask) run(lo, hi int) {
	if t.backward {
		cSoftmaxBwd(t.dx, t.dy, t.y, lo, hi, t.cols, t.invT)
		return
	}
	cSoftmax(t.y, t.x, lo, hi, t.cols, t.invT)
}

func (c *CPU) softmax(t softmaxTask, rows int) {
	if ch := c.chunksFor(rows, costExpC*t.cols); ch > 1 && runPooled(c.pool, &c.pool.soft, t, rows, 1, ch) {
		return
	}
	t.run(0, rows)
}

// SoftmaxRows implements Device. Each row is shifted by its maximum before
// exponentiating, so any finite logits are safe; exp is a float32
// polynomial (cpu_math.c) and the normaliser is summed in float64.
func (c *CPU) SoftmaxRows(y, x *Tensor, temperature float32) {
	sameLen("SoftmaxRows", y, x)
	if x.Len() == 0 {
		return
	}
	c.softmax(softmaxTask{y: y.F32, x: x.F32, cols: x.Cols(), invT: 1 / temperature}, x.Rows())
}

// SoftmaxBackward implements Device:
// dx[j] = y[j] * (dy[j] - sum_k dy[k]*y[k]) / temperature.
func (c *CPU) SoftmaxBackward(dx, dy, y *Tensor, temperature float32) {
	sameLen("SoftmaxBackward", dx, dy, y)
	if y.Len() == 0 {
		return
	}
	c.softmax(softmaxTask{y: y.F32, dy: dy.F32, dx: dx.F32, cols: y.Cols(), invT: 1 / temperature, backward: true}, y.Rows())
}

// ---------------------------------------------------------------- gate

type gateTask struct {
	out, w  []float32
	experts []*Tensor
	d, e    int
}

func (t *gateTask) run(lo, hi int) {
	for e0 := 0; e0 < t.e; e0 += 4 {
		cGateFwd(t.out, t.w, t.e, t.experts, e0, lo, hi, t.d, e0 == 0)
	}
}

func checkGate(op string, out, w *Tensor, experts []*Tensor) (rows, d, ne int) {
	rows, d, ne = out.Rows(), out.Cols(), len(experts)
	if ne == 0 || w.Rows() != rows || w.Cols() != ne {
		panic(fmt.Sprintf("kernels: %s: weights %v for %d experts and output %v", op, w, ne, out))
	}
	for e, ex := range experts {
		if ex.Len() != rows*d {
			panic(fmt.Sprintf("kernels: %s: expert %d is %v, want %d x %d", op, e, ex, rows, d))
		}
	}
	return rows, d, ne
}

// GateCombine implements Device.
func (c *CPU) GateCombine(out, w *Tensor, experts []*Tensor) {
	rows, d, ne := checkGate("GateCombine", out, w, experts)
	t := gateTask{out: out.F32, w: w.F32, experts: experts, d: d, e: ne}
	if ch := c.chunksFor(rows, d*ne); ch > 1 && runPooled(c.pool, &c.pool.gate, t, rows, 1, ch) {
		return
	}
	t.run(0, rows)
}

type gateBwdTask struct {
	dout, w, dw []float32
	experts     []*Tensor
	dexperts    []*Tensor
	d, e        int
}

func (t *gateBwdTask) run(lo, hi int) {
	for e0 := 0; e0 < t.e; e0 += 4 {
		cGateBwd(t.dout, t.w, t.e, t.experts, t.dexperts, e0, t.dw, lo, hi, t.d, false)
	}
}

// GateCombineBackward implements Device.
func (c *CPU) GateCombineBackward(dout, w *Tensor, experts []*Tensor, dw *Tensor, dexperts []*Tensor) {
	rows, d, ne := checkGate("GateCombineBackward", dout, w, experts)
	if dw.Len() != rows*ne || len(dexperts) != ne {
		panic(fmt.Sprintf("kernels: GateCombineBackward: dw %v, %d expert gradients for %d experts", dw, len(dexperts), ne))
	}
	for e, ex := range dexperts {
		if ex.Len() != rows*d {
			panic(fmt.Sprintf("kernels: GateCombineBackward: expert gradient %d is %v, want %d x %d", e, ex, rows, d))
		}
	}
	t := gateBwdTask{dout: dout.F32, w: w.F32, dw: dw.F32, experts: experts, dexperts: dexperts, d: d, e: ne}
	if ch := c.chunksFor(rows, 2*d*ne); ch > 1 && runPooled(c.pool, &c.pool.gateBwd, t, rows, 1, ch) {
		return
	}
	t.run(0, rows)
}

// gatesBlockRows is the block of rows that all gates of a
// GatesCombineBackward finish before the next block: the block's expert
// outputs and gradients (4 experts of width 64: 64 KB) stay in the L2 cache
// from one gate to the next, where gate after gate over the whole batch
// reads and writes them from farther out once per gate.
const gatesBlockRows = 32

type gatesBwdTask struct {
	douts, ws, dws    []*Tensor
	experts, dexperts []*Tensor
	d, e              int
}

func (t *gatesBwdTask) run(lo, hi int) {
	for b0 := lo; b0 < hi; b0 += gatesBlockRows {
		b1 := min(b0+gatesBlockRows, hi)
		for g, dout := range t.douts {
			for e0 := 0; e0 < t.e; e0 += 4 {
				cGateBwd(dout.F32, t.ws[g].F32, t.e, t.experts, t.dexperts, e0, t.dws[g].F32, b0, b1, t.d, g == 0)
			}
		}
	}
}

// GatesCombineBackward implements GatesBackwarder.
func (c *CPU) GatesCombineBackward(douts, ws, dws, experts, dexperts []*Tensor) {
	if len(douts) == 0 || len(ws) != len(douts) || len(dws) != len(douts) {
		panic(fmt.Sprintf("kernels: GatesCombineBackward: %d gradients, %d weights, %d weight gradients",
			len(douts), len(ws), len(dws)))
	}
	var rows, d, ne int
	for g := range douts {
		rows, d, ne = checkGate("GatesCombineBackward", douts[g], ws[g], experts)
		if g > 0 && douts[g].Len() != douts[0].Len() {
			panic(fmt.Sprintf("kernels: GatesCombineBackward: gate %d's gradient %v, gate 0's %v", g, douts[g], douts[0]))
		}
		if dws[g].Len() != rows*ne {
			panic(fmt.Sprintf("kernels: GatesCombineBackward: gate %d: dw %v for %d experts", g, dws[g], ne))
		}
	}
	if len(dexperts) != ne {
		panic(fmt.Sprintf("kernels: GatesCombineBackward: %d expert gradients for %d experts", len(dexperts), ne))
	}
	for e, ex := range dexperts {
		if ex.Len() != rows*d {
			panic(fmt.Sprintf("kernels: GatesCombineBackward: expert gradient %d is %v, want %d x %d", e, ex, rows, d))
		}
	}
	t := gatesBwdTask{douts: douts, ws: ws, dws: dws, experts: experts, dexperts: dexperts, d: d, e: ne}
	if ch := c.chunksFor(rows, 2*d*ne*len(douts)); ch > 1 && runPooled(c.pool, &c.pool.gatesBwd, t, rows, 1, ch) {
		return
	}
	t.run(0, rows)
}

type gateSetsBwdTask struct {
	douts, ws, dws    []*Tensor
	experts, dexperts [][]*Tensor
	d                 int
}

// listedBefore reports whether expert gradient i of gate g is listed by
// an earlier gate (which then wrote it first).
func (t *gateSetsBwdTask) listedBefore(g, i int) bool {
	x := t.dexperts[g][i]
	for _, l := range t.dexperts[:g] {
		for _, y := range l {
			if y == x {
				return true
			}
		}
	}
	return false
}

func (t *gateSetsBwdTask) run(lo, hi int) {
	d := t.d
	for b0 := lo; b0 < hi; b0 += gatesBlockRows {
		b1 := min(b0+gatesBlockRows, hi)
		for g, dout := range t.douts {
			ne := len(t.experts[g])
			for e0 := 0; e0 < ne; e0 += 4 {
				// the chunk's first gate writes its experts' gradients; where
				// only some of them are written first here, those rows are
				// zeroed and the whole chunk adds
				cnt, firsts := min(4, ne-e0), 0
				for i := e0; i < e0+cnt; i++ {
					if !t.listedBefore(g, i) {
						firsts++
					}
				}
				if firsts > 0 && firsts < cnt {
					for i := e0; i < e0+cnt; i++ {
						if !t.listedBefore(g, i) {
							clear(t.dexperts[g][i].F32[b0*d : b1*d])
						}
					}
				}
				cGateBwd(dout.F32, t.ws[g].F32, ne, t.experts[g], t.dexperts[g], e0, t.dws[g].F32, b0, b1, d, firsts == cnt)
			}
		}
	}
}

// GateSetsCombineBackward implements GateSetsBackwarder: the gates over a
// block of rows (gatesBlockRows) before the next, as GatesCombineBackward.
func (c *CPU) GateSetsCombineBackward(douts, ws, dws []*Tensor, experts, dexperts [][]*Tensor) {
	const op = "GateSetsCombineBackward"
	if len(douts) == 0 || len(ws) != len(douts) || len(dws) != len(douts) || len(experts) != len(douts) || len(dexperts) != len(douts) {
		panic(fmt.Sprintf("kernels: %s: %d gradients, %d weights, %d weight gradients, %d and %d expert lists",
			op, len(douts), len(ws), len(dws), len(experts), len(dexperts)))
	}
	var rows, d, work int
	for g := range douts {
		var ne int
		rows, d, ne = checkGate(op, douts[g], ws[g], experts[g])
		if g > 0 && douts[g].Len() != douts[0].Len() {
			panic(fmt.Sprintf("kernels: %s: gate %d's gradient %v, gate 0's %v", op, g, douts[g], douts[0]))
		}
		if dws[g].Len() != rows*ne || len(dexperts[g]) != ne {
			panic(fmt.Sprintf("kernels: %s: gate %d: dw %v, %d expert gradients for %d experts", op, g, dws[g], len(dexperts[g]), ne))
		}
		for e, ex := range dexperts[g] {
			if ex.Len() != rows*d {
				panic(fmt.Sprintf("kernels: %s: gate %d: expert gradient %d is %v, want %d x %d", op, g, e, ex, rows, d))
			}
		}
		work += 2 * d * ne
	}
	t := gateSetsBwdTask{douts: douts, ws: ws, dws: dws, experts: experts, dexperts: dexperts, d: d}
	if ch := c.chunksFor(rows, work); ch > 1 && runPooled(c.pool, &c.pool.gateSetsBwd, t, rows, 1, ch) {
		return
	}
	t.run(0, rows)
}

// ---------------------------------------------------------------- columns

type copyColsTask struct {
	dst, src              []float32
	dstN, srcN            int
	dstCol, srcCol, width int
	accumulate            bool
}

func (t *copyColsTask) run(lo, hi int) {
	cCopyCols(t.dst[lo*t.dstN+t.dstCol:], t.dstN, t.src[lo*t.srcN+t.srcCol:], t.srcN, hi-lo, t.width, t.accumulate)
}

// CopyCols implements Device.
func (c *CPU) CopyCols(dst *Tensor, dstCol int, src *Tensor, srcCol, width int, accumulate bool) {
	rows, dn, sn := dst.Rows(), dst.Cols(), src.Cols()
	if src.Rows() != rows || width < 0 || dstCol < 0 || srcCol < 0 || dstCol+width > dn || srcCol+width > sn {
		panic(fmt.Sprintf("kernels: CopyCols: %d columns from %v at %d to %v at %d", width, src, srcCol, dst, dstCol))
	}
	if width == 0 || rows == 0 {
		return
	}
	t := copyColsTask{dst: dst.F32, src: src.F32, dstN: dn, srcN: sn, dstCol: dstCol, srcCol: srcCol, width: width, accumulate: accumulate}
	if ch := c.chunksFor(rows, width+16); ch > 1 && runPooled(c.pool, &c.pool.cols, t, rows, 1, ch) {
		return
	}
	t.run(0, rows)
}

// ---------------------------------------------------------------- embeddings

type gatherTask struct {
	out, table []float32
	ids, offs  []int32
	outN, col  int
	dim        int
	comb       Combiner
}

func (t *gatherTask) run(lo, hi int) {
	cGather(t.out[t.col:], t.outN, t.table, t.dim, t.ids, t.offs, lo, hi, t.comb)
}

// checkOffsets validates list offsets against the number of values.
func checkOffsets(op string, offs []int32, rows, nvals int) error {
	if len(offs) != rows+1 {
		return fmt.Errorf("kernels: %s: %d offsets for %d rows, want %d", op, len(offs), rows, rows+1)
	}
	if offs[0] < 0 {
		return fmt.Errorf("kernels: %s: offsets[0] = %d is negative", op, offs[0])
	}
	for b := 1; b <= rows; b++ {
		if offs[b] < offs[b-1] {
			return fmt.Errorf("kernels: %s: offsets decrease at row %d (%d < %d)", op, b-1, offs[b], offs[b-1])
		}
	}
	if int(offs[rows]) > nvals {
		return fmt.Errorf("kernels: %s: offsets end at %d but there are %d values", op, offs[rows], nvals)
	}
	return nil
}

// EmbeddingGather implements Device. Every id is checked before anything is
// written; the *IDRangeError names the first bad id in value order and the
// batch row it belongs to. Malformed offsets (not non-decreasing, or past the
// end of ids) are reported as a plain error.
func (c *CPU) EmbeddingGather(out *Tensor, col int, table, ids, offsets *Tensor, comb Combiner) error {
	rows, outN, dim := out.Rows(), out.Cols(), table.Cols()
	if col < 0 || col+dim > outN {
		panic(fmt.Sprintf("kernels: EmbeddingGather: %d columns at %d do not fit in %v", dim, col, out))
	}
	if comb > SqrtN {
		panic(fmt.Sprintf("kernels: EmbeddingGather: unknown combiner %d", comb))
	}
	tr := int64(table.Rows())
	t := gatherTask{out: out.F32, table: table.F32, ids: ids.I32, outN: outN, col: col, dim: dim, comb: comb}
	if offsets == nil {
		if ids.Len() != rows {
			panic(fmt.Sprintf("kernels: EmbeddingGather: %v ids for %d rows", ids, rows))
		}
		for b, id := range ids.I32[:rows] {
			if id < 0 || int64(id) >= tr {
				return &IDRangeError{Row: b, ID: int64(id), Rows: int(tr)}
			}
		}
	} else {
		t.offs = offsets.I32
		if err := checkOffsets("EmbeddingGather", t.offs, rows, ids.Len()); err != nil {
			return err
		}
		vals := ids.I32[t.offs[0]:t.offs[rows]]
		for i, id := range vals {
			if id < 0 || int64(id) >= tr {
				pos := int32(i) + t.offs[0]
				b, _ := slices.BinarySearch(t.offs[1:], pos+1) // first row whose end > pos
				return &IDRangeError{Row: b, ID: int64(id), Rows: int(tr)}
			}
		}
	}
	if rows == 0 || dim == 0 {
		return nil
	}
	// A table row is a random memory access: count it as costRandom plus
	// its length.
	cost := dim + costRandom
	if t.offs != nil {
		cost = (dim + costRandom) * (1 + (int(t.offs[rows])-int(t.offs[0]))/max(rows, 1))
	}
	if ch := c.chunksFor(rows, cost); ch > 1 && runPooled(c.pool, &c.pool.gather, t, rows, 1, ch) {
		return nil
	}
	t.run(0, rows)
	return nil
}

// EmbeddingBackward implements Device. It finds the unique ids of the
// batch and lists them in ascending order, maps every id of the batch to
// its gradient row, and accumulates the rows of dout into the gradient in
// batch order. Row b contributes dout[b]*s to each of its ids, with s = 1
// (Sum, or a single id), 1/n (Mean) or 1/sqrt(n) (SqrtN), the same factors
// EmbeddingGather uses. Scratch memory is O(batch) whatever the table size
// (embScratch). It panics on an id outside [0, tableRows): gather rejects
// those first.
func (c *CPU) EmbeddingBackward(grad *SparseGrad, dout *Tensor, col int, ids, offsets *Tensor, comb Combiner, tableRows int) {
	rows, outN, dim := dout.Rows(), dout.Cols(), grad.Values.Cols()
	if col < 0 || col+dim > outN {
		panic(fmt.Sprintf("kernels: EmbeddingBackward: %d columns at %d do not fit in %v", dim, col, dout))
	}
	vals := ids.I32
	base := 0
	if offsets == nil {
		if len(vals) != rows {
			panic(fmt.Sprintf("kernels: EmbeddingBackward: %v ids for %d rows", ids, rows))
		}
	} else {
		if err := checkOffsets("EmbeddingBackward", offsets.I32, rows, len(vals)); err != nil {
			panic(err.Error())
		}
		base = int(offsets.I32[0])
		vals = vals[base:offsets.I32[rows]]
	}
	if len(vals) > grad.Rows.Len() || grad.Values.Rows() < grad.Rows.Len() {
		panic(fmt.Sprintf("kernels: EmbeddingBackward: %d ids exceed the gradient capacity (rows %v, values %v)",
			len(vals), grad.Rows, grad.Values))
	}
	lo, hi := int32(math.MaxInt32), int32(-1)
	for _, id := range vals {
		if id < 0 || int(id) >= tableRows {
			panic(fmt.Sprintf("kernels: EmbeddingBackward: id %d outside the table [0, %d)", id, tableRows))
		}
		lo, hi = min(lo, id), max(hi, id)
	}
	sc := c.lockEmbScratch()
	defer sc.mu.Unlock()
	slot := sc.grow(len(vals))
	nu := sc.unique(vals, grad.Rows.I32, lo, hi, tableRows)
	gv := grad.Values.F32[:nu*dim]
	clear(gv)
	var offs []int32
	if offsets != nil {
		offs = offsets.I32
	}
	cEmbBwd(gv, dim, slot, base, dout.F32[col:], outN, offs, rows, comb)
	grad.N = nu
}

// lockEmbScratch returns a free scratch slot, locked.
func (c *CPU) lockEmbScratch() *embScratch {
	for i := range c.emb {
		if c.emb[i].mu.TryLock() {
			return &c.emb[i]
		}
	}
	c.emb[0].mu.Lock()
	return &c.emb[0]
}

// embDenseRows: tables up to this many rows (or up to 8 rows per id of the
// batch) find their unique ids with a bitmap over the table; larger ones
// sort the ids. Either way the scratch is O(batch): a training step's
// memory does not grow with the tables beyond the tables and their
// optimizer state.
const embDenseRows = 1 << 16

// embScratch is the EmbeddingBackward scratch of one call: slot[k] is the
// gradient row of id k of the batch; keys/tmp are radix-sort buffers; bits
// and pos the bitmap and row-to-slot map of small tables.
type embScratch struct {
	mu        sync.Mutex
	slot      []int32
	keys, tmp []uint64
	bits      []uint64
	pos       []int32
}

// grow sizes the per-id buffers for n ids and returns slot[:n].
func (s *embScratch) grow(n int) []int32 {
	if cap(s.slot) < n {
		s.slot = make([]int32, n, n+n/2)
		s.keys = make([]uint64, n, n+n/2)
		s.tmp = make([]uint64, n, n+n/2)
	}
	s.slot = s.slot[:n]
	return s.slot
}

// unique writes the distinct ids of vals in ascending order into uniq,
// sets slot[k] to the position in uniq of vals[k], and returns the count.
// All ids lie in [lo, hi] within a table of tableRows rows.
func (s *embScratch) unique(vals, uniq []int32, lo, hi int32, tableRows int) int {
	n := len(vals)
	if n == 0 {
		return 0
	}
	slot := s.slot[:n]
	if tableRows <= max(embDenseRows, 8*n) {
		// bitmap over the table: mark, then read the ids off in order
		words := (tableRows + 63) / 64
		if len(s.bits) < words {
			s.bits = make([]uint64, words) // all zero between calls
			s.pos = make([]int32, words*64)
		}
		seen, pos := s.bits, s.pos
		for _, id := range vals {
			seen[id>>6] |= 1 << (id & 63)
		}
		j := 0
		for w := int(lo >> 6); w <= int(hi>>6); w++ {
			x := seen[w]
			seen[w] = 0
			for x != 0 {
				id := int32(w<<6 + bits.TrailingZeros64(x))
				pos[id], uniq[j] = int32(j), id
				j++
				x &= x - 1
			}
		}
		for k, id := range vals {
			slot[k] = pos[id]
		}
		return j
	}
	// LSD radix sort of (id, k) by id, 8 bits per pass, over the bits the
	// ids use.
	keys, tmp := s.keys[:n], s.tmp[:n]
	for k, id := range vals {
		keys[k] = uint64(id)<<32 | uint64(k)
	}
	var count [256]int
	for shift := 32; shift < 32+bits.Len32(uint32(hi)); shift += 8 {
		clear(count[:])
		for _, key := range keys {
			count[(key>>shift)&255]++
		}
		sum := 0
		for d := range count {
			count[d], sum = sum, sum+count[d]
		}
		for _, key := range keys {
			d := (key >> shift) & 255
			tmp[count[d]] = key
			count[d]++
		}
		keys, tmp = tmp, keys
	}
	j := -1
	prev := int32(-1)
	for _, key := range keys {
		id := int32(key >> 32)
		if id != prev {
			j++
			uniq[j], prev = id, id
		}
		slot[uint32(key)] = int32(j)
	}
	return j + 1
}

// ---------------------------------------------------------------- losses

// lossBlock is the number of elements whose loss is summed together before
// the block sums are added in order: fixed blocks keep the result independent
// of the number of threads.
const lossBlock = 4096

type lossKind uint8

const (
	lossBCE lossKind = iota
	lossMSE
	lossSumSq
)

type lossTask struct {
	kind        lossKind
	dz, z, y, w []float32
	scale       float32
	partial     []float64
}

// blockSum returns the unscaled weighted loss of elements [lo, hi) in
// float64 and writes their gradients.
func (t *lossTask) blockSum(lo, hi int) float64 {
	var sum float64
	z := t.z[lo:hi]
	switch t.kind {
	case lossSumSq:
		for _, v := range z {
			sum += float64(v) * float64(v)
		}
	case lossBCE:
		// max(z,0) - z*y + log(1+exp(-|z|)): no overflow for any z;
		// exp(-|z|) also gives the sigmoid.
		var w []float32
		if t.w != nil {
			w = t.w[lo:hi]
		}
		sum = cBCE(t.dz[lo:hi], z, t.y[lo:hi], w, t.scale)
	case lossMSE:
		y, dz := t.y[lo:hi], t.dz[lo:hi]
		y, dz = y[:len(z)], dz[:len(z)]
		for i, zi := range z {
			w := float32(1)
			if t.w != nil {
				w = t.w[lo+i]
			}
			d := zi - y[i]
			sum += float64(w) * float64(d) * float64(d)
			dz[i] = 2 * t.scale * w * d
		}
	}
	return sum
}

func (t *lossTask) run(lo, hi int) {
	for b := lo; b < hi; b += lossBlock {
		t.partial[b/lossBlock] = t.blockSum(b, min(b+lossBlock, hi))
	}
}

// loss computes the blocked sum of t over n elements and adds scale*sum to
// loss[0].
func (c *CPU) loss(loss *Tensor, t lossTask, n int) {
	if loss.Len() < 1 {
		panic("kernels: loss tensor is empty")
	}
	var total float64
	cost := 2
	switch t.kind {
	case lossBCE:
		cost = 2 * costExpC // exp, log1p
	case lossMSE:
		cost = 8 // a scalar Go loop
	}
	if ch := c.chunksFor(n, cost); ch > 1 && c.pool.mu.TryLock() {
		p := c.pool
		nb := (n + lossBlock - 1) / lossBlock
		if cap(p.partial) < nb {
			p.partial = make([]float64, nb)
		}
		t.partial = p.partial[:nb]
		p.loss = t
		p.runLocked(&p.loss, n, lossBlock, ch)
		p.loss = lossTask{}
		for _, s := range t.partial {
			total += s
		}
		p.unlock()
	} else {
		for b := 0; b < n; b += lossBlock {
			total += t.blockSum(b, min(b+lossBlock, n))
		}
	}
	loss.F32[0] = float32(float64(loss.F32[0]) + float64(t.scale)*total)
}

func checkLoss(op string, dz, z, y, weights *Tensor) int {
	n := sameLen(op, dz, z, y)
	if weights != nil && weights.Len() != n {
		panic(fmt.Sprintf("kernels: %s: weights %v for %d values", op, weights, n))
	}
	return n
}

func f32orNil(t *Tensor) []float32 {
	if t == nil {
		return nil
	}
	return t.F32
}

// BCEWithLogits implements Device. Each term max(z,0) - z*y +
// log1p(exp(-|z|)) is computed in float32 (polynomial exp and log, about 1
// ulp; no overflow for any |z|) and the terms are summed in float64.
func (c *CPU) BCEWithLogits(loss, dz, z, y, weights *Tensor, scale float32) {
	n := checkLoss("BCEWithLogits", dz, z, y, weights)
	c.loss(loss, lossTask{kind: lossBCE, dz: dz.F32, z: z.F32, y: y.F32, w: f32orNil(weights), scale: scale}, n)
}

// MSE implements Device.
func (c *CPU) MSE(loss, dz, z, y, weights *Tensor, scale float32) {
	n := checkLoss("MSE", dz, z, y, weights)
	c.loss(loss, lossTask{kind: lossMSE, dz: dz.F32, z: z.F32, y: y.F32, w: f32orNil(weights), scale: scale}, n)
}

// SumSquares implements Device.
func (c *CPU) SumSquares(loss, x *Tensor, scale float32) {
	c.loss(loss, lossTask{kind: lossSumSq, z: x.F32, scale: scale}, x.Len())
}

// ---------------------------------------------------------------- optimizers

// AdamStepSize is the bias-corrected learning rate of an Adam step,
// LR * sqrt(1-Beta2^Step) / (1-Beta1^Step), computed in float64 (Keras /
// TensorFlow's ResourceApplyAdam form, with Eps added to sqrt(v)).
func AdamStepSize(p AdamParams) float32 {
	t := float64(max(p.Step, 1))
	return float32(float64(p.LR) * math.Sqrt(1-math.Pow(float64(p.Beta2), t)) / (1 - math.Pow(float64(p.Beta1), t)))
}

// adamTask (like adagradTask and sgdTask) runs an optimizer either densely
// over elements or, when rows is set, over the rows of a SparseGrad (items are
// then gradient rows of dim elements).
type adamTask struct {
	param, grad, m, v      []float32
	rows                   []int32 // sparse: table row of each gradient row
	dim                    int
	lrT, b1, b2, eps, l2x2 float32
}

func (t *adamTask) run(lo, hi int) {
	if t.rows == nil {
		cAdam(t.param[lo:hi], t.grad[lo:hi], t.m[lo:hi], t.v[lo:hi], t.lrT, t.b1, t.b2, t.eps, t.l2x2)
		return
	}
	inCalls(lo, hi, sparseRowsPerCall, func(lo, hi int) {
		cSparseAdam(t.param, t.m, t.v, t.grad, t.rows, lo, hi, t.dim, t.lrT, t.b1, t.b2, t.eps, t.l2x2)
	})
}

// sparseRowsPerCall bounds the gradient rows of one sparse optimizer call:
// a row of a large table is a few cache misses (200-350 ns), so a call
// lasts at most about 25-45 us. Longer cgo calls, on every P at once, are
// what the runtime's sysmon retakes Ps from (see pool.unlock); the rows are
// independent, so the pieces give the same bits as one call.
const sparseRowsPerCall = 128

// inCalls runs f over [lo, hi) in consecutive pieces of at most n items.
func inCalls(lo, hi, n int, f func(lo, hi int)) {
	for ; lo < hi; lo += n {
		f(lo, min(lo+n, hi))
	}
}

type adagradTask struct {
	param, grad, acc []float32
	rows             []int32
	dim              int
	lr, eps, l2x2    float32
}

func (t *adagradTask) run(lo, hi int) {
	if t.rows == nil {
		cAdagrad(t.param[lo:hi], t.grad[lo:hi], t.acc[lo:hi], t.lr, t.eps, t.l2x2)
		return
	}
	inCalls(lo, hi, sparseRowsPerCall, func(lo, hi int) {
		cSparseAdagrad(t.param, t.acc, t.grad, t.rows, lo, hi, t.dim, t.lr, t.eps, t.l2x2)
	})
}

type sgdTask struct {
	param, grad []float32
	rows        []int32
	dim         int
	lr, l2x2    float32
}

func (t *sgdTask) run(lo, hi int) {
	if t.rows == nil {
		cSGD(t.param[lo:hi], t.grad[lo:hi], t.lr, t.l2x2)
		return
	}
	inCalls(lo, hi, sparseRowsPerCall, func(lo, hi int) {
		cSparseSGD(t.param, t.grad, t.rows, lo, hi, t.dim, t.lr, t.l2x2)
	})
}

func (c *CPU) runAdam(t adamTask, n, unit, cost int) {
	if ch := c.chunksFor(n, cost); ch > 1 && runPooled(c.pool, &c.pool.adam, t, n, unit, ch) {
		return
	}
	t.run(0, n)
}

func (c *CPU) runAdagrad(t adagradTask, n, unit, cost int) {
	if ch := c.chunksFor(n, cost); ch > 1 && runPooled(c.pool, &c.pool.adagrad, t, n, unit, ch) {
		return
	}
	t.run(0, n)
}

func (c *CPU) runSGD(t sgdTask, n, unit, cost int) {
	if ch := c.chunksFor(n, cost); ch > 1 && runPooled(c.pool, &c.pool.sgd, t, n, unit, ch) {
		return
	}
	t.run(0, n)
}

// Adam implements Device (see AdamStepSize and mtlcpu_adam in cpu_kernels.c
// for the formula).
func (c *CPU) Adam(param, grad, m, v *Tensor, p AdamParams) {
	n := sameLen("Adam", param, grad, m, v)
	c.runAdam(adamTask{param: param.F32, grad: grad.F32, m: m.F32, v: v.F32,
		lrT: AdamStepSize(p), b1: p.Beta1, b2: p.Beta2, eps: p.Eps, l2x2: 2 * p.L2}, n, 64, 8)
}

// AdamMulti implements Device as one Adam call per tensor.
func (c *CPU) AdamMulti(params, grads, ms, vs []*Tensor, p AdamParams) {
	if len(grads) != len(params) || len(ms) != len(params) || len(vs) != len(params) {
		panic(fmt.Sprintf("kernels: AdamMulti: %d params, %d grads, %d m, %d v", len(params), len(grads), len(ms), len(vs)))
	}
	for i := range params {
		c.Adam(params[i], grads[i], ms[i], vs[i], p)
	}
}

// Adagrad implements Device (TensorFlow's ApplyAdagradV2 as used by Keras 2,
// see mtlcpu_adagrad in cpu_kernels.c).
func (c *CPU) Adagrad(param, grad, acc *Tensor, p AdagradParams) {
	n := sameLen("Adagrad", param, grad, acc)
	c.runAdagrad(adagradTask{param: param.F32, grad: grad.F32, acc: acc.F32, lr: p.LR, eps: p.Eps, l2x2: 2 * p.L2}, n, 64, 6)
}

// SGD implements Device.
func (c *CPU) SGD(param, grad *Tensor, p SGDParams) {
	n := sameLen("SGD", param, grad)
	c.runSGD(sgdTask{param: param.F32, grad: grad.F32, lr: p.LR, l2x2: 2 * p.L2}, n, 64, 2)
}

// checkSparse validates a SparseGrad against a table and returns its rows.
func checkSparse(op string, table *Tensor, g *SparseGrad, state ...*Tensor) []int32 {
	dim := table.Cols()
	if g.Values.Cols() != dim || g.N < 0 || g.N > g.Rows.Len() || g.N > g.Values.Rows() {
		panic(fmt.Sprintf("kernels: %s: gradient %v/%v with N=%d for table %v", op, g.Rows, g.Values, g.N, table))
	}
	for _, s := range state {
		if s.Len() != table.Len() {
			panic(fmt.Sprintf("kernels: %s: state %v for table %v", op, s, table))
		}
	}
	rows := g.Rows.I32[:g.N]
	nr := int32(table.Rows())
	for _, r := range rows {
		if r < 0 || r >= nr {
			panic(fmt.Sprintf("kernels: %s: gradient row %d outside the table [0, %d)", op, r, nr))
		}
	}
	return rows
}

// SparseAdam implements Device: rows not in grad, and their moments, are
// left untouched (lazy Adam); the step size uses the global step.
func (c *CPU) SparseAdam(table, m, v *Tensor, grad *SparseGrad, p AdamParams) {
	rows := checkSparse("SparseAdam", table, grad, m, v)
	dim := table.Cols()
	c.runAdam(adamTask{param: table.F32, grad: grad.Values.F32, m: m.F32, v: v.F32, rows: rows, dim: dim,
		lrT: AdamStepSize(p), b1: p.Beta1, b2: p.Beta2, eps: p.Eps, l2x2: 2 * p.L2}, len(rows), 1, 8*dim+3*costRandom)
}

// SparseAdagrad implements Device.
func (c *CPU) SparseAdagrad(table, acc *Tensor, grad *SparseGrad, p AdagradParams) {
	rows := checkSparse("SparseAdagrad", table, grad, acc)
	dim := table.Cols()
	c.runAdagrad(adagradTask{param: table.F32, grad: grad.Values.F32, acc: acc.F32, rows: rows, dim: dim,
		lr: p.LR, eps: p.Eps, l2x2: 2 * p.L2}, len(rows), 1, 6*dim+2*costRandom)
}

// SparseSGD implements Device.
func (c *CPU) SparseSGD(table *Tensor, grad *SparseGrad, p SGDParams) {
	rows := checkSparse("SparseSGD", table, grad)
	dim := table.Cols()
	c.runSGD(sgdTask{param: table.F32, grad: grad.Values.F32, rows: rows, dim: dim, lr: p.LR, l2x2: 2 * p.L2}, len(rows), 1, 2*dim+costRandom)
}
