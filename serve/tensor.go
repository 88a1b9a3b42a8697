package serve

import (
	"errors"
	"fmt"
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
// decoded it: exactly one of the data slices is set, as the datatype says
// (INT8, INT16 and INT32 in I32; INT64 and the unsigned types in I64).
type Tensor struct {
	Name     string
	Datatype string
	Shape    []int64
	I32      []int32
	I64      []int64
	F32      []float32
	F64      []float64
	Bytes    [][]byte
}

// Len is the number of elements the tensor holds.
func (t *Tensor) Len() int {
	switch {
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
