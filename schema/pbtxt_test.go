package schema

import (
	"bytes"
	"errors"
	"math"
	"os"
	"regexp"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/mtlrank/mtlrank/schema/internal/textpb"
)

const merlinSchemaFile = "testdata/merlin_schema.pbtxt"

func parseString(t *testing.T, src string) *Schema {
	t.Helper()
	s, err := ParsePbtxt(strings.NewReader(src))
	require.NoError(t, err)
	return s
}

func writeString(t *testing.T, s *Schema) string {
	t.Helper()
	var buf bytes.Buffer
	require.NoError(t, s.WritePbtxt(&buf))
	return buf.String()
}

// exported is s without the parse-time state, for comparing schemas that
// went through different formats.
func exported(s *Schema) *Schema {
	c := s.Clone()
	for _, f := range c.Features {
		f.pb = nil
	}
	return c
}

func catProps(name string, card, dim float64) map[string]any {
	return map[string]any{
		"num_buckets": nil, "freq_threshold": 0.0, "max_size": 0.0, "start_index": 0.0,
		"cat_path":        ".//categories/unique." + name + ".parquet",
		"embedding_sizes": map[string]any{"cardinality": card, "dimension": dim},
	}
}

// wantMerlin is testdata/merlin_schema.pbtxt as this package must read it,
// written out by hand from the file.
func wantMerlin() *Schema {
	return &Schema{
		Features: []*Feature{
			{Name: "user_id", DType: Int64, Tags: []Tag{"user_id", "categorical", "user", "id"},
				IntDomain:  &IntDomain{Name: "user_id", Min: 0, Max: 100000, IsCategorical: true},
				Properties: catProps("user_id", 100001, 512)},
			{Name: "item_id", DType: Int32, Tags: []Tag{"item", "item_id", "id", "categorical"},
				IntDomain:  &IntDomain{Name: "item_id", Min: 0, Max: 179280, IsCategorical: true},
				Properties: catProps("item_id", 179281, 512)},
			{Name: "video_category", DType: Int8, Tags: []Tag{"categorical", "item"},
				IntDomain:  &IntDomain{Name: "video_category", Min: 0, Max: 5, IsCategorical: true},
				Properties: catProps("video_category", 6, 16)},
			{Name: "item_genres", DType: Int32, Tags: []Tag{"list", "categorical", "item"},
				IntDomain:  &IntDomain{Name: "genres", Min: 0, Max: 1000, IsCategorical: true},
				ValueCount: &ValueCount{Min: 1, Max: 5},
				Properties: catProps("item_genres", 1001, 32)},
			{Name: "age", DType: Float32, Tags: []Tag{"continuous", "user"},
				FloatDomain: &FloatDomain{Name: "age", Min: -1.7320508, Max: 22.5},
				Raw:         []string{"presence {\n    min_fraction: 1.0\n    min_count: 1\n  }"}},
			{Name: "item_embedding", DType: Float64, Tags: []Tag{"continuous", "item", "embedding"},
				ValueCount: &ValueCount{Min: 4, Max: 4}},
			{Name: "click", DType: Int8, Tags: []Tag{"binary_classification", "target"},
				IntDomain: &IntDomain{Name: "click", Min: 0, Max: 1}},
			{Name: "like", DType: Int64, Tags: []Tag{"binary_classification", "target"},
				Raw: []string{"lifecycle_stage: PRODUCTION"}},
			{Name: "watching_times", DType: Float32, Tags: []Tag{"regression", "target"},
				Raw: []string{"shape {\n    dim {\n      size: 1\n    }\n  }"}},
		},
		// Kept verbatim, in field-number order (string_domain = 4 before
		// default_environment = 5).
		Raw: []string{"string_domain {\n  name: \"weekday\"\n  value: \"mon\"\n  value: \"tue\"\n}", `default_environment: "TRAINING"`},
	}
}

