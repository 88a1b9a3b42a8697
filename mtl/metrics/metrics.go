// Package metrics computes the evaluation metrics of multi-task ranking
// models: exact ROC-AUC, PR-AUC (average precision), logloss,
// precision/recall/accuracy at a 0.5 threshold for binary tasks, RMSE and MAE
// for regression tasks, the mean AUC over binary tasks and the mean gate
// weight of every expert.
//
// Definitions (chosen to be exact and reproducible; where they differ from
// Keras, which Merlin Models uses, the difference is deliberate):
//
//   - ROC-AUC is exact: the Mann-Whitney statistic computed from one sort of
//     the scores, with tied scores counted as half a correctly ordered pair
//     (equivalently: tied scores get the average of their ranks). Keras'
//     tf.keras.metrics.AUC approximates the curve on 200 fixed thresholds,
//     which is biased for calibrated probabilities of rare events (most
//     predictions of a 0.1% task fall between two thresholds).
//   - PR-AUC is the average precision AP = sum_k (R_k - R_{k-1}) * P_k over
//     the distinct score values taken as thresholds in decreasing order,
//     where P_k and R_k are the precision and recall of predicting
//     "positive" for every score >= the k-th threshold (all examples with a
//     tied score enter together). It is a step-wise, not a trapezoidal,
//     integral: it does not interpolate precision linearly between points,
//     which would be optimistic.
//   - Logloss is the mean binary cross-entropy of the probabilities clipped
//     to [Eps, 1-Eps] (Keras' epsilon), so a confident mistake costs at most
//     -log(Eps) instead of +Inf.
//   - Precision, recall and accuracy treat a probability strictly above 0.5
//     as a positive prediction (as Keras' Precision/Recall/BinaryAccuracy
//     with threshold 0.5). Precision with no positive prediction and recall
//     with no positive label are 0 (Keras' divide-no-nan convention).
//   - When a binary task sees only one class (or no example at all), ROC-AUC
//     and PR-AUC are undefined: they are reported as NaN and
//     BinaryResult.Defined is false; auc_avg averages the defined AUCs only
//     (and is NaN when none is defined). Results.MarshalJSON writes NaN as
//     null.
//   - A NaN prediction makes every metric of its task NaN (and Defined
//     false): a silently dropped NaN would hide a diverged model.
//
// Accumulators keep 8 bytes per binary example (the score and its label) so
// that the AUC of an evaluation pass is exact; the sort is an O(n) radix
// sort on the score bits.
package metrics

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"slices"
	"sort"
	"strconv"

	"github.com/mtlrank/mtlrank/internal/rankkey"
)

// Eps is the clipping bound of probabilities in the logloss.
const Eps = 1e-7

// threshold is the decision threshold of precision, recall and accuracy.
const threshold = 0.5

// Metric names, the last component of a result key.
const (
	AUC            = "auc"
	PRAUC          = "pr_auc"
	LogLoss        = "logloss"
	Precision      = "precision"
	Recall         = "recall"
	BinaryAccuracy = "binary_accuracy"
	RMSE           = "rmse"
	MAE            = "mae"
	Count          = "count"
	PositiveRate   = "positive_rate"
	// AUCAvg is the key of the mean ROC-AUC over the binary tasks.
	AUCAvg = "auc_avg"
)

// Key is the result key of a task metric, e.g. Key("click/binary_output",
// AUC) = "click/binary_output/auc".
func Key(task, metric string) string { return task + "/" + metric }

// GateKey is the result key of the mean weight that gate name gives expert i,
// e.g. "gate/task_click/expert_0".
func GateKey(gate string, expert int) string {
	return "gate/" + gate + "/expert_" + strconv.Itoa(expert)
}

// rankStats computes ROC-AUC and average precision from keys sorted
// ascending by score (rankkey.Sort). pos and neg are the class counts.
func rankStats(sorted []uint64, pos, neg int64) (auc, ap float64) {
	if pos == 0 || neg == 0 {
		return math.NaN(), math.NaN()
	}
	auc, _, _ = rankkey.AUC(sorted)

	// Descending pass: each distinct score is a threshold.
	var tp, fp int64
	for j := len(sorted); j > 0; {
		s := sorted[j-1] >> 32
		var p, n int64
		i := j
		for ; i > 0 && sorted[i-1]>>32 == s; i-- {
			if sorted[i-1]&1 == 1 {
				p++
			} else {
				n++
			}
		}
		tp += p
		fp += n
		if p > 0 {
			ap += float64(p) / float64(pos) * float64(tp) / float64(tp+fp)
		}
		j = i
	}
	return auc, ap
}

