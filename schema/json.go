package schema

// mtlrank's schema.json: the Feature fields as JSON, plus the pbtxt content
// kept verbatim from a parsed schema.pbtxt, so that pbtxt -> json -> pbtxt
// loses nothing but the byte-exact form of extra_metadata (re-encoded from
// the properties) and extra_metadata entries that are not a Struct.
//
//	{
//	  "version": 1,
//	  "features": [
//	    {"name": "user_id", "dtype": "int32", "tags": ["categorical", "user_id"],
//	     "int_domain": {"name": "user_id", "min": 0, "max": 100000, "is_categorical": true}},
//	    {"name": "tags", "dtype": "int64", "tags": ["categorical", "list"],
//	     "int_domain": {"min": 0, "max": 999}, "value_count": {"min": 1, "max": 20}},
//	    {"name": "click", "dtype": "float32", "tags": ["binary_classification", "target"]}
//	  ]
//	}
//
// Property numbers are float64 after a round trip, as in a
// google.protobuf.Struct.

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"

	"github.com/mtlrank/mtlrank/schema/internal/textpb"
)

// jsonVersion is the schema.json format version this package writes.
const jsonVersion = 1

type jsonSchema struct {
	Version  int            `json:"version"`
	Features []*jsonFeature `json:"features"`
	PbtxtRaw []string       `json:"pbtxt_raw,omitempty"`
}

type jsonFeature struct {
	Name        string              `json:"name"`
	DType       DType               `json:"dtype"`
	Tags        []Tag               `json:"tags,omitempty"`
	IntDomain   *IntDomain          `json:"int_domain,omitempty"`
	FloatDomain *FloatDomain        `json:"float_domain,omitempty"`
	ValueCount  *ValueCount         `json:"value_count,omitempty"`
	Properties  map[string]any      `json:"properties,omitempty"`
	PbtxtRaw    []string            `json:"pbtxt_raw,omitempty"`
	PbtxtNested map[string][]string `json:"pbtxt_nested,omitempty"`
}

// WriteJSON writes s as mtlrank's schema.json (indented, one feature per
// block).
func (s *Schema) WriteJSON(w io.Writer) error {
	out := jsonSchema{Version: jsonVersion, Features: []*jsonFeature{}, PbtxtRaw: s.Raw}
	for i, f := range s.Features {
		if f == nil {
			return fmt.Errorf("schema: write json: feature #%d is nil", i)
		}
		jf := &jsonFeature{
			Name: f.Name, DType: f.DType, Tags: f.Tags, IntDomain: f.IntDomain,
			FloatDomain: f.FloatDomain, ValueCount: f.ValueCount, PbtxtRaw: f.Raw,
		}
		if len(f.Properties) > 0 {
			props := make(map[string]any, len(f.Properties))
			for k, v := range f.Properties {
				n, err := normalizeValue(v, 0)
				if err != nil {
					return fmt.Errorf("schema: write json: feature %q: property %q: %w", f.Name, k, err)
				}
				props[k] = n
			}
			jf.Properties = props
		}
		if f.pb != nil {
			jf.PbtxtNested = f.pb.nested
		}
		out.Features = append(out.Features, jf)
	}
	data, err := json.MarshalIndent(out, "", "  ")
	if err != nil {
		return fmt.Errorf("schema: write json: %w", err)
	}
	data = append(data, '\n')
	if _, err := w.Write(data); err != nil {
		return fmt.Errorf("schema: write json: %w", err)
	}
	return nil
}

// ParseJSON reads mtlrank's schema.json. Unknown keys are an error (they
// are usually typos); errors carry the line and column.
func ParseJSON(r io.Reader) (*Schema, error) {
	src, err := io.ReadAll(r)
	if err != nil {
		return nil, fmt.Errorf("schema: reading json: %w", err)
	}
	dec := json.NewDecoder(bytes.NewReader(src))
	dec.DisallowUnknownFields()
	var in jsonSchema
	if err := dec.Decode(&in); err != nil {
		return nil, jsonError(src, err)
	}
	if dec.More() {
		return nil, jsonError(src, fmt.Errorf("unexpected data after the schema object at offset %d", dec.InputOffset()))
	}
	if in.Version > jsonVersion {
		return nil, fmt.Errorf("schema: json format version %d is newer than this mtlrank reads (%d)", in.Version, jsonVersion)
	}
	s := &Schema{Raw: in.PbtxtRaw}
	for i, jf := range in.Features {
		if jf == nil {
			return nil, fmt.Errorf("schema: json: features[%d] is null", i)
		}
		f := &Feature{
			Name: jf.Name, DType: jf.DType, Tags: jf.Tags, IntDomain: jf.IntDomain,
			FloatDomain: jf.FloatDomain, ValueCount: jf.ValueCount, Properties: jf.Properties,
			Raw: jf.PbtxtRaw,
		}
		if len(jf.PbtxtNested) > 0 {
			f.pb = &pbtxtState{nested: jf.PbtxtNested, metaIdx: -1}
		}
		s.Features = append(s.Features, f)
	}
	return s, nil
}

// jsonError turns encoding/json errors carrying an offset into a ParseError
// with line and column.
func jsonError(src []byte, err error) error {
	// Both offsets count the bytes read, including the offending one.
	off := int64(-1)
	msg := err.Error()
	var syn *json.SyntaxError
	var typ *json.UnmarshalTypeError
	switch {
	case errors.As(err, &syn):
		off = syn.Offset - 1
	case errors.As(err, &typ):
		off = typ.Offset - 1
		msg = fmt.Sprintf("%s: expected %s, got a JSON %s", typ.Field, typ.Type, typ.Value)
	case errors.Is(err, io.EOF):
		return &ParseError{Line: 1, Col: 1, Msg: "empty JSON document"}
	}
	if off < 0 {
		return fmt.Errorf("schema: json: %w", err)
	}
	return textpb.ErrorAt(src, int(min(off, int64(len(src)))), msg)
}
