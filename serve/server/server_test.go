package server_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/mtlrank/mtlrank/serve"
	"github.com/mtlrank/mtlrank/serve/server"
	"github.com/mtlrank/mtlrank/serve/servetest"
)

// start writes a repository with model "ranker" (version 1, with a
// workflow) and "plain" (version 1, no workflow) and starts a server on
// loopback ports.
func start(t *testing.T, opt serve.ModelOptions, tweak func(*server.Config)) (*server.Server, string) {
	t.Helper()
	repo := t.TempDir()
	servetest.WriteVersion(t, repo, "ranker", "1", "mmoe", 7, true)
	servetest.WriteVersion(t, repo, "plain", "1", "mlp", 8, false)
	if opt.MaxBatch == 0 {
		opt.MaxBatch = 64
	}
	if opt.Threads == 0 {
		opt.Threads = 1
	}
	if opt.Workers == 0 {
		opt.Workers = 2
	}
	cfg := server.Config{ModelRepository: repo, Model: opt, HTTPAddr: "127.0.0.1:0", GRPCAddr: "127.0.0.1:0",
		MaxRequestBytes: 1 << 20, RequestTimeout: 10 * time.Second, DrainTimeout: 10 * time.Second, Version: "test"}
	if tweak != nil {
		tweak(&cfg)
	}
	s, err := server.Start(cfg)
	require.NoError(t, err)
	t.Cleanup(func() { _ = s.Shutdown() })
	return s, repo
}

type tensor struct {
	Name     string  `json:"name"`
	Datatype string  `json:"datatype"`
	Shape    []int64 `json:"shape"`
	Data     any     `json:"data"`
}

// rawRequest is the JSON request of rows in raw values.
func rawRequest(rows []servetest.Row) map[string]any {
	n := int64(len(rows))
	users, cities := make([]string, n), make([]string, n)
	items := make([]int64, n)
	prices := make([]any, n)
	for i, r := range rows {
		users[i], items[i], cities[i] = r.User, r.Item, r.City
		if math.IsNaN(r.Price) {
			prices[i] = nil
		} else {
			prices[i] = r.Price
		}
	}
	return map[string]any{"id": "req-1", "inputs": []tensor{
		{"user_id", "BYTES", []int64{n}, users},
		{"item_id", "INT64", []int64{n}, items},
		{"city", "BYTES", []int64{n}, cities},
		{"price", "FP64", []int64{n}, prices},
	}}
}

func do(t *testing.T, method, url string, body any) (int, []byte) {
	t.Helper()
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case string:
		rd = strings.NewReader(b)
	default:
		data, err := json.Marshal(b)
		require.NoError(t, err)
		rd = bytes.NewReader(data)
	}
	req, err := http.NewRequest(method, url, rd)
	require.NoError(t, err)
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return resp.StatusCode, data
}

type inferResponse struct {
	ModelName    string `json:"model_name"`
	ModelVersion string `json:"model_version"`
	ID           string `json:"id"`
	Outputs      []struct {
		Name     string    `json:"name"`
		Datatype string    `json:"datatype"`
		Shape    []int64   `json:"shape"`
		Data     []float32 `json:"data"`
	} `json:"outputs"`
}

func infer(t *testing.T, base, model string, req any) inferResponse {
	t.Helper()
	code, body := do(t, "POST", base+"/v2/models/"+model+"/infer", req)
	require.Equal(t, http.StatusOK, code, string(body))
	var r inferResponse
	require.NoError(t, json.Unmarshal(body, &r))
	return r
}

