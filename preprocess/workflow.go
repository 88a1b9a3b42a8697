package preprocess

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"strings"

	"github.com/mtlrank/mtlrank/internal/atomicfile"
	"github.com/mtlrank/mtlrank/schema"
)

// Workflow file identification. LoadWorkflow accepts versions up to
// WorkflowVersion and rejects files of another format.
const (
	WorkflowFormat  = "mtlrank.preprocess.workflow"
	WorkflowVersion = 1
)

// Reserved categorical ids.
const (
	NullID       = 0 // null / missing value
	OOVID        = 1 // out-of-vocabulary or infrequent value
	FirstVocabID = 2 // id of the most frequent vocabulary value (or first hash bucket)
)

// Categorical op names.
const (
	OpCategorify = "categorify"
	OpHashBucket = "hash_bucket"
)

// Continuous fill kinds as stored in a Workflow.
const (
	FillNone     = ""
	FillConstant = "constant"
)

// Target kinds.
const (
	TargetBinary     = "binary"
	TargetRegression = "regression"
)

// maxNegativeLabels bounds the number of distinct negative labels a binary
// target remembers from fitting (to report unseen labels at transform time).
const maxNegativeLabels = 64

// Workflow is the fitted state of a preprocessing Spec: everything needed to
// transform new data identically, e.g. at serving time. It is saved as JSON
// (see the package documentation for the format).
type Workflow struct {
	Format  string `json:"format"`
	Version int    `json:"version"`
	// Spec is the spec the workflow was fitted with. Its input options
	// (format, CSV separator, NA values, header, names) are used by
	// Transform and may be changed before transforming other files.
	// Spec.Allocator and Spec.Progress are not saved.
	Spec      Spec     `json:"spec"`
	FitInputs []string `json:"fit_inputs,omitempty"`
	// FitRows is the number of rows fitted on (after the split, if any).
	FitRows     int64          `json:"fit_rows"`
	Categorical []*Categorical `json:"categorical,omitempty"`
	Continuous  []*Continuous  `json:"continuous,omitempty"`
	Targets     []*Target      `json:"targets,omitempty"`
}

// Categorical is a fitted Categorify or HashBucket op for one column.
type Categorical struct {
	Name string `json:"name"`
	Op   string `json:"op"` // OpCategorify or OpHashBucket
	// FreqThreshold is the Categorify frequency threshold used.
	FreqThreshold int `json:"freq_threshold,omitempty"`
	// NumBuckets is the HashBucket bucket count.
	NumBuckets int64 `json:"num_buckets,omitempty"`
	// Vocab[i] is the value encoded as FirstVocabID+i, most frequent first.
	Vocab []string `json:"vocab,omitempty"`
	// Counts[i] is the number of fitted rows holding Vocab[i].
	Counts []int64 `json:"counts,omitempty"`
	// Distinct is the number of distinct non-null values seen while
	// fitting (Categorify only).
	Distinct int64 `json:"distinct,omitempty"`
	// InfrequentRows is the number of fitted rows whose value was below the
	// frequency threshold (encoded as OOVID).
	InfrequentRows int64 `json:"infrequent_rows,omitempty"`
	// NullRows is the number of fitted rows with a null value.
	NullRows int64        `json:"null_rows"`
	Tags     []schema.Tag `json:"tags"`

	index map[string]int64
}

// Max is the largest id the op produces: int_domain.max of the output.
func (c *Categorical) Max() int64 {
	if c.Op == OpHashBucket {
		return FirstVocabID + c.NumBuckets - 1
	}
	return FirstVocabID + int64(len(c.Vocab)) - 1
}

// Cardinality is the number of embedding rows the column needs, Max()+1.
func (c *Categorical) Cardinality() int64 { return c.Max() + 1 }

// DType is the output column type: int32, or int64 when ids exceed int32.
func (c *Categorical) DType() schema.DType {
	if c.Max() > math.MaxInt32 {
		return schema.Int64
	}
	return schema.Int32
}

