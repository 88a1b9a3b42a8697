package schema

import (
	"errors"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func cat(name string, max int64) *Feature {
	return &Feature{Name: name, DType: Int32, Tags: []Tag{TagCategorical},
		IntDomain: &IntDomain{Name: name, Min: 0, Max: max, IsCategorical: true}}
}

func TestValidateBuiltins(t *testing.T) {
	require.NoError(t, Tenrec().Validate())
	require.NoError(t, TenrecWithRows(10).Validate())
	_, s := readMerlin(t)
	require.NoError(t, s.Validate())
}

func TestValidateErrors(t *testing.T) {
	ok := func() []*Feature {
		return []*Feature{cat("user_id", 9), {Name: "click", DType: Float32, Tags: []Tag{TagBinaryClassification, TagTarget}}}
	}
	cases := []struct {
		name    string
		schema  *Schema
		feature string
		msg     string
	}{
		{"empty", &Schema{}, "", "empty schema"},
		{"nil schema", nil, "", "empty schema"},
		{"nil feature", &Schema{Features: []*Feature{nil}}, "", "feature #0 is nil"},
		{"no name", &Schema{Features: []*Feature{{DType: Int64}}}, "", "feature #0 has no name"},
		{"duplicate", &Schema{Features: append(ok(), cat("user_id", 9))}, "user_id", "duplicate feature name"},
		{"no dtype", &Schema{Features: []*Feature{{Name: "x"}}}, "x", "no dtype"},
		{"unknown dtype", &Schema{Features: []*Feature{{Name: "x", DType: "uint8"}}}, "x", `unknown dtype "uint8"`},
		{"categorical without domain", &Schema{Features: []*Feature{{Name: "x", DType: Int64, Tags: []Tag{TagCategorical}}}}, "x",
			"categorical feature without int_domain"},
		{"compound tag needs domain too", &Schema{Features: []*Feature{{Name: "u", DType: Int64, Tags: []Tag{TagUserID}}}}, "u",
			"categorical feature without int_domain"},
		{"negative min", &Schema{Features: []*Feature{func() *Feature { f := cat("x", 5); f.IntDomain.Min = -1; return f }()}}, "x",
			"min -1 is negative"},
		{"max below min", &Schema{Features: []*Feature{func() *Feature { f := cat("x", 5); f.IntDomain.Min = 7; return f }()}}, "x",
			"max 5 is below min 7"},
		{"float categorical", &Schema{Features: []*Feature{func() *Feature { f := cat("x", 5); f.DType = Float32; return f }()}}, "x",
			"ids must be integers"},
		{"categorical and continuous", &Schema{Features: []*Feature{func() *Feature { f := cat("x", 5); f.Tags = append(f.Tags, TagContinuous); return f }()}}, "x",
			"both categorical and continuous"},
		{"target and categorical", &Schema{Features: []*Feature{func() *Feature { f := cat("y", 1); f.Tags = append(f.Tags, TagTarget); return f }()}}, "y",
			"a target cannot also be a categorical input"},
		{"binary and regression", &Schema{Features: []*Feature{{Name: "y", DType: Float32, Tags: []Tag{TagBinaryClassification, TagRegression}}}}, "y",
			"both binary and regression"},
		{"list without value count", &Schema{Features: []*Feature{func() *Feature { f := cat("x", 5); f.Tags = append(f.Tags, TagList); return f }()}}, "x",
			"list feature without value_count"},
		{"negative value count", &Schema{Features: []*Feature{func() *Feature { f := cat("x", 5); f.ValueCount = &ValueCount{Min: -1, Max: 3}; return f }()}}, "x",
			"value_count min -1 is negative"},
		{"value count max below min", &Schema{Features: []*Feature{func() *Feature { f := cat("x", 5); f.ValueCount = &ValueCount{Min: 4, Max: 3}; return f }()}}, "x",
			"value_count max 3 is below min 4"},
		{"shared domain disagrees", &Schema{Features: []*Feature{cat("a", 9), func() *Feature { f := cat("b", 7); f.IntDomain.Name = "a"; return f }()}}, "b",
			`shares embedding domain "a" with feature "a" but has int_domain max 7, not 9`},
		{"binary int domain", &Schema{Features: []*Feature{{Name: "y", DType: Int64, Tags: []Tag{TagBinaryClassification}, IntDomain: &IntDomain{Max: 2}}}}, "y",
			"binary target has int_domain [0, 2], want [0, 1]"},
		{"binary float domain", &Schema{Features: []*Feature{{Name: "y", DType: Float32, Tags: []Tag{TagBinary}, FloatDomain: &FloatDomain{Min: -1, Max: 1}}}}, "y",
			"binary target has float_domain [-1, 1], want [0, 1]"},
		{"string target", &Schema{Features: []*Feature{{Name: "y", DType: String, Tags: []Tag{TagRegression}}}}, "y",
			"dtype string cannot be a target"},
		{"string continuous", &Schema{Features: []*Feature{{Name: "c", DType: String, Tags: []Tag{TagContinuous}}}}, "c",
			"dtype string cannot be a target or continuous feature"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.schema.Validate()
			require.Error(t, err)
			assert.Contains(t, err.Error(), tc.msg)
			var ve *ValidationError
			require.True(t, errors.As(err, &ve))
			found := false
			for _, e := range unwrapAll(err) {
				if errors.As(e, &ve) && ve.Feature == tc.feature && strings.Contains(ve.Msg, tc.msg) {
					found = true
				}
			}
			assert.True(t, found, "no error for feature %q with %q in %v", tc.feature, tc.msg, err)
		})
	}
}

