package report

import (
	"bytes"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/net/html"
)

// render writes the page of runs and parses it as a browser would.
func render(t *testing.T, runs ...*Run) (*html.Node, string) {
	t.Helper()
	var b bytes.Buffer
	require.NoError(t, Write(&b, runs))
	doc, err := html.Parse(bytes.NewReader(b.Bytes()))
	require.NoError(t, err)
	return doc, b.String()
}

func attr(n *html.Node, key string) (string, bool) {
	for _, a := range n.Attr {
		if a.Key == key {
			return a.Val, true
		}
	}
	return "", false
}

func hasClass(n *html.Node, class string) bool {
	v, _ := attr(n, "class")
	return slices.Contains(strings.Fields(v), class)
}

// find returns the elements below n (n included) for which match holds.
func find(n *html.Node, match func(*html.Node) bool) []*html.Node {
	var out []*html.Node
	var walk func(*html.Node)
	walk = func(n *html.Node) {
		if n.Type == html.ElementNode && match(n) {
			out = append(out, n)
		}
		for c := n.FirstChild; c != nil; c = c.NextSibling {
			walk(c)
		}
	}
	walk(n)
	return out
}

func tagClass(tag, class string) func(*html.Node) bool {
	return func(n *html.Node) bool { return n.Data == tag && (class == "" || hasClass(n, class)) }
}

func text(n *html.Node) string {
	var b strings.Builder
	var walk func(*html.Node)
	walk = func(n *html.Node) {
		if n.Type == html.TextNode {
			b.WriteString(n.Data)
		}
		for c := n.FirstChild; c != nil; c = c.NextSibling {
			walk(c)
		}
	}
	walk(n)
	return b.String()
}

// charts maps data-kind to the page's plots of that kind.
func charts(doc *html.Node) map[string][]*html.Node {
	out := map[string][]*html.Node{}
	for _, svg := range find(doc, tagClass("svg", "chart")) {
		k, _ := attr(svg, "data-kind")
		out[k] = append(out[k], svg)
	}
	return out
}

func seriesOf(svg *html.Node) []*html.Node { return find(svg, tagClass("g", "series")) }

func dots(g *html.Node) []*html.Node { return find(g, tagClass("circle", "pt")) }

func axisLabels(svg *html.Node) []string {
	var out []string
	for _, n := range find(svg, tagClass("text", "axis-label")) {
		out = append(out, text(n))
	}
	return out
}

func cy(t *testing.T, n *html.Node) float64 {
	v, ok := attr(n, "cy")
	require.True(t, ok)
	f, err := strconv.ParseFloat(v, 64)
	require.NoError(t, err)
	return f
}

