package report

import (
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
)

// chart is a line plot before layout: what is drawn, not where.
type chart struct {
	// Kind classifies the plot for readers of the page's structure
	// ("loss", "auc", "gates", ...); Title, XLabel and YLabel are shown.
	Kind, Title, XLabel, YLabel string
	Series                      []series
	// Refs are horizontal reference lines (the oracle).
	Refs []ref
	// Markers draws a dot per point (epoch plots); a dense step curve
	// gets none.
	Markers bool
	// XName names the x value in the dots' tooltips ("epoch", "step").
	XName string
	// NonNeg and AtMost1 say the values cannot leave [0, inf) or
	// (-inf, 1], so the axis does not either; From0 puts 0 on the axis.
	NonNeg, AtMost1, From0 bool
	// LogY draws the y axis on a log scale when every value is positive
	// and they span at least a decade (task losses differ by orders of
	// magnitude between frequent and rare tasks).
	LogY bool
}

type series struct {
	Name   string
	Color  string
	Dashed bool
	Thin   bool    // a dense curve
	Points []point // Y NaN: a gap (an undefined metric)
}

type point struct{ X, Y float64 }

type ref struct {
	Y     float64
	Label string
	Color string
}

// Layout of every plot, in SVG user units (pixels at scale 1).
const (
	chartW      = 600
	plotLeft    = 56
	plotRight   = 16
	plotTop     = 34
	plotH       = 220
	axisBelow   = 44 // tick labels and the x axis label
	legendRow   = 18
	legendChar  = 6.6 // mean width of a legend character at 12px
	tickChar    = 6.2 // width of a digit at 11px
	legendEntry = 46  // swatch and gaps
)

// palette is Tableau 10: distinguishable, also in print.
var palette = []string{"#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f",
	"#edc948", "#b07aa1", "#ff9da7", "#9c755f", "#bab0ac"}

func color(i int) string { return palette[i%len(palette)] }

// svgChart is a laid-out chart, what the template draws.
type svgChart struct {
	Kind, Title, XLabel, YLabel string
	W, H                        int
	PlotX, PlotY, PlotW, PlotH  float64
	PlotBottom, PlotRight       float64
	XLabelX, XLabelY            float64
	YLabelX, YLabelY            float64
	XTicks, YTicks              []tick
	Series                      []svgSeries
	Refs                        []svgRef
	Legend                      []legendItem
}

type tick struct {
	Pos   float64
	Label string
}

type svgSeries struct {
	Name, Color string
	Dash        string
	Width       float64
	Paths       []string // one per run of defined points
	Dots        []dot
}

type dot struct {
	X, Y float64
	Tip  string
	// Undefined marks an undefined metric, drawn as an open dot on the x
	// axis.
	Undefined bool
}

type svgRef struct {
	Y, X1, X2    float64
	Label, Color string
	LabelX       float64
}

type legendItem struct {
	X, X2, Y    float64
	Color, Dash string
	Name        string
	Ref         bool
}