func readMerlin(t *testing.T) (string, *Schema) {
	t.Helper()
	src, err := os.ReadFile(merlinSchemaFile)
	require.NoError(t, err)
	return string(src), parseString(t, string(src))
}

func TestParseMerlinSchema(t *testing.T) {
	_, s := readMerlin(t)
	assert.Equal(t, wantMerlin(), exported(s))
	require.NoError(t, s.Validate())

	emb := s.Feature("item_embedding")
	require.NotNil(t, emb.pb)
	assert.Equal(t, []string{`comment: "pretrained, \303\251t\303\251 2023"`}, emb.pb.nested["annotation"])
	// The interpreted keys are kept in the snapshot, not in Properties.
	assert.Equal(t, map[string]any{
		"_dims": []any{[]any{0.0, nil}, 4.0}, "is_ragged": false, "is_list": true, "dtype_item_size": 64.0,
	}, emb.pb.metaSnap)

	// Compound tags imply their parts.
	u := s.Feature("user_id")
	assert.True(t, u.HasTag(TagUser) && u.HasTag(TagID) && u.HasTag(TagCategorical))
	assert.True(t, s.Feature("click").IsBinaryTarget())
}

func TestPbtxtRoundTripMerlin(t *testing.T) {
	src, s1 := readMerlin(t)
	out1 := writeString(t, s1)
	s2 := parseString(t, out1)
	// Nothing lost: everything, including the verbatim state, is equal.
	require.Equal(t, s1, s2)
	// Writing is stable.
	assert.Equal(t, out1, writeString(t, s2))

	// Every uninterpreted piece is written back byte for byte.
	var pieces []string
	pieces = append(pieces, s1.Raw...)
	for _, f := range s1.Features {
		pieces = append(pieces, f.Raw...)
		for _, n := range f.pb.nested {
			pieces = append(pieces, n...)
		}
		pieces = append(pieces, f.pb.metaRaw...)
	}
	for _, p := range pieces {
		assert.Contains(t, out1, p)
	}
	// In particular every extra_metadata value line of the source.
	values := regexp.MustCompile(`(?m)^\s*value: "\\n.*"$`).FindAllString(src, -1)
	require.Len(t, values, 9)
	for _, v := range values {
		assert.Contains(t, out1, v+"\n")
	}
	// A feature written the way NVTabular writes it comes back identical.
	block := func(text, name string) string {
		i := strings.Index(text, "feature {\n  name: \""+name+"\"")
		require.GreaterOrEqual(t, i, 0, name)
		j := strings.Index(text[i:], "\n}\n")
		return text[i : i+j+3]
	}
	for _, name := range []string{"user_id", "item_id", "item_genres", "item_embedding", "like", "watching_times"} {
		assert.Equal(t, block(src, name), block(out1, name), name)
	}
}

