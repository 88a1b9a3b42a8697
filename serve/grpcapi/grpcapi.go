// Package grpcapi is the gRPC front end of the Open Inference Protocol:
// the inference.GRPCInferenceService of the protocol's published
// definition (serve/inferencepb). Inputs come as typed contents or as
// raw_input_contents; scores go back as raw_output_contents (FP32,
// little-endian), as Triton answers.
package grpcapi

import (
	"context"
	"encoding/binary"
	"fmt"
	"log/slog"
	"math"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/mtlrank/mtlrank/serve"
	pb "github.com/mtlrank/mtlrank/serve/inferencepb"
)

// Options configures the service.
type Options struct {
	ServerName, ServerVersion string
	Extensions                []string
	// RequestTimeout bounds an inference request's time in the server
	// (0: only the client's deadline).
	RequestTimeout time.Duration
	// Ready reports whether the server takes requests.
	Ready func() bool
	Log   *slog.Logger
}

// Service implements inference.GRPCInferenceService over a repository.
type Service struct {
	pb.UnimplementedGRPCInferenceServiceServer
	repo    *serve.Repository
	metrics *serve.Metrics
	opt     Options
}

// New returns the service over repo.
func New(repo *serve.Repository, metrics *serve.Metrics, opt Options) *Service {
	if opt.Log == nil {
		opt.Log = slog.New(slog.DiscardHandler)
	}
	if opt.Ready == nil {
		opt.Ready = func() bool { return true }
	}
	return &Service{repo: repo, metrics: metrics, opt: opt}
}

// Interceptor recovers from panics (a bad request never takes the server
// down) and counts requests by code.
func (s *Service) Interceptor(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (resp any, err error) {
	defer func() {
		if p := recover(); p != nil {
			s.opt.Log.Error("panic serving a request", "method", info.FullMethod, "panic", p)
			resp, err = nil, status.Errorf(codes.Internal, "internal error: %v", p)
		}
		if s.metrics != nil {
			s.metrics.ObserveProtocol("grpc", int(status.Code(err)))
		}
	}()
	return handler(ctx, req)
}

// Code is the gRPC code of a serve error.
func Code(err error) codes.Code {
	switch serve.CodeOf(err) {
	case serve.InvalidArgument:
		return codes.InvalidArgument
	case serve.NotFound:
		return codes.NotFound
	case serve.Unavailable:
		return codes.Unavailable
	case serve.DeadlineExceeded:
		return codes.DeadlineExceeded
	case serve.Canceled:
		return codes.Canceled
	}
	return codes.Internal
}

func toStatus(err error) error { return status.Error(Code(err), err.Error()) }

func (s *Service) ServerLive(context.Context, *pb.ServerLiveRequest) (*pb.ServerLiveResponse, error) {
	return &pb.ServerLiveResponse{Live: true}, nil
}

func (s *Service) ServerReady(context.Context, *pb.ServerReadyRequest) (*pb.ServerReadyResponse, error) {
	return &pb.ServerReadyResponse{Ready: s.opt.Ready() && s.repo.Ready()}, nil
}

func (s *Service) ModelReady(_ context.Context, req *pb.ModelReadyRequest) (*pb.ModelReadyResponse, error) {
	_, release, err := s.repo.Acquire(req.GetName(), req.GetVersion())
	if err != nil {
		if serve.CodeOf(err) == serve.Unavailable {
			return &pb.ModelReadyResponse{Ready: false}, nil
		}
		return nil, toStatus(err)
	}
	release()
	return &pb.ModelReadyResponse{Ready: s.opt.Ready()}, nil
}

func (s *Service) ServerMetadata(context.Context, *pb.ServerMetadataRequest) (*pb.ServerMetadataResponse, error) {
	return &pb.ServerMetadataResponse{Name: s.opt.ServerName, Version: s.opt.ServerVersion, Extensions: s.opt.Extensions}, nil
}

func metas(ts []serve.TensorMeta) []*pb.ModelMetadataResponse_TensorMetadata {
	out := make([]*pb.ModelMetadataResponse_TensorMetadata, len(ts))
	for i, t := range ts {
		out[i] = &pb.ModelMetadataResponse_TensorMetadata{Name: t.Name, Datatype: t.Datatype, Shape: t.Shape}
	}
	return out
}

func (s *Service) ModelMetadata(_ context.Context, req *pb.ModelMetadataRequest) (*pb.ModelMetadataResponse, error) {
	m, release, err := s.repo.Acquire(req.GetName(), req.GetVersion())
	if err != nil {
		return nil, toStatus(err)
	}
	defer release()
	return &pb.ModelMetadataResponse{Name: m.Name, Versions: s.repo.Versions(m.Name), Platform: serve.Platform,
		Inputs: metas(m.Inputs()), Outputs: metas(m.Outputs())}, nil
}

func (s *Service) ModelInfer(ctx context.Context, req *pb.ModelInferRequest) (*pb.ModelInferResponse, error) {
	if !s.opt.Ready() {
		return nil, status.Error(codes.Unavailable, "the server is shutting down")
	}
	sreq, err := decodeInfer(req)
	if err != nil {
		return nil, toStatus(err)
	}
	m, release, err := s.repo.Acquire(req.GetModelName(), req.GetModelVersion())
	if err != nil {
		return nil, toStatus(err)
	}
	defer release()
	if s.opt.RequestTimeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, s.opt.RequestTimeout)
		defer cancel()
	}
	resp, err := m.Infer(ctx, sreq)
	if err != nil {
		return nil, toStatus(err)
	}
	out := &pb.ModelInferResponse{ModelName: resp.ModelName, ModelVersion: resp.ModelVersion, Id: resp.ID,
		Outputs: make([]*pb.ModelInferResponse_InferOutputTensor, len(resp.Outputs)), RawOutputContents: make([][]byte, len(resp.Outputs))}
	for i, o := range resp.Outputs {
		out.Outputs[i] = &pb.ModelInferResponse_InferOutputTensor{Name: o.Name, Datatype: serve.FP32, Shape: []int64{int64(len(o.Data))}}
		raw := make([]byte, 4*len(o.Data))
		for j, v := range o.Data {
			binary.LittleEndian.PutUint32(raw[4*j:], math.Float32bits(v))
		}
		out.RawOutputContents[i] = raw
	}
	return out, nil
}