// TestPageStructure: one plot per metric, one line per task (per expert
// for gates), one dot per epoch, the axis labels, the oracle lines, and
// values and their order on the axis as the fixture defines them.
func TestPageStructure(t *testing.T) {
	f := defaultFixture()
	r := writeRun(t, t.TempDir(), "run1", f)
	doc, page := render(t, r)
	c := charts(doc)

	want := []struct {
		kind           string
		plots, series  int
		points         int
		xLabel, yLabel string
		refs           int
	}{
		{"loss-train", 1, 3, 3, "epoch", "loss", 0},
		// click's 0.125 to watching_times' 1.44: more than a decade
		{"loss-validation", 1, 3, 3, "epoch", "loss (log scale)", 0},
		{"auc-validation", 1, 2, 3, "epoch", "ROC-AUC", 2},
		{"auc-train", 1, 2, 3, "epoch", "ROC-AUC", 2},
		{"rmse-validation", 1, 1, 3, "epoch", "RMSE", 1},
		{"rmse-train", 1, 1, 3, "epoch", "RMSE", 1},
		{"step-loss", 1, 1, 0, "step", "loss, window mean", 0},
		{"gates", 2, 3, 3, "epoch", "mean gate weight", 0},
	}
	total := 0
	for _, w := range want {
		require.Len(t, c[w.kind], w.plots, w.kind)
		total += w.plots
		for _, svg := range c[w.kind] {
			ss := seriesOf(svg)
			require.Len(t, ss, w.series, w.kind)
			for _, s := range ss {
				assert.Len(t, dots(s), w.points, w.kind)
				assert.NotEmpty(t, find(s, tagClass("path", "")), "%s: a line is drawn", w.kind)
			}
			assert.Equal(t, []string{w.yLabel, w.xLabel}, axisLabels(svg), w.kind)
			assert.Len(t, find(svg, tagClass("g", "ref")), w.refs, w.kind)
		}
	}
	assert.Len(t, find(doc, tagClass("svg", "chart")), total, "no other plot")

	// The series are the tasks, the gate series the experts.
	var names []string
	for _, s := range seriesOf(c["loss-train"][0]) {
		n, _ := attr(s, "data-name")
		names = append(names, n)
	}
	assert.Equal(t, f.tasks(), names)
	for _, g := range c["gates"] {
		var experts []string
		for _, s := range seriesOf(g) {
			n, _ := attr(s, "data-name")
			experts = append(experts, n)
		}
		assert.Equal(t, []string{"expert 0", "expert 1", "expert 2"}, experts)
	}

	// The AUC of click rises over the epochs: its dots climb (SVG y grows
	// downwards), and their tooltips give the values.
	click := seriesOf(c["auc-validation"][0])[0]
	ds := dots(click)
	for e := 1; e <= 3; e++ {
		assert.Equal(t, fmt.Sprintf("click/binary_output, epoch %d: %.4f", e, aucAt(0, e)), text(ds[e-1]))
		if e > 1 {
			assert.Less(t, cy(t, ds[e-1]), cy(t, ds[e-2]), "epoch %d above epoch %d", e, e-1)
		}
	}
	// Gate weights of expert j are (j+1)/6 at every epoch: expert 2's dots
	// lie above expert 0's, at one height per expert.
	gs := seriesOf(c["gates"][0])
	e0, e2 := dots(gs[0]), dots(gs[2])
	assert.Equal(t, cy(t, e0[0]), cy(t, e0[2]))
	assert.Less(t, cy(t, e2[0]), cy(t, e0[0]))
	assert.Contains(t, text(e2[1]), fmt.Sprintf("%.4f", gateWeight(2, 3)))

	// The final table puts each AUC next to its oracle and the gap.
	rows := find(doc, tagClass("tr", ""))
	var clickRow []string
	for _, tr := range rows {
		tds := find(tr, tagClass("td", ""))
		if len(tds) > 0 && text(tds[0]) == "click/binary_output" {
			for _, td := range tds {
				clickRow = append(clickRow, text(td))
			}
		}
	}
	require.NotEmpty(t, clickRow)
	assert.Equal(t, []string{"click/binary_output", fmt.Sprintf("%.4f", aucAt(0, 3)), fmt.Sprintf("%.4f", oracleAUC(0)),
		fmt.Sprintf("%.4f", aucAt(0, 3)-oracleAUC(0))}, clickRow[:4])

	assert.NotContains(t, page, "NaN")
	assert.NotContains(t, page, "Inf")
	assert.Contains(t, page, "mtlrank train --model mmoe --epochs 3", "the command line is shown")
	assertSelfContained(t, doc, page)
}

// assertSelfContained: nothing on the page is fetched or run: no script,
// no external resource, no URL in any attribute or in the style.
func assertSelfContained(t *testing.T, doc *html.Node, page string) {
	t.Helper()
	for _, tag := range []string{"script", "link", "img", "iframe", "object", "embed", "image", "use", "a", "form", "base", "meta[http-equiv]"} {
		assert.Empty(t, find(doc, tagClass(tag, "")), "<%s>", tag)
	}
	for _, n := range find(doc, func(*html.Node) bool { return true }) {
		for _, a := range n.Attr {
			k := strings.ToLower(a.Key)
			assert.False(t, strings.HasPrefix(k, "on"), "event handler %s on <%s>", a.Key, n.Data)
			assert.NotContains(t, []string{"href", "src", "xlink:href", "action", "srcset", "poster"}, k, "<%s %s>", n.Data, a.Key)
			v := strings.ToLower(a.Val)
			assert.False(t, strings.Contains(v, "http:") || strings.Contains(v, "https:") || strings.Contains(v, "javascript:") || strings.Contains(v, "url("),
				"URL in <%s %s=%q>", n.Data, a.Key, a.Val)
		}
	}
	for _, st := range find(doc, tagClass("style", "")) {
		css := text(st)
		assert.NotContains(t, css, "url(")
		assert.NotContains(t, css, "@import")
	}
	assert.NotContains(t, page, "http://")
	assert.NotContains(t, page, "https://")
}

