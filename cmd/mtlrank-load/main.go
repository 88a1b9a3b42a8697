// Command mtlrank-load measures `mtlrank serve` under load on loopback:
// throughput and p50/p99 latency at several concurrencies, for requests of
// one user x N candidate items in raw values or encoded ids (--inputs),
// over HTTP/JSON and gRPC, next to the in-process Scorer on the same model
// in the same run, given encoded ids (inproc) or encoding the raw values
// through the workflow first (inproc-raw).
//
// It starts the server itself on 127.0.0.1 (free ports) over a model
// repository: the one given, or a temporary one holding a TenRec-shaped
// MMoE with a workflow that hash-encodes raw ids. Every measurement is
// bounded by a duration and a request count.
//
//	mtlrank-load --concurrency 1,8,64 --duration 5s
//	mtlrank-load --repeat 3 --protocols inproc,inproc-raw,http,grpc --inputs raw,encoded
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"

	"github.com/mtlrank/mtlrank/serve/loadgen"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	if err := loadgen.Run(ctx, os.Args[1:], os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "mtlrank-load:", err)
		os.Exit(1)
	}
}