// layout computes the geometry of c. It returns ok false when c has no
// defined point to draw.
func (c chart) layout() (svgChart, bool) {
	xmin, xmax := math.Inf(1), math.Inf(-1)
	ymin, ymax := math.Inf(1), math.Inf(-1)
	for _, s := range c.Series {
		for _, p := range s.Points {
			if math.IsNaN(p.Y) {
				continue
			}
			xmin, xmax = math.Min(xmin, p.X), math.Max(xmax, p.X)
			ymin, ymax = math.Min(ymin, p.Y), math.Max(ymax, p.Y)
		}
	}
	if math.IsInf(xmin, 1) {
		return svgChart{}, false
	}
	for _, r := range c.Refs {
		ymin, ymax = math.Min(ymin, r.Y), math.Max(ymax, r.Y)
	}
	if xmin == xmax {
		xmin, xmax = xmin-0.5, xmax+0.5
	}
	ys := newYScale(ymin, ymax, c)
	xt := xTicks(xmin, xmax)

	// The left margin fits the longest tick label beside the axis label.
	left := float64(plotLeft)
	for _, l := range ys.labels {
		left = math.Max(left, 30+tickChar*float64(len(l)))
	}
	v := svgChart{Kind: c.Kind, Title: c.Title, XLabel: c.XLabel, YLabel: c.YLabel, W: chartW,
		PlotX: left, PlotY: plotTop, PlotW: chartW - left - plotRight, PlotH: plotH}
	if ys.log {
		v.YLabel += " (log scale)"
	}
	v.PlotBottom, v.PlotRight = v.PlotY+v.PlotH, v.PlotX+v.PlotW
	sx := func(x float64) float64 { return round1(v.PlotX + (x-xmin)/(xmax-xmin)*v.PlotW) }
	sy := func(y float64) float64 { return round1(v.PlotBottom - ys.frac(y)*v.PlotH) }
	for _, x := range xt {
		v.XTicks = append(v.XTicks, tick{sx(x), strconv.FormatFloat(x, 'f', -1, 64)})
	}
	for i, y := range ys.ticks {
		v.YTicks = append(v.YTicks, tick{sy(y), ys.labels[i]})
	}
	v.XLabelX, v.XLabelY = v.PlotX+v.PlotW/2, v.PlotBottom+36
	v.YLabelX, v.YLabelY = 14, v.PlotY+v.PlotH/2

	for _, s := range c.Series {
		out := svgSeries{Name: s.Name, Color: s.Color, Width: 2}
		if s.Thin {
			out.Width = 1.2
		}
		if s.Dashed {
			out.Dash = "6 4"
		}
		var path strings.Builder
		flush := func() {
			if path.Len() > 0 {
				out.Paths = append(out.Paths, path.String())
				path.Reset()
			}
		}
		for _, p := range s.Points {
			if math.IsNaN(p.Y) {
				flush()
				if c.Markers {
					out.Dots = append(out.Dots, dot{sx(p.X), v.PlotBottom, fmt.Sprintf("%s, %s %s: undefined", s.Name, c.XName, fmtX(p.X)), true})
				}
				continue
			}
			cmd := "L"
			if path.Len() == 0 {
				cmd = "M"
			}
			fmt.Fprintf(&path, "%s%g %g", cmd, sx(p.X), sy(p.Y))
			if c.Markers {
				out.Dots = append(out.Dots, dot{sx(p.X), sy(p.Y), fmt.Sprintf("%s, %s %s: %s", s.Name, c.XName, fmtX(p.X), fmtY(p.Y)), false})
			}
		}
		flush()
		v.Series = append(v.Series, out)
	}
	// Reference lines are labelled in place unless a label would overlap
	// one already placed; the legend names every one.
	var labelled []float64
	for _, r := range c.Refs {
		y := sy(r.Y)
		label := r.Label + " " + fmtY(r.Y)
		if slices.ContainsFunc(labelled, func(l float64) bool { return math.Abs(l-y) < 12 }) {
			label = ""
		} else {
			labelled = append(labelled, y)
		}
		v.Refs = append(v.Refs, svgRef{Y: y, X1: v.PlotX, X2: v.PlotRight, Label: label, Color: r.Color, LabelX: v.PlotRight - 4})
	}

	// The legend flows in rows below the x axis label.
	x, y := v.PlotX, v.PlotBottom+axisBelow+legendRow
	place := func(item legendItem) {
		w := legendEntry + legendChar*float64(len([]rune(item.Name)))
		if x > v.PlotX && x+w > float64(v.W) {
			x, y = v.PlotX, y+legendRow
		}
		item.X, item.X2, item.Y = round1(x), round1(x+20), round1(y)
		v.Legend = append(v.Legend, item)
		x += w
	}
	for _, s := range v.Series {
		place(legendItem{Color: s.Color, Dash: s.Dash, Name: s.Name})
	}
	for _, r := range c.Refs {
		place(legendItem{Color: r.Color, Dash: "2 3", Name: r.Label + " " + fmtY(r.Y), Ref: true})
	}
	v.H = int(y + 10)
	return v, true
}

