package schema

// Reading and writing Merlin's schema.pbtxt: a tensorflow-metadata Schema
// message in protobuf text format, as NVTabular and merlin-core write it.
//
// Interpreted per feature: name, type, int_domain, float_domain, value_count
// and annotation (tag, extra_metadata). The Merlin properties in
// annotation.extra_metadata (a google.protobuf.Struct packed in an Any) are
// decoded into Feature.Properties, except the keys that describe the dtype
// and shape (dtype_item_size, is_list, is_ragged, _dims), which are folded
// into Feature.DType and Feature.ValueCount.
//
// Everything else — other feature fields (shape, presence, domain, ...),
// other fields inside the interpreted messages, top-level fields that are not
// features — is kept as its verbatim source text and written back unchanged.
// The extra_metadata entries are kept verbatim too and re-emitted byte for
// byte unless the feature's properties, dtype or list shape were changed, in
// which case the Struct is re-encoded. Comments between interpreted fields
// are not kept; fields are written in tensorflow-metadata field-number order,
// which is the order protobuf's own text printer (and so NVTabular) uses.

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"math"
	"reflect"
	"sort"
	"strconv"
	"strings"

	"google.golang.org/protobuf/types/known/anypb"

	"github.com/mtlrank/mtlrank/schema/internal/textpb"
)

// ParseError is a syntax or content error in a schema file, with the
// 1-based line and column (in bytes) where it was found.
type ParseError = textpb.ParseError

// pbtxtState is what a parsed feature needs, beyond its exported fields, to
// be written back with nothing lost.
type pbtxtState struct {
	// nested holds verbatim fields found inside the interpreted messages,
	// keyed by message: "int_domain", "float_domain", "value_count",
	// "annotation".
	nested map[string][]string
	// metaRaw is the verbatim text of every annotation.extra_metadata field.
	metaRaw []string
	// metaIdx is the index in metaRaw of the Struct decoded into the feature
	// (-1 when there is none) and metaSnap that Struct as decoded.
	metaIdx  int
	metaSnap map[string]any
}

func (st *pbtxtState) clone() *pbtxtState {
	if st == nil {
		return nil
	}
	out := &pbtxtState{metaIdx: st.metaIdx, metaRaw: append([]string(nil), st.metaRaw...)}
	if st.nested != nil {
		out.nested = make(map[string][]string, len(st.nested))
		for k, v := range st.nested {
			out.nested[k] = append([]string(nil), v...)
		}
	}
	if st.metaSnap != nil {
		out.metaSnap = cloneValue(st.metaSnap).(map[string]any)
	}
	return out
}

// Property keys that Merlin writes into extra_metadata to describe the
// column's dtype and shape. They are interpreted, not kept in Properties.
const (
	propItemSize = "dtype_item_size"
	propIsList   = "is_list"
	propIsRagged = "is_ragged"
	propDims     = "_dims"
)

var interpretedProps = []string{propItemSize, propIsList, propIsRagged, propDims}

// Field numbers of tensorflow-metadata's Feature and Schema messages, used
// to write fields in the order protobuf's text printer uses.
var featureFieldNumbers = map[string]int{
	"name": 1, "deprecated": 2, "value_count": 5, "type": 6, "domain": 7,
	"int_domain": 9, "float_domain": 10, "string_domain": 11, "bool_domain": 13,
	"presence": 14, "distribution_constraints": 15, "annotation": 16,
	"group_presence": 17, "skew_comparator": 18, "not_in_environment": 19,
	"in_environment": 20, "drift_comparator": 21, "lifecycle_stage": 22,
	"shape": 23, "natural_language_domain": 24, "image_domain": 25,
	"mid_domain": 26, "url_domain": 27, "time_domain": 28, "struct_domain": 29,
	"time_of_day_domain": 30, "unique_constraints": 31, "value_counts": 32,
}

var schemaFieldNumbers = map[string]int{
	"feature": 1, "string_domain": 4, "default_environment": 5,
	"sparse_feature": 6, "annotation": 8, "float_domain": 9, "int_domain": 10,
	"dataset_constraints": 11, "weighted_feature": 12,
	"tensor_representation_group": 13,
}

