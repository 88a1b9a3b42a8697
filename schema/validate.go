package schema

import (
	"errors"
	"fmt"
	"strings"
)

// ValidationError is one problem Validate found. Feature is empty for
// problems of the schema as a whole.
type ValidationError struct {
	Feature string
	Msg     string
}

func (e *ValidationError) Error() string {
	if e.Feature == "" {
		return "schema: " + e.Msg
	}
	return fmt.Sprintf("schema: feature %q: %s", e.Feature, e.Msg)
}

// knownDTypes lists the dtypes mtlrank reads.
var knownDTypes = []DType{Int8, Int16, Int32, Int64, Float32, Float64, Bool, String}

// IsKnown reports whether d is a dtype mtlrank reads (int8..int64, float32,
// float64, bool, string).
func (d DType) IsKnown() bool {
	for _, k := range knownDTypes {
		if d == k {
			return true
		}
	}
	return false
}

// IsInteger reports whether d is a signed integer dtype.
func (d DType) IsInteger() bool { return d == Int8 || d == Int16 || d == Int32 || d == Int64 }

// IsFloat reports whether d is a floating-point dtype.
func (d DType) IsFloat() bool { return d == Float32 || d == Float64 }

// Validate checks that s can drive a model, and returns every problem found
// (joined; each is a *ValidationError naming the feature):
//   - an empty schema, a feature without a name, duplicate names;
//   - an unknown dtype;
//   - a categorical feature without int_domain, with min < 0 or max < min,
//     or with a non-integer dtype;
//   - conflicting tags: categorical + continuous, a target that is also a
//     categorical input, a target both binary and regression;
//   - a list feature without value_count, or with a bad one;
//   - features sharing an embedding domain (int_domain.name) with
//     different int_domain.max (they would share one table);
//   - a binary target whose domain, when given, is not {0, 1};
//   - a string target or continuous feature.
func (s *Schema) Validate() error {
	if s == nil || len(s.Features) == 0 {
		return &ValidationError{Msg: "empty schema: no features"}
	}
	var errs []error
	bad := func(f *Feature, format string, args ...any) {
		errs = append(errs, &ValidationError{Feature: f.Name, Msg: fmt.Sprintf(format, args...)})
	}
	seen := map[string]bool{}
	type domainUse struct {
		feature string
		max     int64
	}
	domains := map[string]domainUse{}
	for i, f := range s.Features {
		if f == nil {
			errs = append(errs, &ValidationError{Msg: fmt.Sprintf("feature #%d is nil", i)})
			continue
		}
		if f.Name == "" {
			errs = append(errs, &ValidationError{Msg: fmt.Sprintf("feature #%d has no name", i)})
		} else if seen[f.Name] {
			bad(f, "duplicate feature name")
		}
		seen[f.Name] = true

		switch {
		case f.DType == "":
			bad(f, "no dtype (the pbtxt feature has no INT, FLOAT or BYTES type)")
		case !f.DType.IsKnown():
			bad(f, "unknown dtype %q (known: %s)", f.DType, dtypeList())
		}

		cat, cont, target := f.HasTag(TagCategorical), f.HasTag(TagContinuous), f.IsTarget()
		if cat && cont {
			bad(f, "tagged both categorical and continuous")
		}
		if target && cat {
			bad(f, "a target cannot also be a categorical input (remove the categorical tag, or the target tags)")
		}
		if target && f.HasTag(TagBinary) && f.HasTag(TagRegression) {
			bad(f, "tagged both binary and regression: pick one task type")
		}

		if cat {
			d := f.IntDomain
			switch {
			case d == nil:
				bad(f, "categorical feature without int_domain (its max sets the embedding table size)")
			case d.Min < 0:
				bad(f, "categorical int_domain min %d is negative: ids must be >= 0", d.Min)
			case d.Max < d.Min:
				bad(f, "int_domain max %d is below min %d", d.Max, d.Min)
			}
			if f.DType.IsKnown() && !f.DType.IsInteger() {
				bad(f, "categorical feature has dtype %s: ids must be integers (encode strings with Categorify first)", f.DType)
			}
			if d != nil && d.Min >= 0 && d.Max >= d.Min {
				name := f.DomainName()
				if prev, ok := domains[name]; ok && prev.max != d.Max {
					bad(f, "shares embedding domain %q with feature %q but has int_domain max %d, not %d",
						name, prev.feature, d.Max, prev.max)
				} else if !ok {
					domains[name] = domainUse{feature: f.Name, max: d.Max}
				}
			}
		}

		if f.IsList() {
			vc := f.ValueCount
			switch {
			case vc == nil:
				bad(f, "list feature without value_count")
			case vc.Min < 0:
				bad(f, "value_count min %d is negative", vc.Min)
			case vc.Max != 0 && vc.Max < vc.Min:
				bad(f, "value_count max %d is below min %d (use max 0 for unknown)", vc.Max, vc.Min)
			}
		}

		if f.IsBinaryTarget() {
			if d := f.IntDomain; d != nil && (d.Min != 0 || d.Max != 1) {
				bad(f, "binary target has int_domain [%d, %d], want [0, 1]", d.Min, d.Max)
			}
			if d := f.FloatDomain; d != nil && (d.Min != 0 || d.Max != 1) {
				bad(f, "binary target has float_domain [%g, %g], want [0, 1]", d.Min, d.Max)
			}
		}
		if (target || cont) && f.DType == String {
			bad(f, "dtype string cannot be a target or continuous feature")
		}
	}
	return errors.Join(errs...)
}

func dtypeList() string {
	names := make([]string, len(knownDTypes))
	for i, d := range knownDTypes {
		names[i] = string(d)
	}
	return strings.Join(names, ", ")
}
