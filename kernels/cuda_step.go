//go:build cuda

package kernels

import (
	"encoding/binary"
	"fmt"
	"math"
	"unsafe"

	"github.com/mtlrank/mtlrank/cublas"
)

var _ StepParamOps = (*CUDA)(nil)

// stepParamsSlots is the number of pinned staging copies of the block: an
// Upload writes the slot after the previous one, and waits for that slot's
// earlier copy only when it has not yet run (one step of slack).
const stepParamsSlots = 2

// CUDAStepParams is the CUDA device's StepParams: a device block laid out
// as mtlcuda_step_params (lr float32, lr_t float32, seed uint64) and pinned
// staging copies of it.
type CUDAStepParams struct {
	d      *CUDA
	dev    *Tensor // 4 int32 elements: the 16-byte block
	host   unsafe.Pointer
	copied [stepParamsSlots]*cublas.Event
	next   int
}

// NewStepParams allocates a step-parameter block (zero until the first
// Upload).
func (d *CUDA) NewStepParams() (StepParams, error) {
	if cublas.StepParamsBytes != 16 {
		return nil, fmt.Errorf("kernels: %s NewStepParams: mtlcuda_step_params has %d bytes, want 16", d.Name(), cublas.StepParamsBytes)
	}
	sp := &CUDAStepParams{d: d, dev: d.Alloc(Int32, 4)}
	d.Fill(sp.dev, 0)
	if err := sp.init(); err != nil {
		sp.Release()
		return nil, fmt.Errorf("kernels: %s NewStepParams: %w", d.Name(), err)
	}
	return sp, nil
}

func (sp *CUDAStepParams) init() error {
	d := sp.d
	d.mu.Lock()
	defer d.mu.Unlock()
	var err error
	if sp.host, err = d.x.HostAlloc(16 * stepParamsSlots); err != nil {
		return err
	}
	for i := range sp.copied {
		if sp.copied[i], err = d.x.NewEvent(false); err != nil {
			return err
		}
	}
	return nil
}