// unknownFieldNumber sorts fields the table does not know after the known ones.
const unknownFieldNumber = 1 << 20

// rawFieldName is the field name a verbatim field text starts with.
func rawFieldName(raw string) string {
	raw = strings.TrimLeft(raw, " \t\r\n")
	if strings.HasPrefix(raw, "[") {
		if i := strings.IndexByte(raw, ']'); i > 0 {
			return raw[:i+1]
		}
		return raw
	}
	i := 0
	for i < len(raw) && textpb.IsIdentChar(raw[i]) {
		i++
	}
	return raw[:i]
}

func fieldNumber(table map[string]int, name string) int {
	if n, ok := table[name]; ok {
		return n
	}
	return unknownFieldNumber
}

// sortRaw orders verbatim fields by field number, keeping the relative order
// of fields with the same number (repeated fields).
func sortRaw(raw []string, table map[string]int) {
	sort.SliceStable(raw, func(i, j int) bool {
		return fieldNumber(table, rawFieldName(raw[i])) < fieldNumber(table, rawFieldName(raw[j]))
	})
}

// ParsePbtxt reads a tensorflow-metadata schema in protobuf text format.
// Errors are *ParseError values carrying the line and column.
func ParsePbtxt(r io.Reader) (*Schema, error) {
	src, err := io.ReadAll(r)
	if err != nil {
		return nil, fmt.Errorf("schema: reading pbtxt: %w", err)
	}
	root, p, err := textpb.Parse(src)
	if err != nil {
		return nil, err
	}
	s := &Schema{}
	for _, fld := range root.Fields {
		if fld.Name != "feature" {
			s.Raw = append(s.Raw, string(src[fld.Start:fld.End]))
			continue
		}
		for _, v := range fld.Values {
			if v.Msg == nil {
				return nil, p.Errorf(v.Start, "field \"feature\" must be a message, got %s", v.Text)
			}
			f, err := interpretFeature(p, v.Msg)
			if err != nil {
				return nil, err
			}
			s.Features = append(s.Features, f)
		}
	}
	sortRaw(s.Raw, schemaFieldNumbers)
	return s, nil
}