// TestHostileStrings: run labels, task names, config values and paths
// are shown as text, never as markup.
func TestHostileStrings(t *testing.T) {
	evil := []string{
		`</title><script>alert(1)</script>`,
		`"><img src=x onerror=alert(2)>`,
		`' onmouseover='alert(3)`,
		`<svg onload=alert(4)>&amp;`,
		`javascript:alert(5)`,
	}
	f := defaultFixture()
	f.binary = []string{evil[3] + "/binary_output"}
	f.regression = nil
	f.gates = map[string]int{evil[1]: 2}
	f.model = evil[2]
	f.args = []string{"--model", evil[0]}
	f.configExtra = map[string]any{"activation": evil[1], evil[2]: evil[4]}
	r := writeRun(t, t.TempDir(), "x", f)
	r.Label = evil[0]
	doc, page := render(t, r)
	assertSelfContained(t, doc, page)
	for _, tag := range []string{"script", "img"} {
		assert.Empty(t, find(doc, tagClass(tag, "")))
	}
	assert.Len(t, find(doc, tagClass("svg", "")), len(find(doc, tagClass("svg", "chart"))), "only the page's own plots are SVG")
	all := text(doc)
	for i, s := range evil {
		assert.Contains(t, all, s, "hostile string %d is shown as text", i)
	}
	// In attributes too: the series of the hostile task is named by it.
	var names []string
	for _, s := range find(doc, tagClass("g", "series")) {
		n, _ := attr(s, "data-name")
		names = append(names, n)
	}
	assert.Contains(t, names, evil[3]+"/binary_output")
}

// TestOldFile: a metrics.json of an older mtlrank (no loss curve, no
// configuration, no task list) renders, its tasks taken from the task
// losses, and the page says what is missing.
func TestOldFile(t *testing.T) {
	f := defaultFixture()
	f.stepLoss, f.withTasks, f.withConfig, f.train = false, false, false, false
	r := writeRun(t, t.TempDir(), "old", f)
	assert.Equal(t, []Task{
		{"click/binary_output", "click", Binary}, {"like/binary_output", "like", Binary},
		{"watching_times/regression_output", "watching_times", Regression},
	}, r.Tasks)
	doc, page := render(t, r)
	c := charts(doc)
	assert.Empty(t, c["step-loss"])
	assert.Empty(t, c["auc-train"])
	assert.Len(t, c["auc-validation"], 1)
	assert.Len(t, seriesOf(c["auc-validation"][0]), 2)
	empties := map[string]string{}
	for _, n := range find(doc, tagClass("div", "empty")) {
		k, _ := attr(n, "data-empty")
		empties[k] = text(n)
	}
	assert.Contains(t, empties["Training loss over the steps (objective)"], "predates the loss curve")
	assert.Contains(t, empties["Training AUC"], "--train_metrics_steps 0")
	assert.Contains(t, page, "one-line summary only")
	assertSelfContained(t, doc, page)
}

// TestNoEvaluation: a run trained without evaluation data or training
// metrics has its loss curves, and the page says why the rest is missing.
func TestNoEvaluation(t *testing.T) {
	f := defaultFixture()
	f.validation, f.train, f.noEval = false, false, true
	r := writeRun(t, t.TempDir(), "bare", f)
	doc, page := render(t, r)
	c := charts(doc)
	assert.Len(t, c["loss-train"], 1)
	assert.Len(t, c["step-loss"], 1)
	assert.Empty(t, c["auc-validation"])
	assert.Empty(t, c["gates"])
	assert.Empty(t, find(doc, tagClass("table", "final")))
	assert.Contains(t, page, "No final metrics: no run was evaluated")
	assert.Contains(t, page, "No gate weights recorded")
	assertSelfContained(t, doc, page)
}