func TestPbtxtEditsAreWritten(t *testing.T) {
	_, base := readMerlin(t)
	cases := []struct {
		name  string
		edit  func(s *Schema)
		check func(t *testing.T, f *Feature)
		feat  string
	}{
		{"dtype", func(s *Schema) { s.Feature("item_id").DType = Int64 }, func(t *testing.T, f *Feature) {
			assert.Equal(t, Int64, f.DType)
			assert.Equal(t, 64.0, f.pb.metaSnap["dtype_item_size"])
			assert.Equal(t, catProps("item_id", 179281, 512), f.Properties)
		}, "item_id"},
		{"property", func(s *Schema) {
			s.Feature("user_id").Properties["embedding_sizes"] = map[string]any{"cardinality": 100001, "dimension": 64}
		}, func(t *testing.T, f *Feature) {
			want := catProps("user_id", 100001, 64)
			assert.Equal(t, want, f.Properties)
			assert.Equal(t, []any{[]any{0.0, nil}}, f.pb.metaSnap["_dims"])
		}, "user_id"},
		{"value count", func(s *Schema) { s.Feature("item_genres").ValueCount = &ValueCount{Min: 2, Max: 8} }, func(t *testing.T, f *Feature) {
			assert.Equal(t, &ValueCount{Min: 2, Max: 8}, f.ValueCount)
			assert.Equal(t, []any{[]any{0.0, nil}, []any{2.0, 8.0}}, f.pb.metaSnap["_dims"])
			assert.Equal(t, true, f.pb.metaSnap["is_ragged"])
		}, "item_genres"},
		{"list to fixed size", func(s *Schema) { s.Feature("item_genres").ValueCount = &ValueCount{Min: 3, Max: 3} }, func(t *testing.T, f *Feature) {
			assert.Equal(t, []any{[]any{0.0, nil}, 3.0}, f.pb.metaSnap["_dims"])
			assert.Equal(t, false, f.pb.metaSnap["is_ragged"])
		}, "item_genres"},
		{"list to scalar", func(s *Schema) {
			f := s.Feature("item_genres")
			f.ValueCount, f.Tags = nil, []Tag{TagCategorical}
		}, func(t *testing.T, f *Feature) {
			assert.Nil(t, f.ValueCount)
			assert.False(t, f.IsList())
			assert.Equal(t, false, f.pb.metaSnap["is_list"])
			assert.Equal(t, []any{[]any{0.0, nil}}, f.pb.metaSnap["_dims"])
		}, "item_genres"},
		{"properties removed", func(s *Schema) { s.Feature("video_category").Properties = nil }, func(t *testing.T, f *Feature) {
			assert.Nil(t, f.Properties)
			assert.Equal(t, Int8, f.DType)
		}, "video_category"},
		{"tags", func(s *Schema) { s.Feature("click").Tags = []Tag{TagBinary} }, func(t *testing.T, f *Feature) {
			assert.Equal(t, []Tag{TagBinary}, f.Tags)
		}, "click"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s := base.Clone()
			tc.edit(s)
			out := writeString(t, s)
			back := parseString(t, out)
			tc.check(t, back.Feature(tc.feat))
			// The other features are untouched, verbatim state included.
			for i, f := range base.Features {
				if f.Name != tc.feat {
					assert.Equal(t, f, back.Features[i], f.Name)
				}
			}
			// And the edited schema is stable from now on.
			assert.Equal(t, out, writeString(t, back))
		})
	}
	// Editing a clone never touches the original.
	assert.Equal(t, wantMerlin(), exported(base))
}

func TestPbtxtWriteGoSchema(t *testing.T) {
	s := &Schema{Features: []*Feature{{
		Name: "tags", DType: Int32, Tags: []Tag{TagCategorical, TagList},
		IntDomain:  &IntDomain{Name: "tags", Min: 0, Max: 999, IsCategorical: true},
		ValueCount: &ValueCount{Min: 1, Max: 20},
		Properties: map[string]any{"source": "synthetic", "n": 3},
	}}}
	out := writeString(t, s)
	valueLine := regexp.MustCompile(`(?m)^      value: (".*")$`)
	m := valueLine.FindStringSubmatch(out)
	require.NotNil(t, m, out)
	golden := `feature {
  name: "tags"
  value_count {
    min: 1
    max: 20
  }
  type: INT
  int_domain {
    name: "tags"
    min: 0
    max: 999
    is_categorical: true
  }
  annotation {
    tag: "categorical"
    tag: "list"
    extra_metadata {
      type_url: "type.googleapis.com/google.protobuf.Struct"
      value: VALUE
    }
  }
}
`
	assert.Equal(t, golden, strings.Replace(out, m[1], "VALUE", 1))
	// The recorded properties, decoded by the protobuf module.
	raw, _, err := textpb.Parse([]byte("v: " + m[1]))
	require.NoError(t, err)
	props, err := decodeStruct([]byte(raw.Fields[0].Values[0].Str))
	require.NoError(t, err)
	assert.Equal(t, map[string]any{
		"source": "synthetic", "n": 3.0, "dtype_item_size": 32.0, "is_list": true, "is_ragged": true,
		"_dims": []any{[]any{0.0, nil}, []any{1.0, 20.0}},
	}, props)

	back := parseString(t, out)
	want := s.Clone()
	want.Features[0].Properties["n"] = 3.0 // numbers are float64 in a Struct
	assert.Equal(t, exported(want), exported(back))
}