func TestHTTPProtocol(t *testing.T) {
	s, repo := start(t, serve.ModelOptions{}, nil)
	base := "http://" + s.HTTPAddr()

	code, body := do(t, "GET", base+"/v2/health/live", nil)
	assert.Equal(t, 200, code)
	assert.JSONEq(t, `{"live":true}`, string(body))
	code, _ = do(t, "GET", base+"/v2/health/ready", nil)
	assert.Equal(t, 200, code)
	code, body = do(t, "GET", base+"/v2", nil)
	assert.Equal(t, 200, code)
	assert.JSONEq(t, `{"name":"mtlrank","version":"test","extensions":["model_repository"]}`, string(body))

	// Metadata lists raw and encoded inputs and one output per task.
	code, body = do(t, "GET", base+"/v2/models/ranker", nil)
	require.Equal(t, 200, code, string(body))
	assert.JSONEq(t, `{"name":"ranker","versions":["1"],"platform":"mtlrank",
		"inputs":[
		 {"name":"user_id","datatype":"BYTES","shape":[-1]},{"name":"user_id__encoded","datatype":"INT64","shape":[-1]},
		 {"name":"item_id","datatype":"BYTES","shape":[-1]},{"name":"item_id__encoded","datatype":"INT64","shape":[-1]},
		 {"name":"city","datatype":"BYTES","shape":[-1]},{"name":"city__encoded","datatype":"INT64","shape":[-1]},
		 {"name":"price","datatype":"FP32","shape":[-1]},{"name":"price__encoded","datatype":"FP32","shape":[-1]}],
		"outputs":[{"name":"click/binary_output","datatype":"FP32","shape":[-1]},{"name":"like/binary_output","datatype":"FP32","shape":[-1]}]}`, string(body))
	code, body = do(t, "GET", base+"/v2/models/plain/versions/1", nil)
	require.Equal(t, 200, code, string(body))
	assert.Contains(t, string(body), `{"name":"user_id","datatype":"INT64","shape":[-1]}`)
	assert.NotContains(t, string(body), "__encoded")
	code, body = do(t, "GET", base+"/v2/models/ranker/ready", nil)
	assert.Equal(t, 200, code)
	assert.JSONEq(t, `{"name":"ranker","version":"1","ready":true}`, string(body))
	code, _ = do(t, "GET", base+"/v2/models/ranker/versions/1/ready", nil)
	assert.Equal(t, 200, code)

	// Raw values through the workflow: the scores of the model on rows
	// encoded independently, bit for bit.
	rows := servetest.Rows(37, 0)
	rows[5].Price = math.NaN() // a missing price takes the fill value
	want := servetest.Score(t, repo+"/ranker/1", servetest.Encode(rows))
	r := infer(t, base, "ranker", rawRequest(rows))
	assert.Equal(t, "ranker", r.ModelName)
	assert.Equal(t, "1", r.ModelVersion)
	assert.Equal(t, "req-1", r.ID)
	require.Len(t, r.Outputs, 2)
	for _, o := range r.Outputs {
		assert.Equal(t, "FP32", o.Datatype)
		assert.Equal(t, []int64{37}, o.Shape)
		assert.Equal(t, want[o.Name], o.Data, o.Name)
	}

	// The same rows as encoded ids and values, shape [rows, 1], nested
	// data, INT32 ids, one requested output.
	enc := servetest.Encode(rows)
	nest := func(n int, f func(i int) any) [][]any {
		out := make([][]any, n)
		for i := range out {
			out[i] = []any{f(i)}
		}
		return out
	}
	n := int64(len(rows))
	req := map[string]any{"inputs": []tensor{
		{"user_id__encoded", "INT32", []int64{n, 1}, nest(len(rows), func(i int) any { return enc.Columns["user_id"].I32[i] })},
		{"item_id__encoded", "INT64", []int64{n, 1}, nest(len(rows), func(i int) any { return enc.Columns["item_id"].I32[i] })},
		{"city__encoded", "INT64", []int64{n, 1}, nest(len(rows), func(i int) any { return enc.Columns["city"].I32[i] })},
		{"price__encoded", "FP32", []int64{n, 1}, nest(len(rows), func(i int) any { return enc.Columns["price"].F32[i] })},
	}, "outputs": []map[string]string{{"name": "like/binary_output"}}}
	r = infer(t, base, "ranker", req)
	require.Len(t, r.Outputs, 1)
	assert.Equal(t, "like/binary_output", r.Outputs[0].Name)
	assert.Equal(t, want["like/binary_output"], r.Outputs[0].Data)
	assert.Empty(t, r.ID)

	// A model without a workflow takes encoded values under the feature names.
	wantPlain := servetest.Score(t, repo+"/plain/1", enc)
	req = map[string]any{"inputs": []tensor{
		{"user_id", "INT32", []int64{n}, enc.Columns["user_id"].I32},
		{"item_id", "INT32", []int64{n}, enc.Columns["item_id"].I32},
		{"city", "INT32", []int64{n}, enc.Columns["city"].I32},
		{"price", "FP32", []int64{n}, enc.Columns["price"].F32},
	}}
	code, body = do(t, "POST", base+"/v2/models/plain/versions/1/infer", req)
	require.Equal(t, 200, code, string(body))
	require.NoError(t, json.Unmarshal(body, &r))
	assert.Equal(t, wantPlain["click/binary_output"], r.Outputs[0].Data)
}