// TestUndefinedAUC: an AUC recorded as null (one class seen) is drawn as
// an open dot on the axis with a gap in the line, and "undefined" in the
// table.
func TestUndefinedAUC(t *testing.T) {
	f := defaultFixture()
	f.regression, f.train = nil, false
	data := f.metricsJSON(t)
	// Epoch 2 of click, and the final evaluation, undefined.
	data = bytes.Replace(data, []byte(fmt.Sprintf(`"click/binary_output/auc": %v,`, aucAt(0, 2))), []byte(`"click/binary_output/auc": null,`), 1)
	data = bytes.Replace(data, []byte(fmt.Sprintf(`"click/binary_output/auc": %v,`, aucAt(0, 3))), []byte(`"click/binary_output/auc": null,`), -1)
	r, err := Parse(data)
	require.NoError(t, err)
	r.Label = "u"
	assert.True(t, math.IsNaN(r.Epochs[1].Validation["click/binary_output/auc"]))
	doc, page := render(t, r)
	click := seriesOf(charts(doc)["auc-validation"][0])[0]
	ds := dots(click)
	require.Len(t, ds, 3)
	assert.True(t, hasClass(ds[1], "undefined"))
	assert.True(t, hasClass(ds[2], "undefined"))
	assert.Contains(t, text(ds[1]), "undefined")
	assert.Len(t, find(click, tagClass("path", "")), 1, "the line stops at the gap")
	assert.Contains(t, page, "<td>undefined</td>")
	assert.NotContains(t, page, "NaN")
}

// TestAUCUndefinedThroughout: a task whose AUC is undefined at every
// epoch gets no plot but the reason.
func TestAUCUndefinedThroughout(t *testing.T) {
	f := defaultFixture()
	f.binary, f.regression, f.train = []string{"share/binary_output"}, nil, false
	data := f.metricsJSON(t)
	for e := 1; e <= f.epochs; e++ {
		data = bytes.ReplaceAll(data, []byte(fmt.Sprintf(`"share/binary_output/auc": %v,`, aucAt(0, e))), []byte(`"share/binary_output/auc": null,`))
	}
	r, err := Parse(data)
	require.NoError(t, err)
	r.Label = "rare"
	doc, _ := render(t, r)
	assert.Empty(t, charts(doc)["auc-validation"])
	var msgs []string
	for _, n := range find(doc, tagClass("div", "empty")) {
		if k, _ := attr(n, "data-empty"); k == "Validation AUC" {
			msgs = append(msgs, text(n))
		}
	}
	require.Len(t, msgs, 1)
	assert.Contains(t, msgs[0], "Undefined at every epoch")
}

// TestCompareRuns: several runs share axes, one line per run; a run
// without gates says so; differing settings are marked.
func TestCompareRuns(t *testing.T) {
	dir := t.TempDir()
	a := writeRun(t, dir, "mmoe", defaultFixture())
	g := defaultFixture()
	g.gates = nil
	g.model = "model=mlp mlp_layers=[64]"
	g.configExtra = map[string]any{"model": "mlp"}
	g.epochs = 2
	b := writeRun(t, dir, "mlp", g)
	doc, page := render(t, a, b)
	c := charts(doc)
	// A plot per task and metric, a line per run.
	require.Len(t, c["auc-validation"], 2)
	require.Len(t, c["loss-train"], 3)
	for _, svg := range append(c["auc-validation"], c["loss-train"]...) {
		ss := seriesOf(svg)
		require.Len(t, ss, 2)
		assert.Len(t, dots(ss[0]), 3)
		assert.Len(t, dots(ss[1]), 2)
	}
	require.Len(t, c["step-loss"], 1)
	assert.Len(t, seriesOf(c["step-loss"][0]), 2)
	assert.Len(t, c["gates"], 2, "the gates of the MMoE run")
	assert.Contains(t, page, "the model has no gates (mlp)")
	// Same data: one oracle line per AUC plot.
	assert.Len(t, find(c["auc-validation"][0], tagClass("g", "ref")), 1)
	var differ []string
	for _, tr := range find(doc, tagClass("tr", "differ")) {
		differ = append(differ, text(find(tr, tagClass("td", "key"))[0]))
	}
	assert.Equal(t, []string{"summary", "model"}, differ)
	assertSelfContained(t, doc, page)

	b.Label = a.Label
	assert.ErrorContains(t, Write(&bytes.Buffer{}, []*Run{a, b}), "two runs are labelled")
}

