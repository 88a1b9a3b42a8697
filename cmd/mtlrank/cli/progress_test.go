package cli

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/mtlrank/mtlrank/mtl"
)

// TestRateText: no rate before minRateElapsed and minRateUpdates; then the
// examples over the elapsed time, and the ETA of the rest at that rate.
func TestRateText(t *testing.T) {
	cases := []struct {
		name        string
		done, total int64
		updates     int
		elapsed     time.Duration
		want        string
	}{
		{"first update, microseconds in", 1024, 200000, 1, 4 * time.Microsecond, ""},
		{"first update, a slow first step", 1024, 200000, 1, 3 * time.Second, ""},
		{"many updates, too early", 50 * 1024, 200000, 50, 999 * time.Millisecond, ""},
		{"two updates, one second", 2048, 200000, 2, time.Second, "2048 ex/s, ETA 1m37s"},
		{"steady", 100000, 200000, 98, 2 * time.Second, "50000 ex/s, ETA 2s"},
		{"ETA rounds to seconds", 1000, 2500, 4, 2 * time.Second, "500 ex/s, ETA 3s"},
		{"done: no ETA", 200000, 200000, 196, 4 * time.Second, "50000 ex/s"},
		{"nothing done", 0, 100, 3, 2 * time.Second, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			assert.Equal(t, tc.want, rateText(tc.done, tc.total, tc.updates, tc.elapsed))
		})
	}
}

// TestProgressShowsRateWhenMeaningful drives a bar with a fake clock: the
// first updates, a few microseconds in, draw no rate; once a second has
// passed the label carries the examples per second since the start.
func TestProgressShowsRateWhenMeaningful(t *testing.T) {
	var buf bytes.Buffer
	start := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	clock := start
	p := newProgress(&buf, 10240, "epoch 1/1", 0, func() time.Time { return clock })
	clock = start.Add(4 * time.Microsecond)
	p.add(1024)
	clock = start.Add(500 * time.Millisecond)
	p.add(1024)
	assert.Contains(t, buf.String(), "epoch 1/1")
	assert.NotContains(t, buf.String(), "ex/s", "no rate in the first second")
	clock = start.Add(1500 * time.Millisecond)
	p.add(1024)
	out := buf.String()
	last := out[strings.LastIndex(out, "\r\r")+2:]
	assert.Contains(t, last, "epoch 1/1 2048 ex/s, ETA 4s", "3072 examples in 1.5s; 7168 left: 3.5s")
	assert.Contains(t, last, "(3072/10240)")
	p.finish()
	var hidden *progress
	hidden.add(5) // a hidden bar ignores updates
	hidden.finish()
}

// TestPassBarsDrawReports drives the bars of a trainer's reports with a
// fake clock: a bar per pass, labelled with the pass and, for a training
// epoch, the running loss of steps 1, 11, 21...; the rate appears once a
// second has passed, and a finished pass clears its bar.
func TestPassBarsDrawReports(t *testing.T) {
	var buf bytes.Buffer
	start := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	clock := start
	bars := newPassBars(&buf, 0, func() time.Time { return clock })
	last := func() string {
		out := buf.String()
		return out[strings.LastIndex(out, "\r")+1:]
	}
	epoch := mtl.Progress{Phase: "epoch 1/2", Train: true, Total: 12 * 100}
	bars.report(epoch)
	for step := 1; step <= 12; step++ {
		clock = start.Add(time.Duration(step) * 200 * time.Millisecond)
		r := epoch
		r.Steps, r.Done, r.Loss = step, int64(step*100), 1/float64(step)
		bars.report(r)
		switch step {
		case 1:
			assert.Contains(t, last(), "epoch 1/2 loss 1.0000 ", "the loss of the first step")
			assert.Contains(t, last(), "(100/1200")
		case 2:
			assert.Contains(t, last(), "epoch 1/2 loss 1.0000 ", "the label is kept between refreshes")
			assert.NotContains(t, buf.String(), "ex/s", "no rate in the first second")
		case 11:
			// 1100 examples in 2.2s: 500 ex/s; 100 left: 0.2s
			assert.Contains(t, last(), "epoch 1/2 loss 0.0909 500 ex/s, ETA 0s")
			assert.Contains(t, last(), "(1100/1200")
		}
	}
	bars.report(mtl.Progress{Phase: "epoch 1/2", Train: true, Steps: 12, Done: 1200, Total: 1200, Loss: 1.0 / 12, Finished: true})
	assert.Equal(t, "", strings.TrimSpace(last()), "a finished bar is cleared")

	bars.report(mtl.Progress{Phase: "validation 1/2", Total: 100})
	bars.report(mtl.Progress{Phase: "validation 1/2", Steps: 1, Done: 50, Total: 100})
	assert.Contains(t, last(), "validation 1/2 ")
	assert.NotContains(t, last(), "loss", "no loss outside training")
	assert.Contains(t, last(), "(50/100")
}

// timedWriter records when each write came.
type timedWriter struct {
	buf    bytes.Buffer
	writes []timedWrite
}

type timedWrite struct {
	at   time.Time
	text string
}

func (w *timedWriter) Write(p []byte) (int, error) {
	w.writes = append(w.writes, timedWrite{time.Now(), string(p)})
	return w.buf.Write(p)
}

// TestTrainBarNoEarlyRate: a training run draws its bar without any
// examples-per-second figure in its first second (the first updates once
// showed rates like 237146827 ex/s). The bar starts after the command
// does, so no write within a second of the command's start may carry a
// rate.
func TestTrainBarNoEarlyRate(t *testing.T) {
	dir := t.TempDir()
	var out bytes.Buffer
	bar := &timedWriter{}
	e := &env{stdout: &out, stderr: &out, progress: bar}
	start := time.Now()
	err := runTrain(context.Background(), e, []string{"--synth_rows", "2048", "--synth_eval_rows", "256",
		"--epochs", "1", "--train_batch_size", "256", "--output_path", dir})
	require.NoError(t, err, out.String())
	assert.Contains(t, bar.buf.String(), "epoch 1/1", "the bar was drawn")
	for _, w := range bar.writes {
		if w.at.Sub(start) < time.Second {
			assert.NotContains(t, w.text, "ex/s", "a rate %v after the start", w.at.Sub(start))
		}
	}
}