func TestValidateAcceptsValidVariants(t *testing.T) {
	shared := cat("b", 9)
	shared.IntDomain.Name = "a"
	s := &Schema{Features: []*Feature{
		cat("a", 9), shared, // same domain, same max
		{Name: "tags", DType: Int64, Tags: []Tag{TagCategorical, TagList}, IntDomain: &IntDomain{Max: 99}, ValueCount: &ValueCount{Min: 0, Max: 0}},
		{Name: "price", DType: Float64, Tags: []Tag{TagContinuous}},
		{Name: "watch", DType: Float32, Tags: []Tag{TagRegression, TagContinuous, TagTarget}},
		{Name: "click", DType: Int8, Tags: []Tag{TagBinary}, IntDomain: &IntDomain{Min: 0, Max: 1}},
		{Name: "raw", DType: String}, // untagged strings are allowed (not model inputs)
	}}
	require.NoError(t, s.Validate())
}

func TestValidateReportsEveryProblem(t *testing.T) {
	s := &Schema{Features: []*Feature{{Name: "a"}, {Name: "b", DType: "x"}, {Name: "c", DType: Int64, Tags: []Tag{TagCategorical}}}}
	err := s.Validate()
	require.Error(t, err)
	assert.Len(t, unwrapAll(err), 3)
}

func unwrapAll(err error) []error {
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		return j.Unwrap()
	}
	return []error{err}
}

func TestSelectionHelpers(t *testing.T) {
	s := &Schema{Features: []*Feature{
		{Name: "z_cat", DType: Int32, Tags: []Tag{TagCategorical}},
		{Name: "watch", DType: Float32, Tags: []Tag{TagRegression, TagTarget}},
		{Name: "a_user", DType: Int32, Tags: []Tag{TagUserID}},
		{Name: "price", DType: Float32, Tags: []Tag{TagContinuous}},
		{Name: "click", DType: Float32, Tags: []Tag{TagBinaryClassification, TagTarget}},
		{Name: "like", DType: Float32, Tags: []Tag{TagBinary}},
		{Name: "dwell", DType: Float32, Tags: []Tag{TagContinuous, TagTarget}},
		{Name: "misc", DType: Float32},
	}}
	names := func(fs []*Feature) []string {
		out := []string{}
		for _, f := range fs {
			out = append(out, f.Name)
		}
		return out
	}
	assert.Equal(t, []string{"a_user", "z_cat"}, names(s.Categorical()))
	assert.Equal(t, []string{"price"}, names(s.Continuous()))
	assert.Equal(t, []string{"click", "dwell", "like", "watch"}, names(s.Targets()))
	assert.Equal(t, []string{"click", "like"}, names(s.BinaryTargets()))
	assert.Equal(t, []string{"dwell", "watch"}, names(s.RegressionTargets()))
	assert.Equal(t, []string{"a_user", "misc", "price", "z_cat"}, names(s.Inputs()))
	assert.Equal(t, []string{"z_cat", "watch", "a_user", "price", "click", "like", "dwell", "misc"}, s.Names())

	tr := Tenrec()
	assert.Equal(t, []string{"age", "gender", "item_id", "user_id", "video_category"}, names(tr.Categorical()))
	assert.Equal(t, []string{"click", "follow", "like", "share"}, names(tr.BinaryTargets()))
	assert.Equal(t, []string{"watching_times"}, names(tr.RegressionTargets()))
	assert.Empty(t, tr.Continuous())
}

