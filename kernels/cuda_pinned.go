//go:build cuda

package kernels

import (
	"fmt"
	"unsafe"

	"github.com/mtlrank/mtlrank/cublas"
)

// cudaPinned is the CUDA device's Pinned: cudaHostAlloc'd memory whose
// copies are queued on the compute stream without waiting (the stream
// orders them with the ops before and after them; Sync waits for them).
type cudaPinned struct {
	d    *CUDA
	host unsafe.Pointer // nil for 0 elements, and after Release
	n    int
}

var _ PinnedStager = (*CUDA)(nil)

// NewPinned implements PinnedStager.
func (d *CUDA) NewPinned(n int) (Pinned, error) {
	if n < 0 {
		return nil, fmt.Errorf("kernels: NewPinned: %d elements", n)
	}
	p := &cudaPinned{d: d, n: n}
	if n == 0 {
		return p, nil
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	h, err := d.x.HostAlloc(4 * n)
	if err != nil {
		return nil, fmt.Errorf("kernels: %s NewPinned (%d bytes): %w", d.Name(), 4*n, err)
	}
	p.host = h
	return p, nil
}

func (p *cudaPinned) F32() []float32 {
	if p.host == nil {
		return nil
	}
	return unsafe.Slice((*float32)(p.host), p.n)
}

func (p *cudaPinned) I32() []int32 {
	if p.host == nil {
		return nil
	}
	return unsafe.Slice((*int32)(p.host), p.n)
}

// check validates a copy of n elements between p[off:] and t (programming
// errors panic, as the Device's shape checks do).
func (p *cudaPinned) check(op string, t *Tensor, off, n int) {
	if off < 0 || n < 0 || off+n > p.n || n > t.Len() {
		panic(fmt.Sprintf("kernels: Pinned.%s: %d elements at %d of %d, tensor %v", op, n, off, p.n, t))
	}
	if p.host == nil && n > 0 {
		panic(fmt.Sprintf("kernels: Pinned.%s after Release", op))
	}
}

// Download implements Pinned.
func (p *cudaPinned) Download(off int, src *Tensor, n int) { p.queue("Download", src, off, n, true) }

// Upload implements Pinned.
func (p *cudaPinned) Upload(dst *Tensor, off, n int) { p.queue("Upload", dst, off, n, false) }

// queue queues the copy of n elements between p[off:] and t on the compute
// stream, without waiting: to the host with toHost.
func (p *cudaPinned) queue(op string, t *Tensor, off, n int, toHost bool) {
	p.check(op, t, off, n)
	if n == 0 {
		return
	}
	d := p.d
	d.mu.Lock()
	defer d.mu.Unlock()
	host := unsafe.Add(p.host, 4*off)
	if toHost {
		d.fail(d.x.CopyDtoH(host, d.ptr(t), 4*n, cublas.Compute, false))
		return
	}
	d.fail(d.x.CopyHtoD(d.ptr(t), host, 4*n, cublas.Compute, false))
}

// Release implements Pinned: the memory is freed after the compute
// stream's queued work, which may still copy to or from it.
func (p *cudaPinned) Release() {
	if p.host == nil {
		return
	}
	d := p.d
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.x != nil {
		d.fail(d.x.StreamSync(cublas.Compute))
		d.fail(d.x.HostFree(p.host))
	}
	p.host = nil
}