// buildKeys packs scores and labels; it reports an error for a NaN score
// (the index is returned so callers can name the row).
func buildKeys(scores []float32, labels []bool) (keys []uint64, pos, neg int64, nanAt int) {
	keys = make([]uint64, len(scores))
	for i, s := range scores {
		if s != s {
			return nil, 0, 0, i
		}
		if labels[i] {
			pos++
		} else {
			neg++
		}
		keys[i] = rankkey.Pack(s, labels[i])
	}
	return keys, pos, neg, -1
}

// ROCAUC returns the exact area under the ROC curve of scores against
// labels, ties averaged. It is NaN when a class is absent or a score is NaN.
// It panics if the slices differ in length.
func ROCAUC(scores []float32, labels []bool) float64 {
	auc, _ := rankMetrics(scores, labels)
	return auc
}

// AveragePrecision returns the PR-AUC as average precision (see the package
// documentation for the definition). It is NaN when there is no positive or
// no negative label, or a score is NaN.
func AveragePrecision(scores []float32, labels []bool) float64 {
	_, ap := rankMetrics(scores, labels)
	return ap
}

func rankMetrics(scores []float32, labels []bool) (float64, float64) {
	if len(scores) != len(labels) {
		panic(fmt.Sprintf("metrics: %d scores but %d labels", len(scores), len(labels)))
	}
	keys, pos, neg, nanAt := buildKeys(scores, labels)
	if nanAt >= 0 {
		return math.NaN(), math.NaN()
	}
	sorted := rankkey.Sort(keys, make([]uint64, len(keys)))
	return rankStats(sorted, pos, neg)
}

// BinaryLogLoss returns the mean clipped binary cross-entropy of
// probabilities against labels (NaN for empty input).
func BinaryLogLoss(probs []float32, labels []bool) float64 {
	if len(probs) != len(labels) {
		panic(fmt.Sprintf("metrics: %d probabilities but %d labels", len(probs), len(labels)))
	}
	if len(probs) == 0 {
		return math.NaN()
	}
	var sum float64
	for i, p := range probs {
		sum += logLoss(float64(p), labels[i])
	}
	return sum / float64(len(probs))
}

func logLoss(p float64, label bool) float64 {
	p = min(max(p, Eps), 1-Eps)
	if label {
		return -math.Log(p)
	}
	return -math.Log(1 - p)
}

// BinaryResult is the outcome of a binary accumulator.
type BinaryResult struct {
	Count, Positives int64
	// AUC and PRAUC are NaN when Defined is false.
	AUC, PRAUC float64
	LogLoss    float64
	Precision  float64
	Recall     float64
	Accuracy   float64
	// Defined is false when the examples held a single class (or none), or
	// a prediction was NaN.
	Defined bool
}

// Binary accumulates the predictions of one binary task over an evaluation
// pass. The zero value is ready to use. It is not safe for concurrent use.
type Binary struct {
	keys           []uint64
	pos, neg       int64
	nan            int64
	logloss        float64
	tp, fp, tn, fn int64
	tmp            []uint64
}

// Add appends probabilities with their 0/1 labels. Rows where mask is 0 are
// skipped (mask nil: every row). A label other than 0 or 1, or slices of
// different lengths, is an error naming the index.
func (b *Binary) Add(probs, labels, mask []float32) error {
	if len(labels) != len(probs) || (mask != nil && len(mask) != len(probs)) {
		return fmt.Errorf("metrics: %d predictions, %d labels and %d mask values", len(probs), len(labels), len(mask))
	}
	for i, y := range labels {
		if y != 0 && y != 1 {
			return fmt.Errorf("metrics: binary label at index %d is %v, want 0 or 1", i, y)
		}
	}
	b.keys = slices.Grow(b.keys, len(probs))
	for i, p := range probs {
		if mask != nil && mask[i] == 0 {
			continue
		}
		label := labels[i] == 1
		if p != p {
			b.nan++
		}
		if label {
			b.pos++
		} else {
			b.neg++
		}
		b.keys = append(b.keys, rankkey.Pack(p, label))
		b.logloss += logLoss(float64(p), label)
		switch pred := p > threshold; {
		case pred && label:
			b.tp++
		case pred && !label:
			b.fp++
		case !pred && label:
			b.fn++
		default:
			b.tn++
		}
	}
	return nil
}

// Len is the number of accumulated examples.
func (b *Binary) Len() int64 { return b.pos + b.neg }

// Reset empties the accumulator, keeping its memory.
func (b *Binary) Reset() {
	keys, tmp := b.keys[:0], b.tmp
	*b = Binary{keys: keys, tmp: tmp}
}

