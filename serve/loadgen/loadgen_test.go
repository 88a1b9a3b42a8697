package loadgen

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"log/slog"
	"math"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/proto"

	"github.com/mtlrank/mtlrank/kernels"
	"github.com/mtlrank/mtlrank/loader"
	"github.com/mtlrank/mtlrank/mtl"
	"github.com/mtlrank/mtlrank/preprocess"
	"github.com/mtlrank/mtlrank/serve"
	pb "github.com/mtlrank/mtlrank/serve/inferencepb"
	"github.com/mtlrank/mtlrank/serve/server"
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

	// Both input modes beside both in-process baselines.
	out.Reset()
	err = Run(context.Background(), []string{"--model_repository", repo, "--duration", "100ms", "--max_requests", "50",
		"--concurrency", "2", "--protocols", "inproc,inproc-raw,http,grpc", "--inputs", "raw,encoded", "--candidates", "8", "--max_batch", "64",
		"--warmup", "1", "--threads", "1", "--workers", "1"}, &out, &errOut)
	require.NoError(t, err, errOut.String())
	text = out.String()
	assert.NotContains(t, text, "errors, the first", text)
	assert.Contains(t, text, "vs inproc-raw")
	// settings, blank, run line, header, 6 rows
	require.Equal(t, 1+1+1+1+6, len(strings.Split(strings.TrimSpace(text), "\n")), text)
	for _, p := range []string{"inproc", "inproc-raw", "http", "http-encoded", "grpc", "grpc-encoded"} {
		assert.Regexp(t, regexp.MustCompile(`(?m)^\s*`+p+`\s+2\s+[1-9]\d*\s+0\s`), text)
	}
	// Raw-input rows are compared with both baselines, encoded ones with
	// the Scorer alone.
	assert.Regexp(t, regexp.MustCompile(`(?m)^\s*grpc\s+2\s.*%\s+\d+%\s+\d+\s+\d+\.\d+\s*$`), text)
	assert.Regexp(t, regexp.MustCompile(`(?m)^\s*grpc-encoded\s+2\s.*\s\d+\.\d+\s+\d+%\s+\d+\s+\d+\.\d+\s*$`), text)

	for _, args := range [][]string{
		{"--concurrency", "0"},
		{"--protocols", "smtp"},
		{"--inputs", "json"},
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

// The same requests sent in raw values and in encoded ids, over gRPC and
// HTTP through the real server, get the same FP32 scores bit for bit; so
// does the in-process Scorer on the batches and on the raw values encoded
// in-process. The model has categorical and continuous inputs.
func TestEncodedInputsScoreAsRaw(t *testing.T) {
	repo := t.TempDir()
	dir := servetest.WriteVersion(t, repo, "ranker", "1", "mmoe", 3, true)
	wf, err := preprocess.LoadWorkflow(filepath.Join(dir, serve.WorkflowFile))
	require.NoError(t, err)
	sc, err := mtl.LoadScorer(dir, kernels.NewCPU(1), mtl.ScorerOptions{MaxBatch: 64, Workers: 1})
	require.NoError(t, err)
	defer sc.Close()
	const rows = 16
	reqs, err := BuildRequests(wf, sc.Model().Schema(), sc.Model().InputColumns(), "ranker", rows)
	require.NoError(t, err)
	require.NotEmpty(t, reqs.Raw[0].Cols)
	var hasCont bool
	for _, c := range reqs.Raw[0].Cols {
		hasCont = hasCont || c.Cont != nil
	}
	require.True(t, hasCont, "the test model needs a continuous input")

	s, err := server.Start(server.Config{ModelRepository: repo, HTTPAddr: "127.0.0.1:0", GRPCAddr: "127.0.0.1:0",
		MaxRequestBytes: 1 << 20, RequestTimeout: time.Minute, DrainTimeout: time.Minute, Version: "test",
		Log: slog.New(slog.DiscardHandler), Model: serve.ModelOptions{MaxBatch: 64, DynamicBatching: true, Workers: 1, Threads: 1}})
	require.NoError(t, err)
	defer s.Shutdown()
	conn, err := grpc.NewClient(s.GRPCAddr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	require.NoError(t, err)
	defer conn.Close()
	client := pb.NewGRPCInferenceServiceClient(conn)
	tasks := sc.Tasks()

	grpcScores := func(req *pb.ModelInferRequest) [][]byte {
		resp, err := client.ModelInfer(context.Background(), req)
		require.NoError(t, err)
		require.Len(t, resp.RawOutputContents, len(tasks))
		for _, out := range resp.RawOutputContents {
			require.Len(t, out, 4*rows)
		}
		require.NoError(t, checkAnswer(mustMarshal(t, resp), len(tasks), rows))
		return resp.RawOutputContents
	}
	httpScores := func(body []byte) [][]byte {
		resp, err := http.Post("http://"+s.HTTPAddr()+"/v2/models/ranker/infer", "application/json", bytes.NewReader(body))
		require.NoError(t, err)
		defer resp.Body.Close()
		var ans struct {
			Outputs []struct {
				Data []float32 `json:"data"`
			} `json:"outputs"`
		}
		require.Equal(t, 200, resp.StatusCode)
		require.NoError(t, json.NewDecoder(resp.Body).Decode(&ans))
		var out [][]byte
		for _, o := range ans.Outputs {
			require.Len(t, o.Data, rows)
			out = append(out, f32Bytes(o.Data))
		}
		return out
	}
	scorerScores := func(b *loader.Batch) [][]byte {
		out := make([][]float32, len(tasks))
		for i := range out {
			out[i] = make([]float32, rows)
		}
		require.NoError(t, sc.Score(b, out))
		var bs [][]byte
		for _, o := range out {
			bs = append(bs, f32Bytes(o))
		}
		return bs
	}
	cand := mtl.NewCandidates(rows, []string{"user_id", "item_id", "city"}, []string{"price"})
	for i := range 4 {
		want := grpcScores(reqs.GRPC[i])
		assert.Equal(t, want, grpcScores(reqs.GRPCEncoded[i]), "request %d: gRPC encoded", i)
		// JSON answers hold the same float32 values.
		assert.Equal(t, want, httpScores(reqs.HTTP[i]), "request %d: HTTP raw", i)
		assert.Equal(t, want, httpScores(reqs.HTTPEncoded[i]), "request %d: HTTP encoded", i)
		assert.Equal(t, want, scorerScores(reqs.Batch[i].Batch()), "request %d: Scorer", i)
		require.NoError(t, reqs.Raw[i].Encode(cand))
		assert.Equal(t, want, scorerScores(cand.Batch()), "request %d: Scorer after the in-process workflow", i)
	}
	// The encoded requests name every input with the encoded suffix.
	for _, in := range reqs.GRPCEncoded[0].Inputs {
		assert.True(t, strings.HasSuffix(in.Name, serve.EncodedSuffix), in.Name)
	}
}

// checkAnswer accepts an answer with one raw output of rows scores per
// task and names what is wrong otherwise.
func TestCheckAnswer(t *testing.T) {
	out := func(n int) []byte { return make([]byte, 4*n) }
	cases := []struct {
		name string
		resp *pb.ModelInferResponse
		err  string
	}{
		{"good", &pb.ModelInferResponse{ModelName: "m", Outputs: []*pb.ModelInferResponse_InferOutputTensor{{Name: "a"}, {Name: "b"}},
			RawOutputContents: [][]byte{out(8), out(8)}}, ""},
		{"short output", &pb.ModelInferResponse{RawOutputContents: [][]byte{out(8), out(7)}}, "raw output 1 holds 28 bytes, want 32"},
		{"missing output", &pb.ModelInferResponse{RawOutputContents: [][]byte{out(8)}}, "1 raw outputs, want 2"},
		{"no outputs", &pb.ModelInferResponse{ModelName: "m"}, "0 raw outputs, want 2"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := checkAnswer(mustMarshal(t, tc.resp), 2, 8)
			if tc.err == "" {
				require.NoError(t, err)
				return
			}
			require.ErrorContains(t, err, tc.err)
		})
	}
	require.ErrorContains(t, checkAnswer([]byte{0x32, 0x10, 1}, 2, 8), "bad answer")
}

func mustMarshal(t *testing.T, m proto.Message) []byte {
	t.Helper()
	b, err := proto.Marshal(m)
	require.NoError(t, err)
	return b
}

func f32Bytes(v []float32) []byte {
	var b []byte
	for _, f := range v {
		b = binary.LittleEndian.AppendUint32(b, math.Float32bits(f))
	}
	return b
}

// rowsOf compares each row with the Scorer's at the same concurrency
// wherever it was measured in the run (runs rotate the order), and raw
// served requests also with the Scorer after the workflow.
func TestRowsOfBaselines(t *testing.T) {
	res := func(p string, c, n int) *result {
		return &result{protocol: p, concurrency: c, requests: n, elapsed: time.Second}
	}
	rows := rowsOf([]*result{
		res("grpc", 8, 300), res("grpc-encoded", 8, 600), res("inproc", 8, 1000), res("inproc-raw", 8, 750),
		res("http", 1, 50), res("inproc", 1, 200),
	}, 128)
	want := []struct {
		protocol  string
		vs, vsRaw float64
	}{
		{"grpc", 0.3, 0.4}, {"grpc-encoded", 0.6, 0}, {"inproc", 0, 0}, {"inproc-raw", 0.75, 0},
		{"http", 0.25, 0}, {"inproc", 0, 0},
	}
	require.Len(t, rows, len(want))
	for i, w := range want {
		assert.Equal(t, w.protocol, rows[i].protocol)
		assert.InDelta(t, w.vs, rows[i].vs, 1e-9, "%d %s vs inproc", i, w.protocol)
		assert.InDelta(t, w.vsRaw, rows[i].vsRaw, 1e-9, "%d %s vs inproc-raw", i, w.protocol)
	}
	assert.InDelta(t, 300*128, rows[0].rows, 1e-6)
}