// Encode returns the id of a non-null value given in its canonical string
// form (integers in decimal, floats in shortest 'g' form). Null values are
// NullID. It is safe for concurrent use on a fitted or loaded workflow.
func (c *Categorical) Encode(value string) int64 {
	if c.Op == OpHashBucket {
		return FirstVocabID + int64(fnv1aString(value)%uint64(c.NumBuckets))
	}
	if c.index == nil {
		c.buildIndex()
	}
	if id, ok := c.index[value]; ok {
		return id
	}
	return OOVID
}

// EncodeBytes is Encode of string(value), without converting it (no
// allocation): serving encodes every raw id of every request.
func (c *Categorical) EncodeBytes(value []byte) int64 {
	if c.Op == OpHashBucket {
		return FirstVocabID + int64(fnv1aBytes(value)%uint64(c.NumBuckets))
	}
	if c.index == nil {
		c.buildIndex()
	}
	return c.encodeBytes(value)
}

func (c *Categorical) encodeBytes(value []byte) int64 {
	if c.Op == OpHashBucket {
		return FirstVocabID + int64(fnv1aBytes(value)%uint64(c.NumBuckets))
	}
	if id, ok := c.index[string(value)]; ok { // no allocation for the lookup
		return id
	}
	return OOVID
}

// Decode returns the raw value, in its canonical string form, that a
// Categorify id stands for. ok is false for ids that stand for no single
// value: NullID, OOVID (unknown or infrequent values), ids past the
// vocabulary, and every HashBucket id (a bucket is shared by many values).
func (c *Categorical) Decode(id int64) (value string, ok bool) {
	if c.Op != OpCategorify || id < FirstVocabID || id-FirstVocabID >= int64(len(c.Vocab)) {
		return "", false
	}
	return c.Vocab[id-FirstVocabID], true
}

func (c *Categorical) buildIndex() {
	c.index = make(map[string]int64, len(c.Vocab))
	for i, v := range c.Vocab {
		c.index[v] = FirstVocabID + int64(i)
	}
}

// Continuous is the fitted chain FillMissing -> Clip -> LogOp -> Normalize
// for one column; each step is optional.
type Continuous struct {
	Name string `json:"name"`
	// Fill is FillNone (nulls are an error), FillConstant, FillMean or
	// FillMedian; FillValue is the value used, in input units.
	Fill      string     `json:"fill,omitempty"`
	FillValue float64    `json:"fill_value,omitempty"`
	Clip      *ClipRange `json:"clip,omitempty"`
	Log       bool       `json:"log,omitempty"`
	Normalize bool       `json:"normalize,omitempty"`
	// Mean and Std are the Normalize statistics of the values after fill,
	// clip and log: the mean and the sample (n-1) standard deviation, with
	// Std = 1 when it is 0 or undefined.
	Mean float64 `json:"mean"`
	Std  float64 `json:"std"`
	// Count, NullRows, Min and Max describe the raw fitted values.
	Count    int64        `json:"count"`
	NullRows int64        `json:"null_rows"`
	Min      float64      `json:"min"`
	Max      float64      `json:"max"`
	Tags     []schema.Tag `json:"tags"`
}

// Apply transforms one non-null, finite value.
func (c *Continuous) Apply(x float64) float32 {
	return float32(c.scale(c.shape(x)))
}

// ApplyNull transforms a null value: the fill value through the chain, or
// an error when the column has no fill.
func (c *Continuous) ApplyNull() (float32, error) {
	if c.Fill == FillNone {
		return 0, fmt.Errorf("null value in continuous column %q without a fill (set --continuous_features_fillna on the command line, Spec.ContinuousFillNA in the library)", c.Name)
	}
	return c.Apply(c.FillValue), nil
}

// describe names the transforms Apply makes, for error messages.
func (c *Continuous) describe() string {
	var ops []string
	if c.Clip != nil {
		ops = append(ops, fmt.Sprintf("clip to [%g, %g]", c.Clip[0], c.Clip[1]))
	}
	if c.Log {
		ops = append(ops, "log1p")
	}
	if c.Normalize {
		ops = append(ops, fmt.Sprintf("(x - %g) / %g", c.Mean, c.Std))
	}
	if len(ops) == 0 {
		return "none"
	}
	return strings.Join(ops, ", then ")
}

