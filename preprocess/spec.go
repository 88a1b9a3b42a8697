package preprocess

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"sort"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/apache/arrow-go/v18/arrow/memory"
)

// Input formats accepted in Spec.InputFormat.
const (
	FormatCSV     = "csv"
	FormatParquet = "parquet"
)

// Split strategies accepted in Spec.SplitStrategy.
const (
	SplitNone = ""
	// SplitRandom sends each row to eval with probability EvalPerc.
	SplitRandom = "random"
	// SplitRandomByUser, as in Merlin's quick-start script, sends a random
	// EvalPerc share of each user's rows to eval and the rest to train, so
	// users appear on both sides.
	SplitRandomByUser = "random_by_user"
	// SplitByUserHoldout sends a random EvalPerc share of the users, with
	// all their rows, to eval: a cold-start evaluation on unseen users.
	SplitByUserHoldout = "by_user_holdout"
	// SplitTemporal, as in Merlin's script, sends the rows whose
	// TimestampFeature is >= SplitTemporalTimestamp to eval and the earlier
	// ones to train.
	SplitTemporal = "temporal"
)

// Fill kinds for Spec.ContinuousFillNA (any other value must be a number).
const (
	FillMedian = "median"
	FillMean   = "mean"
)

// DefaultChunkRows is the number of rows read, fitted and transformed at a
// time when Spec.ChunkRows is 0. It bounds the memory used per pass and is
// the row-group size of the Parquet files written.
const DefaultChunkRows = 64 * 1024

// ClipRange is a [min, max] clipping range. Either bound may be infinite
// (math.Inf) to clip one side only; in JSON an infinite bound is written as
// null.
type ClipRange [2]float64

// MarshalJSON writes infinite bounds as null, since JSON has no infinity.
func (c ClipRange) MarshalJSON() ([]byte, error) {
	out := make([]any, 2)
	for i, v := range c {
		if math.IsInf(v, 0) {
			out[i] = nil
		} else {
			out[i] = v
		}
	}
	return json.Marshal(out)
}

// UnmarshalJSON reads null as -Inf for the lower bound and +Inf for the upper.
func (c *ClipRange) UnmarshalJSON(b []byte) error {
	var in []*float64
	if err := json.Unmarshal(b, &in); err != nil {
		return err
	}
	if len(in) != 2 {
		return fmt.Errorf("clip range must have 2 elements, got %d", len(in))
	}
	c[0], c[1] = math.Inf(-1), math.Inf(1)
	if in[0] != nil {
		c[0] = *in[0]
	}
	if in[1] != nil {
		c[1] = *in[1]
	}
	return nil
}

