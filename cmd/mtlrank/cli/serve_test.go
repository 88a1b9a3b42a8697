package cli

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/mtlrank/mtlrank/serve/servetest"
)

// syncBuffer is a bytes.Buffer safe for the server's log and the test.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestServeCommand starts `mtlrank serve` on free loopback ports, reads the
// ports from its log, calls it and stops it as a signal would.
func TestServeCommand(t *testing.T) {
	repo := t.TempDir()
	servetest.WriteVersion(t, repo, "ranker", "1", "mlp", 3, true)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var stdout, stderr syncBuffer
	done := make(chan int)
	go func() {
		done <- RunContext(ctx, []string{"serve", "--model_repository", repo, "--http_port", "0", "--grpc_port", "0",
			"--max_batch", "16", "--threads", "1", "--workers", "1"}, &stdout, &stderr)
	}()
	// The two endpoints start one after the other: wait for both lines.
	httpRE := regexp.MustCompile(`msg="HTTP endpoint listening" address=(127\.0\.0\.1:\d+)`)
	grpcRE := regexp.MustCompile(`msg="gRPC endpoint listening" address=127\.0\.0\.1:\d+`)
	var addr string
	require.Eventually(t, func() bool {
		log := stderr.String()
		if m := httpRE.FindStringSubmatch(log); m != nil && grpcRE.MatchString(log) {
			addr = m[1]
			return true
		}
		return false
	}, 30*time.Second, 10*time.Millisecond, "no HTTP and gRPC addresses in the log: %s", stderr.String())

	resp, err := http.Get("http://" + addr + "/v2/health/ready")
	require.NoError(t, err)
	resp.Body.Close()
	assert.Equal(t, 200, resp.StatusCode)
	body := `{"inputs":[
		{"name":"user_id","datatype":"BYTES","shape":[2],"data":["alice","bob"]},
		{"name":"item_id","datatype":"INT64","shape":[2],"data":[1001,1002]},
		{"name":"city","datatype":"BYTES","shape":[2],"data":["paris","lyon"]},
		{"name":"price","datatype":"FP32","shape":[2],"data":[3.5,null]}]}`
	resp, err = http.Post("http://"+addr+"/v2/models/ranker/infer", "application/json", strings.NewReader(body))
	require.NoError(t, err)
	data, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	assert.Equal(t, 200, resp.StatusCode, string(data))
	assert.Contains(t, string(data), `"name":"click/binary_output","datatype":"FP32","shape":[2]`)

	cancel()
	select {
	case code := <-done:
		assert.Equal(t, 0, code, stderr.String())
	case <-time.After(30 * time.Second):
		t.Fatal("serve did not stop")
	}
	assert.Contains(t, stderr.String(), "draining requests in flight")
}

func TestServeUsage(t *testing.T) {
	for _, tc := range []struct {
		args []string
		msg  string
	}{
		{nil, "--model_repository is required"},
		{[]string{"--model_repository", "x", "--http_port", "70000"}, "--http_port 70000 is not a port"},
		{[]string{"--model_repository", "x", "--http_port", "-1", "--grpc_port", "-1"}, "leave nothing to serve"},
		{[]string{"--model_repository", "x", "--max_batch", "0"}, "--max_batch must be >= 1"},
		{[]string{"--model_repository", "x", "--max_queue_delay", "soon"}, "--max_queue_delay: invalid value"},
	} {
		var stdout, stderr bytes.Buffer
		code := Run(append([]string{"serve"}, tc.args...), &stdout, &stderr)
		assert.Equal(t, 2, code, "%v", tc.args)
		assert.Contains(t, stderr.String(), tc.msg, "%v", tc.args)
	}
	var stdout, stderr bytes.Buffer
	code := Run([]string{"serve", "--model_repository", t.TempDir(), "--http_port", "0", "--grpc_port", "-1"}, &stdout, &stderr)
	assert.Equal(t, 1, code)
	assert.Contains(t, stderr.String(), "holds no model folder")
}
