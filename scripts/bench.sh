#!/usr/bin/env bash
# Side-by-side training and inference throughput of mtlrank and the PyTorch
# reference (bench/torch_ref.py) on this machine, same schema, same
# model shapes, same batch size.
#
# For every model, mtlrank bench runs once per mode; the reference runs with
# dense and sparse embedding gradients (--sparse) and with fused and naive
# experts (--impl), and its best result per mode is the comparison point.
#
# Environment (defaults in brackets):
#   MODELS ["mlp mmoe cgc ple dcn dlrm deepfm wide_n_deep"]  THREADS [2]  BATCH [1024]  STEPS [50]
#   WARMUP [5]  TABLE_ROWS [0 = tenrec defaults]  DEVICE [cpu]
#   REF [bench/torch_ref.py]  BIN [bin/mtlrank]
#   OUT [out/bench]: raw JSON lines and the table are written there.
set -euo pipefail
cd "$(dirname "$0")/.."

MODELS=${MODELS:-"mlp mmoe cgc ple dcn dlrm deepfm wide_n_deep"}
THREADS=${THREADS:-2}
BATCH=${BATCH:-1024}
STEPS=${STEPS:-50}
WARMUP=${WARMUP:-5}
TABLE_ROWS=${TABLE_ROWS:-0}
DEVICE=${DEVICE:-cpu}
REF=${REF:-bench/torch_ref.py}
BIN=${BIN:-bin/mtlrank}
OUT=${OUT:-out/bench}
PY=/usr/bin/python3

if [ "$BIN" = bin/mtlrank ] && command -v go >/dev/null; then
	go build -o "$BIN" ./cmd/mtlrank # incremental: keeps the binary current
elif [ ! -x "$BIN" ]; then
	echo "bench: $BIN not found and no Go toolchain to build it" >&2
	exit 1
fi
if [ ! -f "$REF" ]; then
	echo "bench: reference script $REF not found (set REF=...)" >&2
	exit 1
fi
if ! "$PY" -c 'import torch' 2>/dev/null; then
	echo "bench: installing python3-torch (Debian package) for the reference" >&2
	SUDO=""
	[ "$(id -u)" = 0 ] || SUDO=sudo
	$SUDO apt-get update -qq
	$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-torch
fi

mkdir -p "$OUT"
RAW="$OUT/raw.jsonl"
: >"$RAW"
common=(--threads "$THREADS" --batch "$BATCH" --steps "$STEPS" --warmup "$WARMUP" --table_rows "$TABLE_ROWS" --device "$DEVICE")

for model in $MODELS; do
	echo "bench: $model: mtlrank" >&2
	"$BIN" bench --model "$model" --mode both "${common[@]}" |
		"$PY" -c 'import json,sys
for l in sys.stdin:
    l=l.strip()
    if l.startswith("{"):
        d=json.loads(l); d["impl_name"]="mtlrank"; print(json.dumps(d))' >>"$RAW"
	for impl in fused naive; do
		for sparse in "" "--sparse"; do
			echo "bench: $model: torch --impl $impl $sparse" >&2
			"$PY" "$REF" --model "$model" --mode both --impl "$impl" $sparse "${common[@]}" |
				"$PY" -c 'import json,sys
for l in sys.stdin:
    l=l.strip()
    if l.startswith("{"):
        d=json.loads(l); d["impl_name"]="torch"; print(json.dumps(d))' >>"$RAW"
		done
	done
done

"$PY" - "$RAW" <<'EOF' | tee "$OUT/table.txt"
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
best = {}
for r in rows:
    key = (r["model"], r["mode"], r["impl_name"])
    if key not in best or r["examples_per_s"] > best[key]["examples_per_s"]:
        best[key] = r
models = []
for r in rows:
    if r["model"] not in models:
        models.append(r["model"])
print(f"{'model':6} {'mode':6} {'mtlrank ex/s':>14} {'torch ex/s':>12}  {'torch config':22} {'ratio':>6}")
for m in models:
    for mode in ("train", "infer"):
        a, b = best.get((m, mode, "mtlrank")), best.get((m, mode, "torch"))
        if not a or not b:
            continue
        cfg = f"{b.get('impl')}{' sparse' if b.get('sparse') else ''}"
        ratio = a["examples_per_s"] / b["examples_per_s"]
        print(f"{m:6} {mode:6} {a['examples_per_s']:14.0f} {b['examples_per_s']:12.0f}  {cfg:22} {ratio:6.2f}x")
# Both sides must run the same model: a different parameter count means the
# reference and mtlrank disagree on the architecture or the embedding sizes.
params = {}
for r in rows:
    params.setdefault(r["model"], {})[r["impl_name"]] = r.get("params")
for m, p in params.items():
    if len(set(p.values())) > 1:
        print(f"bench: warning: {m}: parameter counts differ ({p}); the ratios compare different models", file=sys.stderr)
th = rows[0].get("threads") if rows else "?"
print(f"\nthreads={th} batch={rows[0].get('batch') if rows else '?'}; torch column = best of --impl fused/naive x dense/--sparse")
EOF