func badRequest(format string, args ...any) error {
	return &serve.Error{Code: serve.InvalidArgument, Msg: fmt.Sprintf(format, args...)}
}

// decodeInfer turns the protocol's request into a serve request.
func decodeInfer(req *pb.ModelInferRequest) (*serve.InferRequest, error) {
	raw := req.GetRawInputContents()
	if len(raw) > 0 && len(raw) != len(req.GetInputs()) {
		return nil, badRequest("raw_input_contents has %d entries for %d inputs", len(raw), len(req.GetInputs()))
	}
	out := &serve.InferRequest{ID: req.GetId(), Inputs: make([]serve.Tensor, len(req.GetInputs()))}
	for i, in := range req.GetInputs() {
		t := &out.Inputs[i]
		t.Name, t.Datatype, t.Shape = in.GetName(), in.GetDatatype(), in.GetShape()
		if t.Name == "" {
			return nil, badRequest("input %d has no name", i)
		}
		var err error
		if len(raw) > 0 {
			if in.GetContents() != nil {
				return nil, badRequest("input %q has contents and raw_input_contents is set: use one or the other", t.Name)
			}
			err = decodeRaw(t, raw[i])
		} else {
			err = decodeContents(t, in.GetContents())
		}
		if err != nil {
			return nil, err
		}
	}
	for _, o := range req.GetOutputs() {
		out.Outputs = append(out.Outputs, o.GetName())
	}
	return out, nil
}

