package server_test

import (
	"context"
	"encoding/binary"
	"math"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/mtlrank/mtlrank/serve"
	pb "github.com/mtlrank/mtlrank/serve/inferencepb"
	"github.com/mtlrank/mtlrank/serve/servetest"
)

func grpcClient(t testing.TB, addr string) pb.GRPCInferenceServiceClient {
	t.Helper()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	require.NoError(t, err)
	t.Cleanup(func() { _ = conn.Close() })
	return pb.NewGRPCInferenceServiceClient(conn)
}

// grpcRequest is rows in raw values as typed contents.
func grpcRequest(rows []servetest.Row) *pb.ModelInferRequest {
	n := int64(len(rows))
	users, cities := make([][]byte, n), make([][]byte, n)
	items := make([]int64, n)
	prices := make([]float64, n)
	for i, r := range rows {
		users[i], items[i], cities[i], prices[i] = []byte(r.User), r.Item, []byte(r.City), r.Price
	}
	return &pb.ModelInferRequest{ModelName: "ranker", Id: "g-1", Inputs: []*pb.ModelInferRequest_InferInputTensor{
		{Name: "user_id", Datatype: "BYTES", Shape: []int64{n}, Contents: &pb.InferTensorContents{BytesContents: users}},
		{Name: "item_id", Datatype: "INT64", Shape: []int64{n}, Contents: &pb.InferTensorContents{Int64Contents: items}},
		{Name: "city", Datatype: "BYTES", Shape: []int64{n}, Contents: &pb.InferTensorContents{BytesContents: cities}},
		{Name: "price", Datatype: "FP64", Shape: []int64{n}, Contents: &pb.InferTensorContents{Fp64Contents: prices}},
	}}
}

// rawContents lays out the request's typed contents as raw_input_contents.
func rawContents(req *pb.ModelInferRequest) {
	for _, in := range req.Inputs {
		var b []byte
		c := in.Contents
		for _, v := range c.BytesContents {
			b = binary.LittleEndian.AppendUint32(b, uint32(len(v)))
			b = append(b, v...)
		}
		for _, v := range c.Int64Contents {
			b = binary.LittleEndian.AppendUint64(b, uint64(v))
		}
		for _, v := range c.IntContents {
			b = binary.LittleEndian.AppendUint32(b, uint32(v))
		}
		for _, v := range c.Fp32Contents {
			b = binary.LittleEndian.AppendUint32(b, math.Float32bits(v))
		}
		for _, v := range c.Fp64Contents {
			b = binary.LittleEndian.AppendUint64(b, math.Float64bits(v))
		}
		req.RawInputContents = append(req.RawInputContents, b)
		in.Contents = nil
	}
}

// packed lays out elements as raw BYTES contents.
func packed(elems ...string) []byte {
	var b []byte
	for _, e := range elems {
		b = binary.LittleEndian.AppendUint32(b, uint32(len(e)))
		b = append(b, e...)
	}
	return b
}

func decodeFP32(b []byte) []float32 {
	out := make([]float32, len(b)/4)
	for i := range out {
		out[i] = math.Float32frombits(binary.LittleEndian.Uint32(b[4*i:]))
	}
	return out
}

