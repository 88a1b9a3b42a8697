// Package loadgen measures a model served by mtlrank serve under load on
// loopback: throughput and p50/p99 latency at several concurrencies, for
// requests of one user x N candidate items in raw values, over HTTP/JSON
// and gRPC, next to the in-process Scorer on the same model in the same
// run. cmd/mtlrank-load is its command line.
package loadgen

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"math"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"runtime/trace"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"text/tabwriter"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/encoding"
	grpcproto "google.golang.org/grpc/encoding/proto"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/proto"

	"github.com/mtlrank/mtlrank/kernels"
	"github.com/mtlrank/mtlrank/mtl"
	"github.com/mtlrank/mtlrank/preprocess"
	"github.com/mtlrank/mtlrank/schema"
	"github.com/mtlrank/mtlrank/serve"
	pb "github.com/mtlrank/mtlrank/serve/inferencepb"
	"github.com/mtlrank/mtlrank/serve/server"
)

type options struct {
	repo          string
	model         string
	arch          string
	candidates    int
	concurrency   []int
	protocols     []string
	duration      time.Duration
	maxRequests   int
	warmup        int
	maxBatch      int
	maxQueueDelay time.Duration
	batching      bool
	workers       int
	threads       int
	cpuProfile    string
	traceFile     string
	repeat        int
}

// Run parses the command line args and runs the measurements, writing the
// table to stdout.
func Run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	o := options{}
	fs := flag.NewFlagSet("mtlrank-load", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var conc, protos string
	fs.StringVar(&o.repo, "model_repository", "", "model repository to serve (default: a temporary one with a TenRec-shaped model and a hash-bucket workflow)")
	fs.StringVar(&o.model, "model_name", "ranker", "model to call")
	fs.StringVar(&o.arch, "model", "mmoe", "architecture of the generated model (without --model_repository)")
	fs.IntVar(&o.candidates, "candidates", 128, "candidate items per request (rows)")
	fs.StringVar(&conc, "concurrency", "1,8,64", "concurrent clients, comma-separated")
	fs.StringVar(&protos, "protocols", "inproc,http,grpc", "what to measure: inproc (the Scorer, encoded ids), http (JSON), grpc")
	fs.DurationVar(&o.duration, "duration", 5*time.Second, "time limit of each measurement")
	fs.IntVar(&o.maxRequests, "max_requests", 50000, "request limit of each measurement")
	fs.IntVar(&o.warmup, "warmup", 20, "unmeasured requests before each measurement")
	fs.IntVar(&o.maxBatch, "max_batch", 1024, "server --max_batch")
	fs.DurationVar(&o.maxQueueDelay, "max_queue_delay", 0, "server --max_queue_delay")
	fs.BoolVar(&o.batching, "dynamic_batching", true, "server --dynamic_batching")
	fs.IntVar(&o.workers, "workers", 0, "server and Scorer workers (default: the number of CPUs)")
	fs.IntVar(&o.threads, "threads", 0, "server and Scorer CPU threads (default: the number of CPUs)")
	fs.StringVar(&o.traceFile, "trace", "", "write an execution trace of the measurements (go tool trace) to this file")
	fs.IntVar(&o.repeat, "repeat", 1, "run the whole sweep this many times (protocols interleaved in each) and add a table of the medians")
	fs.StringVar(&o.cpuProfile, "cpuprofile", "", "write a CPU profile of the measurements (client and server: one process) to this file")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	for _, s := range strings.Split(conc, ",") {
		c, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil || c < 1 {
			return fmt.Errorf("--concurrency: %q is not a positive integer", s)
		}
		o.concurrency = append(o.concurrency, c)
	}
	for _, p := range strings.Split(protos, ",") {
		p = strings.TrimSpace(p)
		if p != "inproc" && p != "http" && p != "grpc" {
			return fmt.Errorf("--protocols: unknown %q (inproc, http, grpc)", p)
		}
		o.protocols = append(o.protocols, p)
	}
	if o.candidates < 1 || o.candidates > o.maxBatch || o.duration <= 0 || o.maxRequests < 1 || o.repeat < 1 {
		return errors.New("--candidates must lie in [1, --max_batch]; --duration, --max_requests and --repeat must be positive")
	}
	if o.workers == 0 {
		o.workers = runtime.GOMAXPROCS(0)
	}
	if o.threads == 0 {
		o.threads = runtime.GOMAXPROCS(0)
	}
	if o.repo == "" {
		tmp, err := os.MkdirTemp("", "mtlrank-load-*")
		if err != nil {
			return err
		}
		defer os.RemoveAll(tmp)
		if err := WriteModel(tmp, o.model, o.arch); err != nil {
			return err
		}
		o.repo = tmp
	}
	return measure(ctx, o, stdout)
}