// interpretFeature converts one `feature { ... }` message.
func interpretFeature(p *textpb.Parser, m *textpb.Message) (*Feature, error) {
	f := &Feature{}
	st := &pbtxtState{metaIdx: -1}
	fr := textpb.NewFieldReader(p, "feature")
	// The name is read first so that every later error can name the feature.
	for _, fld := range m.Fields {
		if fld.Name == "name" {
			name, err := fr.Str(fld)
			if err != nil {
				return nil, err
			}
			f.Name = name
			fr.SetCtx(fmt.Sprintf("feature %q", f.Name))
		}
	}
	fr.SetCtx(fmt.Sprintf("feature %q", f.Name))
	if f.Name == "" {
		line, _ := p.Position(m.Start)
		fr.SetCtx(fmt.Sprintf("feature at line %d", line))
	}
	var (
		pbType  string
		hasType bool
		meta    map[string]any
	)
	for _, fld := range m.Fields {
		raw := func() string { return string(p.Src[fld.Start:fld.End]) }
		switch fld.Name {
		case "name":
		case "type":
			v, err := fr.Single(fld)
			if err != nil {
				return nil, err
			}
			t := ""
			if v.Msg == nil {
				t = v.Text
				switch v.Text { // enum values may be given by number
				case "1":
					t = "BYTES"
				case "2":
					t = "INT"
				case "3":
					t = "FLOAT"
				}
			}
			if t == "INT" || t == "FLOAT" || t == "BYTES" {
				pbType, hasType = t, true
			} else {
				f.Raw = append(f.Raw, raw()) // STRUCT, TYPE_UNKNOWN: not a column type mtlrank reads
			}
		case "int_domain":
			msg, err := fr.Message(fld)
			if err != nil {
				return nil, err
			}
			d, err := interpretIntDomain(p, fr.Ctx(), msg, st)
			if err != nil {
				return nil, err
			}
			f.IntDomain = d
		case "float_domain":
			msg, err := fr.Message(fld)
			if err != nil {
				return nil, err
			}
			d, err := interpretFloatDomain(p, fr.Ctx(), msg, st)
			if err != nil {
				return nil, err
			}
			f.FloatDomain = d
		case "value_count":
			msg, err := fr.Message(fld)
			if err != nil {
				return nil, err
			}
			vc, err := interpretValueCount(p, fr.Ctx(), msg, st)
			if err != nil {
				return nil, err
			}
			f.ValueCount = vc
		case "annotation":
			msg, err := fr.Message(fld)
			if err != nil {
				return nil, err
			}
			md, err := interpretAnnotation(p, fr.Ctx(), msg, f, st)
			if err != nil {
				return nil, err
			}
			meta = md
		default:
			f.Raw = append(f.Raw, raw())
		}
	}
	sortRaw(f.Raw, featureFieldNumbers)

	// Dtype: the feature type refined by Merlin's dtype_item_size.
	size := 0
	if x, ok := meta[propItemSize].(float64); ok && x == math.Trunc(x) && x > 0 && x <= 1024 {
		size = int(x)
	}
	if hasType {
		f.DType = dtypeFor(pbType, size, f.hasRawField("bool_domain"))
	}

	// Shape: value_count, else Merlin's _dims, else its is_list flag.
	if f.ValueCount == nil {
		if isList, vc, ok := dimsShape(meta[propDims]); ok {
			if isList {
				f.ValueCount = &vc
			}
		} else if b, _ := meta[propIsList].(bool); b {
			f.ValueCount = &ValueCount{}
		}
	}

	// Merlin tags a column categorical when its int_domain says so.
	if f.IntDomain != nil && f.IntDomain.IsCategorical && !f.HasTag(TagCategorical) {
		f.Tags = append(f.Tags, TagCategorical)
	}

	if meta != nil {
		props := map[string]any{}
		for k, v := range meta {
			props[k] = cloneValue(v)
		}
		for _, k := range interpretedProps {
			delete(props, k)
		}
		if len(props) > 0 {
			f.Properties = props
		}
	}
	if st.nested == nil && len(st.metaRaw) == 0 {
		st = nil
	}
	f.pb = st
	return f, nil
}

func dtypeFor(pbType string, size int, boolDomain bool) DType {
	switch pbType {
	case "INT":
		switch {
		case boolDomain:
			return Bool
		case size == 0 || size == 64:
			return Int64
		case size == 8:
			return Int8
		case size == 16:
			return Int16
		case size == 32:
			return Int32
		}
		return DType(fmt.Sprintf("int%d", size))
	case "FLOAT":
		switch size {
		case 0, 32:
			return Float32
		case 64:
			return Float64
		}
		return DType(fmt.Sprintf("float%d", size))
	case "BYTES":
		return String
	}
	return ""
}

// pbtxtType is the tensorflow-metadata FeatureType for a dtype, and the
// dtype_item_size Merlin records for it (0 when none applies).
func pbtxtType(d DType) (string, int) {
	switch d {
	case Int8:
		return "INT", 8
	case Int16:
		return "INT", 16
	case Int32:
		return "INT", 32
	case Int64:
		return "INT", 64
	case Bool:
		return "INT", 8
	case Float32:
		return "FLOAT", 32
	case Float64:
		return "FLOAT", 64
	case String:
		return "BYTES", 0
	}
	s := string(d)
	for _, pre := range []struct{ prefix, typ string }{{"int", "INT"}, {"float", "FLOAT"}} {
		if n, err := strconv.Atoi(strings.TrimPrefix(s, pre.prefix)); err == nil && strings.HasPrefix(s, pre.prefix) && n > 0 {
			return pre.typ, n
		}
	}
	return "", 0
}

func (f *Feature) hasRawField(name string) bool {
	for _, r := range f.Raw {
		if rawFieldName(r) == name {
			return true
		}
	}
	return false
}

