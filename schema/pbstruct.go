package schema

// Merlin keeps a column's properties in the feature annotation as an Any
// holding a serialized google.protobuf.Struct. This file converts between
// that wire encoding and Go values of the JSON kind: nil, bool, float64,
// string, []any and map[string]any — the same kinds encoding/json produces,
// so properties survive a schema.json round trip unchanged.

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"reflect"
	"sort"
	"unicode/utf8"
)

const structTypeURL = "type.googleapis.com/google.protobuf.Struct"

// Wire types of the protobuf binary encoding.
const (
	wireVarint  = 0
	wireFixed64 = 1
	wireBytes   = 2
	wireStart   = 3
	wireEnd     = 4
	wireFixed32 = 5
)

type wireReader struct {
	b   []byte
	pos int
}

func (r *wireReader) done() bool { return r.pos >= len(r.b) }

func (r *wireReader) varint() (uint64, error) {
	var v uint64
	for i := 0; i < 10; i++ {
		if r.pos >= len(r.b) {
			return 0, errors.New("truncated varint")
		}
		c := r.b[r.pos]
		r.pos++
		if i == 9 && c > 1 {
			return 0, errors.New("varint overflows 64 bits")
		}
		v |= uint64(c&0x7f) << (7 * i)
		if c < 0x80 {
			return v, nil
		}
	}
	return 0, errors.New("varint longer than 10 bytes")
}

func (r *wireReader) tag() (num uint64, wt int, err error) {
	t, err := r.varint()
	if err != nil {
		return 0, 0, err
	}
	num, wt = t>>3, int(t&7)
	if num == 0 {
		return 0, 0, errors.New("field number 0")
	}
	return num, wt, nil
}

func (r *wireReader) bytes() ([]byte, error) {
	n, err := r.varint()
	if err != nil {
		return nil, err
	}
	if n > uint64(len(r.b)-r.pos) {
		return nil, fmt.Errorf("length %d runs past the end of the data", n)
	}
	out := r.b[r.pos : r.pos+int(n)]
	r.pos += int(n)
	return out, nil
}

func (r *wireReader) fixed64() (uint64, error) {
	if len(r.b)-r.pos < 8 {
		return 0, errors.New("truncated fixed64")
	}
	v := binary.LittleEndian.Uint64(r.b[r.pos:])
	r.pos += 8
	return v, nil
}

// skip passes over a field of an unknown number.
func (r *wireReader) skip(wt int) error {
	switch wt {
	case wireVarint:
		_, err := r.varint()
		return err
	case wireFixed64:
		_, err := r.fixed64()
		return err
	case wireBytes:
		_, err := r.bytes()
		return err
	case wireFixed32:
		if len(r.b)-r.pos < 4 {
			return errors.New("truncated fixed32")
		}
		r.pos += 4
		return nil
	}
	return fmt.Errorf("unsupported wire type %d", wt)
}

func wireTypeError(msg string, num uint64, wt int) error {
	return fmt.Errorf("%s field %d has wire type %d", msg, num, wt)
}

// decodeStruct decodes a serialized google.protobuf.Struct.
func decodeStruct(b []byte, depth int) (map[string]any, error) {
	if depth > maxNesting {
		return nil, fmt.Errorf("values nested deeper than %d levels", maxNesting)
	}
	out := map[string]any{}
	r := &wireReader{b: b}
	for !r.done() {
		num, wt, err := r.tag()
		if err != nil {
			return nil, err
		}
		if num != 1 {
			if err := r.skip(wt); err != nil {
				return nil, err
			}
			continue
		}
		if wt != wireBytes {
			return nil, wireTypeError("Struct", num, wt)
		}
		entry, err := r.bytes()
		if err != nil {
			return nil, err
		}
		key, val, err := decodeStructEntry(entry, depth)
		if err != nil {
			return nil, err
		}
		out[key] = val // a repeated key: the last one wins, as in protobuf maps
	}
	return out, nil
}

func decodeStructEntry(b []byte, depth int) (string, any, error) {
	var key string
	var val any
	r := &wireReader{b: b}
	for !r.done() {
		num, wt, err := r.tag()
		if err != nil {
			return "", nil, err
		}
		switch num {
		case 1, 2:
			if wt != wireBytes {
				return "", nil, wireTypeError("Struct entry", num, wt)
			}
			data, err := r.bytes()
			if err != nil {
				return "", nil, err
			}
			if num == 1 {
				if !utf8.Valid(data) {
					return "", nil, fmt.Errorf("key %q is not valid UTF-8", data)
				}
				key = string(data)
			} else if val, err = decodeValue(data, depth+1); err != nil {
				return "", nil, fmt.Errorf("key %q: %w", key, err)
			}
		default:
			if err := r.skip(wt); err != nil {
				return "", nil, err
			}
		}
	}
	return key, val, nil
}