func TestGRPCProtocol(t *testing.T) {
	s, repo := start(t, serve.ModelOptions{}, nil)
	c := grpcClient(t, s.GRPCAddr())
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	live, err := c.ServerLive(ctx, &pb.ServerLiveRequest{})
	require.NoError(t, err)
	assert.True(t, live.Live)
	ready, err := c.ServerReady(ctx, &pb.ServerReadyRequest{})
	require.NoError(t, err)
	assert.True(t, ready.Ready)
	meta, err := c.ServerMetadata(ctx, &pb.ServerMetadataRequest{})
	require.NoError(t, err)
	assert.Equal(t, "mtlrank", meta.Name)
	assert.Equal(t, []string{"model_repository"}, meta.Extensions)
	mr, err := c.ModelReady(ctx, &pb.ModelReadyRequest{Name: "ranker", Version: "1"})
	require.NoError(t, err)
	assert.True(t, mr.Ready)
	mm, err := c.ModelMetadata(ctx, &pb.ModelMetadataRequest{Name: "ranker"})
	require.NoError(t, err)
	assert.Equal(t, []string{"1"}, mm.Versions)
	assert.Equal(t, "mtlrank", mm.Platform)
	require.Len(t, mm.Inputs, 8)
	assert.Equal(t, "user_id", mm.Inputs[0].Name)
	assert.Equal(t, "BYTES", mm.Inputs[0].Datatype)
	assert.Equal(t, "user_id__encoded", mm.Inputs[1].Name)
	require.Len(t, mm.Outputs, 2)
	assert.Equal(t, "click/binary_output", mm.Outputs[0].Name)

	rows := servetest.Rows(29, 5)
	rows[2].Price = math.NaN()
	want := servetest.Score(t, repo+"/ranker/1", servetest.Encode(rows))
	check := func(resp *pb.ModelInferResponse, names ...string) {
		t.Helper()
		assert.Equal(t, "ranker", resp.ModelName)
		assert.Equal(t, "1", resp.ModelVersion)
		assert.Equal(t, "g-1", resp.Id)
		require.Len(t, resp.Outputs, len(names))
		require.Len(t, resp.RawOutputContents, len(names))
		for i, o := range resp.Outputs {
			assert.Equal(t, names[i], o.Name)
			assert.Equal(t, "FP32", o.Datatype)
			assert.Equal(t, []int64{29}, o.Shape)
			assert.Equal(t, want[o.Name], decodeFP32(resp.RawOutputContents[i]), o.Name)
		}
	}
	// Typed contents.
	resp, err := c.ModelInfer(ctx, grpcRequest(rows))
	require.NoError(t, err)
	check(resp, "click/binary_output", "like/binary_output")
	// Raw contents, one output.
	req := grpcRequest(rows)
	rawContents(req)
	req.Outputs = []*pb.ModelInferRequest_InferRequestedOutputTensor{{Name: "like/binary_output"}}
	resp, err = c.ModelInfer(ctx, req)
	require.NoError(t, err)
	check(resp, "like/binary_output")

	// Encoded inputs as INT32 contents.
	enc := servetest.Encode(rows)
	n := int64(len(rows))
	req = &pb.ModelInferRequest{ModelName: "ranker", ModelVersion: "1", Id: "g-1", Inputs: []*pb.ModelInferRequest_InferInputTensor{
		{Name: "user_id__encoded", Datatype: "INT32", Shape: []int64{n, 1}, Contents: &pb.InferTensorContents{IntContents: enc.Columns["user_id"].I32}},
		{Name: "item_id__encoded", Datatype: "INT32", Shape: []int64{n, 1}, Contents: &pb.InferTensorContents{IntContents: enc.Columns["item_id"].I32}},
		{Name: "city__encoded", Datatype: "INT32", Shape: []int64{n, 1}, Contents: &pb.InferTensorContents{IntContents: enc.Columns["city"].I32}},
		{Name: "price__encoded", Datatype: "FP32", Shape: []int64{n, 1}, Contents: &pb.InferTensorContents{Fp32Contents: enc.Columns["price"].F32}},
	}}
	resp, err = c.ModelInfer(ctx, req)
	require.NoError(t, err)
	check(resp, "click/binary_output", "like/binary_output")
}