func TestHTTPBadRequests(t *testing.T) {
	s, _ := start(t, serve.ModelOptions{MaxBatch: 8}, func(c *server.Config) { c.MaxRequestBytes = 4096 })
	base := "http://" + s.HTTPAddr()
	good := func(edit func(in []tensor) []tensor) map[string]any {
		req := rawRequest(servetest.Rows(3, 0))
		req["inputs"] = edit(req["inputs"].([]tensor))
		return req
	}
	set := func(i int, f func(*tensor)) func([]tensor) []tensor {
		return func(in []tensor) []tensor { f(&in[i]); return in }
	}
	big := make([]string, 2000)
	for i := range big {
		big[i] = "alice"
	}
	cases := []struct {
		name   string
		method string
		path   string
		body   any
		status int
		msg    string
	}{
		{"not json", "POST", "/v2/models/ranker/infer", "{nope", 400, "not an inference request in JSON"},
		{"trailing data", "POST", "/v2/models/ranker/infer", `{"inputs":[]} {}`, 400, "after top-level value"},
		{"no inputs", "POST", "/v2/models/ranker/infer", `{"inputs":[]}`, 400, "has no inputs"},
		{"unknown model", "POST", "/v2/models/nope/infer", good(func(in []tensor) []tensor { return in }), 404, `unknown model "nope"`},
		{"unknown version", "POST", "/v2/models/ranker/versions/9/infer", good(func(in []tensor) []tensor { return in }), 404, `no version "9"`},
		{"unknown input", "POST", "/v2/models/ranker/infer", good(set(0, func(t *tensor) { t.Name = "usr_id" })), 400, `no input "usr_id"`},
		{"missing input", "POST", "/v2/models/ranker/infer", good(func(in []tensor) []tensor { return in[:3] }), 400, "missing input(s) price"},
		{"twice", "POST", "/v2/models/ranker/infer", good(func(in []tensor) []tensor {
			return append(in, tensor{"user_id__encoded", "INT64", []int64{3}, []int{2, 2, 2}})
		}), 400, "given twice"},
		{"shape vs data", "POST", "/v2/models/ranker/infer", good(set(1, func(t *tensor) { t.Shape = []int64{4} })), 400, `input "item_id": shape [4] holds 4 elements, the data has 3`},
		{"bad shape", "POST", "/v2/models/ranker/infer", good(set(1, func(t *tensor) { t.Shape = []int64{3, 2} })), 400, "want [rows] or [rows, 1]"},
		{"rows differ", "POST", "/v2/models/ranker/infer", good(set(1, func(t *tensor) { t.Shape, t.Data = []int64{2}, []int{1001, 1002} })), 400, "same first dimension"},
		{"too many rows", "POST", "/v2/models/ranker/infer", good(func(in []tensor) []tensor {
			for i := range in {
				in[i].Shape = []int64{9}
			}
			in[0].Data = big[:9]
			return in
		}), 400, "more than the model's max batch of 8"},
		{"id out of domain", "POST", "/v2/models/ranker/infer", good(func(in []tensor) []tensor {
			return append(in[1:], tensor{"user_id__encoded", "INT64", []int64{3}, []int{2, 99, 2}})
		}), 400, `input "user_id__encoded", row 1: id 99 outside the feature's domain [0, 6]`},
		{"float ids", "POST", "/v2/models/ranker/infer", good(func(in []tensor) []tensor {
			return append(in[1:], tensor{"user_id__encoded", "FP32", []int64{3}, []float64{2, 3, 2}})
		}), 400, "encoded ids are integers"},
		{"string for int", "POST", "/v2/models/ranker/infer", good(set(1, func(t *tensor) { t.Data = []any{1001, "x", 1003} })), 400, `input "item_id", element 1`},
		{"null id", "POST", "/v2/models/ranker/infer", good(set(1, func(t *tensor) { t.Data = []any{1001, nil, 1003} })), 400, "null is allowed only in FP32 and FP64"},
		{"bytes for price", "POST", "/v2/models/ranker/infer", good(set(3, func(t *tensor) { t.Datatype, t.Data = "BYTES", []string{"1", "2", "3"} })), 400, "a continuous feature takes numbers"},
		{"nan encoded", "POST", "/v2/models/ranker/infer", good(func(in []tensor) []tensor {
			return append(in[:3], tensor{"price__encoded", "FP32", []int64{3}, []any{1, nil, 2}})
		}), 400, `input "price__encoded", row 1: value NaN is not a finite float32`},
		{"fp16", "POST", "/v2/models/ranker/infer", good(set(3, func(t *tensor) { t.Datatype = "FP16" })), 400, `datatype "FP16" is not supported`},
		{"no datatype", "POST", "/v2/models/ranker/infer", good(set(3, func(t *tensor) { t.Datatype = "" })), 400, "has no datatype"},
		{"int8 range", "POST", "/v2/models/ranker/infer", good(set(1, func(t *tensor) { t.Datatype = "INT8" })), 400, "is not an INT8"},
		{"unknown output", "POST", "/v2/models/ranker/infer", func() any {
			r := good(func(in []tensor) []tensor { return in })
			r["outputs"] = []map[string]string{{"name": "click"}}
			return r
		}(), 400, `no output "click" (outputs: click/binary_output, like/binary_output)`},
		{"body too large", "POST", "/v2/models/ranker/infer", map[string]any{"inputs": []tensor{{"user_id", "BYTES", []int64{2000}, big}}}, 413, "exceeds 4096 bytes"},
		{"unknown endpoint", "GET", "/v2/nope", nil, 404, "no endpoint GET /v2/nope"},
		{"wrong method", "GET", "/v2/models/ranker/infer", nil, 405, "GET /v2/models/ranker/infer: use POST"},
		{"wrong method health", "POST", "/v2/health/live", nil, 405, "use GET"},
		{"metadata unknown model", "GET", "/v2/models/nope", nil, 404, `unknown model "nope"`},
		{"load params", "POST", "/v2/repository/models/ranker/load", `{"parameters":{"config":"{}"}}`, 400, "load parameters are not supported"},
		{"load unknown", "POST", "/v2/repository/models/nope/load", nil, 404, `model "nope" is not in the repository`},
		{"load bad name", "POST", "/v2/repository/models/..%2Franker/load", nil, 400, "bad model name"},
		{"unload unknown", "POST", "/v2/repository/models/nope/unload", nil, 404, `model "nope" is not loaded`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			code, body := do(t, tc.method, base+tc.path, tc.body)
			assert.Equal(t, tc.status, code, string(body))
			if tc.msg != "" {
				var e struct {
					Error string `json:"error"`
				}
				require.NoError(t, json.Unmarshal(body, &e), string(body))
				assert.Contains(t, e.Error, tc.msg)
			}
		})
	}
	// The server is still up and serves good requests.
	r := infer(t, base, "ranker", good(func(in []tensor) []tensor { return in }))
	assert.Len(t, r.Outputs, 2)
}

