package grpcapi

import (
	"encoding/binary"
	"fmt"
	"math"
	"testing"

	"google.golang.org/protobuf/proto"

	pb "github.com/mtlrank/mtlrank/serve/inferencepb"
)

// BenchmarkDecode is the gRPC front end's decode of a request of 128 rows
// shaped as the load generator's (four BYTES inputs of ids such as
// "item_id-12345", one FP32 input, all in raw_input_contents): protobuf,
// then the protocol's tensors, per request.
func BenchmarkDecode(b *testing.B) {
	const rows = 128
	req := &pb.ModelInferRequest{ModelName: "ranker"}
	for f, name := range []string{"user_id", "item_id", "video_category", "gender"} {
		var raw []byte
		for i := range rows {
			v := fmt.Sprintf("%s-%d", name, (f+1)*7919*i%100000)
			raw = binary.LittleEndian.AppendUint32(raw, uint32(len(v)))
			raw = append(raw, v...)
		}
		req.Inputs = append(req.Inputs, &pb.ModelInferRequest_InferInputTensor{Name: name, Datatype: "BYTES", Shape: []int64{rows}})
		req.RawInputContents = append(req.RawInputContents, raw)
	}
	var raw []byte
	for i := range rows {
		raw = binary.LittleEndian.AppendUint32(raw, math.Float32bits(float32(i)/10))
	}
	req.Inputs = append(req.Inputs, &pb.ModelInferRequest_InferInputTensor{Name: "age", Datatype: "FP32", Shape: []int64{rows}})
	req.RawInputContents = append(req.RawInputContents, raw)
	wire, err := proto.Marshal(req)
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.SetBytes(int64(len(wire)))
	for b.Loop() {
		var r pb.ModelInferRequest
		if err := proto.Unmarshal(wire, &r); err != nil {
			b.Fatal(err)
		}
		if _, err := decodeInfer(&r); err != nil {
			b.Fatal(err)
		}
	}
}