func TestPbtxtRoundTripTenrec(t *testing.T) {
	for _, rows := range []int64{0, 1000} {
		s := TenrecWithRows(rows)
		back := parseString(t, writeString(t, s))
		assert.Equal(t, s, exported(back))
		require.NoError(t, back.Validate())
	}
}

func TestPbtxtDTypes(t *testing.T) {
	cases := []struct {
		name  string
		body  string
		dtype DType
		raw   []string
	}{
		{"int default", `type: INT`, Int64, nil},
		{"int by number", `type: 2`, Int64, nil},
		{"float default", `type: FLOAT`, Float32, nil},
		{"float by number", `type: 3`, Float32, nil},
		{"bytes", `type: BYTES`, String, nil},
		{"bool domain", "type: INT\n  bool_domain {\n  }", Bool, []string{"bool_domain {\n  }"}},
		{"struct kept verbatim", `type: STRUCT`, "", []string{"type: STRUCT"}},
		{"no type", ``, "", nil},
		{"item size 16", `type: INT annotation { extra_metadata { type_url: "type.googleapis.com/google.protobuf.Struct" value: "\n\034\n\017dtype_item_size\022\t\021\000\000\000\000\000\0000@" } }`, Int16, nil},
		{"float16", `type: FLOAT annotation { extra_metadata { type_url: "type.googleapis.com/google.protobuf.Struct" value: "\n\034\n\017dtype_item_size\022\t\021\000\000\000\000\000\0000@" } }`, "float16", nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s := parseString(t, "feature {\n  name: \"x\"\n  "+tc.body+"\n}\n")
			f := s.Features[0]
			assert.Equal(t, tc.dtype, f.DType)
			assert.Equal(t, tc.raw, f.Raw)
			back := parseString(t, writeString(t, s))
			assert.Equal(t, exported(s), exported(back))
		})
	}
	// A dtype set after parsing wins over a kept type or bool_domain.
	s := parseString(t, "feature { name: \"x\" type: STRUCT }\nfeature { name: \"y\" type: INT bool_domain { } }")
	s.Features[0].DType, s.Features[1].DType = Int32, Int8
	back := parseString(t, writeString(t, s))
	assert.Equal(t, []DType{Int32, Int8}, []DType{back.Features[0].DType, back.Features[1].DType})
	assert.Empty(t, back.Features[0].Raw)
	assert.Empty(t, back.Features[1].Raw)

	// A Go-built boolean feature survives a round trip.
	s = &Schema{Features: []*Feature{{Name: "b", DType: Bool, Tags: []Tag{TagBinaryClassification}}}}
	assert.Equal(t, Bool, parseString(t, writeString(t, s)).Features[0].DType)
	require.ErrorContains(t, parseString(t, "feature { name: \"h\" type: FLOAT annotation { extra_metadata { type_url: \"type.googleapis.com/google.protobuf.Struct\" value: \"\\n\\034\\n\\017dtype_item_size\\022\\t\\021\\000\\000\\000\\000\\000\\0000@\" } } }").Validate(),
		`unknown dtype "float16"`)
}

// structPbtxt writes a one-feature schema whose extra_metadata holds props.
func structPbtxt(body string, props map[string]any) string {
	return "feature {\n  name: \"x\"\n  " + body + "\n  annotation {\n    extra_metadata {\n" +
		"      type_url: \"type.googleapis.com/google.protobuf.Struct\"\n      value: " +
		structValue(props) + "\n    }\n  }\n}\n"
}