// WriteModel writes a freshly initialised model of the TenRec schema with
// the benchmark settings of docs/ARCHITECTURE.md and a workflow hash-encoding every raw id into
// repo/name/1.
func WriteModel(repo, name, arch string) error {
	s := schema.Tenrec()
	w := &preprocess.Workflow{Format: preprocess.WorkflowFormat, Version: preprocess.WorkflowVersion}
	for _, f := range s.Features {
		if f.HasTag(schema.TagCategorical) {
			w.Categorical = append(w.Categorical, &preprocess.Categorical{Name: f.Name, Op: preprocess.OpHashBucket,
				NumBuckets: f.Cardinality() - preprocess.FirstVocabID, Tags: f.Tags})
		}
	}
	cfg := mtl.DefaultConfig()
	cfg.Model = arch
	m, err := mtl.NewModel(s, cfg, kernels.NewCPU(1), 1)
	if err != nil {
		return err
	}
	defer m.Release()
	dir := filepath.Join(repo, name, "1")
	if err := mtl.SaveCheckpoint(dir, m, nil); err != nil {
		return err
	}
	return w.Save(filepath.Join(dir, serve.WorkflowFile))
}

// Requests is a set of requests of one user x candidate items: in raw
// values as HTTP JSON bodies and gRPC requests (raw_input_contents, as
// Triton's clients send them), and encoded as Scorer batches.
type Requests struct {
	HTTP  [][]byte
	GRPC  []*pb.ModelInferRequest
	Batch []*mtl.Candidates
}

// BuildRequests builds 32 requests of rows rows for model: raw values of
// the model's inputs (features of s), encoded by wf for the batches.
// Categorical values are strings, continuous values numbers in [0, 10).
func BuildRequests(wf *preprocess.Workflow, s *schema.Schema, inputs []string, model string, rows int) (*Requests, error) {
	const n = 32
	rng := rand.New(rand.NewPCG(1, 2))
	rs := &Requests{}
	var cats, conts []string
	for _, name := range inputs {
		switch {
		case wf.Categ(name) != nil:
			cats = append(cats, name)
		case wf.Cont(name) != nil:
			conts = append(conts, name)
		default:
			return nil, fmt.Errorf("the workflow does not encode input %q", name)
		}
	}
	for range n {
		c := mtl.NewCandidates(rows, cats, conts)
		if err := c.Reset(rows); err != nil {
			return nil, err
		}
		var tensors []map[string]any
		greq := &pb.ModelInferRequest{ModelName: model}
		add := func(name, datatype string, data any, raw []byte) {
			tensors = append(tensors, map[string]any{"name": name, "datatype": datatype, "shape": []int{rows}, "data": data})
			greq.Inputs = append(greq.Inputs, &pb.ModelInferRequest_InferInputTensor{Name: name, Datatype: datatype, Shape: []int64{int64(rows)}})
			greq.RawInputContents = append(greq.RawInputContents, raw)
		}
		for _, name := range cats {
			f := s.Feature(name)
			card := max(f.Cardinality(), 1)
			user := f.HasTag(schema.TagUser)
			v := fmt.Sprintf("%s-%d", name, rng.Int64N(card*4))
			raw := make([]string, rows)
			ids := c.IDs(name)
			var rawBytes []byte
			for i := range raw {
				if !user {
					v = fmt.Sprintf("%s-%d", name, rng.Int64N(card*4))
				}
				raw[i] = v
				ids[i] = int32(wf.Categ(name).Encode(v))
				rawBytes = binary.LittleEndian.AppendUint32(rawBytes, uint32(len(v)))
				rawBytes = append(rawBytes, v...)
			}
			add(name, "BYTES", raw, rawBytes)
		}
		for _, name := range conts {
			raw := make([]float32, rows)
			vals := c.Floats(name)
			var rawBytes []byte
			for i := range raw {
				raw[i] = float32(rng.IntN(1000)) / 100
				vals[i] = wf.Cont(name).Apply(float64(raw[i]))
				rawBytes = binary.LittleEndian.AppendUint32(rawBytes, math.Float32bits(raw[i]))
			}
			add(name, "FP32", raw, rawBytes)
		}
		body, err := json.Marshal(map[string]any{"inputs": tensors})
		if err != nil {
			return nil, err
		}
		rs.HTTP = append(rs.HTTP, body)
		rs.GRPC = append(rs.GRPC, greq)
		rs.Batch = append(rs.Batch, c)
	}
	return rs, nil
}