// decodeContents reads typed contents: the field of the tensor's datatype.
func decodeContents(t *serve.Tensor, c *pb.InferTensorContents) error {
	if c == nil {
		return badRequest("input %q has no contents", t.Name)
	}
	switch t.Datatype {
	case serve.BYTES:
		t.Bytes = c.GetBytesContents()
		if t.Bytes == nil {
			t.Bytes = [][]byte{}
		}
	case serve.INT8, serve.INT16, serve.INT32:
		t.I32 = nonNil(c.GetIntContents())
	case serve.INT64:
		t.I64 = nonNil(c.GetInt64Contents())
	case serve.UINT8, serve.UINT16, serve.UINT32:
		u := c.GetUintContents()
		t.I64 = make([]int64, len(u))
		for i, v := range u {
			t.I64[i] = int64(v)
		}
	case serve.UINT64:
		u := c.GetUint64Contents()
		t.I64 = make([]int64, len(u))
		for i, v := range u {
			if v > math.MaxInt64 {
				return badRequest("input %q, element %d: %d is too large", t.Name, i, v)
			}
			t.I64[i] = int64(v)
		}
	case serve.FP32:
		t.F32 = nonNil(c.GetFp32Contents())
	case serve.FP64:
		t.F64 = nonNil(c.GetFp64Contents())
	default:
		return unsupported(t)
	}
	return nil
}

func nonNil[T any](s []T) []T {
	if s == nil {
		return []T{}
	}
	return s
}

func unsupported(t *serve.Tensor) error {
	if t.Datatype == "" {
		return badRequest("input %q has no datatype", t.Name)
	}
	return badRequest("input %q: datatype %q is not supported (BYTES, INT8..INT64, UINT8..UINT64, FP32, FP64)", t.Name, t.Datatype)
}

// elemSize is the raw size of an element of each fixed-size datatype.
var elemSize = map[string]int{serve.INT8: 1, serve.UINT8: 1, serve.INT16: 2, serve.UINT16: 2, serve.INT32: 4, serve.UINT32: 4,
	serve.INT64: 8, serve.UINT64: 8, serve.FP32: 4, serve.FP64: 8}

// decodeRaw reads raw contents: little-endian elements, BYTES elements each
// after a 4-byte little-endian length.
func decodeRaw(t *serve.Tensor, b []byte) error {
	if t.Datatype == serve.BYTES {
		p, err := serve.ParsePackedBytes(b)
		if err != nil {
			return badRequest("input %q: %v", t.Name, err)
		}
		t.Packed = p
		return nil
	}
	sz, ok := elemSize[t.Datatype]
	if !ok {
		return unsupported(t)
	}
	if len(b)%sz != 0 {
		return badRequest("input %q: %d bytes of raw contents is not a whole number of %s elements", t.Name, len(b), t.Datatype)
	}
	n := len(b) / sz
	switch t.Datatype {
	case serve.INT8:
		t.I32 = make([]int32, n)
		for i := range n {
			t.I32[i] = int32(int8(b[i]))
		}
	case serve.INT16:
		t.I32 = make([]int32, n)
		for i := range n {
			t.I32[i] = int32(int16(binary.LittleEndian.Uint16(b[2*i:])))
		}
	case serve.INT32:
		t.I32 = make([]int32, n)
		for i := range n {
			t.I32[i] = int32(binary.LittleEndian.Uint32(b[4*i:]))
		}
	case serve.UINT8:
		t.I64 = make([]int64, n)
		for i := range n {
			t.I64[i] = int64(b[i])
		}
	case serve.UINT16:
		t.I64 = make([]int64, n)
		for i := range n {
			t.I64[i] = int64(binary.LittleEndian.Uint16(b[2*i:]))
		}
	case serve.UINT32:
		t.I64 = make([]int64, n)
		for i := range n {
			t.I64[i] = int64(binary.LittleEndian.Uint32(b[4*i:]))
		}
	case serve.INT64, serve.UINT64:
		t.I64 = make([]int64, n)
		for i := range n {
			v := binary.LittleEndian.Uint64(b[8*i:])
			if t.Datatype == serve.UINT64 && v > math.MaxInt64 {
				return badRequest("input %q, element %d: %d is too large", t.Name, i, v)
			}
			t.I64[i] = int64(v)
		}
	case serve.FP32:
		t.F32 = make([]float32, n)
		for i := range n {
			t.F32[i] = math.Float32frombits(binary.LittleEndian.Uint32(b[4*i:]))
		}
	case serve.FP64:
		t.F64 = make([]float64, n)
		for i := range n {
			t.F64[i] = math.Float64frombits(binary.LittleEndian.Uint64(b[8*i:]))
		}
	}
	return nil
}