func TestLabels(t *testing.T) {
	for _, tc := range []struct {
		paths, want []string
	}{
		{[]string{"/x/a/metrics.json", "/x/b/metrics.json"}, []string{"a", "b"}},
		{[]string{"/x/a/out/metrics.json", "/y/b/out/metrics.json"}, []string{"a/out", "b/out"}},
		{[]string{"/x/a/out/metrics.json", "/x/b/out/metrics.json", "/x/c/metrics.json"}, []string{"a/out", "b/out", "c"}},
		{[]string{"/x/a/metrics.json", "/x/a/metrics.json"}, []string{"a", "a (2)"}},
		{[]string{"/x/a/m1.json", "/x/a/m2.json"}, []string{"a", "a (2)"}},
	} {
		assert.Equal(t, tc.want, Labels(tc.paths), "%v", tc.paths)
	}
}

// TestParseErrors: bad input is refused with a message that says what is
// wrong and where.
func TestParseErrors(t *testing.T) {
	good := string(defaultFixture().metricsJSON(t))
	replace := func(old, new string) string {
		require.Contains(t, good, old)
		return strings.Replace(good, old, new, 1)
	}
	for _, tc := range []struct {
		name, data, want string
	}{
		{"truncated", good[:len(good)/2], "not valid JSON: it ends early, at line "},
		{"bad character", replace(`"steps": 10,`, `"steps": 10,,`), "not valid JSON: line "},
		{"not JSON", "epochs: 3", "not valid JSON: line 1, column 1"},
		{"NaN literal", replace(`"loss": 1,`, `"loss": NaN,`), "NaN is not JSON"},
		{"Infinity literal", replace(`"loss": 1,`, "\"loss\": Infinity,"), "Infinity is not JSON"},
		{"eval metrics", `{"command": "eval", "model": "ckpt", "eval": {"loss": 0.5}, "rows": 10}`, "'mtlrank eval'"},
		{"other file", `{"name": "x"}`, "neither \"command\" nor \"epochs\""},
		{"other command", `{"command": "predict", "epochs": []}`, `its command is "predict"`},
		{"no epochs", `{"command": "train", "epochs": []}`, "no training epoch"},
		{"array", `[1, 2]`, "line 1, column"},
		{"null loss", replace(`"loss": 1,`, `"loss": null,`), "epoch 1: loss is missing or null"},
		{"negative loss", replace(`"loss": 1,`, `"loss": -1,`), "epoch 1: loss is -1"},
		{"null task loss", replace(fmt.Sprintf(`"click/binary_output": %v`, taskLoss(0, 1)), `"click/binary_output": null`),
			`epoch 1: step_loss[0].task_loss["click/binary_output"] is missing or null`},
		{"wrong type", replace(`"epoch": 2`, `"epoch": "two"`), `field "epochs.epoch" holds a JSON string, want int`},
		{"metric not a number", replace(`"click/binary_output/pr_auc": 0.3`, `"click/binary_output/pr_auc": "0.3"`),
			`field "epochs.train" holds a JSON string, want float64`},
		{"epochs out of order", replace(`"epoch": 2`, `"epoch": 1`), "epoch 1 follows epoch 1"},
		{"AUC above 1", replace(fmt.Sprintf(`"click/binary_output/auc": %v`, aucAt(0, 1)), `"click/binary_output/auc": 1.5`),
			"epoch 1: training metrics: click/binary_output/auc is 1.5, outside [0, 1]"},
		{"NaN logloss", replace(`"click/binary_output/logloss": 0.4`, `"click/binary_output/logloss": null`),
			"click/binary_output/logloss is null (NaN): the model's predictions or loss were NaN"},
		{"NaN validation loss", replace(`"watching_times/regression_output/loss"`, `"x": 0, "watching_times/regression_output/loss": null, "y"`),
			"watching_times/regression_output/loss is null (NaN)"},
		{"tasks disagree", replace(`"name": "like/binary_output"`, `"name": "liked/binary_output"`), `"tasks" lists`},
		{"bad kind", replace(`"kind": "regression"`, `"kind": "ranking"`), `kind "ranking"`},
		{"step loss out of order", replace(`"step": 4`, `"step": 1`), "step_loss[1]: step 1 follows step 2"},
		{"config not an object", replace(`"config": {`, `"config": [], "x": {`), `"config": want a JSON object`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse([]byte(tc.data))
			require.Error(t, err)
			assert.Contains(t, err.Error(), tc.want)
		})
	}
}

