// Package httpapi is the HTTP/REST front end of the Open Inference
// Protocol (KServe v2): health, server and model metadata, readiness,
// inference with JSON tensors, the model repository extension, and the
// Prometheus metrics at /metrics. Errors are the protocol's error JSON,
// {"error": "..."}, with a 4xx or 5xx status.
package httpapi

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net/http"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/mtlrank/mtlrank/serve"
)

// Options configures the handler.
type Options struct {
	// ServerName and ServerVersion are reported by /v2.
	ServerName, ServerVersion string
	// MaxRequestBytes bounds a request body (413 beyond).
	MaxRequestBytes int64
	// RequestTimeout bounds an inference request's time in the server
	// (0: none).
	RequestTimeout time.Duration
	// Ready reports whether the server takes requests (false while it
	// drains at shutdown).
	Ready func() bool
	Log   *slog.Logger
}

type handler struct {
	repo    *serve.Repository
	metrics *serve.Metrics
	opt     Options
}

// Extensions lists the protocol extensions served.
var Extensions = []string{"model_repository"}

// New returns the protocol's HTTP handler over repo.
func New(repo *serve.Repository, metrics *serve.Metrics, opt Options) http.Handler {
	if opt.Log == nil {
		opt.Log = slog.New(slog.DiscardHandler)
	}
	if opt.Ready == nil {
		opt.Ready = func() bool { return true }
	}
	h := &handler{repo: repo, metrics: metrics, opt: opt}
	mux := http.NewServeMux()
	// Each route also answers its other methods, with 405 and the error
	// JSON rather than the mux's plain-text answer.
	route := func(method, path string, f http.HandlerFunc) {
		mux.HandleFunc(method+" "+path, f)
		mux.HandleFunc(path, func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Allow", method)
			h.fail(w, r, http.StatusMethodNotAllowed, fmt.Sprintf("%s %s: use %s", r.Method, r.URL.Path, method))
		})
	}
	route("GET", "/v2/health/live", h.live)
	route("GET", "/v2/health/ready", h.ready)
	route("GET", "/v2", h.serverMetadata)
	route("GET", "/v2/models/{name}", h.modelMetadata)
	route("GET", "/v2/models/{name}/versions/{version}", h.modelMetadata)
	route("GET", "/v2/models/{name}/ready", h.modelReady)
	route("GET", "/v2/models/{name}/versions/{version}/ready", h.modelReady)
	route("POST", "/v2/models/{name}/infer", h.infer)
	route("POST", "/v2/models/{name}/versions/{version}/infer", h.infer)
	route("POST", "/v2/repository/index", h.index)
	route("POST", "/v2/repository/models/{name}/load", h.load)
	route("POST", "/v2/repository/models/{name}/unload", h.unload)
	if metrics != nil {
		route("GET", "/metrics", promhttp.HandlerFor(metrics.Registry, promhttp.HandlerOpts{}).ServeHTTP)
	}
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		h.fail(w, r, http.StatusNotFound, fmt.Sprintf("no endpoint %s %s", r.Method, r.URL.Path))
	})
	return h.wrap(mux)
}

// statusWriter records the status for the metrics.
type statusWriter struct {
	http.ResponseWriter
	status int
}

func (w *statusWriter) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

// wrap bounds request bodies, recovers from panics (a bad request never
// takes the server down) and counts requests.
func (h *handler) wrap(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		sw := &statusWriter{ResponseWriter: w}
		if h.opt.MaxRequestBytes > 0 {
			r.Body = http.MaxBytesReader(sw, r.Body, h.opt.MaxRequestBytes)
		}
		defer func() {
			if p := recover(); p != nil {
				h.opt.Log.Error("panic serving a request", "method", r.Method, "path", r.URL.Path, "panic", p)
				if sw.status == 0 {
					h.fail(sw, r, http.StatusInternalServerError, fmt.Sprintf("internal error: %v", p))
				}
			}
			if h.metrics != nil {
				st := sw.status
				if st == 0 {
					st = http.StatusOK
				}
				h.metrics.ObserveProtocol("http", st)
			}
		}()
		next.ServeHTTP(sw, r)
	})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		status = http.StatusInternalServerError
		b, _ = json.Marshal(errorBody{Error: "encode response: " + err.Error()})
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = w.Write(b)
}

type errorBody struct {
	Error string `json:"error"`
}

