package server_test

import (
	"bytes"
	"context"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/mtlrank/mtlrank/kernels"
	"github.com/mtlrank/mtlrank/mtl"
	"github.com/mtlrank/mtlrank/preprocess"
	"github.com/mtlrank/mtlrank/serve"
	"github.com/mtlrank/mtlrank/serve/grpcapi"
	"github.com/mtlrank/mtlrank/serve/httpapi"
	pb "github.com/mtlrank/mtlrank/serve/inferencepb"
	"github.com/mtlrank/mtlrank/serve/loadgen"
	"github.com/mtlrank/mtlrank/serve/server"
)

// BenchmarkRequestCost measures what one request of one user x 128
// candidates (raw values, TenRec-shaped MMoE with the benchmark settings of docs/ARCHITECTURE.md)
// costs, one at a time on one thread, from the bare Scorer to a client
// call over loopback:
//
//   - scorer: mtl.Scorer.Score on the encoded batch (the model alone);
//   - http-handler: the HTTP handler without a network (JSON decode,
//     workflow encoding, batcher, scoring, JSON encode);
//   - grpc-service: protobuf decode, the gRPC service, protobuf encode;
//   - http-loopback, grpc-loopback: a client call through the server on
//     127.0.0.1 (client work included).
//
// The differences with scorer are the server's cost beyond scoring.
func BenchmarkRequestCost(b *testing.B) {
	repo := b.TempDir()
	if err := loadgen.WriteModel(repo, "ranker", "mmoe"); err != nil {
		b.Fatal(err)
	}
	dir := filepath.Join(repo, "ranker", "1")
	s, err := server.Start(server.Config{ModelRepository: repo, HTTPAddr: "127.0.0.1:0", GRPCAddr: "127.0.0.1:0",
		Model: serve.ModelOptions{MaxBatch: 1024, Workers: 1, Threads: 1, DynamicBatching: true}})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Shutdown()
	wf, err := preprocess.LoadWorkflow(filepath.Join(dir, serve.WorkflowFile))
	if err != nil {
		b.Fatal(err)
	}
	sc, err := mtl.LoadScorer(dir, kernels.NewCPU(1), mtl.ScorerOptions{MaxBatch: 1024, Workers: 1})
	if err != nil {
		b.Fatal(err)
	}
	defer sc.Close()
	const rows = 128
	reqs, err := loadgen.BuildRequests(wf, sc.Model().Schema(), sc.Model().InputColumns(), "ranker", rows)
	if err != nil {
		b.Fatal(err)
	}
	n := len(reqs.HTTP)
	report := func(b *testing.B) {
		b.ReportMetric(float64(b.Elapsed().Microseconds())/float64(b.N), "us/request")
	}

	b.Run("scorer", func(b *testing.B) {
		out := make([][]float32, len(sc.Tasks()))
		for t := range out {
			out[t] = make([]float32, rows)
		}
		b.ReportAllocs()
		for i := 0; b.Loop(); i++ {
			if err := sc.Score(reqs.Batch[i%n].Batch(), out); err != nil {
				b.Fatal(err)
			}
		}
		report(b)
	})
	h := httpapi.New(s.Repo, s.Metrics, httpapi.Options{})
	b.Run("http-handler", func(b *testing.B) {
		b.ReportAllocs()
		for i := 0; b.Loop(); i++ {
			req := httptest.NewRequest("POST", "/v2/models/ranker/infer", bytes.NewReader(reqs.HTTP[i%n]))
			w := httptest.NewRecorder()
			h.ServeHTTP(w, req)
			if w.Code != http.StatusOK {
				b.Fatal(w.Body.String())
			}
		}
		report(b)
	})
	svc := grpcapi.New(s.Repo, s.Metrics, grpcapi.Options{})
	wire := make([][]byte, n)
	for i, r := range reqs.GRPC {
		if wire[i], err = proto.Marshal(r); err != nil {
			b.Fatal(err)
		}
	}
	b.Run("grpc-service", func(b *testing.B) {
		b.ReportAllocs()
		ctx := context.Background()
		for i := 0; b.Loop(); i++ {
			var req pb.ModelInferRequest
			if err := proto.Unmarshal(wire[i%n], &req); err != nil {
				b.Fatal(err)
			}
			resp, err := svc.ModelInfer(ctx, &req)
			if err != nil {
				b.Fatal(err)
			}
			if _, err := proto.Marshal(resp); err != nil {
				b.Fatal(err)
			}
		}
		report(b)
	})
	url := "http://" + s.HTTPAddr() + "/v2/models/ranker/infer"
	b.Run("http-loopback", func(b *testing.B) {
		b.ReportAllocs()
		for i := 0; b.Loop(); i++ {
			resp, err := http.Post(url, "application/json", bytes.NewReader(reqs.HTTP[i%n]))
			if err != nil {
				b.Fatal(err)
			}
			var buf bytes.Buffer
			_, _ = buf.ReadFrom(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				b.Fatal(buf.String())
			}
		}
		report(b)
	})
	b.Run("grpc-loopback", func(b *testing.B) {
		c := grpcClient(b, s.GRPCAddr())
		ctx := context.Background()
		b.ReportAllocs()
		for i := 0; b.Loop(); i++ {
			if _, err := c.ModelInfer(ctx, reqs.GRPC[i%n]); err != nil {
				b.Fatal(err)
			}
		}
		report(b)
	})
}
