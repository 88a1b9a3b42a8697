package report

import (
	"errors"
	"fmt"
	"html/template"
	"io"
	"math"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/mtlrank/mtlrank/mtl/metrics"
)

// Write renders the page of runs to w. Runs are shown in the order given,
// named by their labels, which must be distinct and not empty.
func Write(w io.Writer, runs []*Run) error {
	if len(runs) == 0 {
		return errors.New("report: no run to show")
	}
	seen := map[string]bool{}
	for _, r := range runs {
		switch {
		case strings.TrimSpace(r.Label) == "":
			return fmt.Errorf("report: the run of %s has an empty label", r.Path)
		case seen[r.Label]:
			return fmt.Errorf("report: two runs are labelled %q; labels must tell runs apart", r.Label)
		}
		seen[r.Label] = true
	}
	return pageTemplate.Execute(w, build(runs))
}

// Labels names runs by the folder of their metrics.json; where two share a
// folder name, by as many trailing folders as tell them apart.
func Labels(paths []string) []string {
	parts := make([][]string, len(paths))
	for i, p := range paths {
		abs, err := filepath.Abs(p)
		if err != nil {
			abs = p
		}
		parts[i] = strings.Split(filepath.ToSlash(filepath.Dir(abs)), "/")
	}
	label := func(i, n int) string {
		ps := parts[i]
		return strings.Join(ps[max(0, len(ps)-n):], "/")
	}
	out := make([]string, len(paths))
	for i := range paths {
		// The shortest suffix that no other run's path ends with.
		out[i] = label(i, 1)
		for n := 1; n <= len(parts[i]); n++ {
			if uniqueSuffix(i, n, label, len(paths)) {
				out[i] = label(i, n)
				break
			}
		}
		if out[i] == "" {
			out[i] = "/"
		}
	}
	// The same file given twice: number the repeats.
	count := map[string]int{}
	for i, l := range out {
		count[l]++
		if count[l] > 1 {
			out[i] = l + " (" + strconv.Itoa(count[l]) + ")"
		}
	}
	return out
}

// uniqueSuffix reports whether run i's last n folders differ from every
// other run's.
func uniqueSuffix(i, n int, label func(i, n int) string, runs int) bool {
	for j := range runs {
		if j != i && label(j, n) == label(i, n) {
			return false
		}
	}
	return true
}

// page is what the template renders.
type page struct {
	Title    string
	Runs     []runRow
	Final    []metricTable
	Curves   []figure
	Gates    []gateGroup
	Config   configTable
	Notes    []note
	Multiple bool
}

// figure is a chart or, when it has nothing to draw, why not.
type figure struct {
	Chart *svgChart
	Title string
	Empty string
}

type runRow struct {
	Label, Model, Device, TrainData, EvalData, Path string
	Epochs, Steps, Examples, Speed, Seconds, Best   string
	Color                                           string
}

type metricTable struct {
	Title     string
	Header    []string
	LabelCols int // the leading columns that name rather than measure
	Rows      [][]string
	Sources   []string // where each run's final metrics come from
}

// tcell is a table cell as drawn: Label cells are left-aligned, Ref cells
// (the oracle's and the baselines') set apart.
type tcell struct {
	Text       string
	Label, Ref bool
}

// HeaderCells and RowCells are the table's cells for the template.
func (t metricTable) HeaderCells() []tcell { return t.cells(t.Header) }

func (t metricTable) RowCells() [][]tcell {
	out := make([][]tcell, len(t.Rows))
	for i, r := range t.Rows {
		out[i] = t.cells(r)
	}
	return out
}

func (t metricTable) cells(row []string) []tcell {
	out := make([]tcell, len(row))
	for i, c := range row {
		h := t.Header[i]
		out[i] = tcell{Text: c, Label: i < t.LabelCols,
			Ref: strings.HasPrefix(h, "oracle") || strings.HasPrefix(h, "best constant")}
	}
	return out
}

type gateGroup struct {
	Run    string
	Charts []figure
	Empty  string
}

type configTable struct {
	Runs []string
	Rows []configRow
}

type configRow struct {
	Key    string
	Values []string
	Differ bool
}

type note struct {
	Run, Text string
}

