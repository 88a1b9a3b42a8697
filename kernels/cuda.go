//go:build cuda

package kernels

import (
	"fmt"
	"sync"
	"unsafe"

	"github.com/mtlrank/mtlrank/cublas"
)

// CUDA is the GPU Device: tensors live in device memory (Tensor.Ptr), every
// op is queued on one compute stream of one GPU, and nothing waits for the
// GPU except the calls that must (host copies, Sync, the id check of
// EmbeddingGather in immediate mode, and EmbeddingBackward, whose unique-row
// count the SparseGrad carries on the host).
//
// Errors. Ops of the Device interface that return nothing record the first
// failure (a CUDA or cuBLAS error, a fault of an earlier kernel, a call that
// is not allowed during graph capture); Sync returns it and clears it. Alloc
// panics with an error wrapping cublas.ErrNoMemory when the device is out of
// memory: the interface has no error for Alloc, and continuing with a
// missing buffer would only move the failure.
//
// Id checks. EmbeddingGather checks ids on the GPU and never reads outside
// the table. By default (immediate mode) it waits for the check and returns
// the *IDRangeError itself, like the CPU device. With
// SetImmediateIDCheck(false), and always while capturing a graph, the check
// is deferred: Sync returns the *IDRangeError of the earliest failing gather
// since the previous Sync, and the step runs without a host round trip.
//
// Concurrency. Calls are serialised by a mutex, so a CUDA may be shared by
// goroutines (for example inference workspaces over shared weights); their
// work interleaves on the one stream.
//
// Memory. Alloc takes zeroed memory from CUDA's stream-ordered pool, which
// keeps freed blocks for reuse; MemoryInUse and LiveTensors count what the
// device handed out and was not released, so tests can check for leaks.
type CUDA struct {
	mu    sync.Mutex
	x     *cublas.Context
	index int
	name  string
	info  cublas.DeviceInfo

	err error // first failure since the last Sync

	live      map[uintptr]int // owned allocations: address -> bytes
	liveBytes int64
	allocs    uint64 // allocations so far (their zero-fill runs on the compute stream)

	immediateIDs bool
	slots        int // id-check slots used since the last read-back
	capturing    bool

	// Reused argument buffers (calls hold mu).
	ptrs, ptrs2 []uintptr
	opt         cublas.OptBuffer
	optTs       []cublas.OptTensor
	emb         cublas.EmbBuffer
	embIn       []cublas.EmbInput
	loss        cublas.LossBuffer
	lossTs      []cublas.LossTask
}

var _ Device = (*CUDA)(nil)

// NewCUDA opens GPU deviceIndex. The error says why when there is no GPU, no
// driver, or no device with that index (errors.Is(err, cublas.ErrNoDevice)).
func NewCUDA(deviceIndex int) (*CUDA, error) {
	x, err := cublas.NewContext(deviceIndex)
	if err != nil {
		return nil, fmt.Errorf("kernels: CUDA device %d: %w", deviceIndex, err)
	}
	info, err := x.Info()
	if err != nil {
		x.Close()
		return nil, fmt.Errorf("kernels: CUDA device %d: %w", deviceIndex, err)
	}
	return &CUDA{x: x, index: deviceIndex, name: fmt.Sprintf("cuda:%d", deviceIndex), info: info,
		live: map[uintptr]int{}, immediateIDs: true}, nil
}

// CUDADevices is the number of visible GPUs. A build without the cuda tag
// has the same function, which returns an error.
func CUDADevices() (int, error) {
	n, err := cublas.DeviceCount()
	if err != nil {
		return 0, fmt.Errorf("kernels: %w", err)
	}
	return n, nil
}

// NewCUDADevice returns the CUDA device deviceIndex as a Device. A build
// without the cuda tag has the same function, which returns an error.
func NewCUDADevice(index int) (Device, error) {
	d, err := NewCUDA(index)
	if err != nil {
		return nil, err
	}
	return d, nil
}

// Name implements Device: "cuda:<index>".
func (d *CUDA) Name() string { return d.name }

// Threads implements Device: host work is a single thread.
func (d *CUDA) Threads() int { return 1 }

// Info describes the GPU (name, compute capability, memory, CUDA versions).
func (d *CUDA) Info() cublas.DeviceInfo { return d.info }