func (h *handler) fail(w http.ResponseWriter, r *http.Request, status int, msg string) {
	if status >= 500 {
		h.opt.Log.Error("request failed", "method", r.Method, "path", r.URL.Path, "status", status, "error", msg)
	} else {
		h.opt.Log.Debug("bad request", "method", r.Method, "path", r.URL.Path, "status", status, "error", msg)
	}
	writeJSON(w, status, errorBody{Error: msg})
}

// Status is the HTTP status of a serve error.
func Status(err error) int {
	switch serve.CodeOf(err) {
	case serve.InvalidArgument:
		return http.StatusBadRequest
	case serve.NotFound:
		return http.StatusNotFound
	case serve.Unavailable:
		return http.StatusServiceUnavailable
	case serve.DeadlineExceeded:
		return http.StatusGatewayTimeout
	case serve.Canceled:
		return 499 // client closed the request, as nginx and Triton's clients know it
	}
	return http.StatusInternalServerError
}

func (h *handler) failErr(w http.ResponseWriter, r *http.Request, err error) {
	h.fail(w, r, Status(err), err.Error())
}

func (h *handler) live(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, map[string]bool{"live": true})
}

func (h *handler) ready(w http.ResponseWriter, r *http.Request) {
	ok := h.opt.Ready() && h.repo.Ready()
	st := http.StatusOK
	if !ok {
		st = http.StatusServiceUnavailable
	}
	writeJSON(w, st, map[string]bool{"ready": ok})
}

func (h *handler) serverMetadata(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, map[string]any{"name": h.opt.ServerName, "version": h.opt.ServerVersion, "extensions": Extensions})
}

type tensorMeta struct {
	Name     string  `json:"name"`
	Datatype string  `json:"datatype"`
	Shape    []int64 `json:"shape"`
}

func metas(ts []serve.TensorMeta) []tensorMeta {
	out := make([]tensorMeta, len(ts))
	for i, t := range ts {
		out[i] = tensorMeta(t)
	}
	return out
}

func (h *handler) modelMetadata(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	m, release, err := h.repo.Acquire(name, r.PathValue("version"))
	if err != nil {
		h.failErr(w, r, err)
		return
	}
	defer release()
	writeJSON(w, http.StatusOK, map[string]any{
		"name": m.Name, "versions": h.repo.Versions(name), "platform": serve.Platform,
		"inputs": metas(m.Inputs()), "outputs": metas(m.Outputs()),
	})
}

func (h *handler) modelReady(w http.ResponseWriter, r *http.Request) {
	m, release, err := h.repo.Acquire(r.PathValue("name"), r.PathValue("version"))
	if err != nil {
		if serve.CodeOf(err) == serve.Unavailable {
			writeJSON(w, http.StatusServiceUnavailable, map[string]any{"name": r.PathValue("name"), "ready": false})
			return
		}
		h.failErr(w, r, err)
		return
	}
	defer release()
	writeJSON(w, http.StatusOK, map[string]any{"name": m.Name, "version": m.Version, "ready": h.opt.Ready()})
}

// inferRequest is the protocol's JSON inference request.
type inferRequest struct {
	ID         string            `json:"id"`
	Parameters json.RawMessage   `json:"parameters"`
	Inputs     []inputTensor     `json:"inputs"`
	Outputs    []requestedOutput `json:"outputs"`
}

type inputTensor struct {
	Name       string          `json:"name"`
	Shape      []int64         `json:"shape"`
	Datatype   string          `json:"datatype"`
	Parameters json.RawMessage `json:"parameters"`
	Data       json.RawMessage `json:"data"`
}

type requestedOutput struct {
	Name       string          `json:"name"`
	Parameters json.RawMessage `json:"parameters"`
}

type inferResponse struct {
	ModelName    string         `json:"model_name"`
	ModelVersion string         `json:"model_version"`
	ID           string         `json:"id,omitempty"`
	Outputs      []outputTensor `json:"outputs"`
}

type outputTensor struct {
	Name     string    `json:"name"`
	Datatype string    `json:"datatype"`
	Shape    []int64   `json:"shape"`
	Data     []float32 `json:"data"`
}

