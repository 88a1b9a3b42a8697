package schema

import (
	"bytes"
	"errors"
	"math"
	"reflect"
	"testing"
)

// FuzzParsePbtxt checks that the parser never panics, that every rejection
// is a positioned ParseError, and that parse -> write -> parse is stable:
// the second parse equals the first and writes the same bytes.
// Seeds: testdata/fuzz/FuzzParsePbtxt (run by plain `go test`) plus the
// realistic Merlin schema.
func FuzzParsePbtxt(f *testing.F) {
	f.Add([]byte(`feature { name: "a" type: INT int_domain { min: 0 max: 3 is_categorical: true } }`))
	f.Fuzz(func(t *testing.T, data []byte) {
		s1, err := ParsePbtxt(bytes.NewReader(data))
		if err != nil {
			var pe *ParseError
			if !errors.As(err, &pe) || pe.Line < 1 || pe.Col < 1 {
				t.Fatalf("error without a position: %v", err)
			}
			return
		}
		var out1 bytes.Buffer
		if err := s1.WritePbtxt(&out1); err != nil {
			t.Fatalf("write: %v", err)
		}
		s2, err := ParsePbtxt(bytes.NewReader(out1.Bytes()))
		if err != nil {
			t.Fatalf("parsing written schema: %v\n%s", err, out1.String())
		}
		if !reflect.DeepEqual(nanFree(exported(s1)), nanFree(exported(s2))) {
			t.Fatalf("round trip changed the schema\nfirst:  %+v\nsecond: %+v\nwritten:\n%s", s1.Features, s2.Features, out1.String())
		}
		var out2 bytes.Buffer
		if err := s2.WritePbtxt(&out2); err != nil {
			t.Fatalf("second write: %v", err)
		}
		if !bytes.Equal(out1.Bytes(), out2.Bytes()) {
			t.Fatalf("writing is not stable\nfirst:\n%s\nsecond:\n%s", out1.String(), out2.String())
		}
	})
}

// nanFree replaces NaNs (which never compare equal) by a marker so that
// schemas holding them can be compared.
func nanFree(s *Schema) *Schema {
	const marker = -math.MaxFloat64
	fix := func(x *float64) {
		if math.IsNaN(*x) {
			*x = marker
		}
	}
	for _, f := range s.Features {
		if f.FloatDomain != nil {
			fix(&f.FloatDomain.Min)
			fix(&f.FloatDomain.Max)
		}
		if f.Properties != nil {
			f.Properties = nanFreeValue(f.Properties).(map[string]any)
		}
	}
	return s
}

func nanFreeValue(v any) any {
	switch x := v.(type) {
	case float64:
		if math.IsNaN(x) {
			return "NaN marker"
		}
	case map[string]any:
		for k, e := range x {
			x[k] = nanFreeValue(e)
		}
	case []any:
		for i, e := range x {
			x[i] = nanFreeValue(e)
		}
	}
	return v
}