// wireMsg is a request already in protobuf's wire format.
type wireMsg []byte

// wireCodec sends a wireMsg as it is and is the protobuf codec otherwise.
type wireCodec struct{ encoding.CodecV2 }

func (c wireCodec) Marshal(v any) (mem.BufferSlice, error) {
	if w, ok := v.(wireMsg); ok {
		return mem.BufferSlice{mem.SliceBuffer(w)}, nil
	}
	return c.CodecV2.Marshal(v)
}

// result is one measurement.
type result struct {
	protocol    string
	concurrency int
	requests    int
	errors      int
	firstErr    error
	elapsed     time.Duration
	lat         []time.Duration
	reqsBatch   float64       // mean requests per scored batch (server)
	cpu         time.Duration // process CPU time (client and server) during the point
}

func (r *result) quantile(q float64) time.Duration {
	if len(r.lat) == 0 {
		return 0
	}
	return r.lat[min(len(r.lat)-1, int(q*float64(len(r.lat))))]
}

func measure(ctx context.Context, o options, stdout io.Writer) error {
	dir := filepath.Join(o.repo, o.model)
	versions, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	var vdir string
	for _, v := range versions {
		if mtl.IsCheckpoint(filepath.Join(dir, v.Name())) {
			vdir = filepath.Join(dir, v.Name())
		}
	}
	if vdir == "" {
		return fmt.Errorf("no checkpoint under %s", dir)
	}
	wf, err := preprocess.LoadWorkflow(filepath.Join(vdir, serve.WorkflowFile))
	if err != nil {
		return fmt.Errorf("the load generator sends raw values and needs the version's workflow: %w", err)
	}
	s, err := server.Start(server.Config{ModelRepository: o.repo, HTTPAddr: "127.0.0.1:0", GRPCAddr: "127.0.0.1:0",
		MaxRequestBytes: 64 << 20, RequestTimeout: time.Minute, DrainTimeout: time.Minute, Version: "load",
		Log:   slog.New(slog.DiscardHandler),
		Model: serve.ModelOptions{MaxBatch: o.maxBatch, MaxQueueDelay: o.maxQueueDelay, DynamicBatching: o.batching, Workers: o.workers, Threads: o.threads}})
	if err != nil {
		return err
	}
	defer s.Shutdown()
	_, release, err := s.Repo.Acquire(o.model, "")
	if err != nil {
		return err
	}
	release()
	sc, err := mtl.LoadScorer(vdir, kernels.NewCPU(o.threads), mtl.ScorerOptions{MaxBatch: o.maxBatch, Workers: o.workers})
	if err != nil {
		return err
	}
	defer sc.Close()
	reqs, err := BuildRequests(wf, sc.Model().Schema(), sc.Model().InputColumns(), o.model, o.candidates)
	if err != nil {
		return err
	}

	httpClient := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 1024, MaxConnsPerHost: 0}}
	url := "http://" + s.HTTPAddr() + "/v2/models/" + o.model + "/infer"
	conn, err := grpc.NewClient(s.GRPCAddr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return err
	}
	defer conn.Close()
	// The requests are marshalled once, ahead of the measurement, as
	// Triton's perf_analyzer prepares its inputs: the client shares the
	// CPUs with the server, and what it spends there is not the server's.
	wire := make([][]byte, len(reqs.GRPC))
	for i, r := range reqs.GRPC {
		if wire[i], err = proto.Marshal(r); err != nil {
			return err
		}
	}
	sendWire := grpc.ForceCodecV2(wireCodec{encoding.GetCodecV2(grpcproto.Name)})

	call := map[string]func(ctx context.Context, i int, out [][]float32) error{
		"inproc": func(_ context.Context, i int, out [][]float32) error {
			return sc.Score(reqs.Batch[i%len(reqs.Batch)].Batch(), out)
		},
		"http": func(ctx context.Context, i int, _ [][]float32) error {
			req, err := http.NewRequestWithContext(ctx, "POST", url, bytes.NewReader(reqs.HTTP[i%len(reqs.HTTP)]))
			if err != nil {
				return err
			}
			req.Header.Set("Content-Type", "application/json")
			resp, err := httpClient.Do(req)
			if err != nil {
				return err
			}
			defer resp.Body.Close()
			// The client checks the answer's status and size only, to
			// leave the CPU to the server (client and server share it).
			body, err := io.ReadAll(resp.Body)
			if err != nil {
				return err
			}
			if resp.StatusCode != 200 {
				return fmt.Errorf("HTTP %d: %s", resp.StatusCode, body)
			}
			if !bytes.Contains(body, []byte(`"outputs"`)) {
				return errors.New("HTTP: no outputs in the answer")
			}
			return nil
		},
		"grpc": func(ctx context.Context, i int, _ [][]float32) error {
			resp := new(pb.ModelInferResponse)
			if err := conn.Invoke(ctx, pb.GRPCInferenceService_ModelInfer_FullMethodName, wireMsg(wire[i%len(wire)]), resp, sendWire); err != nil {
				return err
			}
			if len(resp.RawOutputContents) == 0 || len(resp.RawOutputContents[0]) != 4*o.candidates {
				return errors.New("gRPC: short answer")
			}
			return nil
		},
	}
	if o.cpuProfile != "" {
		f, err := os.Create(o.cpuProfile)
		if err != nil {
			return err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer pprof.StopCPUProfile()
	}
	if o.traceFile != "" {
		f, err := os.Create(o.traceFile)
		if err != nil {
			return err
		}
		defer f.Close()
		if err := trace.Start(f); err != nil {
			return err
		}
		defer trace.Stop()
	}
	fmt.Fprintf(stdout, "%d candidates per request (one user), %d CPUs, server workers %d threads %d, max_batch %d, max_queue_delay %v, dynamic_batching %v, %v or %d requests per point\n",
		o.candidates, runtime.NumCPU(), o.workers, o.threads, o.maxBatch, o.maxQueueDelay, o.batching, o.duration, o.maxRequests)
	var runs [][]row
	for run := range o.repeat {
		fmt.Fprintf(stdout, "\nrun %d of %d, load average %s\n", run+1, o.repeat, loadAverage())
		var results []*result
		for _, c := range o.concurrency {
			for _, p := range o.protocols {
				before := batchStats(s)
				cpu0 := processCPU()
				r, err := runPoint(ctx, call[p], len(sc.Tasks()), o, c)
				if err != nil {
					return err
				}
				r.cpu = processCPU() - cpu0
				after := batchStats(s)
				if p != "inproc" && after[0] > before[0] {
					r.reqsBatch = (after[1] - before[1]) / (after[0] - before[0])
				}
				r.protocol = p
				results = append(results, r)
			}
		}
		rows := rowsOf(results, o.candidates)
		printRows(stdout, rows)
		for _, r := range results {
			if r.firstErr != nil {
				fmt.Fprintf(stdout, "%s at concurrency %d: %d errors, the first: %v\n", r.protocol, r.concurrency, r.errors, r.firstErr)
			}
		}
		runs = append(runs, rows)
	}
	if o.repeat > 1 {
		fmt.Fprintf(stdout, "\nmedian of %d runs (errors: the sum), load average %s\n", o.repeat, loadAverage())
		printRows(stdout, medianRows(runs))
	}
	return nil
}

