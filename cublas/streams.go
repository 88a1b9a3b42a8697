//go:build cuda

package cublas

// The compute and copy streams and their events.

/*
#include "mtlcuda.h"
*/
import "C"

// ---- streams and events ----

// StreamSync waits for the work queued on s and reports its faults.
func (x *Context) StreamSync(s Stream) error {
	return x.err("Sync", C.mtlcuda_stream_sync(x.c, C.int(s)))
}

// Event is a CUDA event of one context.
type Event struct {
	x *Context
	e *C.mtlcuda_event
}

// NewEvent creates an event; timing events can measure elapsed time.
func (x *Context) NewEvent(timing bool) (*Event, error) {
	var e *C.mtlcuda_event
	if err := x.err("NewEvent", C.mtlcuda_event_create(x.c, cbool(timing), &e)); err != nil {
		return nil, err
	}
	return &Event{x: x, e: e}, nil
}

// Release destroys the event.
func (e *Event) Release() {
	if e == nil || e.e == nil {
		return
	}
	C.mtlcuda_event_destroy(e.e)
	e.e = nil
}

// Record marks the current end of stream s.
func (e *Event) Record(s Stream) error {
	return e.x.err("EventRecord", C.mtlcuda_event_record(e.x.c, e.e, C.int(s)))
}

// WaitOn makes stream s wait (on the device, not the host) for the event.
func (e *Event) WaitOn(s Stream) error {
	return e.x.err("StreamWaitEvent", C.mtlcuda_stream_wait_event(e.x.c, C.int(s), e.e))
}

// Sync blocks the host until the event has happened.
func (e *Event) Sync() error { return e.x.err("EventSync", C.mtlcuda_event_sync(e.x.c, e.e)) }

// Done reports whether the event has happened, without blocking.
func (e *Event) Done() (bool, error) {
	var d C.int
	err := e.x.err("EventQuery", C.mtlcuda_event_query(e.x.c, e.e, &d))
	return d != 0, err
}

// ElapsedMs is the time between two recorded timing events.
func ElapsedMs(start, end *Event) (float32, error) {
	var ms C.float
	err := start.x.err("EventElapsedTime", C.mtlcuda_event_elapsed_ms(start.x.c, start.e, end.e, &ms))
	return float32(ms), err
}
