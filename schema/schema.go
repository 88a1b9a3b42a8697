// Package schema describes the features of a dataset the way Merlin does:
// name, dtype, tags, integer/float domains and list value counts. It reads
// and writes Merlin's schema.pbtxt (tensorflow-metadata text format, as
// written by NVTabular and merlin-core) and mtlrank's schema.json.
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

// ValueCount gives the min/max number of elements of a list feature.
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
	// interpret, kept so that a round trip preserves them.
	Properties map[string]any `json:"properties,omitempty"`
	// Raw keeps pbtxt content of this feature that the parser did not
	// interpret (verbatim text), re-emitted on write.
	Raw []string `json:"-"`
}

// Schema is an ordered list of features.
type Schema struct {
	Features []*Feature `json:"features"`
	// Raw keeps top-level pbtxt content that is not a feature, verbatim.
	Raw []string `json:"-"`
}
