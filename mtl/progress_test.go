package mtl

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
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
