// Package schema describes the features of a dataset the way Merlin does:
// name, dtype, tags, integer/float domains and list value counts. It reads
// and writes Merlin's schema.pbtxt (tensorflow-metadata text format, as
// written by NVTabular and merlin-core) and mtlrank's schema.json.
//
// Reading and writing:
//   - ParsePbtxt / WritePbtxt: schema.pbtxt. Fields mtlrank does not
//     interpret are kept verbatim and written back unchanged, so a schema
//     produced by NVTabular survives a round trip (see pbtxt.go).
//   - ParseJSON / WriteJSON: schema.json (see json.go).
//   - Load / Save: a file or a dataset directory, format by extension;
//     Save writes a temporary file and renames it.
//
// Using a schema: Validate reports everything that would stop a model from
// being built, naming the feature; Categorical, Continuous, Inputs, Targets,
// BinaryTargets and RegressionTargets select features (sorted by name).
// Infer builds a schema from Parquet files and their column statistics.
package schema

// Tag is a Merlin feature tag.
type Tag string

// Tags used by Merlin (merlin.schema.Tags). Compound tags such as user_id are
// kept as written; Feature.HasTag understands them.
const (
	TagCategorical          Tag = "categorical"
	TagContinuous           Tag = "continuous"
	TagList                 Tag = "list"
	TagSequence             Tag = "sequence"
	TagTarget               Tag = "target"
	TagBinary               Tag = "binary"
	TagBinaryClassification Tag = "binary_classification"
	TagRegression           Tag = "regression"
	TagUser                 Tag = "user"
	TagItem                 Tag = "item"
	TagContext              Tag = "context"
	TagID                   Tag = "id"
	TagUserID               Tag = "user_id"
	TagItemID               Tag = "item_id"
	TagSessionID            Tag = "session_id"
	TagSession              Tag = "session"
	TagTime                 Tag = "time"
	TagEmbedding            Tag = "embedding"
)

// DType is a column's logical element type.
type DType string

const (
	Int8    DType = "int8"
	Int16   DType = "int16"
	Int32   DType = "int32"
	Int64   DType = "int64"
	Float32 DType = "float32"
	Float64 DType = "float64"
	Bool    DType = "bool"
	String  DType = "string"
)

// IntDomain is tensorflow-metadata's int_domain. For a categorical feature,
// ids lie in [Min, Max] and the embedding table has Max+1 rows. Name, when
// set, is the embedding-table (domain) name shared by several columns.
type IntDomain struct {
	Name          string `json:"name,omitempty"`
	Min           int64  `json:"min"`
	Max           int64  `json:"max"`
	IsCategorical bool   `json:"is_categorical,omitempty"`
}

// FloatDomain is tensorflow-metadata's float_domain.
type FloatDomain struct {
	Name string  `json:"name,omitempty"`
	Min  float64 `json:"min"`
	Max  float64 `json:"max"`
}

// ValueCount gives the min/max number of elements of a list feature. Max 0
// means the longest length is unknown; Min == Max > 0 is a fixed-size list.
type ValueCount struct {
	Min int64 `json:"min"`
	Max int64 `json:"max"`
}

// Feature is one column.
type Feature struct {
	Name        string       `json:"name"`
	DType       DType        `json:"dtype"`
	Tags        []Tag        `json:"tags,omitempty"`
	IntDomain   *IntDomain   `json:"int_domain,omitempty"`
	FloatDomain *FloatDomain `json:"float_domain,omitempty"`
	// ValueCount is set for list (multi-hot) features.
	ValueCount *ValueCount `json:"value_count,omitempty"`
	// Properties holds extra_metadata / properties the project does not
	// interpret, kept so that a round trip preserves them. Values are of
	// the JSON kinds (nil, bool, float64, string, []any, map[string]any), as
	// decoded from Merlin's google.protobuf.Struct; other Go values (ints,
	// typed slices) are accepted on write and read back as those kinds.
	// Merlin's dtype_item_size, is_list, is_ragged and _dims are not kept
	// here: they are read into DType and ValueCount.
	Properties map[string]any `json:"properties,omitempty"`
	// Raw keeps pbtxt content of this feature that the parser did not
	// interpret (verbatim text), re-emitted on write.
	Raw []string `json:"-"`

	// pb keeps what a parsed feature needs to be written back with nothing
	// lost (verbatim extra_metadata, fields inside interpreted messages).
	pb *pbtxtState
}