// structValue is the text-format bytes value of props as a serialized
// google.protobuf.Struct.
func structValue(props map[string]any) string {
	wire, err := encodeStruct(props)
	if err != nil {
		panic(err)
	}
	return textpb.QuoteBytes(wire)
}

func TestPbtxtShapeFromProperties(t *testing.T) {
	cases := []struct {
		name  string
		body  string
		props map[string]any
		want  *ValueCount
	}{
		{"scalar dims", "type: INT", map[string]any{"_dims": []any{[]any{0.0, nil}}}, nil},
		{"ragged dims", "type: INT", map[string]any{"_dims": []any{[]any{0.0, nil}, []any{1.0, 7.0}}}, &ValueCount{Min: 1, Max: 7}},
		{"unbounded dims", "type: INT", map[string]any{"_dims": []any{[]any{0.0, nil}, []any{2.0, nil}}}, &ValueCount{Min: 2}},
		{"unknown dims", "type: INT", map[string]any{"_dims": []any{[]any{0.0, nil}, nil}}, &ValueCount{}},
		{"fixed dims", "type: FLOAT", map[string]any{"_dims": []any{[]any{0.0, nil}, 3.0}}, &ValueCount{Min: 3, Max: 3}},
		{"is_list only", "type: INT", map[string]any{"is_list": true, "is_ragged": true}, &ValueCount{}},
		// Contradictory flags: _dims wins (as in Merlin) and is_list is
		// corrected on write.
		{"dims win over is_list", "type: INT", map[string]any{"is_list": true, "_dims": []any{[]any{0.0, nil}}}, nil},
		{"value_count wins over dims", "type: INT\n  value_count {\n    min: 2\n    max: 9\n  }",
			map[string]any{"_dims": []any{[]any{0.0, nil}, []any{2.0, 9.0}}}, &ValueCount{Min: 2, Max: 9}},
		{"2-D dims are kept but not modelled", "type: INT", map[string]any{"_dims": []any{[]any{0.0, nil}, 2.0, 3.0}}, nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			src := structPbtxt(tc.body, tc.props)
			s := parseString(t, src)
			assert.Equal(t, tc.want, s.Features[0].ValueCount)
			assert.Nil(t, s.Features[0].Properties)
			out := writeString(t, s)
			back := parseString(t, out)
			if tc.props["is_list"] == true && tc.want == nil {
				assert.Equal(t, false, back.Features[0].pb.metaSnap["is_list"])
				assert.Equal(t, out, writeString(t, back))
				return
			}
			// Unchanged: the metadata goes back verbatim.
			assert.Contains(t, out, structValue(tc.props))
			assert.Equal(t, s, back)
		})
	}
}

func TestPbtxtExpandedAny(t *testing.T) {
	src := `feature {
  name: "x"
  type: INT
  annotation {
    tag: "categorical"
    extra_metadata {
      [type.googleapis.com/google.protobuf.Struct] {
        fields { key: "dtype_item_size" value { number_value: 16 } }
        fields { key: "_dims" value { list_value {
          values { list_value { values { number_value: 0 } values { null_value: NULL_VALUE } } }
          values { number_value: 3 } } } }
        fields { key: "note" value { string_value: "hi" } }
        fields { key: "flag" value { bool_value: true } }
        fields { key: "sub" value { struct_value { fields { key: "a" value { number_value: -1.5 } } } } }
      }
    }
  }
  int_domain { min: 0 max: 9 }
}
`
	s := parseString(t, src)
	f := s.Features[0]
	assert.Equal(t, Int16, f.DType)
	assert.Equal(t, &ValueCount{Min: 3, Max: 3}, f.ValueCount)
	assert.Equal(t, map[string]any{"note": "hi", "flag": true, "sub": map[string]any{"a": -1.5}}, f.Properties)
	out := writeString(t, s)
	assert.Contains(t, out, f.pb.metaRaw[0]) // unchanged: verbatim
	assert.Equal(t, s, parseString(t, out))
}

