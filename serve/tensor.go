package serve

import (
	"encoding/binary"
	"errors"
	"fmt"
	"iter"
)

// Datatypes of the Open Inference Protocol's tensors that serve reads.
const (
	BYTES  = "BYTES"
	INT8   = "INT8"
	INT16  = "INT16"
	INT32  = "INT32"
	INT64  = "INT64"
	UINT8  = "UINT8"
	UINT16 = "UINT16"
	UINT32 = "UINT32"
	UINT64 = "UINT64"
	FP32   = "FP32"
	FP64   = "FP64"
)

// Tensor is an input tensor of an inference request, as either front end
// decoded it: exactly one of the data fields is set, as the datatype says
// (INT8, INT16 and INT32 in I32; INT64 and the unsigned types in I64;
// BYTES in Bytes or Packed).
type Tensor struct {
	Name     string
	Datatype string
	Shape    []int64
	I32      []int32
	I64      []int64
	F32      []float32
	F64      []float64
	Bytes    [][]byte
	Packed   *PackedBytes
}

// PackedBytes holds BYTES elements as the protocol's raw contents lay them
// out: each element after its 4-byte little-endian length. The gRPC front
// end keeps raw contents in that layout rather than slicing them into one
// []byte per element: writing those slice headers (pointers the garbage
// collector tracks) cost it more than hashing the elements.
type PackedBytes struct {
	data []byte
	n    int
}

// ParsePackedBytes checks that b is a sequence of length-prefixed elements
// and counts them. b is kept, not copied. An error says where b is cut.
func ParsePackedBytes(b []byte) (*PackedBytes, error) {
	n := 0
	for off := 0; off < len(b); n++ {
		if len(b)-off < 4 {
			return nil, errors.New("raw BYTES contents end inside an element's length")
		}
		size := int(binary.LittleEndian.Uint32(b[off:]))
		off += 4
		if size > len(b)-off {
			return nil, fmt.Errorf("raw BYTES element %d of %d bytes runs past the contents", n, size)
		}
		off += size
	}
	return &PackedBytes{data: b, n: n}, nil
}

// Len is the number of elements.
func (p *PackedBytes) Len() int { return p.n }

// All yields the elements in order. An element is a view into the packed
// contents, capped so that appending to it copies.
func (p *PackedBytes) All() iter.Seq2[int, []byte] {
	return func(yield func(int, []byte) bool) {
		b := p.data
		for i, off := 0, 0; i < p.n; i++ {
			size := int(binary.LittleEndian.Uint32(b[off:]))
			off += 4
			if !yield(i, b[off:off+size:off+size]) {
				return
			}
			off += size
		}
	}
}

// isBytes reports whether the tensor holds BYTES elements.
func (t *Tensor) isBytes() bool { return t.Bytes != nil || t.Packed != nil }

// Len is the number of elements the tensor holds.
func (t *Tensor) Len() int {
	switch {
	case t.Packed != nil:
		return t.Packed.Len()
	case t.I32 != nil:
		return len(t.I32)
	case t.I64 != nil:
		return len(t.I64)
	case t.F32 != nil:
		return len(t.F32)
	case t.F64 != nil:
		return len(t.F64)
	}
	return len(t.Bytes)
}

// InferRequest is a decoded inference request.
type InferRequest struct {
	ID     string
	Inputs []Tensor
	// Outputs names the requested outputs; empty: all of them.
	Outputs []string
}

// Output is one output tensor: a task's scores, shape [rows].
type Output struct {
	Name string
	Data []float32
}

// InferResponse is the answer to an InferRequest.
type InferResponse struct {
	ModelName    string
	ModelVersion string
	ID           string
	Outputs      []Output
}

// Code classifies an error for the front ends (HTTP status, gRPC code).
type Code int

// Error codes.
const (
	Internal         Code = iota // a fault of the server
	InvalidArgument              // a bad request
	NotFound                     // no such model or version
	Unavailable                  // the model or server is not ready (loading, shutting down)
	DeadlineExceeded             // the request's time limit passed
	Canceled                     // the client went away
)

// Error is an error with a Code.
type Error struct {
	Code Code
	Msg  string
}

func (e *Error) Error() string { return e.Msg }

func errorf(code Code, format string, args ...any) *Error {
	return &Error{Code: code, Msg: fmt.Sprintf(format, args...)}
}

// CodeOf returns the Code of err (Internal when it has none).
func CodeOf(err error) Code {
	var e *Error
	if errors.As(err, &e) {
		return e.Code
	}
	return Internal
}