// Context returns the underlying context for advanced use (events, timing).
// Calls on it bypass the device's mutex.
func (d *CUDA) Context() *cublas.Context { return d.x }

// SetImmediateIDCheck selects whether EmbeddingGather waits for its id check
// (true, the default) or leaves it to Sync.
func (d *CUDA) SetImmediateIDCheck(on bool) {
	d.mu.Lock()
	d.immediateIDs = on
	d.mu.Unlock()
}

// SetTF32 lets GEMMs use TF32 tensor cores: faster, but products keep only
// 10 mantissa bits, so results no longer match the CPU device within the
// parity tolerance. Off by default.
func (d *CUDA) SetTF32(on bool) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.x.SetTF32(on)
}

// MemoryInUse is the number of bytes of owned tensors allocated by this
// device and not yet released.
func (d *CUDA) MemoryInUse() int64 {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.liveBytes
}

// LiveTensors is the number of owned tensors not yet released.
func (d *CUDA) LiveTensors() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return len(d.live)
}

// MemInfo reports device memory and the allocation pool's usage.
func (d *CUDA) MemInfo() (cublas.MemInfo, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.x.MemInfo()
}

// Trim returns cached pool memory to the driver (after releasing a model).
func (d *CUDA) Trim() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.x.Trim()
}

// Close waits for queued work, frees tensors that are still allocated and
// the context. It reports those tensors (a leak in the caller) as an error.
func (d *CUDA) Close() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.x == nil {
		return nil
	}
	var err error
	if n := len(d.live); n > 0 {
		err = fmt.Errorf("kernels: CUDA Close: %d tensors (%d bytes) were still allocated", n, d.liveBytes)
		for p := range d.live {
			_ = d.x.Free(p)
		}
		d.live = map[uintptr]int{}
		d.liveBytes = 0
	}
	d.x.Close()
	d.x = nil
	return err
}

// fail records the first failure until Sync.
func (d *CUDA) fail(err error) {
	if err != nil && d.err == nil {
		d.err = err
	}
}

// ptr is the device address of t (0 for nil). A tensor of another device is
// a programming error.
func (d *CUDA) ptr(t *Tensor) uintptr {
	if t == nil {
		return 0
	}
	if t.Dev != Device(d) {
		panic(fmt.Sprintf("kernels: %v is not on %s", t, d.Name()))
	}
	return t.Ptr
}

// ---------------------------------------------------------------- memory