// TestDynamicBatchingConcurrent sends many concurrent requests of different sizes
// and checks that they were coalesced into shared batches and that every
// score equals the score of the request scored alone, bit for bit.
func TestDynamicBatchingConcurrent(t *testing.T) {
	s, repo := start(t, serve.ModelOptions{MaxBatch: 64, MaxQueueDelay: 20 * time.Millisecond, DynamicBatching: true, Workers: 1}, nil)
	base := "http://" + s.HTTPAddr()
	const clients = 24
	want := make([]map[string][]float32, clients)
	reqs := make([][]servetest.Row, clients)
	for c := range clients {
		reqs[c] = servetest.Rows(1+c%9*3, c*11)
		want[c] = servetest.Score(t, repo+"/ranker/1", servetest.Encode(reqs[c]))
	}
	var wg sync.WaitGroup
	for round := range 3 {
		for c := range clients {
			wg.Add(1)
			go func() {
				defer wg.Done()
				r := infer(t, base, "ranker", rawRequest(reqs[c]))
				for _, o := range r.Outputs {
					if !assert.Equal(t, want[c][o.Name], o.Data, "round %d client %d output %s", round, c, o.Name) {
						return
					}
				}
			}()
		}
		wg.Wait()
	}
	// Requests shared batches: fewer batches than requests.
	code, body := do(t, "GET", base+"/metrics", nil)
	require.Equal(t, 200, code)
	count := metricValue(t, string(body), `mtlrank_inference_batch_requests_count{model="ranker",version="1"}`)
	sum := metricValue(t, string(body), `mtlrank_inference_batch_requests_sum{model="ranker",version="1"}`)
	assert.Equal(t, float64(3*clients), sum)
	assert.Less(t, count, sum, "batches %v for %v requests: nothing was coalesced", count, sum)
}