func build(runs []*Run) page {
	p := page{Title: "mtlrank training report", Multiple: len(runs) > 1}
	if len(runs) == 1 {
		p.Title += ": " + runs[0].Label
	}
	for i, r := range runs {
		p.Runs = append(p.Runs, summary(r, color(i)))
	}
	p.Final = finalTables(runs)
	p.Curves = curves(runs)
	for _, r := range runs {
		p.Gates = append(p.Gates, gates(r))
	}
	p.Config = config(runs)
	for _, r := range runs {
		for _, n := range notes(r) {
			p.Notes = append(p.Notes, note{r.Label, n})
		}
	}
	return p
}

func summary(r *Run, c string) runRow {
	row := runRow{Label: r.Label, Model: r.Model, Device: r.Device, TrainData: r.TrainData, EvalData: r.EvalData,
		Path: r.Path, Color: c, Steps: strconv.Itoa(r.Steps)}
	var examples int64
	var seconds float64
	for _, e := range r.Epochs {
		examples += e.Examples
		seconds += e.Seconds
	}
	row.Epochs = strconv.Itoa(r.Epochs[len(r.Epochs)-1].Epoch)
	if first := r.Epochs[0].Epoch; first > 1 {
		row.Epochs = fmt.Sprintf("%d-%s (resumed)", first, row.Epochs)
	}
	row.Examples = strconv.FormatInt(examples, 10)
	if seconds > 0 {
		row.Speed = strconv.FormatFloat(float64(examples)/seconds, 'f', 0, 64)
	}
	if r.Seconds > 0 {
		row.Seconds = strconv.FormatFloat(r.Seconds, 'f', 1, 64)
	}
	if r.StoppedEarly {
		row.Best = fmt.Sprintf("stopped early; best epoch %d", r.BestEpoch)
	}
	if row.EvalData == "" {
		row.EvalData = "none"
	}
	return row
}

// final returns the metrics a run ends with and where they come from.
func final(r *Run) (metrics.Results, string) {
	last := r.Epochs[len(r.Epochs)-1]
	switch {
	case r.Eval != nil:
		return r.Eval, "evaluation after training"
	case last.Validation != nil:
		return last.Validation, fmt.Sprintf("validation after epoch %d", last.Epoch)
	case last.Train != nil:
		return last.Train, fmt.Sprintf("training metrics of epoch %d (no evaluation data)", last.Epoch)
	}
	return nil, ""
}

// taskOrder is the tasks of every run, in the order the runs first name
// them.
func taskOrder(runs []*Run) []Task {
	var out []Task
	for _, r := range runs {
		for _, t := range r.Tasks {
			if !slices.ContainsFunc(out, func(o Task) bool { return o.Name == t.Name }) {
				out = append(out, t)
			}
		}
	}
	return out
}

func taskOf(r *Run, name string) (Task, bool) {
	i := slices.IndexFunc(r.Tasks, func(t Task) bool { return t.Name == name })
	if i < 0 {
		return Task{}, false
	}
	return r.Tasks[i], true
}

func cell(res metrics.Results, key string) string {
	v, ok := res[key]
	if !ok {
		return ""
	}
	return fmtY(v)
}

