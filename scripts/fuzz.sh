#!/usr/bin/env bash
# Runs every fuzz target for FUZZTIME (default 60s) each. The seed corpora in
# testdata/fuzz/ also run as plain tests under `go test`.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH=$PATH:/usr/local/go/bin
fuzztime=${FUZZTIME:-60s}
targets=(
	"./schema/ FuzzParsePbtxt"
	"./loader/ FuzzOpenCorrupt"
	"./mtl/safetensors/ FuzzDecode"
	"./preprocess/ FuzzRunCSV"
	"./preprocess/ FuzzParseWorkflow"
	"./mtl/ FuzzLoadCheckpoint"
)
for t in "${targets[@]}"; do
	set -- $t
	echo "== $2 ($1) for $fuzztime"
	go test "$1" -run '^$' -fuzz "^$2\$" -fuzztime "$fuzztime" -parallel "${FUZZPARALLEL:-2}"
done