// yScale maps values to the fraction of the plot's height and holds the
// ticks.
type yScale struct {
	lo, hi float64 // in scale space (log10 of the values on a log scale)
	log    bool
	ticks  []float64
	labels []string
}

func (s yScale) frac(y float64) float64 {
	if s.log {
		y = math.Log10(y)
	}
	return (y - s.lo) / (s.hi - s.lo)
}

func newYScale(ymin, ymax float64, c chart) yScale {
	if c.LogY && ymin > 0 && ymax/ymin >= 10 {
		return logScale(ymin, ymax)
	}
	if c.From0 {
		ymin = math.Min(ymin, 0)
	}
	if ymin == ymax {
		d := math.Max(math.Abs(ymin)*0.05, 0.01)
		ymin, ymax = ymin-d, ymax+d
	}
	pad := (ymax - ymin) * 0.06
	lo, hi, step := niceRange(ymin-pad, ymax+pad, 6)
	if c.NonNeg && ymin >= 0 {
		lo = math.Max(lo, 0)
	}
	if c.AtMost1 && ymax <= 1 {
		hi = math.Min(hi, 1)
	}
	s := yScale{lo: lo, hi: hi}
	dec := decimals(step)
	for i := 0; ; i++ {
		y := lo + float64(i)*step
		if y > hi+step/2 {
			break
		}
		s.ticks = append(s.ticks, y)
		s.labels = append(s.labels, strconv.FormatFloat(y, 'f', dec, 64))
	}
	return s
}

// logScale spans [ymin, ymax] (both > 0) with ticks at 1, 2 and 5 times
// the powers of ten (only the powers when the span is wide).
func logScale(ymin, ymax float64) yScale {
	llo, lhi := math.Log10(ymin), math.Log10(ymax)
	pad := (lhi - llo) * 0.06
	s := yScale{lo: llo - pad, hi: lhi + pad, log: true}
	mult := []float64{1, 2, 5}
	if s.hi-s.lo > 3 {
		mult = []float64{1}
	}
	for k := math.Floor(s.lo); k <= math.Ceil(s.hi); k++ {
		for _, m := range mult {
			v := m * math.Pow(10, k)
			if l := math.Log10(v); l >= s.lo && l <= s.hi {
				s.ticks = append(s.ticks, v)
				s.labels = append(s.labels, strconv.FormatFloat(v, 'g', 3, 64))
			}
		}
	}
	return s
}

// niceRange widens [lo, hi] to multiples of a step of 1, 2 or 5 times a
// power of ten that gives about n ticks.
func niceRange(lo, hi float64, n int) (nlo, nhi, step float64) {
	step = niceStep((hi - lo) / float64(n-1))
	nlo = math.Floor(lo/step) * step
	nhi = math.Ceil(hi/step) * step
	return nlo, nhi, step
}

func niceStep(raw float64) float64 {
	p := math.Pow(10, math.Floor(math.Log10(raw)))
	switch f := raw / p; {
	case f <= 1:
		return p
	case f <= 2:
		return 2 * p
	case f <= 5:
		return 5 * p
	}
	return 10 * p
}

// decimals is the number of decimals that shows multiples of step exactly.
func decimals(step float64) int {
	return max(0, int(-math.Floor(math.Log10(step)+1e-9)))
}

// xTicks returns integer ticks (epochs, steps) over [lo, hi], at most 8.
func xTicks(lo, hi float64) []float64 {
	step := math.Max(1, niceStep((hi-lo)/7))
	var out []float64
	for x := math.Ceil(lo/step) * step; x <= hi; x += step {
		out = append(out, x)
	}
	return out
}

func round1(v float64) float64 { return math.Round(v*10) / 10 }

func fmtX(x float64) string { return strconv.FormatFloat(x, 'f', -1, 64) }

// fmtY shows a metric with 4 significant decimals, as the CLI's tables.
func fmtY(y float64) string {
	if math.IsNaN(y) {
		return "undefined"
	}
	if a := math.Abs(y); a != 0 && (a < 1e-3 || a >= 1e5) {
		return strconv.FormatFloat(y, 'g', 4, 64)
	}
	return strconv.FormatFloat(y, 'f', 4, 64)
}