// finalTables are the final metrics, one table per task kind: a row per
// task and run, each metric next to the oracle's where the data records
// one.
func finalTables(runs []*Run) []metricTable {
	multi := len(runs) > 1
	bin := metricTable{Title: "Binary tasks", Header: []string{"AUC", "oracle AUC", "AUC - oracle", "PR-AUC", "logloss", "oracle logloss",
		"precision", "recall", "accuracy", "positive rate", "rows"}}
	reg := metricTable{Title: "Regression tasks", Header: []string{"RMSE", "oracle RMSE", "RMSE - oracle", "best constant RMSE", "MAE", "rows"}}
	for _, mt := range []*metricTable{&bin, &reg} {
		mt.Header = append([]string{"task"}, mt.Header...)
		mt.LabelCols = 1
		if multi {
			mt.Header = slices.Insert(mt.Header, 1, "run")
			mt.LabelCols = 2
		}
	}
	var sources []string
	for _, r := range runs {
		_, src := final(r)
		if src == "" {
			src = "no final metrics: no evaluation data and no training metrics (--train_metrics_steps 0)"
		}
		if multi {
			src = r.Label + ": " + src
		}
		sources = append(sources, src)
	}
	for _, t := range taskOrder(runs) {
		first := true
		for _, r := range runs {
			if _, ok := taskOf(r, t.Name); !ok {
				continue
			}
			res, _ := final(r)
			if res == nil {
				continue
			}
			k := func(m string) string { return cell(res, metrics.Key(t.Name, m)) }
			var o Oracle
			if r.Oracle != nil {
				o = *r.Oracle
			}
			label := []string{t.Name}
			if !first {
				label[0] = ""
			}
			if multi {
				label = append(label, r.Label)
			}
			first = false
			if t.Kind == Binary {
				bin.Rows = append(bin.Rows, append(label, k(metrics.AUC), fmtOpt(o.AUC, t.Target), gap(res, metrics.Key(t.Name, metrics.AUC), o.AUC, t.Target),
					k(metrics.PRAUC), k(metrics.LogLoss), fmtOpt(o.LogLoss, t.Target), k(metrics.Precision), k(metrics.Recall),
					k(metrics.BinaryAccuracy), k(metrics.PositiveRate), count(res, t.Name)))
			} else {
				reg.Rows = append(reg.Rows, append(label, k(metrics.RMSE), fmtOpt(o.RMSE, t.Target), gap(res, metrics.Key(t.Name, metrics.RMSE), o.RMSE, t.Target),
					fmtOpt(o.ConstantRMSE, t.Target), k(metrics.MAE), count(res, t.Name)))
			}
		}
	}
	var out []metricTable
	for _, mt := range []metricTable{bin, reg} {
		if len(mt.Rows) > 0 {
			mt.Sources = sources
			out = append(out, mt)
		}
	}
	return out
}

func fmtOpt(m map[string]float64, k string) string {
	if v, ok := m[k]; ok {
		return fmtY(v)
	}
	return ""
}

func count(res metrics.Results, task string) string {
	if v, ok := res[metrics.Key(task, metrics.Count)]; ok && !math.IsNaN(v) {
		return strconv.FormatFloat(v, 'f', 0, 64)
	}
	return ""
}

// gap is the metric minus the oracle's, signed.
func gap(res metrics.Results, key string, oracle map[string]float64, target string) string {
	v, ok := res[key]
	ov, ook := oracle[target]
	if !ok || !ook || math.IsNaN(v) {
		return ""
	}
	return strconv.FormatFloat(v-ov, 'f', 4, 64)
}

// taskOracle is the oracle of a task, and which run's data it is of when
// the runs' data differ.
type taskOracle struct {
	oracle *Oracle
	suffix string
	run    int
}

// oracles returns one oracle for a task when every run that records one
// records the same values (the same data), else one per run.
func oracles(runs []*Run, t Task) []taskOracle {
	var out []taskOracle
	for i, r := range runs {
		if _, ok := taskOf(r, t.Name); !ok || r.Oracle == nil {
			continue
		}
		_, a := r.Oracle.AUC[t.Target]
		_, b := r.Oracle.RMSE[t.Target]
		if a || b {
			out = append(out, taskOracle{oracle: r.Oracle, run: i})
		}
	}
	same := func(a, b *Oracle) bool {
		return a.AUC[t.Target] == b.AUC[t.Target] && a.RMSE[t.Target] == b.RMSE[t.Target] &&
			a.LogLoss[t.Target] == b.LogLoss[t.Target]
	}
	for _, o := range out[min(1, len(out)):] {
		if !same(o.oracle, out[0].oracle) {
			for i := range out {
				out[i].suffix = " (data of " + runs[out[i].run].Label + ")"
			}
			return out
		}
	}
	return out[:min(1, len(out))]
}

// metricPlot is one per-epoch metric of a task.
type metricPlot struct {
	kind, title, ylabel string
	style               chart // the axis options
	kinds               Kind  // the tasks it applies to
	get                 func(e Epoch, task string) (float64, bool)
	oracle              func(o *Oracle, target string) (float64, bool)
}