// Result computes the metrics of everything added so far. It may reorder
// internal state but does not consume it: Add may continue afterwards.
func (b *Binary) Result() BinaryResult {
	n := b.pos + b.neg
	r := BinaryResult{Count: n, Positives: b.pos}
	if n == 0 {
		nan := math.NaN()
		r.AUC, r.PRAUC, r.LogLoss, r.Precision, r.Recall, r.Accuracy = nan, nan, nan, nan, nan, nan
		return r
	}
	r.LogLoss = b.logloss / float64(n)
	r.Precision = ratio(b.tp, b.tp+b.fp)
	r.Recall = ratio(b.tp, b.tp+b.fn)
	r.Accuracy = ratio(b.tp+b.tn, n)
	if b.nan > 0 {
		nan := math.NaN()
		r.AUC, r.PRAUC, r.LogLoss = nan, nan, nan
		return r
	}
	if cap(b.tmp) < len(b.keys) {
		b.tmp = make([]uint64, len(b.keys))
	}
	sorted := rankkey.Sort(b.keys, b.tmp[:len(b.keys)])
	if &sorted[0] != &b.keys[0] {
		// Keep the sorted copy as the key slice: the next sort is cheaper.
		b.keys, b.tmp = sorted, b.keys[:0]
	}
	r.AUC, r.PRAUC = rankStats(sorted, b.pos, b.neg)
	r.Defined = b.pos > 0 && b.neg > 0
	return r
}

func ratio(a, b int64) float64 {
	if b == 0 {
		return 0
	}
	return float64(a) / float64(b)
}

// RegressionResult is the outcome of a regression accumulator (NaN when
// empty).
type RegressionResult struct {
	Count     int64
	RMSE, MAE float64
}

// Regression accumulates the predictions of one regression task. The zero
// value is ready to use.
type Regression struct {
	n           int64
	sumSq, sumA float64
}

// Add accumulates predictions against targets; rows where mask is 0 are
// skipped.
func (r *Regression) Add(preds, targets, mask []float32) error {
	if len(targets) != len(preds) || (mask != nil && len(mask) != len(preds)) {
		return fmt.Errorf("metrics: %d predictions, %d targets and %d mask values", len(preds), len(targets), len(mask))
	}
	for i, p := range preds {
		if mask != nil && mask[i] == 0 {
			continue
		}
		d := float64(p) - float64(targets[i])
		r.sumSq += d * d
		r.sumA += math.Abs(d)
		r.n++
	}
	return nil
}

// Reset empties the accumulator.
func (r *Regression) Reset() { *r = Regression{} }

// Result computes RMSE and MAE.
func (r *Regression) Result() RegressionResult {
	if r.n == 0 {
		return RegressionResult{RMSE: math.NaN(), MAE: math.NaN()}
	}
	return RegressionResult{Count: r.n, RMSE: math.Sqrt(r.sumSq / float64(r.n)), MAE: r.sumA / float64(r.n)}
}

// Kind is a task's output type.
type Kind int

const (
	KindBinary Kind = iota
	KindRegression
)

// TaskSpec names one task of an Evaluator, e.g. {"click/binary_output",
// KindBinary}.
type TaskSpec struct {
	Name string
	Kind Kind
}

// Evaluator accumulates the metrics of every task of a model, and the mean
// gate weights, over an evaluation pass. It is not safe for concurrent use.
type Evaluator struct {
	tasks []TaskSpec
	bin   []*Binary
	reg   []*Regression
	gates map[string]*gateAcc
}

type gateAcc struct {
	sum  []float64
	rows float64
}

// NewEvaluator returns an Evaluator for the tasks, in the model's order.
func NewEvaluator(tasks []TaskSpec) *Evaluator {
	e := &Evaluator{tasks: slices.Clone(tasks), bin: make([]*Binary, len(tasks)),
		reg: make([]*Regression, len(tasks)), gates: map[string]*gateAcc{}}
	for i, t := range tasks {
		if t.Kind == KindBinary {
			e.bin[i] = &Binary{}
		} else {
			e.reg[i] = &Regression{}
		}
	}
	return e
}

// Tasks returns the task list.
func (e *Evaluator) Tasks() []TaskSpec { return e.tasks }

// Add accumulates a batch of predictions of task i (index in the task list)
// against its labels; rows where mask is 0 are skipped (nil: all rows).
func (e *Evaluator) Add(i int, preds, labels, mask []float32) error {
	if i < 0 || i >= len(e.tasks) {
		return fmt.Errorf("metrics: task index %d out of range [0, %d)", i, len(e.tasks))
	}
	var err error
	if e.bin[i] != nil {
		err = e.bin[i].Add(preds, labels, mask)
	} else {
		err = e.reg[i].Add(preds, labels, mask)
	}
	if err != nil {
		return fmt.Errorf("task %s: %w", e.tasks[i].Name, err)
	}
	return nil
}

