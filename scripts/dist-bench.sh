#!/usr/bin/env bash
# Issue 18's 2-rank figure: training throughput of 2 MPI ranks x 1 thread
# against 1 rank x 2 threads, same data, same global batch, one epoch each,
# in interleaved pairs (A, B, A, B ...) so that both see the same load.
# Prints one line per pair (examples/s of each, their ratio, the load
# average before the pair) and the median ratio.
#
# Environment (defaults in brackets):
#   PAIRS [5]  ROWS [600000]  BATCH [1024: the global batch]  MODEL [mlp]
#   RANK_ENV [empty: variables for each MPI rank, e.g. "GOMAXPROCS=1"]
#   MPI_ARGS [extra mpirun arguments, e.g. "--mca mpi_yield_when_idle 0"]
#   RANK_ARGS [extra train arguments of the 2-rank run, e.g. "--prefetch 2"]
#   BIND [none: the ranks are not bound to cores and mtlrank gives each its
#        share of the CPUs as GOMAXPROCS; core: mpirun's own default for 2
#        ranks, each bound to a core, whose affinity then sets GOMAXPROCS]
#   OUT [out/dist-bench]  BIN [bin/mtlrank-mpi]
#   BUILD [1: build BIN from this tree with -tags mpi; 0: run BIN as it is,
#         e.g. an earlier build to compare with]
# Needs mpirun and libopenmpi-dev (make setup installs them).
set -euo pipefail
cd "$(dirname "$0")/.."

PAIRS=${PAIRS:-5}
ROWS=${ROWS:-600000}
BATCH=${BATCH:-1024}
MODEL=${MODEL:-mlp}
RANK_ENV=${RANK_ENV:-}
MPI_ARGS=${MPI_ARGS:-}
RANK_ARGS=${RANK_ARGS:-}
BIND=${BIND:-none}
OUT=${OUT:-out/dist-bench}
BIN=${BIN:-bin/mtlrank-mpi}

command -v mpirun >/dev/null || { echo "dist-bench: mpirun not found (make setup installs Open MPI)" >&2; exit 1; }
mkdir -p "$(dirname "$BIN")" "$OUT"
if [ "${BUILD:-1}" != 0 ]; then
	go build -tags mpi -o "$BIN" ./cmd/mtlrank
fi
DATA="$OUT/data-$ROWS"
if [ ! -d "$DATA" ]; then
	"$BIN" synth --output_path "$DATA" --rows "$ROWS" --row_group_rows 8192 >/dev/null
fi

root=()
[ "$(id -u)" = 0 ] && root=(--allow-run-as-root)
# Each rank's environment goes through mpirun -x.
xenv=()
for kv in $RANK_ENV; do
	xenv+=(-x "$kv")
done
common=(--train_data_path "$DATA" --epochs 1 --model "$MODEL" --train_batch_size "$BATCH"
	--train_metrics_steps 0 --quiet)

eps() { # examples/s of the run whose metrics.json is in $1
	sed -n 's/.*"examples_per_s": *\([0-9.e+]*\).*/\1/p' "$1/metrics.json" | head -1
}

ratios=()
for i in $(seq 1 "$PAIRS"); do
	load=$(cut -d' ' -f1 /proc/loadavg)
	rm -rf "$OUT/one" "$OUT/two"
	"$BIN" train "${common[@]}" --threads 2 --output_path "$OUT/one" >/dev/null
	# --oversubscribe turns Open MPI's binding off; bound ranks go without it.
	bind=(--bind-to "$BIND")
	[ "$BIND" = none ] && bind+=(--oversubscribe)
	mpirun -np 2 "${bind[@]}" "${root[@]}" "${xenv[@]}" \
		--mca btl self,vader,tcp --mca pml ob1 --mca btl_vader_single_copy_mechanism none \
		--mca mpi_yield_when_idle 1 $MPI_ARGS \
		"$BIN" train "${common[@]}" --threads 1 --distributed mpi $RANK_ARGS --output_path "$OUT/two" >/dev/null
	one=$(eps "$OUT/one")
	two=$(eps "$OUT/two")
	r=$(awk -v a="$one" -v b="$two" 'BEGIN { printf "%.3f", b / a }')
	ratios+=("$r")
	printf 'pair %d: load %s  1 rank x 2 threads %.0f  2 ranks x 1 thread %.0f  ratio %s\n' "$i" "$load" "$one" "$two" "$r"
done
printf '%s\n' "${ratios[@]}" | sort -n | awk -v load="$(cut -d' ' -f1 /proc/loadavg)" '{ a[NR] = $1 }
END {
	m = (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2
	printf "median ratio %.3f of %d pairs (min %s, max %s); load average now %s\n", m, NR, a[1], a[NR], load
}'