func (h *handler) infer(w http.ResponseWriter, r *http.Request) {
	if !h.opt.Ready() {
		h.fail(w, r, http.StatusServiceUnavailable, "the server is shutting down")
		return
	}
	body, err := readBody(r)
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			h.fail(w, r, http.StatusRequestEntityTooLarge, fmt.Sprintf("request body exceeds %d bytes (--max_request_bytes)", tooBig.Limit))
			return
		}
		h.fail(w, r, http.StatusBadRequest, "read request body: "+err.Error())
		return
	}
	req, err := decodeInfer(body)
	if err != nil {
		h.failErr(w, r, err)
		return
	}
	m, release, err := h.repo.Acquire(r.PathValue("name"), r.PathValue("version"))
	if err != nil {
		h.failErr(w, r, err)
		return
	}
	defer release()
	ctx := r.Context()
	if h.opt.RequestTimeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, h.opt.RequestTimeout)
		defer cancel()
	}
	resp, err := m.Infer(ctx, req)
	if err != nil {
		h.failErr(w, r, err)
		return
	}
	out := inferResponse{ModelName: resp.ModelName, ModelVersion: resp.ModelVersion, ID: resp.ID, Outputs: make([]outputTensor, len(resp.Outputs))}
	for i, o := range resp.Outputs {
		out.Outputs[i] = outputTensor{Name: o.Name, Datatype: serve.FP32, Shape: []int64{int64(len(o.Data))}, Data: o.Data}
	}
	writeJSON(w, http.StatusOK, out)
}

func badRequest(format string, args ...any) error {
	return &serve.Error{Code: serve.InvalidArgument, Msg: fmt.Sprintf(format, args...)}
}

// readBody reads a request body, in one allocation when its length is
// known.
func readBody(r *http.Request) ([]byte, error) {
	if n := r.ContentLength; n > 0 && n <= 1<<30 {
		body := make([]byte, n)
		if _, err := io.ReadFull(r.Body, body); err != nil {
			return nil, err
		}
		// The length was announced: more bytes (or MaxBytesReader's
		// limit) are an error.
		if _, err := r.Body.Read(make([]byte, 1)); err != io.EOF {
			if err == nil {
				err = errors.New("body longer than its Content-Length")
			}
			return nil, err
		}
		return body, nil
	}
	return io.ReadAll(r.Body)
}

// decodeInfer decodes the protocol's JSON request into a serve request.
func decodeInfer(body []byte) (*serve.InferRequest, error) {
	var jr inferRequest
	if err := json.Unmarshal(body, &jr); err != nil {
		return nil, badRequest("request body is not an inference request in JSON: %v", err)
	}
	req := &serve.InferRequest{ID: jr.ID, Inputs: make([]serve.Tensor, len(jr.Inputs))}
	for i, in := range jr.Inputs {
		if in.Name == "" {
			return nil, badRequest("input %d has no name", i)
		}
		t := &req.Inputs[i]
		t.Name, t.Datatype, t.Shape = in.Name, in.Datatype, in.Shape
		if err := decodeData(t, in.Data); err != nil {
			return nil, err
		}
	}
	for _, o := range jr.Outputs {
		req.Outputs = append(req.Outputs, o.Name)
	}
	return req, nil
}

// decodeData reads a tensor's "data": a flat array, or nested arrays in
// row-major order, of the datatype's JSON type. A null element is a missing
// value in float tensors (NaN: the workflow's fill applies) and an error
// elsewhere.
func decodeData(t *serve.Tensor, data json.RawMessage) error {
	if len(data) == 0 {
		return badRequest("input %q has no data", t.Name)
	}
	var err error
	switch t.Datatype {
	case serve.BYTES:
		var s []string
		if s, err = decodeTyped[string](t.Name, data, nil); err == nil {
			t.Bytes = make([][]byte, len(s))
			for i := range s {
				t.Bytes[i] = []byte(s[i])
			}
		}
	case serve.INT8, serve.INT16, serve.INT32:
		t.I32, err = decodeTyped[int32](t.Name, data, nil)
		for i, v := range t.I32 {
			if err == nil && (t.Datatype == serve.INT8 && int32(int8(v)) != v || t.Datatype == serve.INT16 && int32(int16(v)) != v) {
				err = badRequest("input %q, element %d: %d is not an %s", t.Name, i, v, t.Datatype)
			}
		}
	case serve.INT64, serve.UINT8, serve.UINT16, serve.UINT32, serve.UINT64:
		t.I64, err = decodeTyped[int64](t.Name, data, nil)
		for i, v := range t.I64 {
			if err == nil && t.Datatype != serve.INT64 && v < 0 {
				err = badRequest("input %q, element %d: %d is not a %s", t.Name, i, v, t.Datatype)
			}
		}
	case serve.FP32:
		nan := float32(math.NaN())
		t.F32, err = decodeTyped[float32](t.Name, data, &nan)
	case serve.FP64:
		nan := math.NaN()
		t.F64, err = decodeTyped[float64](t.Name, data, &nan)
	case "":
		return badRequest("input %q has no datatype", t.Name)
	default:
		return badRequest("input %q: datatype %q is not supported (BYTES, INT8..INT64, UINT8..UINT64, FP32, FP64)", t.Name, t.Datatype)
	}
	return err
}