// batchStats returns the server's count of batches and of requests in them.
func batchStats(s *server.Server) [2]float64 {
	var out [2]float64
	mfs, err := s.Metrics.Registry.Gather()
	if err != nil {
		return out
	}
	for _, mf := range mfs {
		if mf.GetName() != "mtlrank_inference_batch_requests" {
			continue
		}
		for _, m := range mf.GetMetric() {
			out[0] += float64(m.GetHistogram().GetSampleCount())
			out[1] += m.GetHistogram().GetSampleSum()
		}
	}
	return out
}

// runPoint runs c clients for the duration or the request limit.
func runPoint(ctx context.Context, call func(context.Context, int, [][]float32) error, tasks int, o options, c int) (*result, error) {
	newOut := func() [][]float32 {
		out := make([][]float32, tasks)
		for t := range out {
			out[t] = make([]float32, o.candidates)
		}
		return out
	}
	out := newOut()
	for i := range o.warmup {
		if err := call(ctx, i, out); err != nil {
			return nil, fmt.Errorf("warm-up: %w", err)
		}
	}
	// The calls get the caller's context, not the time limit: a call in
	// flight at the limit finishes and counts, rather than failing as a
	// cancelled request would.
	var next atomic.Int64
	var mu sync.Mutex
	r := &result{concurrency: c}
	var wg sync.WaitGroup
	t0 := time.Now()
	for range c {
		wg.Add(1)
		go func() {
			defer wg.Done()
			out := newOut()
			lat := make([]time.Duration, 0, 1024)
			errs := 0
			var first error
			for ctx.Err() == nil && time.Since(t0) < o.duration {
				i := int(next.Add(1))
				if i > o.maxRequests {
					break
				}
				t := time.Now()
				err := call(ctx, i, out)
				if err != nil {
					errs++
					if first == nil {
						first = err
					}
					continue
				}
				lat = append(lat, time.Since(t))
			}
			mu.Lock()
			r.lat = append(r.lat, lat...)
			r.errors += errs
			if r.firstErr == nil {
				r.firstErr = first
			}
			mu.Unlock()
		}()
	}
	wg.Wait()
	r.elapsed = time.Since(t0)
	r.requests = len(r.lat)
	slices.Sort(r.lat)
	return r, nil
}

