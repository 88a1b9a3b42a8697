package preprocess

import (
	"errors"
	"fmt"
	"math"
	"sort"
	"strconv"
	"strings"
)

// Fit fits spec's ops on every row of inputs (files, directories or glob
// patterns) in streaming passes: one pass over the columns of the spec, and
// up to three more over the columns filled with their median (see the
// package documentation). Memory is bounded by the vocabulary sizes, not by
// the number of rows. Fit neither filters nor splits: Run fits on the rows
// the filters keep on the train side of a split.
func Fit(spec Spec, inputs []string) (*Workflow, error) {
	return fit(spec, inputs, nil)
}

// fit fits on the rows of inputs that keep accepts (all when keep is nil).
func fit(spec Spec, inputs []string, keep *splitter) (*Workflow, error) {
	if err := spec.Validate(); err != nil {
		return nil, err
	}
	files, err := expandInputs(inputs, spec.InputFormat)
	if err != nil {
		return nil, fmt.Errorf("fit: %w", err)
	}
	w := newWorkflow(spec)
	w.FitInputs = append([]string(nil), inputs...)
	cols := keep.addColumns(spec.sourceColumns(true))
	pos := indexOf(cols)

	cats := make([]*catAcc, len(w.Categorical))
	for i, c := range w.Categorical {
		cats[i] = &catAcc{op: c, col: pos[c.Name], index: map[string]int32{}}
	}
	conts := make([]*contAcc, len(w.Continuous))
	for i, c := range w.Continuous {
		conts[i] = &contAcc{op: c, col: pos[c.Name], min: math.Inf(1), max: math.Inf(-1)}
		if c.Fill == FillMedian {
			conts[i].median = newMedianSel()
		}
	}
	tgts := make([]*targetAcc, len(w.Targets))
	for i, t := range w.Targets {
		t.buildSets()
		tgts[i] = &targetAcc{op: t, col: pos[t.Source], negative: map[string]bool{}}
	}
	keep.bind(pos)
	if err := keep.countUsers(&w.Spec, files); err != nil {
		return nil, fmt.Errorf("fit: %w", err)
	}

	var mask []bool
	keep.beginPass()
	err = scan(&w.Spec, files, cols, "fit", func(c *chunk) error {
		var err error
		if mask, err = keep.trainMask(c, mask); err != nil {
			return err
		}
		for i := 0; i < c.n; i++ {
			if mask == nil || mask[i] {
				w.FitRows++
			}
		}
		for _, a := range cats {
			a.add(c, mask)
		}
		for _, a := range conts {
			if err := a.add(c, mask); err != nil {
				return err
			}
		}
		for _, a := range tgts {
			if err := a.add(c, mask); err != nil {
				return err
			}
		}
		return nil
	})
	if err == nil {
		err = keep.endPass()
	}
	if err != nil {
		return nil, fmt.Errorf("fit: %w", err)
	}
	if w.FitRows == 0 {
		if keep != nil {
			return nil, fmt.Errorf("fit: no training rows left after the %s split of %s: %w", spec.SplitStrategy, strings.Join(inputs, ", "), ErrEmptyInput)
		}
		return nil, fmt.Errorf("fit: %s: %w", strings.Join(inputs, ", "), ErrEmptyInput)
	}
	if err := fitMedians(&w.Spec, files, conts, keep); err != nil {
		return nil, fmt.Errorf("fit: %w", err)
	}
	for _, a := range cats {
		a.finish()
	}
	for _, a := range conts {
		if err := a.finish(); err != nil {
			return nil, fmt.Errorf("fit on %s: %w", strings.Join(inputs, ", "), err)
		}
	}
	for _, a := range tgts {
		if err := a.finish(); err != nil {
			return nil, fmt.Errorf("fit on %s: %w", strings.Join(inputs, ", "), err)
		}
	}
	return w, nil
}

func indexOf(cols []string) map[string]int {
	m := make(map[string]int, len(cols))
	for i, c := range cols {
		m[c] = i
	}
	return m
}

// ---- Categorify ----

type catAcc struct {
	op     *Categorical
	col    int
	index  map[string]int32 // value -> position in counts
	values []string
	counts []int64
	nulls  int64
	buf    []byte
}

func (a *catAcc) add(c *chunk, mask []bool) {
	col := &c.cols[a.col]
	hashed := a.op.Op == OpHashBucket
	for i := 0; i < c.n; i++ {
		if mask != nil && !mask[i] {
			continue
		}
		if col.isNull(i) {
			a.nulls++
			continue
		}
		if hashed {
			continue
		}
		var k int32
		var ok bool
		if col.kind == kindString {
			k, ok = a.index[col.str[i]]
		} else {
			a.buf = col.appendKey(a.buf[:0], i)
			k, ok = a.index[string(a.buf)]
		}
		if ok {
			a.counts[k]++
			continue
		}
		// New value: copy it, since it may alias a CSV line or Arrow memory.
		var v string
		if col.kind == kindString {
			v = strings.Clone(col.str[i])
		} else {
			v = string(a.buf)
		}
		a.index[v] = int32(len(a.values))
		a.values = append(a.values, v)
		a.counts = append(a.counts, 1)
	}
}