// Spec describes a preprocessing run. Its fields mirror the flags of Merlin's
// quick-start preprocessing script (see the package documentation for the
// mapping and for the few additions).
type Spec struct {
	// InputFormat is "csv", "parquet" or "" to decide per file by extension
	// (.parquet/.pq are Parquet, anything else CSV).
	InputFormat string `json:"input_format,omitempty"`
	// CSVSep is the field separator: one character, optionally surrounded by
	// spaces (", " is the same as ","; spaces around fields are trimmed
	// anyway). "" means ",". `\t` and "tab" mean a tab.
	CSVSep string `json:"csv_sep,omitempty"`
	// CSVNAValues are extra field values read as null, e.g. "?". An empty
	// field is always null.
	CSVNAValues []string `json:"csv_na_values,omitempty"`
	// CSVHeader says the first row of every CSV file holds the column names.
	CSVHeader bool `json:"csv_header"`
	// CSVColumnNames names the CSV columns in order. Required when CSVHeader
	// is false; when CSVHeader is true it replaces the header's names.
	CSVColumnNames []string `json:"csv_column_names,omitempty"`

	// Categorical columns are encoded with Categorify (or HashBucket when
	// listed in HashBuckets).
	Categorical []string `json:"categorical,omitempty"`
	// Continuous columns are filled, clipped, log-transformed and normalised
	// as configured, and written as float32.
	Continuous []string `json:"continuous,omitempty"`
	// ContinuousFillNA is "" (a null in a continuous column is an error),
	// "median", "mean" or a number used as a constant.
	ContinuousFillNA string `json:"continuous_fillna,omitempty"`

	// BinaryTargets are written as float32 0/1 and tagged
	// binary_classification + target.
	BinaryTargets []string `json:"binary_targets,omitempty"`
	// RegressionTargets are written as float32 and tagged regression + target.
	RegressionTargets []string `json:"regression_targets,omitempty"`
	// BinaryTargetMap gives, per binary target, the label read as 1; every
	// other non-null value is 0. Several labels may be given separated by
	// "|" (">50K|>50K."). Targets not in the map must already be 0/1
	// (numbers, or true/false).
	BinaryTargetMap map[string]string `json:"binary_target_map,omitempty"`
	// TargetSource derives a target from another column: target name ->
	// source column (e.g. never_married <- marital_status with
	// BinaryTargetMap never_married = "Never-married"). The source column
	// must not also be a feature.
	TargetSource map[string]string `json:"target_source,omitempty"`

	// ControlFeatures are pass-through columns (Merlin's control features):
	// copied unchanged, nulls included, into every output after the encoded
	// columns, as strings, int64 or float64 by the kind of their input
	// values. The written schema lists them with their dtype and no tags,
	// so no model takes them as inputs; they carry raw ids to predictions.
	ControlFeatures []string `json:"control_features,omitempty"`

	// UserFeatures and ItemFeatures are tagged user / item. They must be
	// categorical or continuous features.
	UserFeatures []string `json:"user_features,omitempty"`
	ItemFeatures []string `json:"item_features,omitempty"`
	// UserID and ItemID are tagged user_id+user+id / item_id+item+id. They
	// are categorical; they are added to Categorical when not listed there.
	UserID string `json:"user_id,omitempty"`
	ItemID string `json:"item_id,omitempty"`

	// CategMinFreq is Categorify's frequency threshold: values seen fewer
	// times than this while fitting are encoded as out-of-vocabulary (id 1).
	CategMinFreq int `json:"categ_min_freq,omitempty"`
	// HashBuckets switches a categorical column from Categorify to
	// HashBucket with the given number of buckets: no vocabulary is kept,
	// id = 2 + FNV-1a-64(value) mod buckets.
	HashBuckets map[string]int `json:"hash_buckets,omitempty"`

	// Normalize z-scores every continuous column with the fitted mean and
	// sample standard deviation (after filling, clipping and log).
	Normalize bool `json:"normalize,omitempty"`
	// LogContinuous lists continuous columns replaced by log1p(max(x, 0)).
	LogContinuous []string `json:"log_continuous,omitempty"`
	// Clip clips continuous columns to [min, max] (before the log).
	Clip map[string]ClipRange `json:"clip,omitempty"`

	// SplitStrategy splits the training inputs into train and eval when no
	// eval inputs are given: "" (no split), "random", "random_by_user" or
	// "by_user_holdout" (see the package documentation).
	SplitStrategy string `json:"split_strategy,omitempty"`
	// EvalPerc is the fraction sent to eval: of all rows (random), of each
	// user's rows (random_by_user) or of the users (by_user_holdout); it
	// must lie in (0, 1) when a split is requested.
	EvalPerc float64 `json:"eval_perc,omitempty"`
	// Seed makes the split reproducible.
	Seed int64 `json:"seed,omitempty"`
	// TimestampFeature is the timestamp column (integers): tagged time when
	// it is a feature, and read by the temporal split.
	TimestampFeature string `json:"timestamp_feature,omitempty"`
	// SessionIDFeature is tagged session_id, session and id; it must be a
	// categorical feature.
	SessionIDFeature string `json:"session_id_feature,omitempty"`
	// SplitTemporalTimestamp is the temporal split's cut.
	SplitTemporalTimestamp int64 `json:"split_temporal_timestamp,omitempty"`

	// Row filters, applied to the training inputs before the split and
	// the fit (see filter.go).
	// FilterQuery keeps the rows that match a query in the comparison
	// subset of pandas' DataFrame.query syntax (see query.go); as in
	// Merlin's script it also filters the eval and test inputs.
	FilterQuery string `json:"filter_query,omitempty"`
	// MinUserFreq and MaxUserFreq (0: no bound) keep the users with that
	// many rows, MinItemFreq and MaxItemFreq the items (rows with a null
	// id are removed, as Merlin's value counts skip nulls); removing users
	// changes the item counts and back, so the two filters alternate for up
	// to FilterRounds rounds (0 means 1), stopping early at a round that
	// removes nothing.
	MinUserFreq  int64 `json:"min_user_freq,omitempty"`
	MaxUserFreq  int64 `json:"max_user_freq,omitempty"`
	MinItemFreq  int64 `json:"min_item_freq,omitempty"`
	MaxItemFreq  int64 `json:"max_item_freq,omitempty"`
	FilterRounds int   `json:"filter_rounds,omitempty"`

	// ChunkRows is the number of rows processed at a time (0: DefaultChunkRows).
	ChunkRows int `json:"chunk_rows,omitempty"`

	// Allocator is used for Arrow memory (Parquet reading and writing);
	// nil means memory.DefaultAllocator.
	Allocator memory.Allocator `json:"-"`
	// Progress, when set, is called after each chunk with the stage
	// ("filter" for the row filters' pass, "split" for random_by_user's
	// counting pass, "fit", "median",
	// "transform") and the number of rows read so far in it.
	Progress func(stage string, rows int64) `json:"-"`
}