func fromResults(pick func(Epoch) metrics.Results, metric string) func(Epoch, string) (float64, bool) {
	return func(e Epoch, task string) (float64, bool) {
		v, ok := pick(e)[metrics.Key(task, metric)]
		return v, ok
	}
}

func validation(e Epoch) metrics.Results { return e.Validation }
func training(e Epoch) metrics.Results   { return e.Train }

func oracleOf(pick func(o *Oracle) map[string]float64) func(*Oracle, string) (float64, bool) {
	return func(o *Oracle, target string) (float64, bool) {
		v, ok := pick(o)[target]
		return v, ok
	}
}

var (
	lossStyle = chart{NonNeg: true, LogY: true}
	unitStyle = chart{NonNeg: true, AtMost1: true}
)

// styled is c with the axis options of style.
func styled(c, style chart) chart {
	c.NonNeg, c.AtMost1, c.From0, c.LogY = style.NonNeg, style.AtMost1, style.From0, style.LogY
	return c
}

var metricPlots = []metricPlot{
	{kind: "auc-validation", title: "Validation AUC", ylabel: "ROC-AUC", style: unitStyle, kinds: Binary, get: fromResults(validation, metrics.AUC),
		oracle: oracleOf(func(o *Oracle) map[string]float64 { return o.AUC })},
	{kind: "rmse-validation", title: "Validation RMSE", ylabel: "RMSE", style: chart{NonNeg: true}, kinds: Regression, get: fromResults(validation, metrics.RMSE),
		oracle: oracleOf(func(o *Oracle) map[string]float64 { return o.RMSE })},
	{kind: "loss-train", title: "Training loss", ylabel: "loss", style: lossStyle, get: func(e Epoch, task string) (float64, bool) {
		v, ok := e.TaskLoss[task]
		return v, ok
	}},
	{kind: "loss-validation", title: "Validation loss", ylabel: "loss", style: lossStyle, get: fromResults(validation, "loss")},
	{kind: "auc-train", title: "Training AUC", ylabel: "ROC-AUC", style: unitStyle, kinds: Binary, get: fromResults(training, metrics.AUC),
		oracle: oracleOf(func(o *Oracle) map[string]float64 { return o.AUC })},
	{kind: "rmse-train", title: "Training RMSE", ylabel: "RMSE", style: chart{NonNeg: true}, kinds: Regression, get: fromResults(training, metrics.RMSE),
		oracle: oracleOf(func(o *Oracle) map[string]float64 { return o.RMSE })},
}

// epochPoints is the metric of task over the run's epochs; ok is false
// when no epoch records it.
func epochPoints(r *Run, task string, get func(Epoch, string) (float64, bool)) ([]point, bool) {
	pts := make([]point, len(r.Epochs))
	any := false
	for i, e := range r.Epochs {
		v, ok := get(e, task)
		if !ok {
			v = math.NaN()
		}
		any = any || ok
		pts[i] = point{float64(e.Epoch), v}
	}
	return pts, any
}