// shape applies clip and log.
func (c *Continuous) shape(x float64) float64 {
	if c.Clip != nil {
		x = math.Min(math.Max(x, c.Clip[0]), c.Clip[1])
	}
	if c.Log {
		x = math.Log1p(math.Max(x, 0))
	}
	return x
}

func (c *Continuous) scale(x float64) float64 {
	if c.Normalize {
		return (x - c.Mean) / c.Std
	}
	return x
}

// Target is a fitted target column.
type Target struct {
	Name   string `json:"name"`
	Source string `json:"source"` // the input column
	Kind   string `json:"kind"`   // TargetBinary or TargetRegression
	// Positive lists the labels read as 1 (binary targets with a label map;
	// empty when values must already be 0/1).
	Positive []string `json:"positive,omitempty"`
	// NegativeSeen lists the other labels seen while fitting (at most 64;
	// NegativeOverflow says there were more).
	NegativeSeen     []string `json:"negative_seen,omitempty"`
	NegativeOverflow bool     `json:"negative_overflow,omitempty"`
	// Rows and Positives count fitted rows; Mean is the fitted mean
	// (the positive rate of a binary target).
	Rows      int64        `json:"rows"`
	Positives int64        `json:"positives,omitempty"`
	Mean      float64      `json:"mean"`
	Tags      []schema.Tag `json:"tags"`

	positive map[string]bool
	negative map[string]bool
}

func (t *Target) buildSets() {
	t.positive = make(map[string]bool, len(t.Positive))
	for _, p := range t.Positive {
		t.positive[p] = true
	}
	t.negative = make(map[string]bool, len(t.NegativeSeen))
	for _, v := range t.NegativeSeen {
		t.negative[v] = true
	}
}

// newWorkflow builds the unfitted ops of a validated spec, with their tags.
func newWorkflow(spec Spec) *Workflow {
	w := &Workflow{Format: WorkflowFormat, Version: WorkflowVersion, Spec: spec}
	fillKind, fillValue, _ := spec.fillSpec()
	roleTags := func(name string) []schema.Tag {
		var tags []schema.Tag
		switch name {
		case spec.UserID:
			tags = append(tags, schema.TagUserID, schema.TagUser, schema.TagID)
		case spec.ItemID:
			tags = append(tags, schema.TagItemID, schema.TagItem, schema.TagID)
		}
		if contains(spec.UserFeatures, name) && name != spec.UserID {
			tags = append(tags, schema.TagUser)
		}
		if contains(spec.ItemFeatures, name) && name != spec.ItemID {
			tags = append(tags, schema.TagItem)
		}
		switch name {
		case spec.TimestampFeature:
			tags = append(tags, schema.TagTime)
		case spec.SessionIDFeature:
			tags = append(tags, schema.TagSessionID, schema.TagSession, schema.TagID)
		}
		return tags
	}
	for _, name := range spec.categoricals() {
		c := &Categorical{Name: name, Op: OpCategorify, FreqThreshold: spec.CategMinFreq,
			Tags: append([]schema.Tag{schema.TagCategorical}, roleTags(name)...)}
		if n, ok := spec.HashBuckets[name]; ok {
			c.Op, c.FreqThreshold, c.NumBuckets = OpHashBucket, 0, int64(n)
		}
		w.Categorical = append(w.Categorical, c)
	}
	for _, name := range spec.Continuous {
		c := &Continuous{Name: name, Fill: fillKind, Log: contains(spec.LogContinuous, name),
			Normalize: spec.Normalize, Std: 1,
			Tags: append([]schema.Tag{schema.TagContinuous}, roleTags(name)...)}
		if fillKind == FillConstant {
			c.FillValue = fillValue
		}
		if r, ok := spec.Clip[name]; ok {
			r := r
			c.Clip = &r
		}
		w.Continuous = append(w.Continuous, c)
	}
	for _, name := range spec.BinaryTargets {
		t := &Target{Name: name, Source: spec.source(name), Kind: TargetBinary,
			Positive: spec.positiveLabels(name),
			Tags:     []schema.Tag{schema.TagBinaryClassification, schema.TagTarget}}
		w.Targets = append(w.Targets, t)
	}
	for _, name := range spec.RegressionTargets {
		w.Targets = append(w.Targets, &Target{Name: name, Source: spec.source(name), Kind: TargetRegression,
			Tags: []schema.Tag{schema.TagRegression, schema.TagTarget}})
	}
	return w
}

