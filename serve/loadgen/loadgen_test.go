package loadgen

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/mtlrank/mtlrank/serve/servetest"
)

// TestRun measures a small model briefly and checks the table: one row per
// protocol and concurrency, every request answered.
func TestRun(t *testing.T) {
	repo := t.TempDir()
	servetest.WriteVersion(t, repo, "ranker", "1", "mlp", 1, true)
	var out, errOut bytes.Buffer
	err := Run(context.Background(), []string{"--model_repository", repo, "--duration", "300ms", "--max_requests", "200",
		"--concurrency", "1,3", "--candidates", "16", "--max_batch", "64", "--warmup", "2", "--threads", "1", "--workers", "1"}, &out, &errOut)
	require.NoError(t, err, errOut.String())
	text := out.String()
	assert.NotContains(t, text, "errors, the first", text)
	for _, p := range []string{"inproc", "http", "grpc"} {
		for _, c := range []string{"1", "3"} {
			// protocol, concurrency, requests > 0, errors 0
			assert.Regexp(t, regexp.MustCompile(`(?m)^\s*`+p+`\s+`+c+`\s+[1-9]\d*\s+0\s`), text)
		}
	}
	// settings, blank, run line, header, 6 rows
	assert.Equal(t, 1+1+1+1+6, len(strings.Split(strings.TrimSpace(text), "\n")), text)
	assert.Regexp(t, `run 1 of 1, load average (\d+\.\d+ \d+\.\d+ \d+\.\d+|unknown)`, text)
	assert.NotContains(t, text, "median")

	// Two runs and their medians.
	out.Reset()
	traceFile := filepath.Join(t.TempDir(), "load.trace")
	err = Run(context.Background(), []string{"--model_repository", repo, "--duration", "100ms", "--max_requests", "50", "--repeat", "2", "--trace", traceFile,
		"--concurrency", "2", "--protocols", "inproc,grpc", "--candidates", "8", "--max_batch", "64", "--warmup", "1", "--threads", "1", "--workers", "1"}, &out, &errOut)
	require.NoError(t, err, errOut.String())
	text = out.String()
	assert.Contains(t, text, "run 2 of 2")
	med := text[strings.Index(text, "median of 2 runs"):]
	assert.Regexp(t, regexp.MustCompile(`(?m)^\s*grpc\s+2\s+[1-9]\d*\s+0\s.*%`), med)
	st, err := os.Stat(traceFile)
	require.NoError(t, err)
	assert.Positive(t, st.Size(), "empty execution trace")

	for _, args := range [][]string{
		{"--concurrency", "0"},
		{"--protocols", "smtp"},
		{"--candidates", "2000"},
		{"--repeat", "0"},
	} {
		require.Error(t, Run(context.Background(), args, &out, &errOut), "%v", args)
	}
}

// The median table takes each column's median over the runs (the mean of
// the middle two for an even count) and sums the errors.
func TestMedianRows(t *testing.T) {
	run := func(rate, p50, vs float64, errs int) []row {
		return []row{{protocol: "grpc", concurrency: 8, rate: rate, p50: p50, vs: vs, errors: errs}}
	}
	cases := []struct {
		name string
		runs [][]row
		want row
	}{
		{"odd", [][]row{run(10, 3, 0.7, 0), run(30, 1, 0.6, 1), run(20, 2, 0.9, 0)},
			row{protocol: "grpc", concurrency: 8, rate: 20, p50: 2, vs: 0.7, errors: 1}},
		{"even", [][]row{run(10, 4, 0.5, 2), run(40, 1, 0.8, 3), run(20, 2, 0.6, 0), run(30, 3, 0.7, 0)},
			row{protocol: "grpc", concurrency: 8, rate: 25, p50: 2.5, vs: 0.65, errors: 5}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got := medianRows(tc.runs)
			require.Len(t, got, 1)
			assert.Equal(t, tc.want.protocol, got[0].protocol)
			assert.InDelta(t, tc.want.rate, got[0].rate, 1e-9)
			assert.InDelta(t, tc.want.p50, got[0].p50, 1e-9)
			assert.InDelta(t, tc.want.vs, got[0].vs, 1e-9)
			assert.Equal(t, tc.want.errors, got[0].errors)
		})
	}
}