func interpretIntDomain(p *textpb.Parser, ctx string, m *textpb.Message, st *pbtxtState) (*IntDomain, error) {
	d := &IntDomain{}
	fr := textpb.NewFieldReader(p, ctx+": int_domain")
	var err error
	for _, fld := range m.Fields {
		switch fld.Name {
		case "name":
			d.Name, err = fr.Str(fld)
		case "min":
			d.Min, err = fr.Int64(fld)
		case "max":
			d.Max, err = fr.Int64(fld)
		case "is_categorical":
			d.IsCategorical, err = fr.Bool(fld)
		default:
			st.addNested("int_domain", string(p.Src[fld.Start:fld.End]))
		}
		if err != nil {
			return nil, err
		}
	}
	return d, nil
}

func interpretFloatDomain(p *textpb.Parser, ctx string, m *textpb.Message, st *pbtxtState) (*FloatDomain, error) {
	d := &FloatDomain{}
	fr := textpb.NewFieldReader(p, ctx+": float_domain")
	var err error
	for _, fld := range m.Fields {
		switch fld.Name {
		case "name":
			d.Name, err = fr.Str(fld)
		case "min":
			d.Min, err = fr.Float64(fld)
		case "max":
			d.Max, err = fr.Float64(fld)
		default:
			st.addNested("float_domain", string(p.Src[fld.Start:fld.End]))
		}
		if err != nil {
			return nil, err
		}
	}
	return d, nil
}

func interpretValueCount(p *textpb.Parser, ctx string, m *textpb.Message, st *pbtxtState) (*ValueCount, error) {
	vc := &ValueCount{}
	fr := textpb.NewFieldReader(p, ctx+": value_count")
	var err error
	for _, fld := range m.Fields {
		switch fld.Name {
		case "min":
			vc.Min, err = fr.Int64(fld)
		case "max":
			vc.Max, err = fr.Int64(fld)
		default:
			st.addNested("value_count", string(p.Src[fld.Start:fld.End]))
		}
		if err != nil {
			return nil, err
		}
	}
	return vc, nil
}

func (st *pbtxtState) addNested(msg, raw string) {
	if st.nested == nil {
		st.nested = map[string][]string{}
	}
	st.nested[msg] = append(st.nested[msg], raw)
}

// interpretAnnotation reads tags into f and returns the first
// google.protobuf.Struct found in extra_metadata (nil when none).
func interpretAnnotation(p *textpb.Parser, ctx string, m *textpb.Message, f *Feature, st *pbtxtState) (map[string]any, error) {
	fr := textpb.NewFieldReader(p, ctx+": annotation")
	var meta map[string]any
	for _, fld := range m.Fields {
		raw := string(p.Src[fld.Start:fld.End])
		switch fld.Name {
		case "tag":
			for _, v := range fld.Values {
				t, err := fr.StrValue("tag", v)
				if err != nil {
					return nil, err
				}
				f.Tags = append(f.Tags, Tag(t))
			}
		case "extra_metadata":
			st.metaRaw = append(st.metaRaw, raw)
			if meta != nil || fld.List || fld.Values[0].Msg == nil {
				continue // only the first Struct is interpreted; the rest is kept verbatim
			}
			s, err := decodeAnyStruct(p, fr.Ctx()+": extra_metadata", fld.Values[0].Msg)
			if err != nil {
				return nil, err
			}
			if s != nil {
				meta = s
				st.metaIdx = len(st.metaRaw) - 1
				st.metaSnap = cloneValue(s).(map[string]any)
			}
		default:
			st.addNested("annotation", raw)
		}
	}
	return meta, nil
}