func TestPbtxtMerlinSemantics(t *testing.T) {
	// is_categorical in int_domain tags the column categorical, as Merlin does.
	s := parseString(t, `feature { name: "c" type: INT int_domain { min: 0 max: 9 is_categorical: true } }`)
	assert.Equal(t, []Tag{TagCategorical}, s.Features[0].Tags)
	s = parseString(t, `feature { name: "u" type: INT int_domain { min: 0 max: 9 is_categorical: true } annotation { tag: "user_id" } }`)
	assert.Equal(t, []Tag{TagUserID}, s.Features[0].Tags, "user_id already implies categorical")

	// A feature without metadata gets a Struct recording its dtype; one with
	// another kind of metadata keeps it alone.
	s = parseString(t, `feature { name: "a" type: INT }`)
	out := writeString(t, s)
	assert.Contains(t, out, "extra_metadata")
	s = parseString(t, `feature { name: "a" type: INT annotation { extra_metadata { type_url: "type.googleapis.com/x.Y" value: "\001" } } }`)
	out = writeString(t, s)
	assert.Equal(t, 1, strings.Count(out, "extra_metadata"))
	assert.Contains(t, out, `extra_metadata { type_url: "type.googleapis.com/x.Y" value: "\001" }`)
	s.Features[0].DType = Int32 // now a size must be recorded
	back := parseString(t, writeString(t, s))
	assert.Equal(t, Int32, back.Features[0].DType)

	// Several extra_metadata entries: the first Struct is interpreted, all kept.
	src := `feature { name: "a" type: INT annotation {
  extra_metadata { type_url: "type.googleapis.com/google.protobuf.Struct" value: "\n\013\n\001s\022\006\032\004abcd" }
  extra_metadata { type_url: "type.googleapis.com/google.protobuf.Struct" value: "\n\007\n\001k\022\002 \001" } } }`
	s = parseString(t, src)
	assert.Equal(t, map[string]any{"s": "abcd"}, s.Features[0].Properties)
	s.Features[0].Properties["s"] = "changed"
	back = parseString(t, writeString(t, s))
	assert.Equal(t, map[string]any{"s": "changed"}, back.Features[0].Properties)
	assert.Contains(t, back.Features[0].pb.metaRaw[1], `value: "\n\007\n\001k\022\002 \001"`)
}

func TestPbtxtStringsRoundTrip(t *testing.T) {
	names := []string{"plain", `quo"te's`, "back\\slash", "new\nline\ttab\r", "été 用户", "\x00\x01\xff\xfe", "\u2028sep", ""}
	for _, n := range names {
		s := &Schema{Features: []*Feature{{Name: n, DType: Int64, Tags: []Tag{Tag(n)}, IntDomain: &IntDomain{Name: n}}}}
		back := parseString(t, writeString(t, s))
		assert.Equal(t, n, back.Features[0].Name)
		assert.Equal(t, []Tag{Tag(n)}, back.Features[0].Tags)
		assert.Equal(t, n, back.Features[0].IntDomain.Name)
	}
	all := make([]byte, 256)
	for i := range all {
		all[i] = byte(i)
	}
	m, _, err := textpb.Parse([]byte("v: " + textpb.QuoteBytes(all)))
	require.NoError(t, err)
	assert.Equal(t, string(all), m.Fields[0].Values[0].Str)
	assert.Equal(t, `"\n\021\t\\\"\'A\377"`, textpb.QuoteBytes([]byte("\n\x11\t\\\"'A\xff")))
}

