// Package server runs the Open Inference Protocol's HTTP and gRPC front
// ends over a model repository and shuts them down gracefully.
package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"

	"github.com/mtlrank/mtlrank/serve"
	"github.com/mtlrank/mtlrank/serve/grpcapi"
	"github.com/mtlrank/mtlrank/serve/httpapi"
	pb "github.com/mtlrank/mtlrank/serve/inferencepb"
)

// Name is the server name the protocol's metadata reports.
const Name = "mtlrank"

// Config configures a Server.
type Config struct {
	// ModelRepository is the folder of DIR/<name>/<version>/ checkpoints.
	ModelRepository string
	Model           serve.ModelOptions
	// HTTPAddr and GRPCAddr are the listen addresses ("127.0.0.1:8000";
	// port 0 picks a free port). Empty disables that front end.
	HTTPAddr, GRPCAddr string
	// MaxRequestBytes bounds a request (HTTP body, gRPC message).
	MaxRequestBytes int64
	// RequestTimeout bounds an inference request's time in the server.
	RequestTimeout time.Duration
	// DrainTimeout bounds the wait for requests in flight at shutdown.
	DrainTimeout time.Duration
	// Version is the server version the metadata reports.
	Version string
	Log     *slog.Logger
}

// Server is a running server.
type Server struct {
	cfg      Config
	Repo     *serve.Repository
	Metrics  *serve.Metrics
	httpLn   net.Listener
	grpcLn   net.Listener
	httpSrv  *http.Server
	grpcSrv  *grpc.Server
	draining atomic.Bool
	errs     chan error
}

// Start loads every model of the repository and starts listening. Call
// Shutdown to stop.
func Start(cfg Config) (*Server, error) {
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	if cfg.HTTPAddr == "" && cfg.GRPCAddr == "" {
		return nil, errors.New("serve: neither an HTTP nor a gRPC address")
	}
	s := &Server{cfg: cfg, Metrics: serve.NewMetrics(), errs: make(chan error, 2)}
	repo, err := serve.NewRepository(cfg.ModelRepository, cfg.Model, s.Metrics, cfg.Log)
	if err != nil {
		return nil, err
	}
	if err := repo.LoadAll(); err != nil {
		repo.Close()
		return nil, err
	}
	s.Repo = repo
	ready := func() bool { return !s.draining.Load() }
	if cfg.HTTPAddr != "" {
		if s.httpLn, err = net.Listen("tcp", cfg.HTTPAddr); err != nil {
			repo.Close()
			return nil, fmt.Errorf("serve: HTTP: %w", err)
		}
		h := httpapi.New(repo, s.Metrics, httpapi.Options{ServerName: Name, ServerVersion: cfg.Version,
			MaxRequestBytes: cfg.MaxRequestBytes, RequestTimeout: cfg.RequestTimeout, Ready: ready, Log: cfg.Log})
		s.httpSrv = &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second,
			ErrorLog: slog.NewLogLogger(cfg.Log.Handler(), slog.LevelWarn)}
		if cfg.RequestTimeout > 0 {
			// Reading a body and writing an answer get the request's time
			// limit each, on top of the inference's own.
			s.httpSrv.ReadTimeout = cfg.RequestTimeout + 10*time.Second
			s.httpSrv.WriteTimeout = 2*cfg.RequestTimeout + 10*time.Second
		}
		go func() {
			if err := s.httpSrv.Serve(s.httpLn); err != nil && !errors.Is(err, http.ErrServerClosed) {
				s.errs <- fmt.Errorf("serve: HTTP: %w", err)
			}
		}()
		cfg.Log.Info("HTTP endpoint listening", "address", s.httpLn.Addr().String())
	}
	if cfg.GRPCAddr != "" {
		if s.grpcLn, err = net.Listen("tcp", cfg.GRPCAddr); err != nil {
			s.closeHTTP()
			repo.Close()
			return nil, fmt.Errorf("serve: gRPC: %w", err)
		}
		svc := grpcapi.New(repo, s.Metrics, grpcapi.Options{ServerName: Name, ServerVersion: cfg.Version,
			Extensions: httpapi.Extensions, RequestTimeout: cfg.RequestTimeout, Ready: ready, Log: cfg.Log})
		var opts []grpc.ServerOption
		opts = append(opts, grpc.UnaryInterceptor(svc.Interceptor))
		if cfg.MaxRequestBytes > 0 {
			opts = append(opts, grpc.MaxRecvMsgSize(int(cfg.MaxRequestBytes)))
		}
		s.grpcSrv = grpc.NewServer(opts...)
		pb.RegisterGRPCInferenceServiceServer(s.grpcSrv, svc)
		go func() {
			if err := s.grpcSrv.Serve(s.grpcLn); err != nil && !errors.Is(err, grpc.ErrServerStopped) {
				s.errs <- fmt.Errorf("serve: gRPC: %w", err)
			}
		}()
		cfg.Log.Info("gRPC endpoint listening", "address", s.grpcLn.Addr().String())
	}
	return s, nil
}

// HTTPAddr is the HTTP listener's address ("" without one).
func (s *Server) HTTPAddr() string {
	if s.httpLn == nil {
		return ""
	}
	return s.httpLn.Addr().String()
}

// GRPCAddr is the gRPC listener's address ("" without one).
func (s *Server) GRPCAddr() string {
	if s.grpcLn == nil {
		return ""
	}
	return s.grpcLn.Addr().String()
}

// Errors reports a front end that stopped on its own.
func (s *Server) Errors() <-chan error { return s.errs }

func (s *Server) closeHTTP() {
	if s.httpSrv != nil {
		_ = s.httpSrv.Close()
	}
}

// Shutdown stops taking requests (readiness turns false, new inference
// requests get 503 / UNAVAILABLE), waits up to the drain timeout for the
// requests in flight, then frees the models.
func (s *Server) Shutdown() error {
	s.draining.Store(true)
	s.cfg.Log.Info("shutting down: draining requests in flight", "timeout", s.cfg.DrainTimeout)
	ctx := context.Background()
	if s.cfg.DrainTimeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, s.cfg.DrainTimeout)
		defer cancel()
	}
	var err error
	done := make(chan struct{})
	go func() {
		defer close(done)
		if s.grpcSrv != nil {
			s.grpcSrv.GracefulStop()
		}
	}()
	if s.httpSrv != nil {
		if e := s.httpSrv.Shutdown(ctx); e != nil {
			err = fmt.Errorf("serve: HTTP drain: %w", e)
			s.closeHTTP()
		}
	}
	select {
	case <-done:
	case <-ctx.Done():
		s.grpcSrv.Stop()
		<-done
		if err == nil {
			err = errors.New("serve: gRPC drain: timed out")
		}
	}
	s.Repo.Close()
	s.cfg.Log.Info("stopped")
	return err
}