// decodeTyped decodes a tensor's data as elements of type T. null stands
// for *null when null is set and is an error otherwise.
func decodeTyped[T any](name string, data json.RawMessage, null *T) ([]T, error) {
	var out []T
	// Fast path: a flat array without nulls (encoding/json would read a
	// null as the zero value).
	if !bytes.Contains(data, []byte("null")) {
		if err := json.Unmarshal(data, &out); err == nil {
			return out, nil
		}
	}
	flat, err := flatten(data)
	if err != nil {
		return nil, badRequest("input %q: data: %v", name, err)
	}
	out = make([]T, len(flat))
	for i, v := range flat {
		if string(v) == "null" {
			if null == nil {
				return nil, badRequest("input %q, element %d: null is allowed only in FP32 and FP64 tensors (a missing value)", name, i)
			}
			out[i] = *null
			continue
		}
		if err := json.Unmarshal(v, &out[i]); err != nil {
			return nil, badRequest("input %q, element %d: %s: %v", name, i, v, err)
		}
	}
	return out, nil
}

// flatten returns the elements of a JSON array, nested arrays flattened in
// row-major order.
func flatten(data json.RawMessage) ([]json.RawMessage, error) {
	var elems []json.RawMessage
	if err := json.Unmarshal(data, &elems); err != nil {
		return nil, errors.New("not a JSON array")
	}
	if elems == nil {
		return nil, errors.New("null is not an array")
	}
	nested := false
	for _, e := range elems {
		if len(e) > 0 && e[0] == '[' {
			nested = true
			break
		}
	}
	if !nested {
		return elems, nil
	}
	var out []json.RawMessage
	for _, e := range elems {
		if len(e) > 0 && e[0] == '[' {
			sub, err := flatten(e)
			if err != nil {
				return nil, err
			}
			out = append(out, sub...)
		} else {
			out = append(out, e)
		}
	}
	return out, nil
}

func (h *handler) index(w http.ResponseWriter, r *http.Request) {
	var req struct {
		Ready bool `json:"ready"`
	}
	if err := decodeOptional(r, &req); err != nil {
		h.failErr(w, r, err)
		return
	}
	idx, err := h.repo.Index(req.Ready)
	if err != nil {
		h.failErr(w, r, err)
		return
	}
	if idx == nil {
		idx = []serve.IndexEntry{}
	}
	writeJSON(w, http.StatusOK, idx)
}

// decodeOptional decodes an optional JSON body into v.
func decodeOptional(r *http.Request, v any) error {
	body, err := io.ReadAll(r.Body)
	if err != nil {
		return badRequest("read request body: %v", err)
	}
	if len(bytes.TrimSpace(body)) == 0 {
		return nil
	}
	if err := json.Unmarshal(body, v); err != nil {
		return badRequest("request body: %v", err)
	}
	return nil
}

func (h *handler) load(w http.ResponseWriter, r *http.Request) {
	var req struct {
		Parameters map[string]any `json:"parameters"`
	}
	if err := decodeOptional(r, &req); err != nil {
		h.failErr(w, r, err)
		return
	}
	if len(req.Parameters) > 0 {
		h.fail(w, r, http.StatusBadRequest, fmt.Sprintf("load parameters are not supported (got %s)", strings.Join(keys(req.Parameters), ", ")))
		return
	}
	if err := h.repo.Load(r.PathValue("name")); err != nil {
		h.failErr(w, r, err)
		return
	}
	w.WriteHeader(http.StatusOK)
}

func (h *handler) unload(w http.ResponseWriter, r *http.Request) {
	if err := h.repo.Unload(r.PathValue("name")); err != nil {
		h.failErr(w, r, err)
		return
	}
	w.WriteHeader(http.StatusOK)
}

func keys(m map[string]any) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	return out
}