func TestPbtxtFloatsRoundTrip(t *testing.T) {
	for _, x := range []float64{0, -1.7320508, 22.5, 1e-30, 3.4028234663852886e38, 1.0 / 3, math.Inf(1), math.Inf(-1)} {
		s := &Schema{Features: []*Feature{{Name: "f", DType: Float32, FloatDomain: &FloatDomain{Min: x, Max: x}}}}
		back := parseString(t, writeString(t, s))
		assert.Equal(t, x, back.Features[0].FloatDomain.Min, "%v", x)
	}
}

func TestPbtxtContentErrors(t *testing.T) {
	cases := []struct {
		name      string
		src       string
		line, col int
		msg       string
	}{
		{"duplicate name", `feature { name: "a" name: "b" }`, 1, 21, `feature "a": field "name" given more than once`},
		{"duplicate int_domain", "feature { name: \"a\"\n int_domain { max: 1 }\n int_domain { max: 2 } }", 3, 2, `feature "a": field "int_domain" given more than once`},
		{"max not an integer", "feature {\n  name: \"x\"\n  int_domain { max: \"ten\" }\n}", 3, 21, `feature "x": int_domain: field "max": expected an integer, got "ten"`},
		{"max is a float", `feature { name: "x" int_domain { max: 1.5 } }`, 1, 39, `1.5 is not a 64-bit integer`},
		{"value count overflow", `feature { name: "x" value_count { min: 99999999999999999999 } }`, 1, 40, "value_count: field \"min\": 99999999999999999999 is not a 64-bit integer"},
		{"bad bool", `feature { name: "x" int_domain { is_categorical: maybe } }`, 1, 50, "expected true or false, got maybe"},
		{"float domain string", `feature { name: "x" float_domain { min: "a" } }`, 1, 41, `float_domain: field "min": expected a number`},
		{"feature scalar", `feature: 3`, 1, 10, `field "feature" must be a message`},
		{"tag not string", `feature { name: "x" annotation { tag: 5 } }`, 1, 39, `annotation: field "tag": expected a quoted string, got 5`},
		{"name as list", `feature { name: ["a"] }`, 1, 11, `list syntax is not allowed`},
		{"annotation scalar", `feature { name: "x" annotation: 1 }`, 1, 33, `field "annotation" must be a message`},
		{"bad struct bytes", "feature {\n name: \"x\"\n annotation { extra_metadata {\n type_url: \"type.googleapis.com/google.protobuf.Struct\"\n value: \"\\n\\005\" } } }", 5, 9, `feature "x": annotation: extra_metadata: value is not a valid google.protobuf.Struct`},
		{"unnamed feature", "\n\nfeature { int_domain { min: x } }", 3, 29, `feature at line 3: int_domain: field "min": expected an integer`},
		{"bad expanded struct", `feature { name: "x" annotation { extra_metadata { [type.googleapis.com/google.protobuf.Struct] { oops: 1 } } } }`, 1, 96, `extra_metadata: not a valid google.protobuf.Struct: `},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParsePbtxt(strings.NewReader(tc.src))
			require.Error(t, err)
			var pe *ParseError
			require.True(t, errors.As(err, &pe), "%T: %v", err, err)
			assert.Equal(t, tc.line, pe.Line, err.Error())
			assert.Equal(t, tc.col, pe.Col, err.Error())
			assert.Contains(t, err.Error(), tc.msg)
		})
	}
}

func TestWritePbtxtErrors(t *testing.T) {
	var buf bytes.Buffer
	err := (&Schema{Features: []*Feature{nil}}).WritePbtxt(&buf)
	require.ErrorContains(t, err, "feature #0 is nil")
	err = (&Schema{Features: []*Feature{{Name: "p", DType: Int64, Properties: map[string]any{"ch": make(chan int)}}}}).WritePbtxt(&buf)
	require.ErrorContains(t, err, `feature "p": property "ch"`)
	err = TenrecWithRows(0).WritePbtxt(failingWriter{})
	require.ErrorContains(t, err, "disk full")
}

type failingWriter struct{}

func (failingWriter) Write([]byte) (int, error) { return 0, errors.New("disk full") }
