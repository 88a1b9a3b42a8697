package schema

// Merlin keeps a column's properties in the feature annotation as an Any
// holding a serialized google.protobuf.Struct. This file converts between
// that encoding, through the protobuf module's structpb and anypb, and Go
// values of the JSON kind: nil, bool, float64, string, []any and
// map[string]any — the same kinds encoding/json produces, so properties
// survive a schema.json round trip unchanged.

import (
	"fmt"
	"reflect"

	"google.golang.org/protobuf/encoding/prototext"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/mtlrank/mtlrank/schema/internal/textpb"
)

const structTypeURL = "type.googleapis.com/google.protobuf.Struct"

// structDecoding bounds the nesting of a decoded Struct like the text
// parser's: each level of values is a Value and a ListValue or Struct.
var structDecoding = proto.UnmarshalOptions{RecursionLimit: 2*textpb.MaxNesting + 2}

// decodeAny returns the properties in an Any: ok is false when it holds
// another type than google.protobuf.Struct.
func decodeAny(a *anypb.Any) (props map[string]any, ok bool, err error) {
	if !a.MessageIs((*structpb.Struct)(nil)) {
		return nil, false, nil
	}
	st := &structpb.Struct{}
	if err := structDecoding.Unmarshal(a.GetValue(), st); err != nil {
		return nil, true, err
	}
	return st.AsMap(), true, nil
}

// decodeStruct decodes the serialized google.protobuf.Struct b.
func decodeStruct(b []byte) (map[string]any, error) {
	m, _, err := decodeAny(&anypb.Any{TypeUrl: structTypeURL, Value: b})
	return m, err
}

// decodeTextStruct decodes a google.protobuf.Struct written in text form
// (`fields { key: "k" value { number_value: 1 } }`).
func decodeTextStruct(text []byte) (map[string]any, error) {
	st := &structpb.Struct{}
	if err := prototext.Unmarshal(text, st); err != nil {
		return nil, err
	}
	return st.AsMap(), nil
}

// encodeStruct serializes a normalized map (see normalizeValue) as a
// google.protobuf.Struct, with keys in sorted order so the bytes are
// deterministic.
func encodeStruct(m map[string]any) ([]byte, error) {
	st, err := structpb.NewStruct(m)
	if err != nil {
		return nil, err
	}
	return proto.MarshalOptions{Deterministic: true}.Marshal(st)
}

// normalizeValue converts a Go value to the JSON kinds a Struct can hold:
// integers and floats become float64, slices and arrays []any, maps with
// string keys map[string]any. Other kinds are an error.
func normalizeValue(v any, depth int) (any, error) {
	if depth > textpb.MaxNesting {
		return nil, fmt.Errorf("values nested deeper than %d levels", textpb.MaxNesting)
	}
	switch x := v.(type) {
	case nil:
		return nil, nil
	case bool, string, float64:
		return x, nil
	case map[string]any:
		out := make(map[string]any, len(x))
		for k, e := range x {
			n, err := normalizeValue(e, depth+1)
			if err != nil {
				return nil, fmt.Errorf("%s: %w", k, err)
			}
			out[k] = n
		}
		return out, nil
	case []any:
		out := make([]any, len(x))
		for i, e := range x {
			n, err := normalizeValue(e, depth+1)
			if err != nil {
				return nil, fmt.Errorf("[%d]: %w", i, err)
			}
			out[i] = n
		}
		return out, nil
	}
	rv := reflect.ValueOf(v)
	switch rv.Kind() {
	case reflect.Bool:
		return rv.Bool(), nil
	case reflect.String:
		return rv.String(), nil
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		return float64(rv.Int()), nil
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64, reflect.Uintptr:
		return float64(rv.Uint()), nil
	case reflect.Float32, reflect.Float64:
		return rv.Float(), nil
	case reflect.Pointer, reflect.Interface:
		if rv.IsNil() {
			return nil, nil
		}
		return normalizeValue(rv.Elem().Interface(), depth+1)
	case reflect.Slice, reflect.Array:
		if rv.Kind() == reflect.Slice && rv.IsNil() {
			return []any{}, nil
		}
		out := make([]any, rv.Len())
		for i := range out {
			n, err := normalizeValue(rv.Index(i).Interface(), depth+1)
			if err != nil {
				return nil, fmt.Errorf("[%d]: %w", i, err)
			}
			out[i] = n
		}
		return out, nil
	case reflect.Map:
		if rv.Type().Key().Kind() != reflect.String {
			return nil, fmt.Errorf("map with %s keys (need string keys)", rv.Type().Key())
		}
		out := make(map[string]any, rv.Len())
		it := rv.MapRange()
		for it.Next() {
			n, err := normalizeValue(it.Value().Interface(), depth+1)
			if err != nil {
				return nil, fmt.Errorf("%s: %w", it.Key().String(), err)
			}
			out[it.Key().String()] = n
		}
		return out, nil
	}
	return nil, fmt.Errorf("value of type %T cannot be stored in a google.protobuf.Struct", v)
}

// cloneValue deep-copies a value of the JSON kinds; other values are
// returned as they are (they are immutable or owned by the caller).
func cloneValue(v any) any {
	switch x := v.(type) {
	case map[string]any:
		out := make(map[string]any, len(x))
		for k, e := range x {
			out[k] = cloneValue(e)
		}
		return out
	case []any:
		out := make([]any, len(x))
		for i, e := range x {
			out[i] = cloneValue(e)
		}
		return out
	}
	return v
}