// Alloc implements Device: zero-filled device memory (nothing for an empty
// shape).
func (d *CUDA) Alloc(dt DType, shape ...int) *Tensor {
	if dt != Float32 && dt != Int32 {
		panic(fmt.Sprintf("kernels: Alloc: unsupported dtype %v", dt))
	}
	n := shapeLen(shape)
	t := NewTensor(d, dt, shape)
	if n == 0 {
		return t
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	p, err := d.x.Malloc(4 * n)
	if err != nil {
		panic(fmt.Errorf("kernels: %s Alloc %s%v (%d bytes): %w", d.Name(), dt, shape, 4*n, err))
	}
	d.live[p] = 4 * n
	d.liveBytes += int64(4 * n)
	d.allocs++
	t.Ptr = p
	return t
}

// Free implements Device. Freeing while a graph is being captured is an
// error (the graph would replay on freed memory); the memory then stays
// allocated until Close.
func (d *CUDA) Free(t *Tensor) {
	if t.Ptr == 0 {
		return
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.x == nil { // after Close, which freed everything
		t.Ptr = 0
		return
	}
	bytes, ok := d.live[t.Ptr]
	if !ok {
		d.fail(fmt.Errorf("kernels: %s Free: %v at %#x was not allocated by this device (double free, or a view)",
			d.Name(), t, t.Ptr))
		return
	}
	if d.capturing {
		d.fail(fmt.Errorf("kernels: %s Free: %v released while capturing a graph, which would replay on freed memory",
			d.Name(), t))
		return
	}
	delete(d.live, t.Ptr)
	d.liveBytes -= int64(bytes)
	d.fail(d.x.Free(t.Ptr))
	t.Ptr = 0
}

// CopyFromHostF32 implements Device: dst[:len(src)] = src (waits for the copy).
func (d *CUDA) CopyFromHostF32(dst *Tensor, src []float32) {
	checkRoom("CopyFromHostF32", dst.Len(), len(src))
	if len(src) == 0 {
		return
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	d.fail(d.x.CopyHtoD(d.ptr(dst), unsafe.Pointer(&src[0]), 4*len(src), cublas.Compute, true))
}

// CopyFromHostI32 implements Device: dst[:len(src)] = src (waits for the copy).
func (d *CUDA) CopyFromHostI32(dst *Tensor, src []int32) {
	checkRoom("CopyFromHostI32", dst.Len(), len(src))
	if len(src) == 0 {
		return
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	d.fail(d.x.CopyHtoD(d.ptr(dst), unsafe.Pointer(&src[0]), 4*len(src), cublas.Compute, true))
}

// CopyToHostF32 implements Device: dst[:src.Len()] = src, after the queued
// work that writes src.
func (d *CUDA) CopyToHostF32(dst []float32, src *Tensor) {
	n := src.Len()
	checkRoom("CopyToHostF32", len(dst), n)
	if n == 0 {
		return
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	d.fail(d.x.CopyDtoH(unsafe.Pointer(&dst[0]), d.ptr(src), 4*n, cublas.Compute, true))
}

// CopyToHostI32 implements Device.
func (d *CUDA) CopyToHostI32(dst []int32, src *Tensor) {
	n := src.Len()
	checkRoom("CopyToHostI32", len(dst), n)
	if n == 0 {
		return
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	d.fail(d.x.CopyDtoH(unsafe.Pointer(&dst[0]), d.ptr(src), 4*n, cublas.Compute, true))
}

// Copy implements Device.
func (d *CUDA) Copy(dst, src *Tensor) {
	if dst.DType != src.DType || dst.Len() != src.Len() {
		panic(fmt.Sprintf("kernels: Copy: %v to %v", src, dst))
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	d.fail(d.x.CopyDtoD(d.ptr(dst), d.ptr(src), 4*src.Len()))
}

// Zero implements Device.
func (d *CUDA) Zero(t *Tensor) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.fail(d.x.Memset(d.ptr(t), 0, 4*t.Len()))
}

// Fill implements Device. An Int32 tensor gets int32(v).
func (d *CUDA) Fill(t *Tensor, v float32) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if t.DType == Int32 {
		d.fail(d.x.FillI32(d.ptr(t), t.Len(), int32(v)))
		return
	}
	d.fail(d.x.FillF32(d.ptr(t), t.Len(), v))
}

// Sync implements Device: it waits for the compute stream, runs the
// deferred id checks and returns (and clears) the first failure since the
// previous Sync.
func (d *CUDA) Sync() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.capturing {
		return fmt.Errorf("kernels: %s Sync: not allowed while capturing a graph", d.Name())
	}
	d.fail(d.x.StreamSync(cublas.Compute))
	d.fail(d.checkIDs("EmbeddingGather"))
	err := d.err
	d.err = nil
	return err
}

// checkIDs reads back the id-check slots used since the last check.
func (d *CUDA) checkIDs(op string) error {
	if d.slots == 0 {
		return nil
	}
	n := d.slots
	d.slots = 0
	c, err := d.x.IDCheckFetch(n)
	if err != nil {
		return err
	}
	switch c.Kind {
	case 1:
		return &IDRangeError{Row: int(c.Row), ID: c.ID, Rows: int(c.TableRows)}
	case 2:
		return fmt.Errorf("kernels: %s: list offsets of row %d are malformed (decreasing, or outside the ids)", op, c.Row)
	}
	return nil
}

// ---------------------------------------------------------------- GEMM

// Gemm implements Device.
func (d *CUDA) Gemm(transA, transB bool, alpha float32, a, b *Tensor, beta float32, c *Tensor) {
	m, n, k := gemmShape("Gemm", transA, transB, a, b, c)
	d.mu.Lock()
	defer d.mu.Unlock()
	d.fail(d.x.Gemm(transA, transB, m, n, k, alpha, d.ptr(a), d.ptr(b), beta, d.ptr(c)))
}

// GemmStridedBatched implements Device with one cublasSgemmStridedBatched.
func (d *CUDA) GemmStridedBatched(transA, transB bool, m, n, k int, alpha float32,
	a *Tensor, strideA int, b *Tensor, strideB int,
	beta float32, c *Tensor, strideC int, batch int) {
	checkBatched("GemmStridedBatched", m, n, k, a, strideA, b, strideB, c, strideC, batch)
	if m == 0 || n == 0 || batch == 0 {
		return
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	d.fail(d.x.GemmStridedBatched(transA, transB, m, n, k, alpha, d.ptr(a), strideA, d.ptr(b), strideB,
		beta, d.ptr(c), strideC, batch))
}

// ---------------------------------------------------------------- bias, activations

// biasShape returns n and rows of x viewed as [groups, rows, n] for a bias
// of groups*n elements, panicking like the CPU device on a mismatch.
func biasShape(op string, x, bias *Tensor, groups int) (rows, n int) {
	if groups <= 0 || bias.Len()%groups != 0 {
		panic(fmt.Sprintf("kernels: %s: bias %v not divisible into %d groups", op, bias, groups))
	}
	n = bias.Len() / groups
	if n == 0 || x.Len()%(groups*n) != 0 {
		panic(fmt.Sprintf("kernels: %s: %v is not [%d, rows, %d]", op, x, groups, n))
	}
	return x.Len() / (groups * n), n
}

// actCodes maps every Activation to the C API's MTL_ACT_* value.
var actCodes = [numActivations]int{
	Linear:    cublas.ActLinear,
	ReLU:      cublas.ActReLU,
	SELU:      cublas.ActSELU,
	ELU:       cublas.ActELU,
	GELU:      cublas.ActGELU,
	Tanh:      cublas.ActTanh,
	Sigmoid:   cublas.ActSigmoid,
	Swish:     cublas.ActSwish,
	LeakyReLU: cublas.ActLeakyReLU,
}

// actCode returns the C API's code of act; fused reports whether the
// caller is BiasAct or ActBackward, which run only Linear and ReLU (the
// others go through Activate, which keeps the pre-activation).
func actCode(op string, act Activation, fused bool) int {
	if act >= numActivations || (fused && act.NeedsActivator()) {
		panic(fmt.Sprintf("kernels: %s: unknown activation %d", op, act))
	}
	return actCodes[act]
}

// BiasAct implements Device.
func (d *CUDA) BiasAct(x, bias *Tensor, groups int, act Activation) {
	a := actCode("BiasAct", act, true)
	rows, n := biasShape("BiasAct", x, bias, groups)
	d.mu.Lock()
	defer d.mu.Unlock()
	d.fail(d.x.BiasAct(d.ptr(x), d.ptr(bias), groups, rows, n, a))
}

// ActBackward implements Device.
func (d *CUDA) ActBackward(dy, y *Tensor, act Activation) {
	a := actCode("ActBackward", act, true)
	n := sameLen("ActBackward", dy, y)
	d.mu.Lock()
	defer d.mu.Unlock()
	d.fail(d.x.ActBackward(d.ptr(dy), d.ptr(y), n, a))
}

var _ Activator = (*CUDA)(nil)

// Activate implements Activator.
func (d *CUDA) Activate(y, x *Tensor, act Activation) {
	a := actCode("Activate", act, false)
	n := sameLen("Activate", y, x)
	d.mu.Lock()
	defer d.mu.Unlock()
	d.fail(d.x.Activate(d.ptr(y), d.ptr(x), n, a))
}

// ActivateBackward implements Activator.
func (d *CUDA) ActivateBackward(dy, x *Tensor, act Activation) {
	a := actCode("ActivateBackward", act, false)
	n := sameLen("ActivateBackward", dy, x)
	d.mu.Lock()
	defer d.mu.Unlock()
	d.fail(d.x.ActivateBackward(d.ptr(dy), d.ptr(x), n, a))
}

// BiasGrad implements Device: the row sums as one strided-batched GEMM
// against a vector of ones (cuBLAS splits the long reduction).
func (d *CUDA) BiasGrad(dy, db *Tensor, groups int, accumulate bool) {
	rows, n := biasShape("BiasGrad", dy, db, groups)
	d.mu.Lock()
	defer d.mu.Unlock()
	d.fail(d.x.BiasGrad(d.ptr(dy), d.ptr(db), groups, rows, n, accumulate))
}

// Dropout implements Device with the CPU device's DropoutHash and
// DropoutThreshold, so both devices drop exactly the same elements.
func (d *CUDA) Dropout(x, mask *Tensor, rate float32, seed uint64) {
	n := sameLen("Dropout", x, mask)
	thr, scale := DropoutThreshold(rate)
	d.mu.Lock()
	defer d.mu.Unlock()
	d.fail(d.x.Dropout(d.ptr(x), d.ptr(mask), n, thr, scale, seed))
}

// Mul implements Device.
func (d *CUDA) Mul(dst, a, b *Tensor) {
	n := sameLen("Mul", dst, a, b)
	d.mu.Lock()
	defer d.mu.Unlock()
	d.fail(d.x.Mul(d.ptr(dst), d.ptr(a), d.ptr(b), n))
}

// Axpy implements Device.
func (d *CUDA) Axpy(alpha float32, x, y *Tensor) {
	n := sameLen("Axpy", x, y)
	d.mu.Lock()
	defer d.mu.Unlock()
	d.fail(d.x.Axpy(alpha, d.ptr(x), d.ptr(y), n))
}

// Scale implements Device.
func (d *CUDA) Scale(x *Tensor, alpha float32) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.fail(d.x.Scale(d.ptr(x), x.Len(), alpha))
}

// EqualMask implements Device.
func (d *CUDA) EqualMask(dst, src *Tensor, value float32) {
	n := sameLen("EqualMask", dst, src)
	d.mu.Lock()
	defer d.mu.Unlock()
	d.fail(d.x.EqualMask(d.ptr(dst), d.ptr(src), n, value))
}

// Sigmoid implements Device.
func (d *CUDA) Sigmoid(y, x *Tensor) {
	n := sameLen("Sigmoid", y, x)
	d.mu.Lock()
	defer d.mu.Unlock()
	d.fail(d.x.Sigmoid(d.ptr(y), d.ptr(x), n))
}

// ---------------------------------------------------------------- softmax, gate

// SoftmaxRows implements Device (one warp per row, normaliser in float64).
func (d *CUDA) SoftmaxRows(y, x *Tensor, temperature float32) {
	sameLen("SoftmaxRows", y, x)
	if x.Len() == 0 {
		return
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	d.fail(d.x.SoftmaxRows(d.ptr(y), d.ptr(x), x.Rows(), x.Cols(), temperature))
}

// SoftmaxBackward implements Device.
func (d *CUDA) SoftmaxBackward(dx, dy, y *Tensor, temperature float32) {
	sameLen("SoftmaxBackward", dx, dy, y)
	if y.Len() == 0 {
		return
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	d.fail(d.x.SoftmaxBackward(d.ptr(dx), d.ptr(dy), d.ptr(y), y.Rows(), y.Cols(), temperature))
}

// appendPtrs fills buf with the device addresses of ts.
func (d *CUDA) appendPtrs(buf []uintptr, ts []*Tensor) []uintptr {
	buf = buf[:0]
	for _, t := range ts {
		buf = append(buf, d.ptr(t))
	}
	return buf
}

// GateCombine implements Device; the expert addresses travel in the kernel
// parameters (no upload, graph-capturable).
func (d *CUDA) GateCombine(out, w *Tensor, experts []*Tensor) {
	rows, dim, _ := checkGate("GateCombine", out, w, experts)
	d.mu.Lock()
	defer d.mu.Unlock()
	d.ptrs = d.appendPtrs(d.ptrs, experts)
	d.fail(d.x.GateCombine(d.ptr(out), d.ptr(w), d.ptrs, rows, dim))
}

// GateCombineBackward implements Device.
func (d *CUDA) GateCombineBackward(dout, w *Tensor, experts []*Tensor, dw *Tensor, dexperts []*Tensor) {
	rows, dim, ne := checkGate("GateCombineBackward", dout, w, experts)
	if dw.Len() != rows*ne || len(dexperts) != ne {
		panic(fmt.Sprintf("kernels: GateCombineBackward: dw %v, %d expert gradients for %d experts", dw, len(dexperts), ne))
	}
	for e, ex := range dexperts {
		if ex.Len() != rows*dim {
			panic(fmt.Sprintf("kernels: GateCombineBackward: expert gradient %d is %v, want %d x %d", e, ex, rows, dim))
		}
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	d.ptrs = d.appendPtrs(d.ptrs, experts)
	d.ptrs2 = d.appendPtrs(d.ptrs2, dexperts)
	d.fail(d.x.GateCombineBackward(d.ptr(dout), d.ptr(w), d.ptrs, d.ptr(dw), d.ptrs2, rows, dim))
}

// CopyCols implements Device.
func (d *CUDA) CopyCols(dst *Tensor, dstCol int, src *Tensor, srcCol, width int, accumulate bool) {
	rows, dn, sn := dst.Rows(), dst.Cols(), src.Cols()
	if src.Rows() != rows || width < 0 || dstCol < 0 || srcCol < 0 || dstCol+width > dn || srcCol+width > sn {
		panic(fmt.Sprintf("kernels: CopyCols: %d columns from %v at %d to %v at %d", width, src, srcCol, dst, dstCol))
	}
	if width == 0 || rows == 0 {
		return
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	d.fail(d.x.CopyCols(d.ptr(dst), dn, dstCol, d.ptr(src), sn, srcCol, rows, width, accumulate))
}

// ---------------------------------------------------------------- embeddings

func combCode(op string, comb Combiner) int {
	switch comb {
	case Mean:
		return cublas.CombMean
	case Sum:
		return cublas.CombSum
	case SqrtN:
		return cublas.CombSqrtN
	}
	panic(fmt.Sprintf("kernels: %s: unknown combiner %d", op, comb))
}

// nextSlot returns the id-check slot of the next gather.
func (d *CUDA) nextSlot() int {
	s := min(d.slots, cublas.IDCheckSlots-1)
	if d.slots < cublas.IDCheckSlots {
		d.slots++
	}
	return s
}

// EmbeddingGather implements Device. Ids are checked on the GPU; an id out
// of range contributes zeros (nothing is read outside the table) and is
// reported as an *IDRangeError naming the first bad id in value order, here
// (immediate mode) or by Sync (deferred mode, see CUDA). Malformed list
// offsets are reported the same way as a plain error.
func (d *CUDA) EmbeddingGather(out *Tensor, col int, table, ids, offsets *Tensor, comb Combiner) error {
	rows, outN, dim := out.Rows(), out.Cols(), table.Cols()
	if col < 0 || col+dim > outN {
		panic(fmt.Sprintf("kernels: EmbeddingGather: %d columns at %d do not fit in %v", dim, col, out))
	}
	cc := combCode("EmbeddingGather", comb)
	if offsets == nil && ids.Len() != rows {
		panic(fmt.Sprintf("kernels: EmbeddingGather: %v ids for %d rows", ids, rows))
	}
	if offsets != nil && offsets.Len() != rows+1 {
		return fmt.Errorf("kernels: EmbeddingGather: %d offsets for %d rows, want %d", offsets.Len(), rows, rows+1)
	}
	if rows == 0 || dim == 0 {
		return nil
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	slot := d.nextSlot()
	err := d.x.EmbeddingGather(d.ptr(out), outN, col, d.ptr(table), table.Rows(), dim, d.ptr(ids), ids.Len(),
		d.ptr(offsets), rows, cc, slot)
	if err != nil {
		d.fail(err)
		return err
	}
	if d.immediateIDs && !d.capturing {
		return d.checkIDs("EmbeddingGather")
	}
	return nil
}

// embInput describes one (dout, ids, offsets) source for the C layer.
func (d *CUDA) embInput(dout *Tensor, col int, ids, offsets *Tensor, comb Combiner) cublas.EmbInput {
	return cublas.EmbInput{Dout: d.ptr(dout), DoutCols: dout.Cols(), Col: col, IDs: d.ptr(ids), NumIDs: ids.Len(),
		Offsets: d.ptr(offsets), Batch: dout.Rows(), Comb: combCode("embedding gradient", comb)}
}

// checkEmbSource validates one gradient source like the CPU device.
func checkEmbSource(op string, dout *Tensor, col, dim int, ids, offsets *Tensor) {
	rows := dout.Rows()
	if col < 0 || col+dim > dout.Cols() {
		panic(fmt.Sprintf("kernels: %s: %d columns at %d do not fit in %v", op, dim, col, dout))
	}
	if offsets == nil && ids.Len() != rows {
		panic(fmt.Sprintf("kernels: %s: %v ids for %d rows", op, ids, rows))
	}
	if offsets != nil && offsets.Len() != rows+1 {
		panic(fmt.Sprintf("kernels: %s: %d offsets for %d rows, want %d", op, offsets.Len(), rows, rows+1))
	}
}

// EmbeddingBackward implements Device with the sort-based segment reduction
// of csrc/embedding.cu. It waits for the GPU to learn grad.N. While a graph
// is being captured it cannot: grad.N is then the number of ids and the rows
// after the unique ones are -1 with zero values, which the CUDA sparse
// optimizers skip (so a captured EmbeddingBackward + SparseAdam is correct).
// Ids outside [0, tableRows) are ignored (EmbeddingGather reports them).
func (d *CUDA) EmbeddingBackward(grad *SparseGrad, dout *Tensor, col int, ids, offsets *Tensor, comb Combiner, tableRows int) {
	dim := grad.Values.Cols()
	checkEmbSource("EmbeddingBackward", dout, col, dim, ids, offsets)
	capacity := min(grad.Rows.Len(), grad.Values.Rows())
	d.mu.Lock()
	defer d.mu.Unlock()
	d.embIn = append(d.embIn[:0], d.embInput(dout, col, ids, offsets, comb))
	exact := !d.capturing
	if !exact && ids.Len() > capacity {
		d.fail(fmt.Errorf("kernels: EmbeddingBackward: %d ids exceed the gradient capacity %d (required while capturing)",
			ids.Len(), capacity))
		grad.N = 0
		return
	}
	n, err := d.x.EmbeddingBackward(&d.emb, d.ptr(grad.Rows), d.ptr(grad.Values), capacity, tableRows, dim, d.embIn, exact)
	if err != nil {
		d.fail(err)
		grad.N = 0
		return
	}
	if n > capacity {
		d.fail(fmt.Errorf("kernels: EmbeddingBackward: %d unique rows exceed the gradient capacity %d", n, capacity))
		n = capacity
	}
	grad.N = n
}

// ---------------------------------------------------------------- losses

// BCEWithLogits implements Device; the sum is reduced in float64 in a fixed
// order (deterministic) and added to loss[0] on the GPU.
func (d *CUDA) BCEWithLogits(loss, dz, z, y, weights *Tensor, scale float32) {
	n := checkLoss("BCEWithLogits", dz, z, y, weights)
	d.lossCheck(loss)
	d.mu.Lock()
	defer d.mu.Unlock()
	d.fail(d.x.BCEWithLogits(d.ptr(loss), d.ptr(dz), d.ptr(z), d.ptr(y), d.ptr(weights), n, scale))
}

// MSE implements Device.
func (d *CUDA) MSE(loss, dz, z, y, weights *Tensor, scale float32) {
	n := checkLoss("MSE", dz, z, y, weights)
	d.lossCheck(loss)
	d.mu.Lock()
	defer d.mu.Unlock()
	d.fail(d.x.MSE(d.ptr(loss), d.ptr(dz), d.ptr(z), d.ptr(y), d.ptr(weights), n, scale))
}

// SumSquares implements Device.
func (d *CUDA) SumSquares(loss, x *Tensor, scale float32) {
	d.lossCheck(loss)
	d.mu.Lock()
	defer d.mu.Unlock()
	d.fail(d.x.SumSquares(d.ptr(loss), d.ptr(x), x.Len(), scale))
}

func (d *CUDA) lossCheck(loss *Tensor) {
	if loss.Len() < 1 {
		panic("kernels: loss tensor is empty")
	}
}

// ---------------------------------------------------------------- optimizers

// Adam implements Device (the CPU device's formula; see AdamStepSize).
func (d *CUDA) Adam(param, grad, m, v *Tensor, p AdamParams) {
	sameLen("Adam", param, grad, m, v)
	d.mu.Lock()
	defer d.mu.Unlock()
	d.optTs = append(d.optTs[:0], cublas.OptTensor{Param: d.ptr(param), Grad: d.ptr(grad), M: d.ptr(m), V: d.ptr(v), N: param.Len()})
	d.fail(d.x.Adam(&d.opt, d.optTs, AdamStepSize(p), p.Beta1, p.Beta2, p.Eps, p.L2))
}

// AdamMulti implements Device as one kernel launch per 48 tensors.
func (d *CUDA) AdamMulti(params, grads, ms, vs []*Tensor, p AdamParams) {
	if len(grads) != len(params) || len(ms) != len(params) || len(vs) != len(params) {
		panic(fmt.Sprintf("kernels: AdamMulti: %d params, %d grads, %d m, %d v", len(params), len(grads), len(ms), len(vs)))
	}
	for i := range params {
		sameLen("AdamMulti", params[i], grads[i], ms[i], vs[i])
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	d.optTs = d.optTs[:0]
	for i, t := range params {
		d.optTs = append(d.optTs, cublas.OptTensor{Param: d.ptr(t), Grad: d.ptr(grads[i]), M: d.ptr(ms[i]), V: d.ptr(vs[i]), N: t.Len()})
	}
	d.fail(d.x.Adam(&d.opt, d.optTs, AdamStepSize(p), p.Beta1, p.Beta2, p.Eps, p.L2))
}

// Adagrad implements Device.
func (d *CUDA) Adagrad(param, grad, acc *Tensor, p AdagradParams) {
	sameLen("Adagrad", param, grad, acc)
	d.mu.Lock()
	defer d.mu.Unlock()
	d.optTs = append(d.optTs[:0], cublas.OptTensor{Param: d.ptr(param), Grad: d.ptr(grad), M: d.ptr(acc), N: param.Len()})
	d.fail(d.x.Adagrad(&d.opt, d.optTs, p.LR, p.Eps, p.L2))
}

// SGD implements Device.
func (d *CUDA) SGD(param, grad *Tensor, p SGDParams) {
	sameLen("SGD", param, grad)
	d.mu.Lock()
	defer d.mu.Unlock()
	d.optTs = append(d.optTs[:0], cublas.OptTensor{Param: d.ptr(param), Grad: d.ptr(grad), N: param.Len()})
	d.fail(d.x.SGD(&d.opt, d.optTs, p.LR, p.L2))
}

// checkSparseShape validates a SparseGrad against a table without reading
// its rows (they are on the GPU; rows outside the table are skipped there).
func checkSparseShape(op string, table *Tensor, g *SparseGrad, state ...*Tensor) {
	dim := table.Cols()
	if g.Values.Cols() != dim || g.N < 0 || g.N > g.Rows.Len() || g.N > g.Values.Rows() {
		panic(fmt.Sprintf("kernels: %s: gradient %v/%v with N=%d for table %v", op, g.Rows, g.Values, g.N, table))
	}
	for _, s := range state {
		if s.Len() != table.Len() {
			panic(fmt.Sprintf("kernels: %s: state %v for table %v", op, s, table))
		}
	}
}

// SparseAdam implements Device (lazy Adam: only the gradient's rows and
// their moments change).
func (d *CUDA) SparseAdam(table, m, v *Tensor, grad *SparseGrad, p AdamParams) {
	checkSparseShape("SparseAdam", table, grad, m, v)
	d.mu.Lock()
	defer d.mu.Unlock()
	d.fail(d.x.SparseAdam(d.ptr(table), d.ptr(m), d.ptr(v), table.Rows(), table.Cols(), d.ptr(grad.Rows),
		d.ptr(grad.Values), grad.N, AdamStepSize(p), p.Beta1, p.Beta2, p.Eps, p.L2))
}

// SparseAdagrad implements Device.
func (d *CUDA) SparseAdagrad(table, acc *Tensor, grad *SparseGrad, p AdagradParams) {
	checkSparseShape("SparseAdagrad", table, grad, acc)
	d.mu.Lock()
	defer d.mu.Unlock()
	d.fail(d.x.SparseAdagrad(d.ptr(table), d.ptr(acc), table.Rows(), table.Cols(), d.ptr(grad.Rows),
		d.ptr(grad.Values), grad.N, p.LR, p.Eps, p.L2))
}

// SparseSGD implements Device.
func (d *CUDA) SparseSGD(table *Tensor, grad *SparseGrad, p SGDParams) {
	checkSparseShape("SparseSGD", table, grad)
	d.mu.Lock()
	defer d.mu.Unlock()
	d.fail(d.x.SparseSGD(d.ptr(table), table.Rows(), table.Cols(), d.ptr(grad.Rows), d.ptr(grad.Values), grad.N, p.LR, p.L2))
}
