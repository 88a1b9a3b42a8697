package loadgen

import (
	"bytes"
	"context"
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
	assert.Equal(t, 1+1+1+6, len(strings.Split(strings.TrimSpace(text), "\n")), text)

	for _, args := range [][]string{
		{"--concurrency", "0"},
		{"--protocols", "smtp"},
		{"--candidates", "2000"},
	} {
		require.Error(t, Run(context.Background(), args, &out, &errOut), "%v", args)
	}
}