// Upload implements StepParams.
func (sp *CUDAStepParams) Upload(lr float32, adam AdamParams, seed uint64) error {
	d := sp.d
	lrT := float32(0)
	if adam.Step > 0 {
		lrT = AdamStepSize(adam)
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if sp.dev == nil {
		return fmt.Errorf("kernels: %s StepParams.Upload: released", d.Name())
	}
	if d.capturing {
		return fmt.Errorf("kernels: %s StepParams.Upload: not allowed while capturing", d.Name())
	}
	k := sp.next
	sp.next = (k + 1) % stepParamsSlots
	// The slot's previous copy must have read the staging memory before it
	// is overwritten (normally long done: the step in between synced).
	if err := sp.copied[k].Sync(); err != nil {
		return fmt.Errorf("kernels: %s StepParams.Upload: %w", d.Name(), err)
	}
	buf := unsafe.Slice((*byte)(unsafe.Add(sp.host, 16*k)), 16)
	binary.LittleEndian.PutUint32(buf[0:], math.Float32bits(lr))
	binary.LittleEndian.PutUint32(buf[4:], math.Float32bits(lrT))
	binary.LittleEndian.PutUint64(buf[8:], seed)
	if err := d.x.CopyHtoD(d.ptr(sp.dev), unsafe.Pointer(&buf[0]), 16, cublas.Compute, false); err != nil {
		return fmt.Errorf("kernels: %s StepParams.Upload: %w", d.Name(), err)
	}
	if err := sp.copied[k].Record(cublas.Compute); err != nil {
		return fmt.Errorf("kernels: %s StepParams.Upload: %w", d.Name(), err)
	}
	return nil
}

// Release implements StepParams (waits for pending uploads first).
func (sp *CUDAStepParams) Release() {
	if sp == nil || sp.dev == nil {
		return
	}
	sp.d.mu.Lock()
	sp.releaseLocked()
	dev := sp.dev
	sp.dev = nil
	sp.d.mu.Unlock()
	dev.Release()
}

func (sp *CUDAStepParams) releaseLocked() {
	for i, e := range sp.copied {
		if e != nil {
			_ = e.Sync()
			e.Release()
			sp.copied[i] = nil
		}
	}
	if sp.host != nil {
		_ = sp.d.x.HostFree(sp.host)
		sp.host = nil
	}
}

// spPtr is the device address of sp's block (sp must come from d).
func (d *CUDA) spPtr(op string, sp StepParams) uintptr {
	c, ok := sp.(*CUDAStepParams)
	if !ok || c == nil || c.d != d || c.dev == nil {
		panic(fmt.Sprintf("kernels: %s: step parameters %T not from %s (or released)", op, sp, d.Name()))
	}
	return d.ptr(c.dev)
}

// AdamMultiSP implements StepParamOps.
func (d *CUDA) AdamMultiSP(params, grads, ms, vs []*Tensor, p AdamParams, sp StepParams) {
	if len(grads) != len(params) || len(ms) != len(params) || len(vs) != len(params) {
		panic(fmt.Sprintf("kernels: AdamMultiSP: %d params, %d grads, %d m, %d v", len(params), len(grads), len(ms), len(vs)))
	}
	for i := range params {
		sameLen("AdamMultiSP", params[i], grads[i], ms[i], vs[i])
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	spp := d.spPtr("AdamMultiSP", sp)
	d.optTs = d.optTs[:0]
	for i, t := range params {
		d.optTs = append(d.optTs, cublas.OptTensor{Param: d.ptr(t), Grad: d.ptr(grads[i]), M: d.ptr(ms[i]), V: d.ptr(vs[i]), N: t.Len()})
	}
	d.fail(d.x.AdamSP(&d.opt, d.optTs, p.Beta1, p.Beta2, p.Eps, p.L2, spp))
}

// AdagradSP implements StepParamOps.
func (d *CUDA) AdagradSP(param, grad, acc *Tensor, p AdagradParams, sp StepParams) {
	sameLen("AdagradSP", param, grad, acc)
	d.mu.Lock()
	defer d.mu.Unlock()
	spp := d.spPtr("AdagradSP", sp)
	d.optTs = append(d.optTs[:0], cublas.OptTensor{Param: d.ptr(param), Grad: d.ptr(grad), M: d.ptr(acc), N: param.Len()})
	d.fail(d.x.AdagradSP(&d.opt, d.optTs, p.Eps, p.L2, spp))
}

// SGDSP implements StepParamOps.
func (d *CUDA) SGDSP(param, grad *Tensor, p SGDParams, sp StepParams) {
	sameLen("SGDSP", param, grad)
	d.mu.Lock()
	defer d.mu.Unlock()
	spp := d.spPtr("SGDSP", sp)
	d.optTs = append(d.optTs[:0], cublas.OptTensor{Param: d.ptr(param), Grad: d.ptr(grad), N: param.Len()})
	d.fail(d.x.SGDSP(&d.opt, d.optTs, p.L2, spp))
}

// EmbeddingUpdateAdamSP implements StepParamOps.
func (d *CUDA) EmbeddingUpdateAdamSP(table, m, v *Tensor, srcs []EmbeddingSource, p AdamParams, sp StepParams) {
	checkState("EmbeddingUpdateAdamSP", table, m, v)
	d.mu.Lock()
	defer d.mu.Unlock()
	spp := d.spPtr("EmbeddingUpdateAdamSP", sp)
	d.embSources("EmbeddingUpdateAdamSP", table, srcs)
	o := cublas.SparseOpt{Kind: cublas.OptAdam, Beta1: p.Beta1, Beta2: p.Beta2, Eps: p.Eps, L2: p.L2}
	d.fail(d.x.EmbeddingUpdateSP(&d.emb, d.ptr(table), d.ptr(m), d.ptr(v), table.Rows(), table.Cols(), d.embIn, o, spp))
}

// EmbeddingUpdateAdagradSP implements StepParamOps.
func (d *CUDA) EmbeddingUpdateAdagradSP(table, acc *Tensor, srcs []EmbeddingSource, p AdagradParams, sp StepParams) {
	checkState("EmbeddingUpdateAdagradSP", table, acc)
	d.mu.Lock()
	defer d.mu.Unlock()
	spp := d.spPtr("EmbeddingUpdateAdagradSP", sp)
	d.embSources("EmbeddingUpdateAdagradSP", table, srcs)
	o := cublas.SparseOpt{Kind: cublas.OptAdagrad, Eps: p.Eps, L2: p.L2}
	d.fail(d.x.EmbeddingUpdateSP(&d.emb, d.ptr(table), d.ptr(acc), 0, table.Rows(), table.Cols(), d.embIn, o, spp))
}

// EmbeddingUpdateSGDSP implements StepParamOps.
func (d *CUDA) EmbeddingUpdateSGDSP(table *Tensor, srcs []EmbeddingSource, p SGDParams, sp StepParams) {
	d.mu.Lock()
	defer d.mu.Unlock()
	spp := d.spPtr("EmbeddingUpdateSGDSP", sp)
	d.embSources("EmbeddingUpdateSGDSP", table, srcs)
	o := cublas.SparseOpt{Kind: cublas.OptSGD, L2: p.L2}
	d.fail(d.x.EmbeddingUpdateSP(&d.emb, d.ptr(table), 0, 0, table.Rows(), table.Cols(), d.embIn, o, spp))
}

// DropoutSP implements StepParamOps.
func (d *CUDA) DropoutSP(x, mask *Tensor, rate float32, sp StepParams, site, layer uint64) {
	n := sameLen("DropoutSP", x, mask)
	thr, scale := DropoutThreshold(rate)
	d.mu.Lock()
	defer d.mu.Unlock()
	d.fail(d.x.DropoutSP(d.ptr(x), d.ptr(mask), n, thr, scale, d.spPtr("DropoutSP", sp), site, layer))
}