func (s *Spec) chunkRows() int {
	if s.ChunkRows > 0 {
		return s.ChunkRows
	}
	return DefaultChunkRows
}

func (s *Spec) allocator() memory.Allocator {
	if s.Allocator != nil {
		return s.Allocator
	}
	return memory.DefaultAllocator
}

func (s *Spec) progress(stage string, rows int64) {
	if s.Progress != nil {
		s.Progress(stage, rows)
	}
}

// csvComma returns the separator rune and whether leading spaces may be
// trimmed by the CSV reader (not when the separator is itself a space).
func (s *Spec) csvComma() (rune, error) {
	sep := s.CSVSep
	switch sep {
	case "":
		return ',', nil
	case `\t`, "tab", "\t":
		return '\t', nil
	case " ":
		return ' ', nil
	}
	core := strings.Trim(sep, " ")
	if utf8.RuneCountInString(core) != 1 {
		return 0, fmt.Errorf("csv separator %q: must be one character (optionally surrounded by spaces)", sep)
	}
	r, _ := utf8.DecodeRuneInString(core)
	if r == '"' || r == '\r' || r == '\n' || r == utf8.RuneError {
		return 0, fmt.Errorf("csv separator %q is not allowed", sep)
	}
	return r, nil
}

// fillSpec parses ContinuousFillNA.
func (s *Spec) fillSpec() (kind string, value float64, err error) {
	v := strings.TrimSpace(s.ContinuousFillNA)
	switch strings.ToLower(v) {
	case "", "none":
		return "", 0, nil
	case FillMedian:
		return FillMedian, 0, nil
	case FillMean:
		return FillMean, 0, nil
	}
	f, err := strconv.ParseFloat(v, 64)
	if err != nil || math.IsNaN(f) || math.IsInf(f, 0) {
		return "", 0, fmt.Errorf("continuous fillna %q: want \"median\", \"mean\" or a finite number", s.ContinuousFillNA)
	}
	return FillConstant, f, nil
}

