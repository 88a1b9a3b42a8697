package report

// pageHTML is the page: inline style, inline SVG, no script, no external
// resource. Every value is inserted by html/template, which escapes it for
// its context (text, attribute).
const pageHTML = `<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{{.Title}}</title>
<style>
:root { --fg: #1d2330; --muted: #5f6b7a; --line: #dde2e8; --bg: #ffffff; --band: #f6f8fa; --accent: #4e79a7; }
* { box-sizing: border-box; }
body { margin: 0; font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, "DejaVu Sans", sans-serif; color: var(--fg); background: var(--band); }
main { max-width: 1300px; margin: 0 auto; padding: 24px 28px 48px; }
header { margin-bottom: 8px; }
h1 { font-size: 24px; margin: 0 0 4px; font-weight: 650; }
h2 { font-size: 18px; margin: 32px 0 12px; font-weight: 650; border-bottom: 1px solid var(--line); padding-bottom: 6px; }
h3 { font-size: 15px; margin: 18px 0 8px; font-weight: 600; }
.sub, .source, .empty { color: var(--muted); }
.card { background: var(--bg); border: 1px solid var(--line); border-radius: 8px; padding: 12px 14px; }
table { border-collapse: collapse; background: var(--bg); font-variant-numeric: tabular-nums; }
th, td { padding: 5px 10px; border-bottom: 1px solid var(--line); text-align: right; white-space: nowrap; }
th { font-weight: 600; color: var(--muted); background: var(--band); }
td.l, th.l { text-align: left; }
td.wrap { white-space: normal; min-width: 260px; max-width: 340px; text-align: left; }
td.path { white-space: normal; word-break: break-all; min-width: 120px; max-width: 220px; text-align: left; color: var(--muted); font-size: 12.5px; }
td.ref { color: var(--muted); background: #f3f6fa; }
.table-card { overflow-x: auto; margin-bottom: 16px; }
.table-card .source { margin-top: 6px; font-size: 12.5px; }
tr.differ td { background: #fff6e0; }
.swatch { display: inline-block; width: 10px; height: 10px; border-radius: 2px; margin-right: 6px; vertical-align: middle; }
.caption { font-weight: 600; margin-bottom: 2px; }
.grid { display: grid; grid-template-columns: repeat(auto-fill, minmax(610px, 1fr)); gap: 16px; align-items: start; }
figure { margin: 0; }
figure .empty { padding: 12px 2px; }
svg.chart { display: block; max-width: 100%; height: auto; font-family: inherit; }
svg.chart .title { font-size: 14px; font-weight: 600; fill: var(--fg); }
svg.chart .tick { font-size: 11px; fill: var(--muted); }
svg.chart .axis-label { font-size: 12px; fill: var(--muted); }
svg.chart .grid-line { stroke: #edf0f3; }
svg.chart .frame { fill: none; stroke: #c4ccd6; }
svg.chart .legend text { font-size: 12px; fill: var(--fg); }
svg.chart .ref text { font-size: 11px; }
.config td { text-align: left; white-space: normal; word-break: break-word; max-width: 520px; }
.config td.key { font-family: ui-monospace, "DejaVu Sans Mono", monospace; font-size: 12.5px; white-space: nowrap; }
ul.notes { margin: 0; padding-left: 20px; }
</style>
</head>
<body>
<main>
<header>
<h1>{{.Title}}</h1>
<div class="sub">{{len .Runs}} run{{if .Multiple}}s{{end}}, drawn by mtlrank report from metrics.json. Hover over a dot for its value.</div>
</header>

<section id="runs">
<h2>Runs</h2>
<div class="card" style="overflow-x:auto">
<table>
<tr><th class="l">run</th><th class="l">model</th><th class="l">device</th><th>epochs</th><th>steps</th><th>examples</th><th>examples/s</th><th>seconds</th><th class="l">train data</th><th class="l">eval data</th><th class="l">metrics.json</th></tr>
{{range .Runs}}<tr><td class="l"><span class="swatch" style="background: {{.Color}}"></span>{{.Label}}</td><td class="wrap">{{.Model}}</td><td class="l">{{.Device}}</td><td>{{.Epochs}}{{if .Best}}<br><span class="sub">{{.Best}}</span>{{end}}</td><td>{{.Steps}}</td><td>{{.Examples}}</td><td>{{.Speed}}</td><td>{{.Seconds}}</td><td class="path" title="{{.TrainData}}">{{.TrainData}}</td><td class="path" title="{{.EvalData}}">{{.EvalData}}</td><td class="path" title="{{.Path}}">{{.Path}}</td></tr>
{{end}}</table>
</div>
</section>

<section id="final">
<h2>Final metrics</h2>
{{range .Final}}<div class="card table-card">
<div class="caption">{{.Title}}</div>
<table class="final">
<tr>{{range .HeaderCells}}<th{{if .Label}} class="l"{{end}}>{{.Text}}</th>{{end}}</tr>
{{range .RowCells}}<tr>{{range .}}<td{{if .Label}} class="l"{{else if .Ref}} class="ref"{{end}}>{{.Text}}</td>{{end}}</tr>
{{end}}</table>
<div class="source">{{range .Sources}}{{.}}<br>{{end}}</div>
</div>
{{else}}<div class="card empty">No final metrics: no run was evaluated, during or after training, nor computed training metrics.</div>
{{end}}</section>

<section id="curves">
<h2>Training curves</h2>
<div class="grid">
{{range .Curves}}{{template "figure" .}}{{end}}</div>
</section>

<section id="gates">
<h2>Gate weights per expert</h2>
{{range .Gates}}{{if $.Multiple}}<h3>{{.Run}}</h3>{{end}}
{{if .Empty}}<div class="card empty">{{.Empty}}</div>{{else}}<div class="grid">
{{range .Charts}}{{template "figure" .}}{{end}}</div>{{end}}
{{end}}</section>

<section id="config">
<h2>Configuration</h2>
<div class="card" style="overflow-x:auto">
<table class="config">
<tr><th class="l">setting</th>{{range .Config.Runs}}<th class="l">{{.}}</th>{{end}}</tr>
{{range .Config.Rows}}<tr{{if .Differ}} class="differ"{{end}}><td class="key">{{.Key}}</td>{{range .Values}}<td>{{.}}</td>{{end}}</tr>
{{end}}</table>
</div>
{{if .Multiple}}<div class="source">Highlighted rows differ between the runs.</div>{{end}}
</section>

{{if .Notes}}<section id="notes">
<h2>Not recorded</h2>
<div class="card"><ul class="notes">
{{range .Notes}}<li>{{if $.Multiple}}<b>{{.Run}}</b>: {{end}}{{.Text}}</li>
{{end}}</ul></div>
</section>{{end}}
</main>
</body>
</html>
{{define "figure"}}<figure class="card">{{if .Chart}}{{template "chart" .Chart}}{{else}}<div class="caption">{{.Title}}</div><div class="empty" data-empty="{{.Title}}">{{.Empty}}</div>{{end}}</figure>
{{end}}
{{define "chart"}}<svg class="chart" data-kind="{{.Kind}}" viewBox="0 0 {{.W}} {{.H}}" width="{{.W}}" height="{{.H}}" role="img" aria-label="{{.Title}}">
<text class="title" x="{{.PlotX}}" y="20">{{.Title}}</text>
{{range .YTicks}}<line class="grid-line" x1="{{$.PlotX}}" x2="{{$.PlotRight}}" y1="{{.Pos}}" y2="{{.Pos}}"/>{{end}}
<rect class="frame" x="{{.PlotX}}" y="{{.PlotY}}" width="{{.PlotW}}" height="{{.PlotH}}"/>
<g class="axis y">{{range .YTicks}}<text class="tick" x="{{$.PlotX}}" y="{{.Pos}}" dx="-6" dy="4" text-anchor="end">{{.Label}}</text>{{end}}
<text class="axis-label" x="{{.YLabelX}}" y="{{.YLabelY}}" text-anchor="middle" transform="rotate(-90 {{.YLabelX}} {{.YLabelY}})">{{.YLabel}}</text></g>
<g class="axis x">{{range .XTicks}}<line x1="{{.Pos}}" x2="{{.Pos}}" y1="{{$.PlotBottom}}" y2="{{$.PlotBottom}}" stroke="#c4ccd6"/><text class="tick" x="{{.Pos}}" y="{{$.PlotBottom}}" dy="16" text-anchor="middle">{{.Label}}</text>{{end}}
<text class="axis-label" x="{{.XLabelX}}" y="{{.XLabelY}}" text-anchor="middle">{{.XLabel}}</text></g>
{{range .Refs}}<g class="ref"><line x1="{{.X1}}" x2="{{.X2}}" y1="{{.Y}}" y2="{{.Y}}" stroke="{{.Color}}" stroke-width="1.5" stroke-dasharray="2 3"/>{{if .Label}}<text x="{{.LabelX}}" y="{{.Y}}" dy="-4" text-anchor="end" fill="{{.Color}}">{{.Label}}</text>{{end}}</g>
{{end}}{{range $s := .Series}}<g class="series" data-name="{{$s.Name}}">{{range $s.Paths}}<path d="{{.}}" fill="none" stroke="{{$s.Color}}" stroke-width="{{$s.Width}}" stroke-linejoin="round"{{if $s.Dash}} stroke-dasharray="{{$s.Dash}}"{{end}}/>{{end}}{{range $s.Dots}}<circle class="pt{{if .Undefined}} undefined{{end}}" cx="{{.X}}" cy="{{.Y}}" r="3.5" {{if .Undefined}}fill="#ffffff" stroke="{{$s.Color}}"{{else}}fill="{{$s.Color}}" stroke="#ffffff"{{end}} stroke-width="1.2"><title>{{.Tip}}</title></circle>{{end}}</g>
{{end}}<g class="legend">{{range .Legend}}<g class="legend-item"><line x1="{{.X}}" x2="{{.X2}}" y1="{{.Y}}" y2="{{.Y}}" stroke="{{.Color}}" stroke-width="{{if .Ref}}1.5{{else}}2.5{{end}}" transform="translate(0 -4)" {{if .Dash}}stroke-dasharray="{{.Dash}}"{{end}}/><text x="{{.X}}" y="{{.Y}}" dx="26">{{.Name}}</text></g>{{end}}</g>
</svg>{{end}}`