func TestFeatureBasics(t *testing.T) {
	tr := Tenrec()
	u := tr.Feature("user_id")
	assert.Equal(t, int64(100001), u.Cardinality())
	assert.Equal(t, "user_id", u.DomainName())
	assert.Equal(t, int64(0), tr.Feature("watching_times").Cardinality())
	assert.Nil(t, tr.Feature("nope"))
	f := &Feature{Name: "col", IntDomain: &IntDomain{Max: 4}}
	assert.Equal(t, "col", f.DomainName(), "no domain name: the column name")

	names := func(fs []*Feature) []string {
		var out []string
		for _, f := range fs {
			out = append(out, f.Name)
		}
		return out
	}
	assert.Equal(t, []string{"user_id", "gender", "age"}, names(tr.Select(TagUser, TagCategorical)), "schema order")
	assert.Equal(t, []string{"user_id", "item_id"}, names(tr.Select(TagID)))

	for _, tc := range []struct {
		d                     DType
		known, integer, float bool
	}{
		{Int8, true, true, false}, {Int64, true, true, false}, {Float32, true, false, true}, {Float64, true, false, true},
		{Bool, true, false, false}, {String, true, false, false}, {"uint8", false, false, false}, {"", false, false, false},
	} {
		assert.Equal(t, tc.known, tc.d.IsKnown(), tc.d)
		assert.Equal(t, tc.integer, tc.d.IsInteger(), tc.d)
		assert.Equal(t, tc.float, tc.d.IsFloat(), tc.d)
	}
}

func TestEqual(t *testing.T) {
	_, parsed := readMerlin(t)
	assert.True(t, parsed.Equal(wantMerlin()), "verbatim state is not compared")
	assert.True(t, wantMerlin().Equal(parsed))

	base := func() *Schema {
		return &Schema{Features: []*Feature{{Name: "a", DType: Int64, Tags: []Tag{TagCategorical},
			IntDomain: &IntDomain{Max: 3}, Properties: map[string]any{"n": 3}}}, Raw: []string{"x: 1"}}
	}
	same := base()
	same.Features[0].Properties["n"] = 3.0
	assert.True(t, base().Equal(same), "3 equals 3.0, as in a Struct")
	edits := map[string]func(s *Schema){
		"name":       func(s *Schema) { s.Features[0].Name = "b" },
		"dtype":      func(s *Schema) { s.Features[0].DType = Int32 },
		"tags":       func(s *Schema) { s.Features[0].Tags = []Tag{TagContinuous} },
		"tag count":  func(s *Schema) { s.Features[0].Tags = nil },
		"domain":     func(s *Schema) { s.Features[0].IntDomain.Max = 4 },
		"float dom":  func(s *Schema) { s.Features[0].FloatDomain = &FloatDomain{} },
		"list":       func(s *Schema) { s.Features[0].ValueCount = &ValueCount{} },
		"property":   func(s *Schema) { s.Features[0].Properties["n"] = 4 },
		"no props":   func(s *Schema) { s.Features[0].Properties = nil },
		"raw":        func(s *Schema) { s.Raw = nil },
		"feature":    func(s *Schema) { s.Features = append(s.Features, &Feature{Name: "z"}) },
		"feat raw":   func(s *Schema) { s.Features[0].Raw = []string{"y: 2"} },
		"nil schema": func(s *Schema) { *s = Schema{} },
	}
	for name, edit := range edits {
		s := base()
		edit(s)
		assert.False(t, base().Equal(s), name)
		assert.False(t, s.Equal(base()), name)
	}
	var nilSchema *Schema
	assert.True(t, nilSchema.Equal(nil))
	assert.False(t, nilSchema.Equal(base()))
}