// positiveLabels returns the positive labels of a binary target (nil when the
// target must already be 0/1).
func (s *Spec) positiveLabels(target string) []string {
	m, ok := s.BinaryTargetMap[target]
	if !ok {
		return nil
	}
	parts := strings.Split(m, "|")
	out := parts[:0]
	for _, p := range parts {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

// source returns the input column a target is read from.
func (s *Spec) source(target string) string {
	if src, ok := s.TargetSource[target]; ok && src != "" {
		return src
	}
	return target
}

// categoricals returns the categorical columns including the user/item id
// when they are not listed explicitly.
func (s *Spec) categoricals() []string {
	out := append([]string(nil), s.Categorical...)
	for _, id := range []string{s.UserID, s.ItemID} {
		if id != "" && !contains(out, id) {
			out = append(out, id)
		}
	}
	return out
}

// Validate reports every contradiction or invalid value in the spec, joined
// in one error.
func (s *Spec) Validate() error {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }

	switch s.InputFormat {
	case "", FormatCSV, FormatParquet:
	default:
		bad("input format %q: want %q or %q", s.InputFormat, FormatCSV, FormatParquet)
	}
	if _, err := s.csvComma(); err != nil {
		bad("%v", err)
	}
	if s.ChunkRows < 0 {
		bad("chunk rows %d must not be negative", s.ChunkRows)
	}
	if dup := firstDuplicate(s.CSVColumnNames); dup != "" {
		bad("csv column names: %q appears twice", dup)
	}

	cats := s.categoricals()
	// role records the first role seen for each column, to name both roles
	// when a column is used twice.
	role := map[string]string{}
	assign := func(col, r string) {
		if strings.TrimSpace(col) == "" {
			bad("%s: empty column name", r)
			return
		}
		if prev, ok := role[col]; ok {
			if prev == r {
				bad("column %q is listed twice as %s", col, r)
			} else {
				bad("column %q is both %s and %s", col, prev, r)
			}
			return
		}
		role[col] = r
	}
	for _, c := range s.Categorical {
		assign(c, "categorical")
	}
	if s.UserID != "" && s.UserID == s.ItemID {
		bad("column %q is both the user id and the item id", s.UserID)
	}
	if s.UserID != "" && !contains(s.Categorical, s.UserID) {
		assign(s.UserID, "user id")
	}
	if s.ItemID != "" && s.ItemID != s.UserID && !contains(s.Categorical, s.ItemID) {
		assign(s.ItemID, "item id")
	}
	for _, c := range s.Continuous {
		assign(c, "continuous")
	}
	for _, t := range s.BinaryTargets {
		assign(t, "binary target")
	}
	for _, t := range s.RegressionTargets {
		assign(t, "regression target")
	}
	for _, c := range s.ControlFeatures {
		assign(c, "control feature")
	}
	targets := append(append([]string(nil), s.BinaryTargets...), s.RegressionTargets...)
	for _, t := range sortedKeys(s.TargetSource) {
		src := s.TargetSource[t]
		if !contains(targets, t) {
			bad("target source given for %q, which is not a target", t)
			continue
		}
		if src == "" {
			bad("target %q: empty source column", t)
			continue
		}
		if r, ok := role[src]; ok && src != t {
			bad("column %q is the source of target %q and also %s", src, t, r)
		}
	}
	// Two targets derived from one column are fine; a derived target must
	// not read another target's own column either.
	for _, t := range targets {
		src := s.source(t)
		if src == t {
			continue
		}
		for _, u := range targets {
			if u != t && s.source(u) == u && u == src {
				bad("target %q is derived from target %q", t, u)
			}
		}
	}
	for _, t := range sortedKeys(s.BinaryTargetMap) {
		if !contains(s.BinaryTargets, t) {
			bad("binary target map given for %q, which is not a binary target", t)
		} else if len(s.positiveLabels(t)) == 0 {
			bad("binary target %q: empty positive label", t)
		}
	}
	if len(cats)+len(s.Continuous)+len(targets) == 0 {
		bad("no categorical, continuous or target columns")
	}
	for _, f := range s.UserFeatures {
		if !contains(cats, f) && !contains(s.Continuous, f) {
			bad("user feature %q is not a categorical or continuous feature", f)
		}
		if contains(s.ItemFeatures, f) {
			bad("column %q is both a user and an item feature", f)
		}
	}
	for _, f := range s.ItemFeatures {
		if !contains(cats, f) && !contains(s.Continuous, f) {
			bad("item feature %q is not a categorical or continuous feature", f)
		}
	}
	if s.UserID != "" && contains(s.ItemFeatures, s.UserID) {
		bad("user id %q is listed as an item feature", s.UserID)
	}
	if s.ItemID != "" && contains(s.UserFeatures, s.ItemID) {
		bad("item id %q is listed as a user feature", s.ItemID)
	}
	if s.CategMinFreq < 0 {
		bad("categ min freq %d must not be negative", s.CategMinFreq)
	}
	for _, c := range sortedKeys(s.HashBuckets) {
		n := s.HashBuckets[c]
		if !contains(cats, c) {
			bad("hash buckets given for %q, which is not categorical", c)
		}
		if n <= 0 {
			bad("hash buckets for %q: %d must be positive", c, n)
		}
	}
	for _, c := range s.LogContinuous {
		if !contains(s.Continuous, c) {
			bad("log transform given for %q, which is not continuous", c)
		}
	}
	for _, c := range sortedKeys(s.Clip) {
		r := s.Clip[c]
		if !contains(s.Continuous, c) {
			bad("clip given for %q, which is not continuous", c)
		}
		if math.IsNaN(r[0]) || math.IsNaN(r[1]) || r[0] > r[1] {
			bad("clip range for %q: [%v, %v] is not a range", c, r[0], r[1])
		}
	}
	if _, _, err := s.fillSpec(); err != nil {
		bad("%v", err)
	}
	switch s.SplitStrategy {
	case SplitNone:
	case SplitRandom, SplitRandomByUser, SplitByUserHoldout:
		if !(s.EvalPerc > 0 && s.EvalPerc < 1) {
			bad("split %q: eval fraction %v must lie in (0, 1)", s.SplitStrategy, s.EvalPerc)
		}
		if s.SplitStrategy != SplitRandom && s.UserID == "" {
			bad("split %q needs the user id column", s.SplitStrategy)
		}
	case SplitTemporal:
		if s.TimestampFeature == "" {
			bad("split %q needs the timestamp column", s.SplitStrategy)
		}
	default:
		bad("split strategy %q: want %q, %q, %q or %q", s.SplitStrategy, SplitRandom, SplitRandomByUser, SplitByUserHoldout, SplitTemporal)
	}
	if s.SplitStrategy != SplitTemporal && s.SplitTemporalTimestamp != 0 {
		bad("a temporal split timestamp is given without the %q split", SplitTemporal)
	}
	if s.SessionIDFeature != "" && !contains(cats, s.SessionIDFeature) {
		bad("session id column %q must be a categorical feature", s.SessionIDFeature)
	}
	if s.TimestampFeature != "" && s.TimestampFeature == s.SessionIDFeature {
		bad("column %q is both the timestamp and the session id", s.TimestampFeature)
	}
	for _, f := range []struct {
		what     string
		min, max int64
		id       string
	}{{"user", s.MinUserFreq, s.MaxUserFreq, s.UserID}, {"item", s.MinItemFreq, s.MaxItemFreq, s.ItemID}} {
		switch {
		case f.min < 0 || f.max < 0:
			bad("%s frequency bounds must not be negative (min %d, max %d)", f.what, f.min, f.max)
		case f.max > 0 && f.min > f.max:
			bad("min %s frequency %d exceeds the max %d", f.what, f.min, f.max)
		case (f.min > 0 || f.max > 0) && f.id == "":
			bad("%s frequency filtering needs the %s id column", f.what, f.what)
		}
	}
	if s.FilterRounds < 0 {
		bad("filter rounds %d must not be negative", s.FilterRounds)
	}
	if s.FilterQuery != "" {
		if _, err := parseQuery(s.FilterQuery); err != nil {
			bad("%v", err)
		}
	}
	if len(errs) == 0 {
		return nil
	}
	return fmt.Errorf("invalid preprocessing spec: %w", errors.Join(errs...))
}

// sourceColumns lists every input column the spec reads, in a stable order:
// categorical, continuous, then target sources.
func (s *Spec) sourceColumns(withTargets bool) []string {
	var out []string
	add := func(c string) {
		if !contains(out, c) {
			out = append(out, c)
		}
	}
	for _, c := range s.categoricals() {
		add(c)
	}
	for _, c := range s.Continuous {
		add(c)
	}
	if withTargets {
		for _, t := range s.BinaryTargets {
			add(s.source(t))
		}
		for _, t := range s.RegressionTargets {
			add(s.source(t))
		}
	}
	return out
}

func contains(list []string, v string) bool {
	for _, x := range list {
		if x == v {
			return true
		}
	}
	return false
}

func firstDuplicate(list []string) string {
	seen := make(map[string]bool, len(list))
	for _, v := range list {
		if seen[v] {
			return v
		}
		seen[v] = true
	}
	return ""
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
