//go:build cuda

package kernels

import (
	"fmt"
	"unsafe"

	"github.com/mtlrank/mtlrank/cublas"
)

// Stager moves batches from host memory to the GPU so that the copies
// overlap compute: data goes through pinned staging memory and is copied on
// the device's copy stream, double-buffered.
//
// There are two slots; each batch uses one, alternately (Slot tells which).
// The caller keeps one set of device input tensors per slot, uploads a batch
// into the current slot's tensors with UploadF32Async / UploadI32Async, then
// calls Commit, which makes the compute stream wait for those copies and
// switches slots; the step that reads the batch is queued after Commit. The
// next batch's copies (into the other slot) then run while that step
// computes. The Stager orders everything on the GPU with events:
//   - a slot's pinned memory is rewritten only after its previous copies
//     have completed (the host waits for that event, normally long past);
//   - a slot's device tensors are rewritten only after the steps queued
//     before the previous Commit (which read them) have completed (the copy
//     stream waits, the host does not).
//
// Uploads are not allowed while a graph is being captured: stage the inputs,
// Commit, then launch the graph.
type Stager struct {
	d     *CUDA
	slots [2]stageSlot
	cur   int
	// A new tensor is zero-filled on the compute stream when allocated, so
	// the copy stream must not write it before that fill has run: when
	// tensors were allocated since the last check, the copies of the next
	// slot wait for the compute stream's queued work (allocated).
	allocated  *cublas.Event
	allocsSeen uint64
}

type stageSlot struct {
	host     unsafe.Pointer // pinned
	size     int
	used     int
	open     bool          // uploads since the last Commit of this slot
	copied   *cublas.Event // on the copy stream: this slot's copies are done
	consumed *cublas.Event // on the compute stream: the steps reading this slot's tensors are done
	copiedOK bool          // copied has been recorded
	usedOK   bool          // consumed has been recorded
}

// NewStager allocates two pinned staging slots of slotBytes each (enough for
// every column of one batch; each upload is aligned to 256 bytes).
func (d *CUDA) NewStager(slotBytes int) (*Stager, error) {
	if slotBytes <= 0 {
		return nil, fmt.Errorf("kernels: NewStager: slot size %d must be positive", slotBytes)
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	s := &Stager{d: d}
	var err error
	if s.allocated, err = d.x.NewEvent(false); err != nil {
		return nil, fmt.Errorf("kernels: NewStager: %w", err)
	}
	for i := range s.slots {
		sl := &s.slots[i]
		if sl.host, err = d.x.HostAlloc(slotBytes); err == nil {
			sl.size = slotBytes
			if sl.copied, err = d.x.NewEvent(false); err == nil {
				sl.consumed, err = d.x.NewEvent(false)
			}
		}
		if err != nil {
			s.releaseLocked()
			return nil, fmt.Errorf("kernels: NewStager: %w", err)
		}
	}
	return s, nil
}

// NewBatchStager implements AsyncUploader with NewStager.
func (d *CUDA) NewBatchStager(slotBytes int) (BatchStager, error) {
	s, err := d.NewStager(slotBytes)
	if err != nil {
		return nil, err
	}
	return s, nil
}

var _ AsyncUploader = (*CUDA)(nil)

// Slot is the slot (0 or 1) the next uploads go to.
func (s *Stager) Slot() int { return s.cur }

// UploadF32Async queues dst[:len(src)] = src on the copy stream. src is
// copied to pinned memory before the call returns and may be reused.
func (s *Stager) UploadF32Async(dst *Tensor, src []float32) error {
	checkRoom("UploadF32Async", dst.Len(), len(src))
	return s.upload(dst, unsafe.Pointer(unsafe.SliceData(src)), 4*len(src))
}

// UploadI32Async queues dst[:len(src)] = src on the copy stream.
func (s *Stager) UploadI32Async(dst *Tensor, src []int32) error {
	checkRoom("UploadI32Async", dst.Len(), len(src))
	return s.upload(dst, unsafe.Pointer(unsafe.SliceData(src)), 4*len(src))
}

func (s *Stager) upload(dst *Tensor, src unsafe.Pointer, bytes int) error {
	if bytes == 0 {
		return nil
	}
	d := s.d
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.capturing {
		return fmt.Errorf("kernels: Stager upload: not allowed while capturing a graph")
	}
	sl := &s.slots[s.cur]
	if sl.host == nil {
		return fmt.Errorf("kernels: Stager upload: the stager was released")
	}
	if !sl.open {
		// First upload into this slot since its last Commit.
		if sl.copiedOK {
			if err := sl.copied.Sync(); err != nil {
				return err
			}
		}
		if sl.usedOK {
			if err := sl.consumed.WaitOn(cublas.Copy); err != nil {
				return err
			}
		}
		if d.allocs != s.allocsSeen {
			if err := s.allocated.Record(cublas.Compute); err != nil {
				return err
			}
			if err := s.allocated.WaitOn(cublas.Copy); err != nil {
				return err
			}
			s.allocsSeen = d.allocs
		}
		sl.used = 0
		sl.open = true
	}
	off := (sl.used + 255) &^ 255
	if off+bytes > sl.size {
		return fmt.Errorf("kernels: Stager upload: %d bytes do not fit in the %d-byte slot (%d used); make the slots larger",
			bytes, sl.size, sl.used)
	}
	stage := unsafe.Add(sl.host, off)
	copy(unsafe.Slice((*byte)(stage), bytes), unsafe.Slice((*byte)(src), bytes))
	if err := d.x.CopyHtoD(d.ptr(dst), stage, bytes, cublas.Copy, false); err != nil {
		return err
	}
	sl.used = off + bytes
	return nil
}

// Commit makes the work queued on the compute stream from now on wait for
// the current slot's uploads, and switches to the other slot.
func (s *Stager) Commit() error {
	d := s.d
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.capturing {
		return fmt.Errorf("kernels: Stager Commit: not allowed while capturing a graph")
	}
	sl, other := &s.slots[s.cur], &s.slots[1-s.cur]
	if sl.host == nil {
		return fmt.Errorf("kernels: Stager Commit: the stager was released")
	}
	// Everything queued so far includes the steps that read the other
	// slot's tensors (its batch was committed earlier); the other slot's
	// next uploads wait for this point.
	if err := other.consumed.Record(cublas.Compute); err != nil {
		return err
	}
	other.usedOK = true
	if err := sl.copied.Record(cublas.Copy); err != nil {
		return err
	}
	sl.copiedOK = true
	if err := sl.copied.WaitOn(cublas.Compute); err != nil {
		return err
	}
	sl.open = false
	s.cur = 1 - s.cur
	return nil
}

// Release waits for pending copies and frees the staging memory.
func (s *Stager) Release() {
	s.d.mu.Lock()
	defer s.d.mu.Unlock()
	s.releaseLocked()
}

func (s *Stager) releaseLocked() {
	d := s.d
	if d.x != nil {
		_ = d.x.StreamSync(cublas.Copy)
	}
	for i := range s.slots {
		sl := &s.slots[i]
		if sl.host != nil && d.x != nil {
			_ = d.x.HostFree(sl.host)
		}
		sl.copied.Release()
		sl.consumed.Release()
		*sl = stageSlot{}
	}
	s.allocated.Release()
	s.allocated = nil
}
