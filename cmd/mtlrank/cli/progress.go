package cli

import (
	"fmt"
	"io"
	"time"

	"github.com/schollz/progressbar/v3"

	"github.com/mtlrank/mtlrank/mtl"
)

// A rate (and the ETA that follows from it) is shown once the bar has run
// for minRateElapsed and seen minRateUpdates updates. progressbar's own
// rate divides the first batch by the microseconds since its first
// render, which printed figures like "237146827 ex/s"; over less than a
// second the first batches measure start-up (reading, allocation, the
// output-bias calibration), not throughput.
const (
	minRateElapsed = time.Second
	minRateUpdates = 2
)

// rateText describes the throughput of done examples out of total after
// updates updates and elapsed time: "183412 ex/s, ETA 7s", or "" while
// the rule above says a rate would mean nothing.
func rateText(done, total int64, updates int, elapsed time.Duration) string {
	if updates < minRateUpdates || elapsed < minRateElapsed || done <= 0 {
		return ""
	}
	rate := float64(done) / elapsed.Seconds()
	s := fmt.Sprintf("%.0f ex/s", rate)
	if total > done {
		eta := time.Duration(float64(total-done) / rate * float64(time.Second))
		s += ", ETA " + eta.Round(time.Second).String()
	}
	return s
}

// progress is a progress bar over examples whose label carries the rate
// and ETA computed by rateText. Its methods do nothing on a nil progress
// (a hidden bar).
type progress struct {
	bar     *progressbar.ProgressBar
	now     func() time.Time
	start   time.Time
	label   string
	done    int64
	total   int64
	updates int
}

// newProgress draws a bar over total examples on w, redrawn at most once
// per throttle; now is the clock of the rate.
func newProgress(w io.Writer, total int64, label string, throttle time.Duration, now func() time.Time) *progress {
	bar := progressbar.NewOptions64(total,
		progressbar.OptionSetWriter(w),
		progressbar.OptionSetDescription(label),
		progressbar.OptionShowCount(),
		progressbar.OptionSetPredictTime(false),
		progressbar.OptionSetElapsedTime(true),
		progressbar.OptionSetWidth(24),
		progressbar.OptionThrottle(throttle),
		progressbar.OptionClearOnFinish(),
	)
	return &progress{bar: bar, now: now, start: now(), label: label, total: total}
}

// setLabel changes the text before the rate.
func (p *progress) setLabel(label string) {
	if p != nil {
		p.label = label
	}
}

// add advances the bar by n examples.
func (p *progress) add(n int64) {
	if p == nil {
		return
	}
	p.done += n
	p.updates++
	desc := p.label
	if r := rateText(p.done, p.total, p.updates, p.now().Sub(p.start)); r != "" {
		desc += " " + r
	}
	p.bar.Describe(desc)
	_ = p.bar.Add64(n)
}

// finish completes the bar (and clears it).
func (p *progress) finish() {
	if p != nil {
		_ = p.bar.Finish()
	}
}

// barRedraw is how often a bar is redrawn at most.
const barRedraw = 100 * time.Millisecond

// trainerProgress returns the mtl.TrainerOptions.OnProgress that draws the
// trainer's passes as bars on e.progress (nil, no reports, when there is
// no terminal to draw on or quiet is set).
func trainerProgress(e *env, quiet bool) func(mtl.Progress) {
	if quiet || e.progress == nil {
		return nil
	}
	return newPassBars(e.progress, barRedraw, time.Now).report
}

// passBars draws one bar per pass of a trainer's reports: a training epoch
// shows its running loss, refreshed every ten steps.
type passBars struct {
	w        io.Writer
	throttle time.Duration
	now      func() time.Time
	bar      *progress
	done     int64
}

func newPassBars(w io.Writer, throttle time.Duration, now func() time.Time) *passBars {
	return &passBars{w: w, throttle: throttle, now: now}
}

func (b *passBars) report(r mtl.Progress) {
	if r.Done == 0 && r.Steps == 0 && !r.Finished {
		b.bar = newProgress(b.w, r.Total, r.Phase, b.throttle, b.now)
		b.done = 0
		return
	}
	if b.bar == nil {
		return // a pass whose start was not reported
	}
	if r.Finished {
		b.bar.finish()
		b.bar = nil
		return
	}
	if r.Train && r.Steps%10 == 1 {
		b.bar.setLabel(fmt.Sprintf("%s loss %.4f", r.Phase, r.Loss))
	}
	b.bar.add(r.Done - b.done)
	b.done = r.Done
}
