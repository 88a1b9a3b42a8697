package serve

import (
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// Metrics are the server's Prometheus metrics, on their own registry.
type Metrics struct {
	Registry *prometheus.Registry

	requests  *prometheus.CounterVec   // model, version, code
	failures  *prometheus.CounterVec   // model, version, code
	latency   *prometheus.HistogramVec // model, version: request time in the model
	queue     *prometheus.HistogramVec // model, version: time waiting for a batch
	batchRows *prometheus.HistogramVec // model, version: rows per scored batch
	batchReqs *prometheus.HistogramVec // model, version: requests per scored batch
	protocol  *prometheus.CounterVec   // protocol (http, grpc), code: every request
}

// NewMetrics registers the metrics (and the Go runtime's) on a new
// registry.
func NewMetrics() *Metrics {
	r := prometheus.NewRegistry()
	r.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	mv := []string{"model", "version"}
	m := &Metrics{
		Registry: r,
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "mtlrank_inference_requests_total",
			Help: "Inference requests by model, version and result code."}, append(mv, "code")),
		failures: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "mtlrank_inference_failures_total",
			Help: "Failed inference requests by model, version and result code."}, append(mv, "code")),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "mtlrank_inference_request_duration_seconds",
			Help:    "Time from a decoded request to its scores: encoding, queue, scoring.",
			Buckets: prometheus.ExponentialBuckets(50e-6, 2, 16)}, mv),
		queue: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "mtlrank_inference_queue_duration_seconds",
			Help:    "Time a request waited in the dynamic batcher's queue.",
			Buckets: prometheus.ExponentialBuckets(10e-6, 2, 16)}, mv),
		batchRows: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "mtlrank_inference_batch_rows",
			Help:    "Rows per scored batch.",
			Buckets: prometheus.ExponentialBuckets(1, 2, 14)}, mv),
		batchReqs: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "mtlrank_inference_batch_requests",
			Help:    "Requests per scored batch.",
			Buckets: prometheus.ExponentialBuckets(1, 2, 10)}, mv),
		protocol: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "mtlrank_protocol_requests_total",
			Help: "Requests to the HTTP and gRPC endpoints by protocol and status."}, []string{"protocol", "code"}),
	}
	r.MustRegister(m.requests, m.failures, m.latency, m.queue, m.batchRows, m.batchReqs, m.protocol)
	return m
}

// codeName is a Code's label value.
func codeName(err error) string {
	if err == nil {
		return "ok"
	}
	switch CodeOf(err) {
	case InvalidArgument:
		return "invalid_argument"
	case NotFound:
		return "not_found"
	case Unavailable:
		return "unavailable"
	case DeadlineExceeded:
		return "deadline_exceeded"
	case Canceled:
		return "canceled"
	}
	return "internal"
}

func (m *Metrics) observeInfer(model, version string, err error, d, queue time.Duration) {
	code := codeName(err)
	m.requests.WithLabelValues(model, version, code).Inc()
	if err != nil {
		m.failures.WithLabelValues(model, version, code).Inc()
		return
	}
	m.latency.WithLabelValues(model, version).Observe(d.Seconds())
	m.queue.WithLabelValues(model, version).Observe(queue.Seconds())
}

// ObserveProtocol counts a request to an endpoint: protocol "http" or
// "grpc", status its HTTP status or gRPC code.
func (m *Metrics) ObserveProtocol(protocol string, status int) {
	m.protocol.WithLabelValues(protocol, strconv.Itoa(status)).Inc()
}

func (m *Metrics) batchObserver(model, version string) func(rows, reqs int) {
	rows, reqs := m.batchRows.WithLabelValues(model, version), m.batchReqs.WithLabelValues(model, version)
	return func(r, n int) {
		rows.Observe(float64(r))
		reqs.Observe(float64(n))
	}
}