func metricValue(t *testing.T, text, series string) float64 {
	t.Helper()
	for _, line := range strings.Split(text, "\n") {
		if v, ok := strings.CutPrefix(line, series+" "); ok {
			var f float64
			_, err := fmt.Sscan(v, &f)
			require.NoError(t, err)
			return f
		}
	}
	t.Fatalf("no series %s in the metrics", series)
	return 0
}

func TestMetrics(t *testing.T) {
	s, _ := start(t, serve.ModelOptions{}, nil)
	base := "http://" + s.HTTPAddr()
	infer(t, base, "ranker", rawRequest(servetest.Rows(5, 0)))
	do(t, "POST", base+"/v2/models/ranker/infer", `{"inputs":[{"name":"x","datatype":"INT64","shape":[1],"data":[1]}]}`)
	code, body := do(t, "GET", base+"/metrics", nil)
	require.Equal(t, 200, code)
	text := string(body)
	assert.Equal(t, 1.0, metricValue(t, text, `mtlrank_inference_requests_total{code="ok",model="ranker",version="1"}`))
	assert.Equal(t, 1.0, metricValue(t, text, `mtlrank_inference_failures_total{code="invalid_argument",model="ranker",version="1"}`))
	assert.Equal(t, 1.0, metricValue(t, text, `mtlrank_inference_request_duration_seconds_count{model="ranker",version="1"}`))
	assert.Equal(t, 1.0, metricValue(t, text, `mtlrank_inference_queue_duration_seconds_count{model="ranker",version="1"}`))
	assert.Equal(t, 5.0, metricValue(t, text, `mtlrank_inference_batch_rows_sum{model="ranker",version="1"}`))
	assert.Equal(t, 1.0, metricValue(t, text, `mtlrank_protocol_requests_total{code="400",protocol="http"}`))
	assert.Contains(t, text, "go_goroutines")
}

func TestRepositoryExtension(t *testing.T) {
	s, repo := start(t, serve.ModelOptions{}, nil)
	base := "http://" + s.HTTPAddr()
	code, body := do(t, "POST", base+"/v2/repository/index", nil)
	require.Equal(t, 200, code)
	assert.JSONEq(t, `[{"name":"plain","version":"1","state":"READY"},{"name":"ranker","version":"1","state":"READY"}]`, string(body))

	code, body = do(t, "POST", base+"/v2/repository/models/ranker/unload", nil)
	require.Equal(t, 200, code, string(body))
	code, body = do(t, "POST", base+"/v2/models/ranker/infer", rawRequest(servetest.Rows(2, 0)))
	assert.Equal(t, 503, code)
	assert.Contains(t, string(body), `model \"ranker\" is not ready: unloaded`)
	code, _ = do(t, "GET", base+"/v2/models/ranker/ready", nil)
	assert.Equal(t, 503, code)
	code, body = do(t, "POST", base+"/v2/repository/index", `{"ready":true}`)
	require.Equal(t, 200, code)
	assert.JSONEq(t, `[{"name":"plain","version":"1","state":"READY"}]`, string(body))

	// A new version appears; loading serves both, the highest by default.
	dir2 := servetest.WriteVersion(t, repo, "ranker", "2", "ple", 9, true)
	code, body = do(t, "POST", base+"/v2/repository/models/ranker/load", nil)
	require.Equal(t, 200, code, string(body))
	rows := servetest.Rows(4, 3)
	r := infer(t, base, "ranker", rawRequest(rows))
	assert.Equal(t, "2", r.ModelVersion)
	assert.Equal(t, servetest.Score(t, dir2, servetest.Encode(rows))["click/binary_output"], r.Outputs[0].Data)
	code, body = do(t, "POST", base+"/v2/models/ranker/versions/1/infer", rawRequest(rows))
	require.Equal(t, 200, code, string(body))
	code, body = do(t, "GET", base+"/v2/models/ranker", nil)
	require.Equal(t, 200, code)
	assert.Contains(t, string(body), `"versions":["2","1"]`)

	// A broken version fails the load and leaves the served versions alone.
	require.NoError(t, writeFile(repo+"/ranker/3/config.json", `{"format":"mtlrank-checkpoint"`))
	code, body = do(t, "POST", base+"/v2/repository/models/ranker/load", nil)
	assert.Equal(t, 400, code, string(body))
	r = infer(t, base, "ranker", rawRequest(rows))
	assert.Equal(t, "2", r.ModelVersion)
}