// decodeAnyStruct returns the Struct packed in an Any message, written
// either as {type_url, value} or in the expanded form
// `[type.googleapis.com/google.protobuf.Struct] { fields { ... } }`. It
// returns nil for an Any holding another type. The protobuf module decodes
// both (anypb and structpb, prototext for the expanded form); this reader
// only finds the fields, so that errors point at them.
func decodeAnyStruct(p *textpb.Parser, ctx string, m *textpb.Message) (map[string]any, error) {
	fr := textpb.NewFieldReader(p, ctx)
	var (
		typeURL string
		value   *textpb.Value
	)
	for _, fld := range m.Fields {
		switch {
		case fld.Name == "type_url":
			u, err := fr.Str(fld)
			if err != nil {
				return nil, err
			}
			typeURL = u
		case fld.Name == "value":
			v, err := fr.Single(fld)
			if err != nil {
				return nil, err
			}
			if _, err := fr.StrValue("value", v); err != nil {
				return nil, err
			}
			value = &v
		case fld.Name == "["+structTypeURL+"]":
			msg, err := fr.Message(fld)
			if err != nil {
				return nil, err
			}
			// The body between the message's delimiters.
			s, err := decodeTextStruct(p.Src[msg.Start+1 : fld.End-1])
			if err != nil {
				return nil, p.Errorf(msg.Start, "%s: not a valid google.protobuf.Struct: %v", ctx, err)
			}
			return s, nil
		}
	}
	a := &anypb.Any{TypeUrl: typeURL}
	if value != nil {
		a.Value = []byte(value.Str)
	}
	s, ok, err := decodeAny(a)
	switch {
	case !ok:
		return nil, nil
	case err != nil:
		return nil, p.Errorf(value.Start, "%s: value is not a valid google.protobuf.Struct: %v", ctx, err)
	}
	return s, nil
}

// dimsShape interprets Merlin's _dims property: a list whose first entry is
// the batch dimension; a second entry makes the column a list, given as a
// fixed size n, as [min, max] (null for unknown) or as null. ok is false
// when v is absent or describes something else (deeper nesting).
func dimsShape(v any) (isList bool, vc ValueCount, ok bool) {
	dims, _ := v.([]any)
	switch len(dims) {
	case 1:
		return false, ValueCount{}, true
	case 2:
	default:
		return false, ValueCount{}, false
	}
	count := func(x any) (int64, bool) {
		if x == nil {
			return 0, true
		}
		n, isNum := x.(float64)
		if !isNum || n != math.Trunc(n) || n < 0 || n > 1<<53 {
			return 0, false
		}
		return int64(n), true
	}
	switch d := dims[1].(type) {
	case nil:
		return true, ValueCount{}, true
	case float64:
		n, good := count(d)
		return true, ValueCount{Min: n, Max: n}, good
	case []any:
		if len(d) != 2 {
			return false, ValueCount{}, false
		}
		lo, ok1 := count(d[0])
		hi, ok2 := count(d[1])
		return true, ValueCount{Min: lo, Max: hi}, ok1 && ok2
	}
	return false, ValueCount{}, false
}

// derivedProp is the value Merlin would record under an interpreted key for
// f's current dtype and shape; ok is false when there is none.
func derivedProp(key string, f *Feature) (any, bool) {
	// The shape recorded is the one ValueCount describes: a list tag
	// without a value count is invalid (Validate reports it), and counts are
	// not invented for it.
	vc := ValueCount{}
	if f.ValueCount != nil {
		vc = *f.ValueCount
	}
	isList := f.ValueCount != nil
	ragged := isList && !(vc.Min == vc.Max && vc.Min > 0)
	switch key {
	case propItemSize:
		if _, size := pbtxtType(f.DType); size > 0 {
			return float64(size), true
		}
		return nil, false
	case propIsList:
		return isList, true
	case propIsRagged:
		return ragged, true
	case propDims:
		batch := []any{0.0, nil}
		if !isList {
			return []any{batch}, true
		}
		if !ragged {
			return []any{batch, float64(vc.Min)}, true
		}
		var hi any
		if vc.Max > 0 {
			hi = float64(vc.Max)
		}
		return []any{batch, []any{float64(vc.Min), hi}}, true
	}
	return nil, false
}

// propAgrees reports whether a recorded value of an interpreted key still
// describes f (so that it can be kept as written).
func propAgrees(key string, recorded any, f *Feature) bool {
	switch key {
	case propItemSize:
		want, ok := derivedProp(key, f)
		return !ok || reflect.DeepEqual(recorded, want)
	case propIsList, propIsRagged:
		want, _ := derivedProp(key, f)
		return reflect.DeepEqual(recorded, want)
	case propDims:
		isList, vc, ok := dimsShape(recorded)
		if !ok {
			return true // a shape mtlrank does not model: keep it as written
		}
		if isList != (f.ValueCount != nil) {
			return false
		}
		have := ValueCount{}
		if f.ValueCount != nil {
			have = *f.ValueCount
		}
		return !isList || vc == have
	}
	return false
}