// row is one line of the table.
type row struct {
	protocol        string
	concurrency     int
	requests        int
	errors          int
	rate, rows      float64 // requests and rows per second
	p50, p99, ratio float64 // ms, ms, p99/p50
	vs              float64 // rate over the in-process Scorer's at the same concurrency (0: none)
	cpu             float64 // process CPU (client and server) per request, us
	reqsBatch       float64
}

func rowsOf(results []*result, candidates int) []row {
	inproc := map[int]float64{}
	var out []row
	for _, r := range results {
		x := row{protocol: r.protocol, concurrency: r.concurrency, requests: r.requests, errors: r.errors,
			rate: float64(r.requests) / r.elapsed.Seconds(), reqsBatch: r.reqsBatch}
		x.rows = x.rate * float64(candidates)
		if r.protocol == "inproc" {
			inproc[r.concurrency] = x.rate
		} else if base := inproc[r.concurrency]; base > 0 {
			x.vs = x.rate / base
		}
		x.p50, x.p99 = ms(r.quantile(0.50)), ms(r.quantile(0.99))
		if x.p50 > 0 {
			x.ratio = x.p99 / x.p50
		}
		if r.requests > 0 && r.cpu > 0 {
			x.cpu = float64(r.cpu.Microseconds()) / float64(r.requests)
		}
		out = append(out, x)
	}
	return out
}

// medianRows is the median of each column over runs of the same points
// (errors: the sum); ratios are the medians of each run's ratio.
func medianRows(runs [][]row) []row {
	out := make([]row, len(runs[0]))
	for i := range out {
		col := func(f func(row) float64) float64 {
			v := make([]float64, len(runs))
			for k, rows := range runs {
				v[k] = f(rows[i])
			}
			slices.Sort(v)
			if len(v)%2 == 1 {
				return v[len(v)/2]
			}
			return (v[len(v)/2-1] + v[len(v)/2]) / 2
		}
		x := runs[0][i]
		x.errors = 0
		for _, rows := range runs {
			x.errors += rows[i].errors
		}
		x.requests = int(col(func(r row) float64 { return float64(r.requests) }))
		x.rate, x.rows = col(func(r row) float64 { return r.rate }), col(func(r row) float64 { return r.rows })
		x.p50, x.p99 = col(func(r row) float64 { return r.p50 }), col(func(r row) float64 { return r.p99 })
		x.ratio, x.vs = col(func(r row) float64 { return r.ratio }), col(func(r row) float64 { return r.vs })
		x.cpu, x.reqsBatch = col(func(r row) float64 { return r.cpu }), col(func(r row) float64 { return r.reqsBatch })
		out[i] = x
	}
	return out
}

func printRows(w io.Writer, rows []row) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "protocol\tconcurrency\trequests\terrors\treq/s\trows/s\tp50 ms\tp99 ms\tp99/p50\tvs inproc\tcpu us/req\treqs/batch\t")
	for _, r := range rows {
		vs, rb, cpu := "", "", ""
		if r.vs > 0 {
			vs = fmt.Sprintf("%.0f%%", 100*r.vs)
		}
		if r.reqsBatch > 0 {
			rb = fmt.Sprintf("%.2f", r.reqsBatch)
		}
		if r.cpu > 0 {
			cpu = fmt.Sprintf("%.0f", r.cpu)
		}
		fmt.Fprintf(tw, "%s\t%d\t%d\t%d\t%.0f\t%.0f\t%.3f\t%.3f\t%.1f\t%s\t%s\t%s\t\n", r.protocol, r.concurrency, r.requests, r.errors,
			r.rate, r.rows, r.p50, r.p99, r.ratio, vs, cpu, rb)
	}
	tw.Flush()
}

// loadAverage is the machine's load average (1, 5 and 15 minutes), where
// the system reports it.
func loadAverage() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "unknown"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "unknown"
	}
	return strings.Join(f[:3], " ")
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