// TestGracefulShutdown: a request waiting in the batcher's queue when the
// server is told to stop is answered; the server then stops listening.
func TestGracefulShutdown(t *testing.T) {
	s, _ := start(t, serve.ModelOptions{MaxQueueDelay: 400 * time.Millisecond, DynamicBatching: true}, nil)
	base := "http://" + s.HTTPAddr()
	done := make(chan inferResponse)
	go func() { done <- infer(t, base, "ranker", rawRequest(servetest.Rows(3, 0))) }()
	time.Sleep(100 * time.Millisecond) // the request is in the queue
	t0 := time.Now()
	require.NoError(t, s.Shutdown())
	assert.Greater(t, time.Since(t0), 150*time.Millisecond, "shutdown did not wait for the queued request")
	r := <-done
	assert.Len(t, r.Outputs, 2)
	_, err := http.Get(base + "/v2/health/live")
	assert.Error(t, err)
}

// TestRequestTimeout: a request that cannot be scored in time gets 504.
func TestRequestTimeout(t *testing.T) {
	s, _ := start(t, serve.ModelOptions{MaxQueueDelay: time.Second, DynamicBatching: true}, func(c *server.Config) {
		c.RequestTimeout = 50 * time.Millisecond
	})
	code, body := do(t, "POST", "http://"+s.HTTPAddr()+"/v2/models/ranker/infer", rawRequest(servetest.Rows(3, 0)))
	assert.Equal(t, http.StatusGatewayTimeout, code, string(body))
	assert.Contains(t, string(body), "timed out")
}

func TestStartErrors(t *testing.T) {
	_, err := server.Start(server.Config{ModelRepository: t.TempDir(), HTTPAddr: "127.0.0.1:0"})
	require.ErrorContains(t, err, "holds no model folder")
	repo := t.TempDir()
	require.NoError(t, writeFile(repo+"/m/1/readme.txt", "x"))
	_, err = server.Start(server.Config{ModelRepository: repo, HTTPAddr: "127.0.0.1:0", Model: serve.ModelOptions{MaxBatch: 4}})
	require.ErrorContains(t, err, "holds no checkpoint")
	_, err = server.Start(server.Config{ModelRepository: repo + "/missing", HTTPAddr: "127.0.0.1:0"})
	require.ErrorContains(t, err, "no such file")
	_ = context.Background
}

// TestReloadConcurrent reloads a model again and again while clients call
// it: every request is answered from one version or the other, none fails.
func TestReloadConcurrent(t *testing.T) {
	s, repo := start(t, serve.ModelOptions{DynamicBatching: true}, nil)
	base := "http://" + s.HTTPAddr()
	rows := servetest.Rows(6, 1)
	want := servetest.Score(t, repo+"/ranker/1", servetest.Encode(rows))
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				r := infer(t, base, "ranker", rawRequest(rows))
				if !assert.Equal(t, want["click/binary_output"], r.Outputs[0].Data) {
					return
				}
			}
		}()
	}
	for range 5 {
		code, body := do(t, "POST", base+"/v2/repository/models/ranker/load", nil)
		require.Equal(t, 200, code, string(body))
	}
	close(stop)
	wg.Wait()
}