// finish orders the vocabulary: descending count, ties by value (integers
// numerically and before other values, which compare bytewise).
func (a *catAcc) finish() {
	op := a.op
	op.NullRows = a.nulls
	if op.Op == OpHashBucket {
		return
	}
	op.Distinct = int64(len(a.values))
	type entry struct {
		v     string
		n     int64
		isInt bool
		iv    int64
	}
	entries := make([]entry, 0, len(a.values))
	for i, v := range a.values {
		if int64(op.FreqThreshold) > a.counts[i] {
			op.InfrequentRows += a.counts[i]
			continue
		}
		e := entry{v: v, n: a.counts[i]}
		if iv, err := strconv.ParseInt(v, 10, 64); err == nil {
			e.isInt, e.iv = true, iv
		}
		entries = append(entries, e)
	}
	sort.Slice(entries, func(i, j int) bool {
		x, y := &entries[i], &entries[j]
		if x.n != y.n {
			return x.n > y.n
		}
		if x.isInt != y.isInt {
			return x.isInt
		}
		if x.isInt && x.iv != y.iv {
			return x.iv < y.iv
		}
		return x.v < y.v
	})
	op.Vocab = make([]string, len(entries))
	op.Counts = make([]int64, len(entries))
	for i, e := range entries {
		op.Vocab[i], op.Counts[i] = e.v, e.n
	}
	op.buildIndex()
	a.index, a.values, a.counts = nil, nil, nil
}

// ---- continuous ----

// moments accumulates count, mean and the sum of squared deviations,
// merged chunk by chunk (Chan et al.), which stays accurate for large means.
type moments struct {
	n    int64
	mean float64
	m2   float64
}

// addValues merges the moments of vals, computed in two passes.
func (m *moments) addValues(vals []float64) {
	if len(vals) == 0 {
		return
	}
	var sum float64
	for _, v := range vals {
		sum += v
	}
	k := float64(len(vals))
	mean := sum / k
	var m2 float64
	for _, v := range vals {
		d := v - mean
		m2 += d * d
	}
	m.merge(moments{n: int64(len(vals)), mean: mean, m2: m2})
}

func (m *moments) merge(o moments) {
	if o.n == 0 {
		return
	}
	if m.n == 0 {
		*m = o
		return
	}
	n := float64(m.n + o.n)
	d := o.mean - m.mean
	m.mean += d * float64(o.n) / n
	m.m2 += o.m2 + d*d*float64(m.n)*float64(o.n)/n
	m.n += o.n
}

// std is the sample standard deviation, 1 when it is 0 or undefined (as
// NVTabular's Normalize, which then only centres).
func (m *moments) std() float64 {
	if m.n < 2 {
		return 1
	}
	s := math.Sqrt(m.m2 / float64(m.n-1))
	if !(s > 0) || math.IsInf(s, 0) {
		return 1
	}
	return s
}

type contAcc struct {
	op       *Continuous
	col      int
	raw      moments // non-null raw values (mean fill)
	shaped   moments // non-null values after clip and log (normalize)
	nulls    int64
	min, max float64
	median   *medianSel
	vals     []float64
	tmp      []float64
}

func (a *contAcc) add(c *chunk, mask []bool) error {
	col := &c.cols[a.col]
	a.vals = a.vals[:0]
	for i := 0; i < c.n; i++ {
		if mask != nil && !mask[i] {
			continue
		}
		v, null, err := numberAt(c, col, i, a.op.Name)
		if err != nil {
			return err
		}
		if null {
			if a.op.Fill == FillNone {
				return c.errAt(a.op.Name, i, "null value and no fill for missing continuous values (set --continuous_features_fillna on the command line, Spec.ContinuousFillNA in the library)")
			}
			a.nulls++
			continue
		}
		a.vals = append(a.vals, v)
	}
	a.raw.addValues(a.vals)
	a.tmp = resize(a.tmp, len(a.vals))
	for i, v := range a.vals {
		a.min = math.Min(a.min, v)
		a.max = math.Max(a.max, v)
		a.tmp[i] = a.op.shape(v)
	}
	a.shaped.addValues(a.tmp)
	if a.median != nil {
		a.median.count(a.vals)
	}
	return nil
}

func (a *contAcc) finish() error {
	op := a.op
	op.Count, op.NullRows = a.raw.n, a.nulls
	if a.raw.n > 0 {
		op.Min, op.Max = a.min, a.max
	}
	switch op.Fill {
	case FillMean, FillMedian:
		if a.raw.n == 0 {
			return fmt.Errorf("continuous column %q has no non-null value to compute its %s", op.Name, op.Fill)
		}
		if op.Fill == FillMean {
			op.FillValue = a.raw.mean
		} else {
			op.FillValue = a.median.result()
		}
	}
	// Filled rows take part in the normalisation statistics, as in a
	// FillMissing >> Normalize pipeline.
	st := a.shaped
	if a.nulls > 0 {
		st.merge(moments{n: a.nulls, mean: op.shape(op.FillValue)})
	}
	if op.Normalize {
		op.Mean, op.Std = st.mean, st.std()
	}
	return nil
}

