package grpcapi

import (
	"fmt"

	"google.golang.org/grpc/encoding"
	grpcproto "google.golang.org/grpc/encoding/proto"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	pb "github.com/mtlrank/mtlrank/serve/inferencepb"
)

// rawInputContents is the field number of ModelInferRequest's
// raw_input_contents.
var rawInputContents = (&pb.ModelInferRequest{}).ProtoReflect().Descriptor().Fields().ByName("raw_input_contents").Number()

// Codec is gRPC's protobuf codec, except for ModelInferRequest: its
// raw_input_contents become views into one copy of the received message
// instead of one copy each, appended one at a time (copying them was the
// largest part of decoding a request of raw values, ahead of the
// protobuf parsing of the rest). The other fields are parsed by the
// protobuf library as usual. Install it with grpc.ForceServerCodecV2.
type Codec struct{ base encoding.CodecV2 }

// NewCodec returns the service's codec.
func NewCodec() *Codec { return &Codec{base: encoding.GetCodecV2(grpcproto.Name)} }

// Name is the protobuf content subtype: clients see the usual codec.
func (c *Codec) Name() string { return grpcproto.Name }

// Marshal is the protobuf codec's.
func (c *Codec) Marshal(v any) (mem.BufferSlice, error) { return c.base.Marshal(v) }

// Unmarshal parses data into v.
func (c *Codec) Unmarshal(data mem.BufferSlice, v any) error {
	req, ok := v.(*pb.ModelInferRequest)
	if !ok {
		return c.base.Unmarshal(data, v)
	}
	// The request's raw contents keep pointing into buf after this call, so
	// buf is a copy the garbage collector owns, not a pooled transport
	// buffer that gRPC reuses.
	return unmarshalInfer(data.Materialize(), req)
}

// unmarshalInfer parses buf into req, its raw_input_contents pointing into
// buf.
func unmarshalInfer(buf []byte, req *pb.ModelInferRequest) error {
	var raws [][]byte
	var rest []byte // the other fields, for proto.Unmarshal
	// Clients write fields in number order, raw_input_contents (the last)
	// at the end: then the other fields are buf's prefix and need no copy.
	prefix, copied := -1, false
	for off := 0; off < len(buf); {
		num, typ, n := protowire.ConsumeTag(buf[off:])
		if n < 0 {
			return fmt.Errorf("grpcapi: parse ModelInferRequest: %w", protowire.ParseError(n))
		}
		m := protowire.ConsumeFieldValue(num, typ, buf[off+n:])
		if m < 0 {
			return fmt.Errorf("grpcapi: parse ModelInferRequest: %w", protowire.ParseError(m))
		}
		field := buf[off : off+n+m]
		if num == rawInputContents && typ == protowire.BytesType {
			v, _ := protowire.ConsumeBytes(buf[off+n:])
			raws = append(raws, v[:len(v):len(v)])
			if prefix < 0 {
				prefix = off
			}
		} else if prefix >= 0 || copied {
			if !copied {
				rest, copied = append([]byte(nil), buf[:prefix]...), true
			}
			rest = append(rest, field...)
		}
		off += len(field)
	}
	if !copied {
		rest = buf
		if prefix >= 0 {
			rest = buf[:prefix]
		}
	}
	if err := proto.Unmarshal(rest, req); err != nil {
		return err
	}
	req.RawInputContents = raws
	return nil
}
