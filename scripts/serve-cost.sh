#!/bin/sh
# Where the CPU of a gRPC request goes in `mtlrank serve`, beyond scoring:
# runs the load generator over gRPC alone at one concurrency with a CPU
# profile of the process (client and server share it), sorts every sample
# into a stage by its stack, and prints each stage's CPU in microseconds per
# request and per row.
#
#   scripts/serve-cost.sh [concurrency [duration [extra mtlrank-load flags]]]
#   scripts/serve-cost.sh 64 5s
#
# MTLRANK_LOAD names a load generator binary to use instead of building
# ./cmd/mtlrank-load (e.g. one built from another commit, to compare).
#
# A sample goes to the first stage whose pattern one of its frames holds, in
# this order: scoring (the model's forward pass and its threads), metrics,
# garbage collection, the client (the load generator's calls and its gRPC
# transport), decode (protobuf and the protocol's tensors), workflow
# encoding, the batcher, the answer (building and marshalling it), the
# server's gRPC transport and handler, and the rest (Go's scheduler and
# runtime).
set -eu
conc=${1:-64}
dur=${2:-5s}
[ $# -ge 2 ] && shift 2 || shift $#
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
load=${MTLRANK_LOAD:-}
if [ -z "$load" ]; then
	go build -o "$tmp/mtlrank-load" ./cmd/mtlrank-load
	load=$tmp/mtlrank-load
fi
"$load" --protocols grpc --concurrency "$conc" --duration "$dur" --cpuprofile "$tmp/cpu.prof" "$@" | tee "$tmp/table.txt"
requests=$(awk '$1 == "grpc" { print $3 }' "$tmp/table.txt" | tail -1)
rows=$(awk '/candidates per request/ { print $1; exit }' "$tmp/table.txt")
go tool pprof -traces "$load" "$tmp/cpu.prof" 2>/dev/null | awk -v requests="$requests" -v rows="$rows" '
BEGIN {
	n = 0
	stage[++n] = "scoring";            pat[n] = "mtl\\.\\(\\*Scorer\\)\\.Score|kernels\\.\\(\\*pool\\)\\.worker"
	stage[++n] = "metrics";            pat[n] = "prometheus"
	stage[++n] = "garbage collection"; pat[n] = "runtime\\.gcBgMarkWorker|runtime\\.gcAssist|runtime\\.bgsweep|runtime\\.bgscavenge"
	stage[++n] = "client";             pat[n] = "loadgen\\.runPoint|NewHTTP2Client|http2Client\\)\\.reader"
	stage[++n] = "decode";             pat[n] = "grpcapi\\.decodeInfer|codecV2\\)\\.Unmarshal"
	stage[++n] = "workflow encoding";  pat[n] = "serve\\.\\(\\*Model\\)\\.encode"
	stage[++n] = "batcher";            pat[n] = "batch\\.\\(\\*Batcher\\)"
	stage[++n] = "answer";             pat[n] = "grpcapi\\.\\(\\*Service\\)\\.ModelInfer|codecV2\\)\\.Marshal|sendResponse"
	stage[++n] = "server transport";   pat[n] = "NewServerTransport|http2Server|grpc\\.\\(\\*Server\\)"
	stage[++n] = "other runtime";      pat[n] = "."
}
function flush(   i, k) {
	if (v == 0) return
	for (i = 1; i <= n; i++) if (frames ~ pat[i]) { k = i; break }
	cpu[k] += v; total += v; v = 0; frames = ""
}
/^-+\+-+$/ { flush(); next }
/^ +[0-9.]+(ms|s|us) / {
	flush()
	v = $1; unit = $1; sub(/[0-9.]+/, "", unit); sub(/[a-z]+$/, "", v)
	v = (unit == "s") ? v * 1e6 : (unit == "ms") ? v * 1e3 : v
	frames = $2; next
}
{ frames = frames " " $1 }
END {
	flush()
	printf "\n%-20s %10s %8s %10s %10s\n", "stage", "cpu ms", "share", "us/request", "us/row"
	for (i = 1; i <= n; i++)
		printf "%-20s %10.0f %7.1f%% %10.1f %10.2f\n", stage[i], cpu[i] / 1e3, 100 * cpu[i] / total, cpu[i] / requests, cpu[i] / requests / rows
	printf "%-20s %10.0f %7.1f%% %10.1f %10.2f\n", "total", total / 1e3, 100, total / requests, total / requests / rows
	printf "(%d requests of %d rows)\n", requests, rows
}'