// numberAt reads row i of col as a number. NaN and null are null; other
// non-finite values and text that is not a number are errors.
func numberAt(c *chunk, col *column, i int, name string) (float64, bool, error) {
	if col.isNull(i) {
		return 0, true, nil
	}
	var v float64
	switch col.kind {
	case kindInt:
		return float64(col.i64[i]), false, nil
	case kindFloat:
		v = col.f64[i]
	default:
		s := col.str[i]
		f, err := strconv.ParseFloat(s, 64)
		if err != nil {
			var ne *strconv.NumError
			if errors.As(err, &ne) && ne.Err == strconv.ErrRange {
				return 0, false, c.errAt(name, i, "value %q is out of range", s)
			}
			return 0, false, c.errAt(name, i, "value %q is not a number", s)
		}
		v = f
	}
	if math.IsNaN(v) {
		return 0, true, nil
	}
	if math.IsInf(v, 0) {
		return 0, false, c.errAt(name, i, "value %v is not finite", v)
	}
	return v, false, nil
}

// ---- targets ----

type targetAcc struct {
	op       *Target
	col      int
	negative map[string]bool
	st       moments
	buf      []byte
	vals     []float64
}

func (a *targetAcc) add(c *chunk, mask []bool) error {
	col := &c.cols[a.col]
	a.vals = a.vals[:0]
	for i := 0; i < c.n; i++ {
		if mask != nil && !mask[i] {
			continue
		}
		v, label, err := a.op.valueAt(c, col, i, &a.buf)
		if err != nil {
			return err
		}
		if label != "" && !a.negative[label] && !a.op.NegativeOverflow {
			if len(a.negative) >= maxNegativeLabels {
				a.op.NegativeOverflow = true
			} else {
				a.negative[strings.Clone(label)] = true
			}
		}
		if a.op.Kind == TargetBinary && v == 1 {
			a.op.Positives++
		}
		a.vals = append(a.vals, float64(v))
	}
	a.st.addValues(a.vals)
	return nil
}

func (a *targetAcc) finish() error {
	t := a.op
	t.Rows, t.Mean = a.st.n, a.st.mean
	t.NegativeSeen = sortedKeys(a.negative)
	t.buildSets()
	if t.Kind == TargetBinary && len(t.Positive) > 0 && t.Positives == 0 {
		return fmt.Errorf("binary target %q: no fitted row of column %q holds the positive label %s (labels seen: %s)",
			t.Name, t.Source, quoteList(t.Positive), quoteList(t.NegativeSeen))
	}
	return nil
}

// valueAt returns the target value of row i. For a binary target with
// positive labels it also returns the row's label when it is not positive
// (so the caller can track negative labels).
func (t *Target) valueAt(c *chunk, col *column, i int, buf *[]byte) (float32, string, error) {
	if col.isNull(i) {
		return 0, "", c.errAt(t.Source, i, "missing value of target %q", t.Name)
	}
	if t.Kind == TargetBinary && len(t.Positive) > 0 {
		var label string
		if col.kind == kindString {
			label = col.str[i]
		} else {
			*buf = col.appendKey((*buf)[:0], i)
			label = string(*buf)
		}
		if t.positive[label] {
			return 1, "", nil
		}
		return 0, label, nil
	}
	var v float64
	switch col.kind {
	case kindInt:
		v = float64(col.i64[i])
	case kindFloat:
		v = col.f64[i]
	default:
		s := col.str[i]
		if t.Kind == TargetBinary {
			switch strings.ToLower(s) {
			case "true":
				return 1, "", nil
			case "false":
				return 0, "", nil
			}
		}
		f, err := strconv.ParseFloat(s, 64)
		if err != nil {
			if t.Kind == TargetBinary {
				return 0, "", c.errAt(t.Source, i, "binary target %q: value %q is not 0/1 (%s)", t.Name, s, positiveLabelHint(t.Name))
			}
			return 0, "", c.errAt(t.Source, i, "regression target %q: value %q is not a number", t.Name, s)
		}
		v = f
	}
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return 0, "", c.errAt(t.Source, i, "target %q: value %v is not finite", t.Name, v)
	}
	if t.Kind == TargetBinary && v != 0 && v != 1 {
		return 0, "", c.errAt(t.Source, i, "binary target %q: value %v is not 0/1 (%s)", t.Name, v, positiveLabelHint(t.Name))
	}
	if math.Abs(v) > math.MaxFloat32 {
		return 0, "", c.errAt(t.Source, i, "target %q: value %v is outside float32's range (the model's targets are float32)", t.Name, v)
	}
	return float32(v), "", nil
}

// positiveLabelHint tells how to name the label read as 1 when a binary
// target's values are not 0/1, on the command line and in the library.
func positiveLabelHint(target string) string {
	return fmt.Sprintf("name the label read as 1 with --binary_target_map %s=LABEL on the command line, Spec.BinaryTargetMap in the library", target)
}

func quoteList(vals []string) string {
	q := make([]string, len(vals))
	for i, v := range vals {
		q[i] = strconv.Quote(v)
	}
	return strings.Join(q, ", ")
}