// metadataStruct builds the Struct to record in extra_metadata: the
// feature's Properties plus the dtype/shape keys. Recorded values of those
// keys that still describe the feature are kept as they were written.
func (f *Feature) metadataStruct() (map[string]any, error) {
	out := map[string]any{}
	for k, v := range f.Properties {
		n, err := normalizeValue(v, 0)
		if err != nil {
			return nil, fmt.Errorf("feature %q: property %q: %w", f.Name, k, err)
		}
		out[k] = n
	}
	var snap map[string]any
	if f.pb != nil {
		snap = f.pb.metaSnap
	}
	for _, key := range interpretedProps {
		want, ok := derivedProp(key, f)
		if snap == nil {
			if ok {
				out[key] = want
			} else {
				delete(out, key)
			}
			continue
		}
		recorded, had := snap[key]
		switch {
		case had && propAgrees(key, recorded, f):
			out[key] = recorded
		case had && ok:
			out[key] = want
		case had:
			delete(out, key)
		case key == propItemSize && ok && !isDefaultDType(f.DType):
			// The file did not record a size, but without one the dtype
			// would read back as the default for its type.
			out[key] = want
		default:
			delete(out, key)
		}
	}
	return out, nil
}

// isDefaultDType reports whether d is what a feature type without
// dtype_item_size reads as.
func isDefaultDType(d DType) bool {
	return d == Int64 || d == Float32 || d == String || d == Bool || d == ""
}

// WritePbtxt writes s as a tensorflow-metadata schema in protobuf text
// format (the schema.pbtxt NVTabular writes). Content kept from parsing is
// written back verbatim; see the file comment of pbtxt.go.
func (s *Schema) WritePbtxt(w io.Writer) error {
	bw := bufio.NewWriter(w)
	for i, f := range s.Features {
		if f == nil {
			return fmt.Errorf("schema: write pbtxt: feature #%d is nil", i)
		}
		var buf bytes.Buffer
		if err := f.writePbtxt(&buf); err != nil {
			return fmt.Errorf("schema: write pbtxt: %w", err)
		}
		if _, err := bw.Write(buf.Bytes()); err != nil {
			return fmt.Errorf("schema: write pbtxt: %w", err)
		}
	}
	raw := append([]string(nil), s.Raw...)
	sortRaw(raw, schemaFieldNumbers)
	for _, r := range raw {
		if _, err := fmt.Fprintf(bw, "%s\n", r); err != nil {
			return fmt.Errorf("schema: write pbtxt: %w", err)
		}
	}
	if err := bw.Flush(); err != nil {
		return fmt.Errorf("schema: write pbtxt: %w", err)
	}
	return nil
}

type pbEntry struct {
	num  int
	body string // complete lines, indented for the feature's body
}

