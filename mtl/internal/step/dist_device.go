package step

import (
	"errors"
	"fmt"
	"unsafe"

	"github.com/mtlrank/mtlrank/dist"
	"github.com/mtlrank/mtlrank/kernels"
)

// The host side of the distributed step on any device: the collectives
// work on host memory, so the gradients cross between the device and the
// host through kernels.Pinned buffers (pinned memory and asynchronous
// copies on the CUDA device, plain memory and host copies on the CPU).
// Per step, on every rank:
//
//  1. after the pass (which ends with a Sync), the downloads are queued:
//     the parameters' L2 term, the dense gradients into the fused
//     allreduce's buffer, the touched ids and gradient rows of every table
//     into the send buffer; then one Sync, the only one of the exchange,
//     before the host reads or writes any buffer (it also waits for the
//     previous step's uploads, which read them);
//  2. the collectives run on the host buffers (the fused allreduce in the
//     pinned buffer itself);
//  3. the summed dense gradients and the merged rows are uploaded from the
//     buffers, queued on the device's stream before the update that reads
//     them; nothing waits for them (the next step's Sync does).

// errDistGraphs refuses graph capture in a distributed job: a captured
// step replays the device's work alone, while the distributed step runs
// collectives on the host between its pass and its update.
var errDistGraphs = errors.New("mtl: graph capture of the training step (Config.CUDAGraph, --cuda_graph) is not available in distributed training: the step's allreduce runs on the host between the device's pass and its update; turn capture off")

// staging holds the distributed step's pinned buffers.
type staging struct {
	dev kernels.Device
	// flat is the fused allreduce's buffer (distState.flat is its first
	// nd+tail elements) and, after them, one slot for the parameters' L2
	// term (the same on every rank: not summed).
	flat kernels.Pinned
	// send is this rank's part of the rows' allgather: its touched ids of
	// every table (int32 bits), then their gradient rows. up holds the
	// merged ids and rows of every table for their upload. Both grow.
	send, up kernels.Pinned
}

func newStaging(dev kernels.Device, flat int) (*staging, error) {
	s := &staging{dev: dev}
	var err error
	if s.flat, err = kernels.NewPinned(dev, flat+1); err != nil {
		return nil, fmt.Errorf("mtl: staging memory of the distributed step: %w", err)
	}
	return s, nil
}

func (s *staging) release() {
	for _, p := range []kernels.Pinned{s.flat, s.send, s.up} {
		if p != nil {
			p.Release()
		}
	}
}

// grow makes *p hold at least n elements. Only between a Sync and the
// next queued copy: the old buffer is freed at once.
func (s *staging) grow(p *kernels.Pinned, n int) error {
	if *p != nil && len((*p).F32()) >= n {
		return nil
	}
	c := n + n/2 + 64
	if *p != nil {
		(*p).Release()
		*p = nil
	}
	q, err := kernels.NewPinned(s.dev, c)
	if err != nil {
		return fmt.Errorf("mtl: staging memory of the distributed step (%d floats): %w", c, err)
	}
	*p = q
	return nil
}

// stageOut is step 1 above: it queues the parameters' L2 term and, with
// grads (a rank whose pass succeeded), the dense gradients and the tables'
// touched rows for download, and syncs the device. It returns the send
// buffer's part for the allgather (nil without grads) and the L2 term.
func (e *Engine) stageOut(grads bool) (send []float32, regParams float64, err error) {
	d, s := e.dist, e.dist.stage
	e.dev.Zero(d.regT)
	e.addParamRegLoss(d.regT)
	s.flat.Download(d.nd+d.tail, d.regT, 1)
	if grads {
		off := 0
		for i, p := range e.spec.Params {
			if !p.Sparse {
				k := p.Value.Len()
				s.flat.Download(off, e.train.grads[i], k)
				off += k
			}
		}
		// Tables sharded by rows send their gradient rows to the owners
		// from the host (pushRows): none are staged here.
		if e.rows == nil {
			if send, err = e.stageRows(); err != nil {
				return nil, 0, err
			}
		}
	}
	if err := e.dev.Sync(); err != nil {
		return nil, 0, fmt.Errorf("mtl: step %d: reading the gradients: %w", e.step, err)
	}
	return send, float64(s.flat.F32()[d.nd+d.tail]), nil
}

// stageRows queues the download of the tables' touched ids and gradient
// rows (replicated tables) into the send buffer and returns its part for
// the allgather.
func (e *Engine) stageRows() ([]float32, error) {
	s := e.dist.stage
	n := 0
	for t, tab := range e.spec.Input.Tables {
		n += e.train.input.SparseGrad(t).N * (1 + tab.Dim)
	}
	if err := s.grow(&s.send, n); err != nil {
		return nil, err
	}
	// The ids of every table, then their rows.
	off := 0
	for t := range e.spec.Input.Tables {
		g := e.train.input.SparseGrad(t)
		s.send.Download(off, g.Rows, g.N)
		off += g.N
	}
	for t, tab := range e.spec.Input.Tables {
		g := e.train.input.SparseGrad(t)
		s.send.Download(off, g.Values, g.N*tab.Dim)
		off += g.N * tab.Dim
	}
	return s.send.F32()[:n], nil
}

// uploadDense queues the upload of the summed dense gradients from the
// fused allreduce's buffer into the gradients, each followed by its L2
// term (added once, after the sum).
func (e *Engine) uploadDense() {
	off := 0
	for i, p := range e.spec.Params {
		if !p.Sparse {
			k := p.Value.Len()
			e.dist.stage.flat.Upload(e.train.grads[i], off, k)
			off += k
			e.addL2Grad(i)
		}
	}
}

// uploadMerged queues the upload of the tables' merged ids and rows (the
// dist.RowMerger results of each table, in table order) into d.merged, the
// sparse gradients the update reads.
func (e *Engine) uploadMerged(ids [][]int32, rows [][]float32) error {
	d, s := e.dist, e.dist.stage
	n := 0
	for t := range ids {
		n += len(ids[t]) + len(rows[t])
	}
	if err := s.grow(&s.up, n); err != nil {
		return err
	}
	buf, off := s.up.F32(), 0
	for t, tab := range e.spec.Input.Tables {
		g := d.merged[t]
		k := len(ids[t])
		if g.Rows == nil || g.Rows.Len() < k {
			if g.Rows != nil {
				g.Rows.Release()
				g.Values.Release()
			}
			c := max(k, 2*g.N, 1)
			g.Rows, g.Values = e.dev.Alloc(kernels.Int32, c), e.dev.Alloc(kernels.Float32, c, tab.Dim)
		}
		g.N = k
		copy(s.up.I32()[off:], ids[t])
		s.up.Upload(g.Rows, off, k)
		off += k
		copy(buf[off:], rows[t])
		s.up.Upload(g.Values, off, k*tab.Dim)
		off += k * tab.Dim
	}
	return nil
}

// bcastTensor broadcasts root's elements of t: in place on the CPU device,
// through host memory elsewhere.
func bcastTensor(dev kernels.Device, c dist.Comm, t *kernels.Tensor, root int) error {
	f := t.F32
	onHost := f != nil
	if !onHost {
		if t.Len() == 0 {
			return nil
		}
		f = make([]float32, t.Len())
		if c.Rank() == root {
			dev.CopyToHostF32(f, t)
		}
	}
	if len(f) == 0 {
		return nil
	}
	if err := c.Bcast(unsafe.Slice((*byte)(unsafe.Pointer(&f[0])), 4*len(f)), root); err != nil {
		return err
	}
	if !onHost {
		dev.CopyFromHostF32(t, f)
	}
	return nil
}