// Schema returns the schema of the transformed data: categorical columns,
// then continuous, then targets, each in spec order. When withTargets is
// false the targets are left out (data transformed without targets).
func (w *Workflow) Schema(withTargets bool) *schema.Schema {
	s := &schema.Schema{}
	for _, c := range w.Categorical {
		s.Features = append(s.Features, &schema.Feature{
			Name: c.Name, DType: c.DType(), Tags: append([]schema.Tag(nil), c.Tags...),
			IntDomain: &schema.IntDomain{Name: c.Name, Min: 0, Max: c.Max(), IsCategorical: true},
		})
	}
	for _, c := range w.Continuous {
		s.Features = append(s.Features, &schema.Feature{
			Name: c.Name, DType: schema.Float32, Tags: append([]schema.Tag(nil), c.Tags...),
		})
	}
	if withTargets {
		for _, t := range w.Targets {
			f := &schema.Feature{Name: t.Name, DType: schema.Float32, Tags: append([]schema.Tag(nil), t.Tags...)}
			if t.Kind == TargetBinary {
				f.IntDomain = &schema.IntDomain{Min: 0, Max: 1}
			}
			s.Features = append(s.Features, f)
		}
	}
	return s
}

// Categ returns the named categorical op or nil.
func (w *Workflow) Categ(name string) *Categorical {
	for _, c := range w.Categorical {
		if c.Name == name {
			return c
		}
	}
	return nil
}

// Decode maps ids of categorical column name back to raw values (see
// Categorical.Decode): values[i] is the raw value of ids[i] when ok[i].
func (w *Workflow) Decode(name string, ids []int64) (values []string, ok []bool, err error) {
	c := w.Categ(name)
	if c == nil {
		return nil, nil, fmt.Errorf("decode: the workflow has no categorical column %q", name)
	}
	values, ok = make([]string, len(ids)), make([]bool, len(ids))
	for i, id := range ids {
		values[i], ok[i] = c.Decode(id)
	}
	return values, ok, nil
}

// Cont returns the named continuous op or nil.
func (w *Workflow) Cont(name string) *Continuous {
	for _, c := range w.Continuous {
		if c.Name == name {
			return c
		}
	}
	return nil
}

// Target returns the named target or nil.
func (w *Workflow) Target(name string) *Target {
	for _, t := range w.Targets {
		if t.Name == name {
			return t
		}
	}
	return nil
}

// Save writes the workflow as indented JSON to path, through a temporary
// file renamed into place.
func (w *Workflow) Save(path string) error {
	b, err := w.encode()
	if err != nil {
		return err
	}
	if err := writeFileAtomic(path, b); err != nil {
		return fmt.Errorf("save workflow: %w", err)
	}
	return nil
}

// encode returns the JSON that Save writes.
func (w *Workflow) encode() ([]byte, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetIndent("", "  ")
	if err := enc.Encode(w); err != nil {
		return nil, fmt.Errorf("encode workflow: %w", err)
	}
	return buf.Bytes(), nil
}

// LoadWorkflow reads a workflow saved by Save and checks its consistency.
//
// The file is decoded as it is read, not read whole first: a corrupt file
// (a terabyte of zeros, say) fails at its first invalid byte instead of
// exhausting memory, while a real vocabulary of any size still loads.
func LoadWorkflow(path string) (*Workflow, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("load workflow: %w", err)
	}
	defer f.Close()
	w, err := parseWorkflow(bufio.NewReaderSize(f, 1<<20))
	if err != nil {
		return nil, fmt.Errorf("load workflow %s: %w", path, err)
	}
	return w, nil
}