// curves are the per-epoch plots and the loss over the steps. One run: a
// plot per metric with a line per task. Several: a plot per metric and
// task with a line per run, so that runs are compared on one axis.
func curves(runs []*Run) []figure {
	var out []figure
	tasks := taskOrder(runs)
	add := func(c chart, empty string) {
		if v, ok := c.layout(); ok {
			out = append(out, figure{Chart: &v, Title: c.Title})
			return
		}
		if len(c.Series) > 0 {
			empty = "Undefined at every epoch: the data held one class of the task (too few rows for a rare task?)."
		}
		out = append(out, figure{Title: c.Title, Empty: empty})
	}
	// The objective only: a window of a few steps holds too few positives
	// of a rare task for its own loss to be more than noise.
	sc := styled(chart{Kind: "step-loss", Title: "Training loss over the steps (objective)", XLabel: "step", YLabel: "loss, window mean", XName: "step"}, lossStyle)
	for i, r := range runs {
		if pts := stepPoints(r); len(pts) > 0 {
			sc.Series = append(sc.Series, series{Name: r.Label, Color: color(i), Points: pts, Thin: true})
		}
	}
	add(sc, missing("step-loss"))
	for _, mp := range metricPlots {
		var applies []Task
		for _, t := range tasks {
			if mp.kinds == "" || t.Kind == mp.kinds {
				applies = append(applies, t)
			}
		}
		if len(applies) == 0 {
			continue
		}
		if len(runs) == 1 {
			r := runs[0]
			c := styled(chart{Kind: mp.kind, Title: mp.title, XLabel: "epoch", YLabel: mp.ylabel, Markers: true, XName: "epoch"}, mp.style)
			recorded := false
			for i, t := range applies {
				pts, ok := epochPoints(r, t.Name, mp.get)
				recorded = recorded || ok
				c.Series = append(c.Series, series{Name: t.Name, Color: color(i), Points: pts})
				if mp.oracle != nil && r.Oracle != nil {
					if v, ok := mp.oracle(r.Oracle, t.Target); ok {
						c.Refs = append(c.Refs, ref{Y: v, Label: "oracle " + t.Name, Color: color(i)})
					}
				}
			}
			if !recorded {
				c.Series = nil
			}
			add(c, missing(mp.kind))
			continue
		}
		for _, t := range applies {
			c := styled(chart{Kind: mp.kind, Title: mp.title + ": " + t.Name, XLabel: "epoch", YLabel: mp.ylabel, Markers: true, XName: "epoch"}, mp.style)
			recorded := false
			for i, r := range runs {
				if _, ok := taskOf(r, t.Name); !ok {
					continue
				}
				pts, ok := epochPoints(r, t.Name, mp.get)
				recorded = recorded || ok
				c.Series = append(c.Series, series{Name: r.Label, Color: color(i), Points: pts})
			}
			if mp.oracle != nil {
				for _, o := range oracles(runs, t) {
					if v, ok := mp.oracle(o.oracle, t.Target); ok {
						c.Refs = append(c.Refs, ref{Y: v, Label: "oracle" + o.suffix, Color: "#555555"})
					}
				}
			}
			if !recorded {
				c.Series = nil
			}
			add(c, missing(mp.kind))
		}
	}
	// The plots first, then what could not be drawn.
	slices.SortStableFunc(out, func(a, b figure) int {
		return cmpBool(a.Chart == nil, b.Chart == nil)
	})
	return out
}

func cmpBool(a, b bool) int {
	switch {
	case a == b:
		return 0
	case a:
		return 1
	}
	return -1
}

// stepPoints is a run's loss curve over the steps.
func stepPoints(r *Run) []point {
	var pts []point
	for _, e := range r.Epochs {
		for _, p := range e.StepLoss {
			pts = append(pts, point{float64(p.Step), p.Loss})
		}
	}
	return pts
}

// missing says why a plot has nothing to draw.
func missing(kind string) string {
	switch kind {
	case "loss-validation", "auc-validation", "rmse-validation":
		return "Not recorded: no run was validated during training (no --eval_data_path)."
	case "auc-train", "rmse-train":
		return "Not recorded: no run computed training metrics (--train_metrics_steps 0)."
	case "step-loss":
		return "Not recorded: the metrics.json predates the loss curve (written by an older mtlrank); train again to get it."
	}
	return "Not recorded in the metrics.json."
}

// gates are a run's gate weights per expert over the epochs: one plot per
// gate, from the validation metrics, else the training metrics.
func gates(r *Run) gateGroup {
	g := gateGroup{Run: r.Label}
	src, name := validation, "validation"
	if !hasGates(r, validation) {
		src, name = training, "training batches"
	}
	experts := map[string]int{}
	var order []string
	for _, e := range r.Epochs {
		for k := range src(e) {
			gate, i, ok := parseGateKey(k)
			if !ok {
				continue
			}
			if _, seen := experts[gate]; !seen {
				order = append(order, gate)
			}
			experts[gate] = max(experts[gate], i+1)
		}
	}
	if len(order) == 0 {
		g.Empty = "No gate weights recorded: the model has no gates (mlp)"
		if !strings.HasPrefix(r.Model, "model=mlp") {
			g.Empty = "No gate weights recorded: they are measured on validation data or training batches, and this run had neither (no --eval_data_path, --train_metrics_steps 0), or its metrics.json predates them"
		}
		g.Empty += "."
		return g
	}
	slices.Sort(order)
	for _, gate := range order {
		c := chart{Kind: "gates", Title: "Gate " + gate + " (mean weight on " + name + ")", XLabel: "epoch", YLabel: "mean gate weight",
			Markers: true, XName: "epoch", From0: true, NonNeg: true, AtMost1: true}
		for i := range experts[gate] {
			key := metrics.GateKey(gate, i)
			pts, _ := epochPoints(r, key, func(e Epoch, k string) (float64, bool) {
				v, ok := src(e)[k]
				return v, ok
			})
			c.Series = append(c.Series, series{Name: "expert " + strconv.Itoa(i), Color: color(i), Points: pts})
		}
		if v, ok := c.layout(); ok {
			g.Charts = append(g.Charts, figure{Chart: &v, Title: c.Title})
		} else {
			g.Charts = append(g.Charts, figure{Title: c.Title, Empty: "Every value is undefined."})
		}
	}
	return g
}