func TestGRPCBadRequests(t *testing.T) {
	s, _ := start(t, serve.ModelOptions{MaxBatch: 8}, nil)
	c := grpcClient(t, s.GRPCAddr())
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	edit := func(f func(r *pb.ModelInferRequest)) *pb.ModelInferRequest {
		r := grpcRequest(servetest.Rows(3, 0))
		f(r)
		return r
	}
	cases := []struct {
		name string
		req  *pb.ModelInferRequest
		code codes.Code
		msg  string
	}{
		{"unknown model", edit(func(r *pb.ModelInferRequest) { r.ModelName = "nope" }), codes.NotFound, `unknown model "nope"`},
		{"unknown version", edit(func(r *pb.ModelInferRequest) { r.ModelVersion = "3" }), codes.NotFound, `no version "3"`},
		{"no contents", edit(func(r *pb.ModelInferRequest) { r.Inputs[1].Contents = nil }), codes.InvalidArgument, `input "item_id" has no contents`},
		{"wrong field", edit(func(r *pb.ModelInferRequest) { r.Inputs[1].Datatype = "INT32" }), codes.InvalidArgument, `input "item_id": shape [3] holds 3 elements, the data has 0`},
		{"raw and contents", edit(func(r *pb.ModelInferRequest) { r.RawInputContents = make([][]byte, 4) }), codes.InvalidArgument, "use one or the other"},
		{"raw count", edit(func(r *pb.ModelInferRequest) { rawContents(r); r.RawInputContents = r.RawInputContents[:2] }), codes.InvalidArgument, "raw_input_contents has 2 entries for 4 inputs"},
		{"raw partial", edit(func(r *pb.ModelInferRequest) { rawContents(r); r.RawInputContents[1] = r.RawInputContents[1][:7] }), codes.InvalidArgument, "7 bytes of raw contents is not a whole number of INT64 elements"},
		{"raw bytes overrun", edit(func(r *pb.ModelInferRequest) { rawContents(r); r.RawInputContents[0][0] = 200 }), codes.InvalidArgument, "runs past the contents"},
		{"id domain", edit(func(r *pb.ModelInferRequest) {
			r.Inputs[0] = &pb.ModelInferRequest_InferInputTensor{Name: "user_id__encoded", Datatype: "INT64", Shape: []int64{3},
				Contents: &pb.InferTensorContents{Int64Contents: []int64{2, -1, 3}}}
		}), codes.InvalidArgument, `row 1: id -1 outside the feature's domain`},
		{"uint64 overflow", edit(func(r *pb.ModelInferRequest) {
			r.Inputs[1] = &pb.ModelInferRequest_InferInputTensor{Name: "item_id", Datatype: "UINT64", Shape: []int64{3},
				Contents: &pb.InferTensorContents{Uint64Contents: []uint64{1, math.MaxUint64, 3}}}
		}), codes.InvalidArgument, "is too large"},
		{"too many rows", grpcRequest(servetest.Rows(9, 0)), codes.InvalidArgument, "more than the model's max batch of 8"},
		{"infinite price", edit(func(r *pb.ModelInferRequest) { r.Inputs[3].Contents.Fp64Contents[2] = math.Inf(1) }), codes.InvalidArgument, `input "price", row 2: value +Inf is not finite`},
		// Raw BYTES stay packed in the server: the same checks apply.
		{"raw bytes for a number", edit(func(r *pb.ModelInferRequest) {
			rawContents(r)
			r.Inputs[3].Datatype, r.RawInputContents[3] = "BYTES", packed("1.5", "2", "3")
		}), codes.InvalidArgument, `input "price": datatype BYTES: a continuous feature takes numbers`},
		{"raw bytes for encoded ids", edit(func(r *pb.ModelInferRequest) {
			rawContents(r)
			r.Inputs[1].Name, r.Inputs[1].Datatype, r.RawInputContents[1] = "item_id__encoded", "BYTES", packed("1", "2", "3")
		}), codes.InvalidArgument, `input "item_id__encoded": datatype BYTES: encoded ids are integers`},
		{"raw bytes count", edit(func(r *pb.ModelInferRequest) { rawContents(r); r.RawInputContents[0] = packed("u1", "u2") }),
			codes.InvalidArgument, `input "user_id": shape [3] holds 3 elements, the data has 2`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := c.ModelInfer(ctx, tc.req)
			require.Error(t, err)
			st, _ := status.FromError(err)
			assert.Equal(t, tc.code, st.Code(), st.Message())
			assert.Contains(t, st.Message(), tc.msg)
		})
	}
	_, err := c.ModelMetadata(ctx, &pb.ModelMetadataRequest{Name: "nope"})
	assert.Equal(t, codes.NotFound, status.Code(err))
	_, err = c.ModelReady(ctx, &pb.ModelReadyRequest{Name: "nope"})
	assert.Equal(t, codes.NotFound, status.Code(err))
	// Over --max_request_bytes (1 MiB here).
	big := grpcRequest(servetest.Rows(3, 0))
	big.Inputs[0].Contents.BytesContents[0] = make([]byte, 2<<20)
	_, err = c.ModelInfer(ctx, big)
	assert.Equal(t, codes.ResourceExhausted, status.Code(err), "%v", err)
	// Still serving.
	_, err = c.ModelInfer(ctx, grpcRequest(servetest.Rows(3, 0)))
	require.NoError(t, err)
}
