package schema

import (
	"reflect"
	"sort"
)

// The selection helpers below return features sorted by name: the order in
// in which the models concatenate inputs and list default tasks
// (docs/ARCHITECTURE.md, "Model semantics"), so a
// model does not depend on the column order of a file. Select keeps schema
// order.

func (s *Schema) sortedWhere(keep func(*Feature) bool) []*Feature {
	var out []*Feature
	for _, f := range s.Features {
		if f != nil && keep(f) {
			out = append(out, f)
		}
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// Categorical returns the categorical input features (tag categorical, also
// implied by user_id/item_id/session_id), excluding targets.
func (s *Schema) Categorical() []*Feature {
	return s.sortedWhere(func(f *Feature) bool { return f.HasTag(TagCategorical) && !f.IsTarget() })
}

// Continuous returns the continuous input features, excluding targets.
func (s *Schema) Continuous() []*Feature {
	return s.sortedWhere(func(f *Feature) bool { return f.HasTag(TagContinuous) && !f.IsTarget() })
}

// Targets returns every target feature.
func (s *Schema) Targets() []*Feature {
	return s.sortedWhere((*Feature).IsTarget)
}

// BinaryTargets returns the targets of binary-classification tasks (tag
// binary_classification or binary).
func (s *Schema) BinaryTargets() []*Feature {
	return s.sortedWhere((*Feature).IsBinaryTarget)
}

// RegressionTargets returns the targets of regression tasks (tag regression,
// or continuous on a target that is not binary).
func (s *Schema) RegressionTargets() []*Feature {
	return s.sortedWhere((*Feature).IsRegressionTarget)
}

// Inputs returns every feature that is not a target.
func (s *Schema) Inputs() []*Feature {
	return s.sortedWhere(func(f *Feature) bool { return !f.IsTarget() })
}

// Names returns the feature names in schema order.
func (s *Schema) Names() []string {
	out := make([]string, 0, len(s.Features))
	for _, f := range s.Features {
		if f != nil {
			out = append(out, f.Name)
		}
	}
	return out
}

// IsPassThrough reports whether f is neither an input (categorical or
// continuous) nor a target: a column carried along, such as a raw id kept
// for predictions (NVTabular's pass-through and mtlrank's control features).
func (f *Feature) IsPassThrough() bool {
	return !f.HasTag(TagCategorical) && !f.HasTag(TagContinuous) && !f.IsTarget()
}

// IsBinaryTarget reports whether f is the target of a binary task.
func (f *Feature) IsBinaryTarget() bool { return f.IsTarget() && f.HasTag(TagBinary) }

// IsRegressionTarget reports whether f is the target of a regression task.
// A binary tag wins over continuous (Validate rejects binary + regression).
func (f *Feature) IsRegressionTarget() bool {
	return f.IsTarget() && !f.HasTag(TagBinary) && (f.HasTag(TagRegression) || f.HasTag(TagContinuous))
}

// Equal reports whether s and o describe the same features with the same
// content: every exported field, properties compared as a Struct would
// store them (3 equals 3.0). What a parsed schema keeps only to be written
// back byte for byte (verbatim metadata text) is not compared, so a schema
// loaded from a file equals the Go schema it was saved from.
func (s *Schema) Equal(o *Schema) bool {
	if s == nil || o == nil {
		return s == o
	}
	if len(s.Features) != len(o.Features) || !equalStrings(s.Raw, o.Raw) {
		return false
	}
	for i := range s.Features {
		if !s.Features[i].Equal(o.Features[i]) {
			return false
		}
	}
	return true
}

// Equal reports whether f and o have the same exported content (see
// Schema.Equal).
func (f *Feature) Equal(o *Feature) bool {
	if f == nil || o == nil {
		return f == o
	}
	if f.Name != o.Name || f.DType != o.DType || !equalStrings(f.Raw, o.Raw) ||
		!reflect.DeepEqual(f.IntDomain, o.IntDomain) || !reflect.DeepEqual(f.FloatDomain, o.FloatDomain) ||
		!reflect.DeepEqual(f.ValueCount, o.ValueCount) || len(f.Tags) != len(o.Tags) {
		return false
	}
	for i := range f.Tags {
		if f.Tags[i] != o.Tags[i] {
			return false
		}
	}
	if len(f.Properties) == 0 || len(o.Properties) == 0 {
		return len(f.Properties) == len(o.Properties)
	}
	a, errA := normalizeValue(f.Properties, 0)
	b, errB := normalizeValue(o.Properties, 0)
	if errA != nil || errB != nil {
		return reflect.DeepEqual(f.Properties, o.Properties)
	}
	return reflect.DeepEqual(a, b)
}

func equalStrings(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}