// AddGate accumulates the mean per-expert weights of a gate over a batch of
// rows, so that the result is the mean over every row of the pass.
func (e *Evaluator) AddGate(name string, meanWeights []float64, rows int) {
	sums := make([]float64, len(meanWeights))
	for i, w := range meanWeights {
		sums[i] = w * float64(rows)
	}
	e.AddGateSums(name, sums, float64(rows))
}

// AddGateSums accumulates a gate's per-expert weights already summed over
// rows rows (what AddGate adds as meanWeights·rows): how the sums of the
// ranks of a distributed evaluation are merged.
func (e *Evaluator) AddGateSums(name string, sums []float64, rows float64) {
	g := e.gates[name]
	if g == nil {
		g = &gateAcc{sum: make([]float64, len(sums))}
		e.gates[name] = g
	}
	if len(g.sum) < len(sums) {
		g.sum = append(g.sum, make([]float64, len(sums)-len(g.sum))...)
	}
	for i, s := range sums {
		g.sum[i] += s
	}
	g.rows += rows
}

// Reset empties every accumulator.
func (e *Evaluator) Reset() {
	for i := range e.tasks {
		if e.bin[i] != nil {
			e.bin[i].Reset()
		} else {
			e.reg[i].Reset()
		}
	}
	clear(e.gates)
}

// Results computes every metric. Keys: "<task>/<metric>" for the task
// metrics (auc, pr_auc, logloss, precision, recall, binary_accuracy, count,
// positive_rate for binary tasks; rmse, mae, count for regression tasks),
// "auc_avg" when there is a binary task, and "gate/<gate>/expert_<i>".
func (e *Evaluator) Results() Results {
	out := Results{}
	var aucSum float64
	var aucN, binN int
	for i, t := range e.tasks {
		if b := e.bin[i]; b != nil {
			binN++
			r := b.Result()
			out[Key(t.Name, AUC)] = r.AUC
			out[Key(t.Name, PRAUC)] = r.PRAUC
			out[Key(t.Name, LogLoss)] = r.LogLoss
			out[Key(t.Name, Precision)] = r.Precision
			out[Key(t.Name, Recall)] = r.Recall
			out[Key(t.Name, BinaryAccuracy)] = r.Accuracy
			out[Key(t.Name, Count)] = float64(r.Count)
			out[Key(t.Name, PositiveRate)] = ratioNaN(r.Positives, r.Count)
			if r.Defined {
				aucSum += r.AUC
				aucN++
			}
			continue
		}
		r := e.reg[i].Result()
		out[Key(t.Name, RMSE)] = r.RMSE
		out[Key(t.Name, MAE)] = r.MAE
		out[Key(t.Name, Count)] = float64(r.Count)
	}
	if binN > 0 {
		out[AUCAvg] = math.NaN()
		if aucN > 0 {
			out[AUCAvg] = aucSum / float64(aucN)
		}
	}
	for name, g := range e.gates {
		for i, s := range g.sum {
			out[GateKey(name, i)] = s / g.rows
		}
	}
	return out
}

func ratioNaN(a, b int64) float64 {
	if b == 0 {
		return math.NaN()
	}
	return float64(a) / float64(b)
}

// Results maps metric keys to values. NaN marks an undefined metric.
type Results map[string]float64

// Keys returns the keys in sorted order.
func (r Results) Keys() []string {
	keys := make([]string, 0, len(r))
	for k := range r {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// WithPrefix returns a copy whose keys are prefixed, e.g. "val/".
func (r Results) WithPrefix(prefix string) Results {
	out := make(Results, len(r))
	for k, v := range r {
		out[prefix+k] = v
	}
	return out
}

// MarshalJSON writes the results as a JSON object with sorted keys, NaN and
// infinities as null (JSON has no NaN).
func (r Results) MarshalJSON() ([]byte, error) {
	var buf bytes.Buffer
	buf.WriteByte('{')
	for i, k := range r.Keys() {
		if i > 0 {
			buf.WriteByte(',')
		}
		kb, err := json.Marshal(k)
		if err != nil {
			return nil, err
		}
		buf.Write(kb)
		buf.WriteByte(':')
		v := r[k]
		if math.IsNaN(v) || math.IsInf(v, 0) {
			buf.WriteString("null")
		} else {
			buf.WriteString(strconv.FormatFloat(v, 'g', -1, 64))
		}
	}
	buf.WriteByte('}')
	return buf.Bytes(), nil
}

// UnmarshalJSON reads what MarshalJSON writes (null becomes NaN).
func (r *Results) UnmarshalJSON(data []byte) error {
	var raw map[string]*float64
	if err := json.Unmarshal(data, &raw); err != nil {
		return fmt.Errorf("metrics: %w", err)
	}
	out := make(Results, len(raw))
	for k, v := range raw {
		if v == nil {
			out[k] = math.NaN()
		} else {
			out[k] = *v
		}
	}
	*r = out
	return nil
}