func decodeValue(b []byte, depth int) (any, error) {
	if depth > maxNesting {
		return nil, fmt.Errorf("values nested deeper than %d levels", maxNesting)
	}
	var val any
	r := &wireReader{b: b}
	for !r.done() {
		num, wt, err := r.tag()
		if err != nil {
			return nil, err
		}
		w, known := valueWireType(num)
		if !known {
			if err := r.skip(wt); err != nil {
				return nil, err
			}
			continue
		}
		if wt != w {
			return nil, wireTypeError("Value", num, wt)
		}
		switch num {
		case 1: // null_value
			if _, err := r.varint(); err != nil {
				return nil, err
			}
			val = nil
		case 2: // number_value
			bits, err := r.fixed64()
			if err != nil {
				return nil, err
			}
			val = math.Float64frombits(bits)
		case 3: // string_value
			data, err := r.bytes()
			if err != nil {
				return nil, err
			}
			if !utf8.Valid(data) {
				return nil, fmt.Errorf("string value %q is not valid UTF-8", data)
			}
			val = string(data)
		case 4: // bool_value
			v, err := r.varint()
			if err != nil {
				return nil, err
			}
			val = v != 0
		case 5: // struct_value
			data, err := r.bytes()
			if err != nil {
				return nil, err
			}
			if val, err = decodeStruct(data, depth+1); err != nil {
				return nil, err
			}
		case 6: // list_value
			data, err := r.bytes()
			if err != nil {
				return nil, err
			}
			if val, err = decodeList(data, depth+1); err != nil {
				return nil, err
			}
		}
	}
	return val, nil
}

// valueWireType is the wire type of each field of google.protobuf.Value.
func valueWireType(num uint64) (int, bool) {
	switch num {
	case 1, 4: // null_value, bool_value
		return wireVarint, true
	case 2: // number_value
		return wireFixed64, true
	case 3, 5, 6: // string_value, struct_value, list_value
		return wireBytes, true
	}
	return 0, false
}

func decodeList(b []byte, depth int) ([]any, error) {
	if depth > maxNesting {
		return nil, fmt.Errorf("values nested deeper than %d levels", maxNesting)
	}
	out := []any{}
	r := &wireReader{b: b}
	for !r.done() {
		num, wt, err := r.tag()
		if err != nil {
			return nil, err
		}
		if num != 1 {
			if err := r.skip(wt); err != nil {
				return nil, err
			}
			continue
		}
		if wt != wireBytes {
			return nil, wireTypeError("ListValue", num, wt)
		}
		data, err := r.bytes()
		if err != nil {
			return nil, err
		}
		v, err := decodeValue(data, depth+1)
		if err != nil {
			return nil, err
		}
		out = append(out, v)
	}
	return out, nil
}

func appendVarint(b []byte, v uint64) []byte {
	for v >= 0x80 {
		b = append(b, byte(v)|0x80)
		v >>= 7
	}
	return append(b, byte(v))
}

func appendBytesField(b []byte, num int, data []byte) []byte {
	b = appendVarint(b, uint64(num)<<3|wireBytes)
	b = appendVarint(b, uint64(len(data)))
	return append(b, data...)
}

// encodeStruct serializes a normalized map (see normalizeValue) as a
// google.protobuf.Struct, with keys in sorted order so the bytes are
// deterministic.
func encodeStruct(m map[string]any) []byte {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var out []byte
	for _, k := range keys {
		var entry []byte
		entry = appendBytesField(entry, 1, []byte(k))
		entry = appendBytesField(entry, 2, encodeValue(m[k]))
		out = appendBytesField(out, 1, entry)
	}
	return out
}

func encodeValue(v any) []byte {
	var b []byte
	switch x := v.(type) {
	case nil:
		b = appendVarint(b, 1<<3|wireVarint)
		b = appendVarint(b, 0)
	case float64:
		b = appendVarint(b, 2<<3|wireFixed64)
		b = binary.LittleEndian.AppendUint64(b, math.Float64bits(x))
	case string:
		b = appendBytesField(b, 3, []byte(x))
	case bool:
		b = appendVarint(b, 4<<3|wireVarint)
		if x {
			b = appendVarint(b, 1)
		} else {
			b = appendVarint(b, 0)
		}
	case map[string]any:
		b = appendBytesField(b, 5, encodeStruct(x))
	case []any:
		var list []byte
		for _, e := range x {
			list = appendBytesField(list, 1, encodeValue(e))
		}
		b = appendBytesField(b, 6, list)
	default:
		// normalizeValue guarantees one of the kinds above.
		panic(fmt.Sprintf("schema: encodeValue: unnormalized %T", v))
	}
	return b
}

// normalizeValue converts a Go value to the JSON kinds a Struct can hold:
// integers and floats become float64, slices and arrays []any, maps with
// string keys map[string]any. Other kinds are an error.
func normalizeValue(v any, depth int) (any, error) {
	if depth > maxNesting {
		return nil, fmt.Errorf("values nested deeper than %d levels", maxNesting)
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
