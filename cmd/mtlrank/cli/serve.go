package cli

import (
	"context"
	"flag"
	"fmt"
	"net"
	"os/signal"
	"strconv"
	"syscall"
	"time"

	"github.com/mtlrank/mtlrank/serve"
	"github.com/mtlrank/mtlrank/serve/server"
)

// serveVersion is the server version the protocol's metadata reports.
const serveVersion = "1"

func runServe(ctx context.Context, e *env, args []string) error {
	var (
		cfg                server.Config
		host               string
		httpPort, grpcPort int
		device             string
		quiet              bool
	)
	cfg.Model.DynamicBatching = true
	cfg.MaxRequestBytes = 64 << 20
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	fs.StringVar(&cfg.ModelRepository, "model_repository", "", "folder of models laid out as DIR/<name>/<version>/, each version a checkpoint of `train --save_model_path`\nwith the workflow.json that encoded its data beside it when there is one (required)")
	fs.StringVar(&host, "host", "127.0.0.1", "address to listen on (0.0.0.0: every interface)")
	fs.IntVar(&httpPort, "http_port", 8000, "HTTP/REST port (0: a free port, named in the log; -1: no HTTP endpoint)")
	fs.IntVar(&grpcPort, "grpc_port", 8001, "gRPC port (0: a free port, named in the log; -1: no gRPC endpoint)")
	fs.IntVar(&cfg.Model.MaxBatch, "max_batch", 1024, "largest batch scored at once, in rows, and largest request accepted")
	fs.DurationVar(&cfg.Model.MaxQueueDelay, "max_queue_delay", 0, "how long a request may wait for others to join its batch, e.g. 500us\n(0: batch only the requests already queued)")
	fs.Var(boolValue{&cfg.Model.DynamicBatching}, "dynamic_batching", "coalesce concurrent requests into batches (scores are the same either way)")
	fs.IntVar(&cfg.Model.Workers, "workers", 0, "batches scored at once per model version (default: the number of CPUs)")
	fs.IntVar(&cfg.Model.Threads, "threads", 0, "CPU threads per model version, shared by its workers (default: the number of CPUs)")
	fs.StringVar(&device, "device", "cpu", "compute device: cpu or cuda")
	fs.Var(byteSize{&cfg.MaxRequestBytes}, "max_request_bytes", "largest request body or gRPC message, e.g. 64M")
	fs.DurationVar(&cfg.RequestTimeout, "request_timeout", 30*time.Second, "time limit of an inference request in the server (0: none)")
	fs.DurationVar(&cfg.DrainTimeout, "drain_timeout", 30*time.Second, "on SIGTERM or Ctrl-C, how long to wait for requests in flight (0: no limit)")
	fs.Var(boolValue{&quiet}, "quiet", "no log lines on stderr")
	if err := helpOr(e, fs, args, "mtlrank serve --model_repository DIR [--http_port 8000] [--grpc_port 8001] [flags]",
		`Serves the models of a model repository with the Open Inference Protocol (KServe v2,
as Triton, KServe and MLServer speak it): HTTP/REST with JSON tensors on --http_port and
the inference.GRPCInferenceService on --grpc_port.

Inputs are the model's feature columns, batched along dimension 0 (shape [rows] or
[rows, 1]): raw values (BYTES, INT*, FP32, FP64) encoded through the version's
workflow.json, or values already encoded under <feature>__encoded (the feature's own
name when the version has no workflow). Outputs are one FP32 score per row and task,
named like the prediction columns (click/binary_output). GET /v2/models/<name> lists
them. Prometheus metrics are at /metrics on the HTTP port. SIGTERM drains requests in
flight, then exits.`); err != nil {
		return err
	}
	if _, err := parseFlags(fs, args); err != nil {
		return err
	}
	if cfg.ModelRepository == "" {
		return usagef("--model_repository is required")
	}
	addr := func(flagName string, port int) (string, error) {
		switch {
		case port == -1:
			return "", nil
		case port < 0 || port > 65535:
			return "", usagef("--%s %d is not a port (0..65535, or -1 for none)", flagName, port)
		}
		return net.JoinHostPort(host, strconv.Itoa(port)), nil
	}
	var err error
	if cfg.HTTPAddr, err = addr("http_port", httpPort); err != nil {
		return err
	}
	if cfg.GRPCAddr, err = addr("grpc_port", grpcPort); err != nil {
		return err
	}
	if cfg.HTTPAddr == "" && cfg.GRPCAddr == "" {
		return usagef("--http_port -1 and --grpc_port -1 leave nothing to serve")
	}
	if cfg.Model.MaxBatch < 1 || cfg.Model.Workers < 0 || cfg.Model.Threads < 0 || cfg.Model.MaxQueueDelay < 0 ||
		cfg.RequestTimeout < 0 || cfg.DrainTimeout < 0 {
		return usagef("--max_batch must be >= 1; --workers, --threads, --max_queue_delay, --request_timeout and --drain_timeout >= 0")
	}
	if device != "cpu" {
		dev, err := newDevice(device, cfg.Model.Threads)
		if err != nil {
			return err
		}
		cfg.Model.Device = dev
	}
	cfg.Version = serveVersion
	cfg.Log = logger(e, quiet)

	ctx, stop := signal.NotifyContext(ctx, syscall.SIGTERM)
	defer stop()
	s, err := server.Start(cfg)
	if err != nil {
		return err
	}
	cfg.Log.Info("serving", "models", indexNames(s.Repo), "http", s.HTTPAddr(), "grpc", s.GRPCAddr(),
		"max_batch", cfg.Model.MaxBatch, "max_queue_delay", cfg.Model.MaxQueueDelay, "dynamic_batching", cfg.Model.DynamicBatching)
	select {
	case <-ctx.Done():
	case err = <-s.Errors():
	}
	if serr := s.Shutdown(); err == nil {
		err = serr
	}
	return err
}

func indexNames(r *serve.Repository) []string {
	idx, _ := r.Index(true)
	var out []string
	for _, e := range idx {
		out = append(out, fmt.Sprintf("%s/%s", e.Name, e.Version))
	}
	return out
}
