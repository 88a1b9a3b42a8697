#!/usr/bin/env bash
# The training step against the GEMM ceiling at the models' shapes (issue
# 19's table), for mlp, mmoe, cgc and ple at batch 1024 on 2 threads:
#
#   ceiling    BenchmarkModelGemmShapes: the forward GEMMs of every Dense and
#              expert kernel, 2 goroutines x 512 rows, mtlrank's kernels
#   OpenBLAS   the same with MTLRANK_GEMM=blas
#   step       BenchmarkTrainStep (3 x the forward FLOPs per example)
#   share      step / ceiling
#
# Wall-clock GFLOP/s as the Go benchmarks report them, and the same ratio
# in CPU time (the benchmarks' cpu-ns/op: 3 x ceiling cpu-ns / step
# cpu-ns), which moves less when other jobs share the cores. Each figure is
# the best of ROUNDS runs.
#
# Usage: scripts/step-ceiling.sh [test-binary ...]
#   With no argument it builds the mtl package's test binary from this tree.
#   With several (`go test -c ./mtl` of two trees), the runs interleave
#   (A, B, A, B, ...) and one table per binary is printed, with the load
#   average before and after.
# Environment: ROUNDS [3]  BENCHTIME [2s]  MODELS ["mlp mmoe cgc ple"]
set -euo pipefail
cd "$(dirname "$0")/.."

ROUNDS=${ROUNDS:-3}
BENCHTIME=${BENCHTIME:-2s}
MODELS=${MODELS:-"mlp mmoe cgc ple"}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

bins=("$@")
if [ ${#bins[@]} -eq 0 ]; then
	go test -c -o "$tmp/mtl.test" ./mtl
	bins=("$tmp/mtl.test")
fi
re="($(echo "$MODELS" | tr ' ' '|'))"
load0=$(cut -d' ' -f1-3 /proc/loadavg)

for ((r = 1; r <= ROUNDS; r++)); do
	for i in "${!bins[@]}"; do
		echo "step-ceiling: round $r, ${bins[$i]} (load $(cut -d' ' -f1-3 /proc/loadavg))" >&2
		for bench in "TrainStep\$/$re\$" "ModelGemmShapes/$re\$"; do
			(cd "$tmp" && "${bins[$i]}" -test.run XXX -test.bench "$bench" -test.benchtime "$BENCHTIME") |
				grep '^Benchmark' | sed "s/^/$i kernels /" >>"$tmp/raw"
		done
		(cd "$tmp" && MTLRANK_GEMM=blas "${bins[$i]}" -test.run XXX -test.bench "ModelGemmShapes/$re\$" \
			-test.benchtime "$BENCHTIME") | grep '^Benchmark' | sed "s/^/$i blas /" >>"$tmp/raw"
	done
done
load1=$(cut -d' ' -f1-3 /proc/loadavg)

for i in "${!bins[@]}"; do
	echo
	echo "${bins[$i]}: best of $ROUNDS, -benchtime $BENCHTIME; load average before: $load0, after: $load1"
	awk -v bin="$i" -v models="$MODELS" '
	$1 != bin { next }
	{
		split($3, name, "/"); sub(/-[0-9]+$/, "", name[2]); m = name[2]
		gf = 0; cpu = 0
		for (k = 4; k < NF; k++) {
			if ($(k + 1) == "GFLOP/s") gf = $k
			if ($(k + 1) == "cpu-ns/op") cpu = $k
		}
		if (name[1] == "BenchmarkTrainStep") key = "step"
		else key = ($2 == "blas") ? "blas" : "ceil"
		if (gf > best[key, m]) best[key, m] = gf
		if (cpu > 0 && (bestcpu[key, m] == 0 || cpu < bestcpu[key, m])) bestcpu[key, m] = cpu
	}
	END {
		printf "| model | our GEMM kernels at the forward shapes | OpenBLAS at those shapes | train step | share of our ceiling | share in CPU time |\n"
		printf "|---|---:|---:|---:|---:|---:|\n"
		n = split(models, ms, " ")
		for (j = 1; j <= n; j++) {
			m = ms[j]
			share = best["ceil", m] > 0 ? 100 * best["step", m] / best["ceil", m] : 0
			cshare = bestcpu["step", m] > 0 ? 100 * 3 * bestcpu["ceil", m] / bestcpu["step", m] : 0
			printf "| %s | %.0f GFLOP/s | %.0f | %.0f | %.0f%% | %.0f%% |\n", m, best["ceil", m], best["blas", m], best["step", m], share, cshare
		}
	}' "$tmp/raw"
done