func (f *Feature) writePbtxt(buf *bytes.Buffer) error {
	const ind = "  "
	var entries []pbEntry
	add := func(num int, format string, args ...any) {
		entries = append(entries, pbEntry{num, fmt.Sprintf(format, args...)})
	}
	var nested map[string][]string
	if f.pb != nil {
		nested = f.pb.nested
	}
	block := func(name string, lines []string) string {
		var b strings.Builder
		fmt.Fprintf(&b, "%s%s {\n", ind, name)
		for _, l := range lines {
			fmt.Fprintf(&b, "%s%s%s\n", ind, ind, l)
		}
		for _, r := range nested[name] {
			fmt.Fprintf(&b, "%s%s%s\n", ind, ind, r)
		}
		fmt.Fprintf(&b, "%s}\n", ind)
		return b.String()
	}

	add(1, "%sname: %s\n", ind, textpb.Quote(f.Name))
	if f.ValueCount != nil {
		add(5, "%s", block("value_count", []string{
			fmt.Sprintf("min: %d", f.ValueCount.Min), fmt.Sprintf("max: %d", f.ValueCount.Max)}))
	}
	typ, _ := pbtxtType(f.DType)
	if typ != "" {
		add(6, "%stype: %s\n", ind, typ)
	}
	if d := f.IntDomain; d != nil {
		var lines []string
		if d.Name != "" {
			lines = append(lines, "name: "+textpb.Quote(d.Name))
		}
		lines = append(lines, fmt.Sprintf("min: %d", d.Min), fmt.Sprintf("max: %d", d.Max))
		if d.IsCategorical {
			lines = append(lines, "is_categorical: true")
		}
		add(9, "%s", block("int_domain", lines))
	}
	if d := f.FloatDomain; d != nil {
		var lines []string
		if d.Name != "" {
			lines = append(lines, "name: "+textpb.Quote(d.Name))
		}
		lines = append(lines, "min: "+textpb.FormatFloat(d.Min), "max: "+textpb.FormatFloat(d.Max))
		add(10, "%s", block("float_domain", lines))
	}
	if f.DType == Bool && !f.hasRawField("bool_domain") {
		add(13, "%sbool_domain {\n%s}\n", ind, ind)
	}
	ann, err := f.annotationLines()
	if err != nil {
		return err
	}
	if len(ann) > 0 || len(nested["annotation"]) > 0 {
		var b strings.Builder
		fmt.Fprintf(&b, "%sannotation {\n", ind)
		for _, l := range ann {
			fmt.Fprintf(&b, "%s%s%s\n", ind, ind, l)
		}
		fmt.Fprintf(&b, "%s}\n", ind)
		add(16, "%s", b.String())
	}
	for _, r := range f.Raw {
		name := rawFieldName(r)
		// A dtype set since parsing replaces a kept type (STRUCT) and a
		// bool_domain that would make the column boolean again.
		if name == "type" && typ != "" || name == "bool_domain" && f.DType.IsKnown() && f.DType != Bool {
			continue
		}
		add(fieldNumber(featureFieldNumbers, name), "%s%s\n", ind, r)
	}
	sort.SliceStable(entries, func(i, j int) bool { return entries[i].num < entries[j].num })

	buf.WriteString("feature {\n")
	for _, e := range entries {
		buf.WriteString(e.body)
	}
	buf.WriteString("}\n")
	return nil
}

// annotationLines are the body lines of the annotation message: tags, the
// verbatim fields kept from parsing, then extra_metadata.
func (f *Feature) annotationLines() ([]string, error) {
	var lines []string
	for _, t := range f.Tags {
		lines = append(lines, "tag: "+textpb.Quote(string(t)))
	}
	var st *pbtxtState
	if f.pb != nil {
		st = f.pb
		lines = append(lines, st.nested["annotation"]...)
	}
	meta, err := f.metadataStruct()
	if err != nil {
		return nil, err
	}
	wire, err := encodeStruct(meta)
	if err != nil {
		return nil, fmt.Errorf("feature %q: properties: %w", f.Name, err)
	}
	encoded := []string{
		"extra_metadata {",
		"  type_url: " + textpb.Quote(structTypeURL),
		"  value: " + textpb.QuoteBytes(wire),
		"}",
	}
	switch {
	case st == nil || len(st.metaRaw) == 0:
		lines = append(lines, encoded...)
	case st.metaIdx < 0:
		// Another kind of metadata is recorded. Merlin reads a single entry,
		// so a Struct is added only when it carries something: properties,
		// or a dtype that would not read back without its size.
		lines = append(lines, st.metaRaw...)
		if len(f.Properties) > 0 || !isDefaultDType(f.DType) {
			lines = append(lines, encoded...)
		}
	default:
		unchanged := reflect.DeepEqual(meta, st.metaSnap)
		for i, r := range st.metaRaw {
			if i == st.metaIdx && !unchanged {
				lines = append(lines, encoded...)
			} else {
				lines = append(lines, r)
			}
		}
	}
	return lines, nil
}