// Schema is an ordered list of features.
type Schema struct {
	Features []*Feature `json:"features"`
	// Raw keeps top-level pbtxt content that is not a feature, verbatim.
	Raw []string `json:"-"`
}

// HasTag reports whether f carries tag t. Merlin's compound tags imply their
// parts: user_id implies user, id and categorical; item_id implies item, id
// and categorical; binary_classification implies binary and target;
// regression implies target.
func (f *Feature) HasTag(t Tag) bool {
	for _, have := range f.Tags {
		if have == t {
			return true
		}
		for _, implied := range impliedTags[have] {
			if implied == t {
				return true
			}
		}
	}
	return false
}

var impliedTags = map[Tag][]Tag{
	TagUserID:               {TagUser, TagID, TagCategorical},
	TagItemID:               {TagItem, TagID, TagCategorical},
	TagSessionID:            {TagID, TagCategorical},
	TagBinaryClassification: {TagBinary, TagTarget},
	TagBinary:               {TagTarget},
	TagRegression:           {TagTarget},
}

// IsList reports whether f is a list (multi-hot) feature.
func (f *Feature) IsList() bool { return f.ValueCount != nil || f.HasTag(TagList) }

// IsTarget reports whether f is a target column (never a model input).
func (f *Feature) IsTarget() bool { return f.HasTag(TagTarget) }

// Cardinality is the number of embedding rows of a categorical feature,
// int_domain.max + 1, or 0 when the feature has no int domain.
func (f *Feature) Cardinality() int64 {
	if f.IntDomain == nil {
		return 0
	}
	return f.IntDomain.Max + 1
}

// DomainName is the embedding-table name: int_domain.name when set, else the
// column name. Columns with the same domain name share one table.
func (f *Feature) DomainName() string {
	if f.IntDomain != nil && f.IntDomain.Name != "" {
		return f.IntDomain.Name
	}
	return f.Name
}

// Feature returns the named feature or nil.
func (s *Schema) Feature(name string) *Feature {
	for _, f := range s.Features {
		if f.Name == name {
			return f
		}
	}
	return nil
}

// Select returns the features that carry every tag in tags, in schema order.
func (s *Schema) Select(tags ...Tag) []*Feature {
	var out []*Feature
	for _, f := range s.Features {
		ok := true
		for _, t := range tags {
			if !f.HasTag(t) {
				ok = false
				break
			}
		}
		if ok {
			out = append(out, f)
		}
	}
	return out
}

// Tenrec is the built-in TenRec-like schema used by the synthetic data, the
// demo and the benchmarks (docs/ARCHITECTURE.md, "The tenrec schema").
func Tenrec() *Schema { return TenrecWithRows(0) }

// TenrecWithRows is Tenrec with user_id and item_id cardinality set to rows
// (0 keeps the defaults: 100001 users, 179281 items).
func TenrecWithRows(rows int64) *Schema {
	userMax, itemMax := int64(100000), int64(179280)
	if rows > 0 {
		userMax, itemMax = rows-1, rows-1
	}
	cat := func(name string, max int64, tags ...Tag) *Feature {
		return &Feature{Name: name, DType: Int32, Tags: append([]Tag{TagCategorical}, tags...),
			IntDomain: &IntDomain{Name: name, Min: 0, Max: max, IsCategorical: true}}
	}
	bin := func(name string) *Feature {
		return &Feature{Name: name, DType: Float32, Tags: []Tag{TagBinaryClassification, TagTarget},
			IntDomain: &IntDomain{Min: 0, Max: 1}}
	}
	return &Schema{Features: []*Feature{
		cat("user_id", userMax, TagUserID, TagUser, TagID),
		cat("item_id", itemMax, TagItemID, TagItem, TagID),
		cat("video_category", 5, TagItem),
		cat("gender", 5, TagUser),
		cat("age", 10, TagUser),
		bin("click"), bin("follow"), bin("like"), bin("share"),
		{Name: "watching_times", DType: Float32, Tags: []Tag{TagRegression, TagTarget},
			FloatDomain: &FloatDomain{Min: 0, Max: 5}},
	}}
}