func hasGates(r *Run, src func(Epoch) metrics.Results) bool {
	for _, e := range r.Epochs {
		for k := range src(e) {
			if strings.HasPrefix(k, "gate/") {
				return true
			}
		}
	}
	return false
}

// parseGateKey splits "gate/<gate>/expert_<i>" (the gate name may hold
// slashes).
func parseGateKey(k string) (string, int, bool) {
	rest, ok := strings.CutPrefix(k, "gate/")
	if !ok {
		return "", 0, false
	}
	j := strings.LastIndex(rest, "/expert_")
	if j <= 0 {
		return "", 0, false
	}
	i, err := strconv.Atoi(rest[j+len("/expert_"):])
	if err != nil || i < 0 || i > 1<<16 {
		return "", 0, false
	}
	return rest[:j], i, true
}

// config is the configuration side by side, rows that differ marked.
func config(runs []*Run) configTable {
	ct := configTable{}
	vals := map[string][]string{}
	var keys []string
	set := func(i int, k, v string) {
		if _, ok := vals[k]; !ok {
			vals[k] = make([]string, len(runs))
			keys = append(keys, k)
		}
		vals[k][i] = v
	}
	for i, r := range runs {
		ct.Runs = append(ct.Runs, r.Label)
		if len(r.Args) > 0 {
			set(i, "command line", "mtlrank train "+strings.Join(r.Args, " "))
		}
		set(i, "summary", r.Model)
		set(i, "device", r.Device)
		if r.TrainBatchSize > 0 {
			set(i, "train_batch_size", strconv.Itoa(r.TrainBatchSize))
		}
		set(i, "train data", r.TrainData)
		set(i, "eval data", r.EvalData)
	}
	fixed := len(keys)
	for i, r := range runs {
		for _, s := range r.Config {
			set(i, s.Key, s.Value)
		}
	}
	slices.Sort(keys[fixed:])
	for _, k := range keys {
		v := vals[k]
		ct.Rows = append(ct.Rows, configRow{Key: k, Values: v, Differ: len(runs) > 1 && slices.ContainsFunc(v, func(s string) bool { return s != v[0] })})
	}
	return ct
}

// notes lists what a run's metrics.json lacks, so that a missing plot is
// never mistaken for a bug.
func notes(r *Run) []string {
	var out []string
	stepLoss, val, train := false, false, false
	for _, e := range r.Epochs {
		stepLoss = stepLoss || len(e.StepLoss) > 0
		val = val || e.Validation != nil
		train = train || e.Train != nil
	}
	if !stepLoss {
		out = append(out, "no loss curve over the steps (the metrics.json predates it)")
	}
	if !val {
		out = append(out, "no validation during training (no --eval_data_path): no validation curves")
	}
	if !train {
		out = append(out, "no training metrics (--train_metrics_steps 0): no training AUC curve")
	}
	if r.Oracle == nil {
		out = append(out, "no oracle: the data does not record one (only synthetic data knows its true probabilities)")
	}
	if len(r.Config) == 0 {
		out = append(out, "the configuration is recorded as its one-line summary only (the metrics.json predates the full configuration)")
	}
	if r.Eval == nil {
		out = append(out, "no evaluation after training: the final metrics are those of the last epoch")
	}
	return out
}

var pageTemplate = template.Must(template.New("page").Parse(pageHTML))