// ParseWorkflow decodes and checks a workflow's JSON.
func ParseWorkflow(b []byte) (*Workflow, error) {
	return parseWorkflow(bytes.NewReader(b))
}

func parseWorkflow(r io.Reader) (*Workflow, error) {
	var w Workflow
	dec := json.NewDecoder(r)
	dec.DisallowUnknownFields()
	if err := dec.Decode(&w); err != nil {
		return nil, fmt.Errorf("decode: %w", err)
	}
	if w.Format != WorkflowFormat {
		return nil, fmt.Errorf("format %q is not %q", w.Format, WorkflowFormat)
	}
	if w.Version < 1 || w.Version > WorkflowVersion {
		return nil, fmt.Errorf("version %d is not supported (this build reads 1..%d)", w.Version, WorkflowVersion)
	}
	if err := w.check(); err != nil {
		return nil, err
	}
	return &w, nil
}

// check verifies the fitted state, so that a hand-edited or truncated file
// fails at load time rather than producing wrong ids.
func (w *Workflow) check() error {
	seen := map[string]bool{}
	dup := func(name string) error {
		if name == "" {
			return errors.New("column with an empty name")
		}
		if seen[name] {
			return fmt.Errorf("column %q appears twice", name)
		}
		seen[name] = true
		return nil
	}
	for _, c := range w.Categorical {
		if err := dup(c.Name); err != nil {
			return err
		}
		switch c.Op {
		case OpCategorify:
			if len(c.Counts) != len(c.Vocab) {
				return fmt.Errorf("categorical %q: %d counts for %d vocabulary values", c.Name, len(c.Counts), len(c.Vocab))
			}
			c.index = make(map[string]int64, len(c.Vocab))
			for i, v := range c.Vocab {
				if _, ok := c.index[v]; ok {
					return fmt.Errorf("categorical %q: value %q appears twice in the vocabulary", c.Name, v)
				}
				c.index[v] = FirstVocabID + int64(i)
			}
		case OpHashBucket:
			if c.NumBuckets <= 0 {
				return fmt.Errorf("categorical %q: hash bucket count %d must be positive", c.Name, c.NumBuckets)
			}
		default:
			return fmt.Errorf("categorical %q: unknown op %q", c.Name, c.Op)
		}
	}
	for _, c := range w.Continuous {
		if err := dup(c.Name); err != nil {
			return err
		}
		switch c.Fill {
		case FillNone, FillConstant, FillMean, FillMedian:
		default:
			return fmt.Errorf("continuous %q: unknown fill %q", c.Name, c.Fill)
		}
		if c.Normalize && !(c.Std > 0) {
			return fmt.Errorf("continuous %q: std %v must be positive", c.Name, c.Std)
		}
		if c.Clip != nil && !(c.Clip[0] <= c.Clip[1]) {
			return fmt.Errorf("continuous %q: clip range [%v, %v] is not a range", c.Name, c.Clip[0], c.Clip[1])
		}
	}
	for _, t := range w.Targets {
		if err := dup(t.Name); err != nil {
			return err
		}
		if t.Kind != TargetBinary && t.Kind != TargetRegression {
			return fmt.Errorf("target %q: unknown kind %q", t.Name, t.Kind)
		}
		if t.Source == "" {
			return fmt.Errorf("target %q: empty source column", t.Name)
		}
		t.buildSets()
	}
	return nil
}

// writeFileAtomic writes data to a temporary file beside path (creating the
// folder) and renames it.
func writeFileAtomic(path string, data []byte) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	return atomicfile.WriteFile(path, data)
}

// FNV-1a, 64 bit.
const (
	fnvOffset = 14695981039346656037
	fnvPrime  = 1099511628211
)

func fnv1aString(s string) uint64 {
	h := uint64(fnvOffset)
	for i := 0; i < len(s); i++ {
		h ^= uint64(s[i])
		h *= fnvPrime
	}
	return h
}

func fnv1aBytes(b []byte) uint64 {
	h := uint64(fnvOffset)
	for _, c := range b {
		h ^= uint64(c)
		h *= fnvPrime
	}
	return h
}
