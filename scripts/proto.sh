#!/usr/bin/env bash
# Regenerates the Go code of the Open Inference Protocol's gRPC interface
# (serve/inferencepb) from serve/inferencepb/grpc_predict_v2.proto. The
# generated files are committed: the normal build does not need protoc.
# Needs protoc (Debian: protobuf-compiler) and the Go plugins, installed
# here at the versions the committed code was generated with.
set -euo pipefail
cd "$(dirname "$0")/.."

PROTOC_GEN_GO_VERSION=v1.36.12
PROTOC_GEN_GO_GRPC_VERSION=v1.6.0

if ! command -v protoc >/dev/null; then
	SUDO=$([ "$(id -u)" = 0 ] || echo sudo)
	$SUDO apt-get update -qq
	$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq protobuf-compiler
fi
bin=$(mktemp -d)
trap 'rm -rf "$bin"' EXIT
GOBIN=$bin go install "google.golang.org/protobuf/cmd/protoc-gen-go@$PROTOC_GEN_GO_VERSION"
GOBIN=$bin go install "google.golang.org/grpc/cmd/protoc-gen-go-grpc@$PROTOC_GEN_GO_GRPC_VERSION"

pkg=github.com/mtlrank/mtlrank/serve/inferencepb
# The published .proto has no go_package option: map it here instead of
# editing the protocol's file.
PATH=$bin:$PATH protoc -I serve/inferencepb \
	--go_out=serve/inferencepb --go_opt=paths=source_relative \
	--go_opt=Mgrpc_predict_v2.proto=$pkg \
	--go-grpc_out=serve/inferencepb --go-grpc_opt=paths=source_relative \
	--go-grpc_opt=Mgrpc_predict_v2.proto=$pkg \
	grpc_predict_v2.proto
echo "generated serve/inferencepb"
