#!/usr/bin/env bash
# The loader's cost per row in training, A against B, interleaved
# (A, B, A, B ...) so that both see the same load.
#
#   scripts/loader-bench.sh bench A.test B.test
#     BenchmarkLoaderTrain (and LoaderTenrec/shuffle64k) of two loader test
#     binaries ('go test -c -o A.test ./loader' in two trees); prints each
#     round's ns/row and the best of ROUNDS per variant.
#   scripts/loader-bench.sh train A B
#     'GOMAXPROCS=1 mtlrank train ... --model mlp --train_batch_size 512
#     --threads 1' over ROWS synthetic rows in 8192-row groups (the data of
#     scripts/dist-bench.sh), binaries A and B; prints examples/s and the
#     process's CPU time of each pair, the ratios B/A and their medians.
#
# Environment (defaults in brackets): ROUNDS [3: bench rounds, train
# pairs], BENCHTIME [20x], BENCH [LoaderTrain|LoaderTenrec/shuffle64k],
# ROWS [2000000], MODEL [mlp], BATCH [512], OUT [out/loader-bench],
# PERF [0; 1: train runs under 'perf record -F 999 -g' and print the samples
# under the loader's goroutine: its cost in training, steadier than
# examples/s when other work shares the cores].
set -euo pipefail
cd "$(dirname "$0")/.."

mode=${1:-}
A=${2:-}
B=${3:-}
if [ -z "$mode" ] || [ -z "$A" ] || [ -z "$B" ]; then
	echo "usage: $0 bench A.test B.test | train A B" >&2
	exit 2
fi
ROUNDS=${ROUNDS:-3}
OUT=${OUT:-out/loader-bench}
mkdir -p "$OUT"

case $mode in
bench)
	BENCHTIME=${BENCHTIME:-20x}
	BENCH=${BENCH:-'LoaderTrain|LoaderTenrec/shuffle64k'}
	for i in $(seq 1 "$ROUNDS"); do
		for side in A B; do
			bin=$A
			[ $side = B ] && bin=$B
			echo "round $i $side load $(cut -d' ' -f1 /proc/loadavg)"
			"$bin" -test.run XXX -test.bench "$BENCH" -test.benchtime "$BENCHTIME" -test.benchmem |
				awk -v side=$side '/^Benchmark/ {
					name = $1; sub(/-[0-9]+$/, "", name)
					nsrow = 0; cpu = 0
					for (k = 2; k < NF; k++) {
						if ($(k+1) == "ns/row") nsrow = $k
						if ($(k+1) == "rows/s" && nsrow == 0) nsrow = 1e9 / $k
						if ($(k+1) == "cpu-ns/row") cpu = $k
						if ($(k+1) == "B/op") bop = $k
					}
					printf "  %s %-42s %8.1f ns/row %8.1f cpu-ns/row %11d B/op\n", side, name, nsrow, cpu, bop
				}'
		done
	done | tee "$OUT/bench.txt"
	awk '$1 == "A" || $1 == "B" {
		k = $2 SUBSEP $1
		if (!(k in best) || $3 < best[k]) best[k] = $3
		if (!(k in bcpu) || $5 < bcpu[k]) bcpu[k] = $5
		names[$2] = 1
	}
	END {
		print "best of rounds: wall ns/row A, B, B/A; CPU ns/row (collector included) A, B, B/A"
		for (n in names) printf "  %-42s %7.1f %7.1f %.3f   %7.1f %7.1f %.3f\n", n,
			best[n, "A"], best[n, "B"], best[n, "B"] / best[n, "A"],
			bcpu[n, "A"], bcpu[n, "B"], (bcpu[n, "A"] > 0 ? bcpu[n, "B"] / bcpu[n, "A"] : 0)
	}' "$OUT/bench.txt"
	echo "load average now $(cut -d' ' -f1-3 /proc/loadavg)"
	;;
train)
	ROWS=${ROWS:-2000000}
	MODEL=${MODEL:-mlp}
	BATCH=${BATCH:-512}
	DATA="$OUT/data-$ROWS"
	if [ ! -d "$DATA" ]; then
		"$A" synth --output_path "$DATA" --rows "$ROWS" --row_group_rows 8192 >/dev/null
	fi
	eps() { sed -n 's/.*"examples_per_s": *\([0-9.e+]*\).*/\1/p' "$1/metrics.json" | head -1; }
	ratios=()
	cratios=()
	for i in $(seq 1 "$ROUNDS"); do
		load=$(cut -d' ' -f1 /proc/loadavg)
		for side in A B; do
			bin=$A
			[ $side = B ] && bin=$B
			rm -rf "$OUT/$side"
			# GNU time: the process's user + system CPU seconds, which
			# move less than examples/s when other work shares the cores.
			prof=()
			[ "${PERF:-0}" = 1 ] && prof=(perf record -q -F 999 -g -o "$OUT/$side.perf")
			GOMAXPROCS=1 /usr/bin/time -f '%U %S' -o "$OUT/$side.cpu" "${prof[@]}" "$bin" train \
				--train_data_path "$DATA" --epochs 1 --model "$MODEL" \
				--train_batch_size "$BATCH" --threads 1 --train_metrics_steps 0 --quiet \
				--output_path "$OUT/$side" >/dev/null 2>"$OUT/$side.err"
			if [ "${PERF:-0}" = 1 ]; then
				# Samples under the loader's prefetch goroutine (1 ms each).
				total=$(perf script -i "$OUT/$side.perf" -F comm 2>/dev/null | wc -l)
				share=$(perf report -i "$OUT/$side.perf" --children --sort symbol --stdio -g none 2>/dev/null |
					awk '!done && /loader\.\(\*Iterator\)\.run/ { sub(/%/, "", $1); print $1; done = 1 }')
				awk -v s="$side" -v t="$total" -v p="${share:-0}" 'BEGIN {
					printf "  %s perf: %d samples, %.0f (%.2f%%) under loader.(*Iterator).run\n", s, t, p * t / 100, p }'
			fi
		done
		a=$(eps "$OUT/A")
		b=$(eps "$OUT/B")
		ca=$(awk '{ print $1 + $2 }' "$OUT/A.cpu")
		cb=$(awk '{ print $1 + $2 }' "$OUT/B.cpu")
		r=$(awk -v a="$a" -v b="$b" 'BEGIN { printf "%.3f", b / a }')
		cr=$(awk -v a="$ca" -v b="$cb" 'BEGIN { printf "%.3f", b / a }')
		ratios+=("$r")
		cratios+=("$cr")
		printf 'pair %d: load %s  examples/s A %.0f  B %.0f  B/A %s   CPU s A %.2f  B %.2f  B/A %s\n' \
			"$i" "$load" "$a" "$b" "$r" "$ca" "$cb" "$cr"
	done
	median() {
		sort -n | awk -v what="$1" '{ a[NR] = $1 }
		END {
			m = (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2
			printf "median %s B/A %.3f of %d pairs (min %s, max %s)\n", what, m, NR, a[1], a[NR]
		}'
	}
	printf '%s\n' "${ratios[@]}" | median examples/s
	printf '%s\n' "${cratios[@]}" | median "CPU time"
	echo "load average now $(cut -d' ' -f1-3 /proc/loadavg)"
	;;
*)
	echo "usage: $0 bench A.test B.test | train A B" >&2
	exit 2
	;;
esac
