package grpcapi

import (
	"testing"

	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	pb "github.com/mtlrank/mtlrank/serve/inferencepb"
)

// sample is a request with every kind of field the codec splits.
func sample() *pb.ModelInferRequest {
	return &pb.ModelInferRequest{
		ModelName: "ranker", ModelVersion: "3", Id: "req-1",
		Parameters: map[string]*pb.InferParameter{"p": {ParameterChoice: &pb.InferParameter_Int64Param{Int64Param: 5}}},
		Inputs: []*pb.ModelInferRequest_InferInputTensor{
			{Name: "user_id", Datatype: "BYTES", Shape: []int64{2}},
			{Name: "price", Datatype: "FP32", Shape: []int64{2}},
		},
		Outputs:          []*pb.ModelInferRequest_InferRequestedOutputTensor{{Name: "click"}},
		RawInputContents: [][]byte{rawBytes("u1", "u22"), {0, 0, 128, 63, 0, 0, 0, 64}},
	}
}

// reorder writes m's fields with raw_input_contents first, or interleaved
// with the others, as a client may (field order is free in protobuf).
func reorder(t *testing.T, m *pb.ModelInferRequest, interleave bool) []byte {
	raws := m.RawInputContents
	rest, err := proto.Marshal(&pb.ModelInferRequest{ModelName: m.ModelName, ModelVersion: m.ModelVersion, Id: m.Id,
		Parameters: m.Parameters, Inputs: m.Inputs, Outputs: m.Outputs})
	require.NoError(t, err)
	var b []byte
	appendRaw := func(r []byte) []byte {
		b = protowire.AppendTag(b, rawInputContents, protowire.BytesType)
		return protowire.AppendBytes(b, r)
	}
	if interleave {
		b = appendRaw(raws[0])
		b = append(b, rest...)
		b = appendRaw(raws[1])
		return b
	}
	for _, r := range raws {
		b = appendRaw(r)
	}
	return append(b, rest...)
}

func TestCodecUnmarshalInfer(t *testing.T) {
	inOrder, err := proto.Marshal(sample())
	require.NoError(t, err)
	noRaw, err := proto.Marshal(&pb.ModelInferRequest{ModelName: "ranker", Inputs: sample().Inputs})
	require.NoError(t, err)
	// raw_input_contents with another wire type is an unknown field to the
	// protobuf library, and so to the codec.
	wrongType := protowire.AppendTag(append([]byte(nil), noRaw...), rawInputContents, protowire.VarintType)
	wrongType = protowire.AppendVarint(wrongType, 3)
	cases := []struct {
		name string
		wire []byte
		want *pb.ModelInferRequest
	}{
		{"fields in number order", inOrder, sample()},
		{"raw contents first", reorder(t, sample(), false), sample()},
		{"raw contents between the other fields", reorder(t, sample(), true), sample()},
		{"no raw contents", noRaw, &pb.ModelInferRequest{ModelName: "ranker", Inputs: sample().Inputs}},
		{"empty message", nil, &pb.ModelInferRequest{}},
		{"raw_input_contents as a varint", wrongType, nil},
	}
	c := NewCodec()
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			// The transport reuses its buffers: the request must not
			// point into them.
			wire := append([]byte(nil), tc.wire...)
			var got pb.ModelInferRequest
			require.NoError(t, c.Unmarshal(mem.BufferSlice{mem.SliceBuffer(wire)}, &got))
			for i := range wire {
				wire[i] = 0xff
			}
			var std pb.ModelInferRequest
			require.NoError(t, proto.Unmarshal(tc.wire, &std))
			if tc.want != nil {
				require.True(t, proto.Equal(tc.want, &got), "got %v", &got)
			}
			require.True(t, proto.Equal(&std, &got), "the protobuf library reads %v", &std)
		})
	}
}

// A raw content is a view capped at its end: appending to it never writes
// over the next one.
func TestCodecRawContentsDoNotOverlap(t *testing.T) {
	wire, err := proto.Marshal(sample())
	require.NoError(t, err)
	var got pb.ModelInferRequest
	require.NoError(t, NewCodec().Unmarshal(mem.BufferSlice{mem.SliceBuffer(wire)}, &got))
	_ = append(got.RawInputContents[0], "zzzzzzzzzzzzzzzz"...)
	require.Equal(t, sample().RawInputContents[1], got.RawInputContents[1])
}

func TestCodecBadMessages(t *testing.T) {
	good, err := proto.Marshal(sample())
	require.NoError(t, err)
	cases := []struct {
		name string
		wire []byte
	}{
		{"cut inside the raw contents", good[:len(good)-3]},
		{"cut inside a tag", append(append([]byte(nil), good...), 0x80)},
		{"a field number of zero", []byte{0x02, 0x00}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var std pb.ModelInferRequest
			require.Error(t, proto.Unmarshal(tc.wire, &std), "the protobuf library refuses it too")
			var got pb.ModelInferRequest
			require.Error(t, NewCodec().Unmarshal(mem.BufferSlice{mem.SliceBuffer(tc.wire)}, &got))
		})
	}
}

// Other messages go through the protobuf codec.
func TestCodecOtherMessages(t *testing.T) {
	c := NewCodec()
	in := &pb.ModelMetadataRequest{Name: "ranker", Version: "2"}
	data, err := c.Marshal(in)
	require.NoError(t, err)
	var out pb.ModelMetadataRequest
	require.NoError(t, c.Unmarshal(data, &out))
	require.True(t, proto.Equal(in, &out))
	require.Equal(t, "proto", c.Name())
}