// TestLoadNamesFile: Load's errors name the file.
func TestLoadNamesFile(t *testing.T) {
	dir := t.TempDir()
	missing := filepath.Join(dir, "none", "metrics.json")
	_, err := Load(missing)
	require.Error(t, err)
	assert.Contains(t, err.Error(), missing)

	bad := filepath.Join(dir, "metrics.json")
	require.NoError(t, os.WriteFile(bad, []byte("{\n  \"command\": \"train\",\n  \"epochs\": [\n"), 0o644))
	_, err = Load(bad)
	require.Error(t, err)
	assert.True(t, strings.HasPrefix(err.Error(), bad+": "), err.Error())
	assert.Contains(t, err.Error(), "ends early, at line 4")
}

// TestScales: ticks are round numbers that cover the data; a log scale
// is used for values spanning a decade or more, and never for values
// that include zero.
func TestScales(t *testing.T) {
	s := newYScale(0.612, 0.748, chart{})
	assert.LessOrEqual(t, s.ticks[0], 0.612)
	assert.GreaterOrEqual(t, s.ticks[len(s.ticks)-1], 0.748)
	// padded by 6%: [0.6038, 0.7562] in steps of 0.05 (0.15/5 = 0.03 rounded up to 1, 2 or 5)
	assert.Equal(t, []string{"0.60", "0.65", "0.70", "0.75", "0.80"}, s.labels)

	s = newYScale(0.005, 1.3, chart{LogY: true})
	assert.True(t, s.log)
	assert.Equal(t, []string{"0.005", "0.01", "0.02", "0.05", "0.1", "0.2", "0.5", "1"}, s.labels)
	assert.InDelta(t, 0.5, s.frac(math.Sqrt(0.005*1.3)), 1e-9, "the geometric mean lies in the middle")

	s = newYScale(0, 1.3, chart{LogY: true, NonNeg: true})
	assert.False(t, s.log, "zero has no logarithm")
	assert.Equal(t, 0.0, s.lo, "a loss axis does not go below 0")

	s = newYScale(0.2, 0.3, chart{From0: true, NonNeg: true, AtMost1: true})
	assert.Equal(t, 0.0, s.lo)

	s = newYScale(0.9, 0.99, chart{AtMost1: true})
	assert.LessOrEqual(t, s.hi, 1.0)

	// One epoch, one value: a point in the middle, no NaN.
	v, ok := chart{Series: []series{{Name: "a", Points: []point{{1, 0.5}}}}, Markers: true}.layout()
	require.True(t, ok)
	assert.InDelta(t, v.PlotX+v.PlotW/2, v.Series[0].Dots[0].X, 0.1)
	assert.InDelta(t, v.PlotY+v.PlotH/2, v.Series[0].Dots[0].Y, 0.1)

	_, ok = chart{Series: []series{{Name: "a", Points: []point{{1, math.NaN()}}}}}.layout()
	assert.False(t, ok, "nothing defined to draw")
}
