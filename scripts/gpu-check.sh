#!/usr/bin/env bash
# GPU check, run from the repository root on the GPU machine (CUDA toolkit,
# CMake, PyTorch; no Go, no network) with $OUT set to a folder for the logs.
# Needs bin/gpu-bundle.tar.xz from scripts/gpu-prepare.sh (carried along).
#
# Steps, each with its own time limit inside a total budget (BUDGET seconds,
# default 450, under the 8 minutes allowed), most important first:
#   1. environment (which go: absent is expected), rebuild of libmtlcuda.so
#      with CMake for this GPU (CUDA_ARCH, default 90);
#   2. the CUDA tests of the carried test binaries: kernels (parity of every
#      op and fused kernel with the CPU device, id checks, stager, graphs,
#      leaks), then mtl (TestCUDAModelParity/{mlp,mmoe,cgc,ple}: outputs,
#      every gradient and 20 training steps against the CPU device;
#      TestCUDAModelNoLeak);
#   3. kernel benchmarks (embedding update GB/s, expert GEMM TFLOP/s);
#   4. mtlrank bench --device cuda next to torch_ref.py --device cuda (eager)
#      for mlp/mmoe/cgc/ple at batch 1024 and 65536;
#   5. compute-sanitizer memcheck on the kernels test binary;
#   6. torch_ref.py --compile (slow to compile: MMoE and PLE first).
# Logs in $OUT (at most 8 files): env.txt build.log tests.log bench-kernels.log
# bench.jsonl memcheck.log summary.txt.
set -uo pipefail
cd "$(dirname "$0")/.."

OUT=${OUT:-$PWD/gpu-out}
# The whole run must stay under 8 minutes: every step is cut to what is left
# of BUDGET, so the total is BUDGET plus the final summary (a few seconds).
BUDGET=${BUDGET:-450}
if [ "$BUDGET" -gt 460 ]; then
	echo "gpu-check: BUDGET=$BUDGET would not leave the run under 8 minutes; using 460" >&2
	BUDGET=460
fi
CUDA_ARCH=${CUDA_ARCH:-90}
STEPS=${STEPS:-30}
WARMUP=${WARMUP:-5}
mkdir -p "$OUT"
deadline=$((SECONDS + BUDGET))
summary="$OUT/summary.txt"
: >"$summary"

note() { echo "$*" | tee -a "$summary"; }

# run NAME LIMIT LOG CMD...: runs CMD with at most LIMIT seconds (less when
# the budget is nearly spent), appending to LOG and a status line to the
# summary; skipped when under 20 seconds remain.
run() {
	local name=$1 limit=$2 log=$3
	shift 3
	local left=$((deadline - SECONDS - 5))
	if [ "$left" -lt 20 ]; then
		note "SKIP $name (time budget spent)"
		return 0
	fi
	[ "$limit" -gt "$left" ] && limit=$left
	echo "=== $name (limit ${limit}s): $*" >>"$log"
	local t0=$SECONDS
	timeout --kill-after=5 "$limit" "$@" >>"$log" 2>&1
	local rc=$?
	local status=ok
	[ $rc -ne 0 ] && status="FAILED rc=$rc"
	[ $rc -eq 124 ] && status="TIMEOUT after ${limit}s"
	note "$(printf '%-48s %-22s %4ds' "$name" "$status" $((SECONDS - t0)))"
	return $rc
}

# ---- 1. environment and build ----
{
	echo "date: $(date -u)"
	echo "which go: $(command -v go || echo 'absent (expected: Go binaries are built elsewhere)')"
	nvidia-smi 2>&1 | head -20
	nvcc --version 2>&1 | tail -2
	cmake --version 2>&1 | head -1
	python3 -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda)' 2>&1
} >"$OUT/env.txt"
note "which go: $(command -v go || echo absent)"

if [ -f bin/gpu-bundle.tar.xz ]; then
	rm -rf bin/gpu && tar -C bin -xJf bin/gpu-bundle.tar.xz || note "bundle: extraction failed"
fi
if [ ! -d bin/gpu ]; then
	note "bin/gpu is missing: run scripts/gpu-prepare.sh on the Go machine and carry bin/gpu-bundle.tar.xz"
	exit 1
fi

run "cmake configure (sm_$CUDA_ARCH)" 60 "$OUT/build.log" \
	cmake -S . -B build/cuda -DCMAKE_BUILD_TYPE=Release -DCMAKE_CUDA_ARCHITECTURES="$CUDA_ARCH" || exit 1
run "cmake build libmtlcuda.so" 240 "$OUT/build.log" cmake --build build/cuda -j "$(nproc)" || exit 1

cudalib=""
if command -v nvcc >/dev/null; then
	root=$(dirname "$(dirname "$(readlink -f "$(command -v nvcc)")")")
	for d in "$root/lib64" "$root/targets/x86_64-linux/lib" /usr/local/cuda/lib64; do
		[ -d "$d" ] && cudalib="$cudalib:$d"
	done
fi
export LD_LIBRARY_PATH="$PWD/build/cuda:$PWD/bin/gpu/lib$cudalib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
{
	echo "LD_LIBRARY_PATH=$LD_LIBRARY_PATH"
	for f in bin/gpu/*.test bin/gpu/mtlrank; do
		[ -x "$f" ] || continue
		echo "--- ldd $f"
		ldd "$f" 2>&1
	done
} >>"$OUT/env.txt"

# ---- 2. tests ----
# Kernel parity (every Device op and every fused kernel against the CPU),
# then model parity (forward, every gradient, 20 training steps of each
# architecture against the CPU device) and the model leak test.
for t in kernels mtl; do
	[ -x "bin/gpu/$t.cuda.test" ] || note "MISSING bin/gpu/$t.cuda.test (it did not build in gpu-prepare.sh)"
done
run "kernels CUDA tests" 150 "$OUT/tests.log" \
	bin/gpu/kernels.cuda.test -test.v -test.count=1 -test.timeout 145s -test.run 'CUDA'
if [ -x bin/gpu/mtl.cuda.test ]; then
	run "mtl model parity + leak tests" 120 "$OUT/tests.log" \
		bin/gpu/mtl.cuda.test -test.v -test.count=1 -test.timeout 115s -test.run '^TestCUDAModel(Parity|NoLeak|GraphParity)$'
fi
for t in bin/gpu/*.cuda.test; do
	case "$t" in bin/gpu/kernels.cuda.test | bin/gpu/mtl.cuda.test) continue ;; esac
	run "$(basename "$t") (CUDA tests)" 60 "$OUT/tests.log" "$t" -test.v -test.count=1 -test.run 'CUDA'
done

# ---- 3. kernel benchmarks ----
run "kernel benchmarks" 100 "$OUT/bench-kernels.log" \
	bin/gpu/kernels.cuda.test -test.run XXX -test.bench CUDA -test.benchtime 20x

# ---- 4. model throughput: mtlrank vs PyTorch eager ----
ref=bin/gpu/torch_ref.py
tagged() { # TAG CMD...: the command's JSON lines with "impl":TAG added
	local tag=$1
	shift
	"$@" | sed -n "s/^{/{\"impl\":\"$tag\",/p"
}
for batch in 65536 1024; do
	for model in mmoe ple mlp cgc; do
		common=(--model "$model" --batch "$batch" --steps "$STEPS" --warmup "$WARMUP" --mode both --device cuda)
		run "mtlrank bench $model b$batch" 60 "$OUT/bench.jsonl" \
			bash -c "set -o pipefail; $(declare -f tagged); tagged mtlrank bin/gpu/mtlrank bench ${common[*]}"
		if [ -f "$ref" ]; then
			run "torch eager $model b$batch" 90 "$OUT/bench.jsonl" \
				bash -c "set -o pipefail; $(declare -f tagged); tagged torch-eager python3 $ref ${common[*]}"
		fi
	done
done

# ---- 5. memcheck ----
if command -v compute-sanitizer >/dev/null; then
	run "compute-sanitizer memcheck (kernels)" 150 "$OUT/memcheck.log" \
		compute-sanitizer --tool memcheck --leak-check full --error-exitcode 3 \
		bin/gpu/kernels.cuda.test -test.count=1 \
		-test.run 'CUDA(CompareDevices|IDChecks|FusedEmbeddingUpdate|GemmBiasAct|Stager|GraphCapture|NoLeak|EmbeddingBackwardCapacity|FusedCapture|FusedGateMatchesUnfusedGPU|FusedGateManyExpertsCapture|FusedGemm|StepParamsMatchEager)$'
else
	note "SKIP memcheck: compute-sanitizer not found"
fi

# ---- 6. PyTorch with torch.compile ----
if [ -f "$ref" ]; then
	for batch in 65536 1024; do
		for model in mmoe ple mlp cgc; do
			common=(--model "$model" --batch "$batch" --steps "$STEPS" --warmup "$WARMUP" --mode both --device cuda)
			run "torch compile $model b$batch" 150 "$OUT/bench.jsonl" \
				bash -c "set -o pipefail; $(declare -f tagged); tagged torch-compile python3 $ref ${common[*]} --compile"
		done
	done
fi

# ---- summary: throughput and ratios ----
python3 - "$OUT/bench.jsonl" >>"$summary" 2>&1 <<'PY'
import json, sys
rows = {}
for line in open(sys.argv[1]):
    line = line.strip()
    if not line.startswith("{"):
        continue
    try:
        r = json.loads(line)
    except ValueError:
        continue
    key = (r.get("model"), r.get("mode"), r.get("batch"))
    rows.setdefault(key, {})[r.get("impl")] = r.get("examples_per_s")
print()
print(f"{'model':6} {'mode':6} {'batch':>6} {'mtlrank ex/s':>14} {'eager ex/s':>14} {'compile ex/s':>14} {'x eager':>8} {'x compile':>9}")
for (model, mode, batch), v in sorted(rows.items(), key=lambda kv: tuple(str(x) for x in kv[0])):
    m, e, c = v.get("mtlrank"), v.get("torch-eager"), v.get("torch-compile")
    fmt = lambda x: f"{x:14.0f}" if x else f"{'-':>14}"
    ratio = lambda a, b: f"{a / b:8.2f}" if a and b else f"{'-':>8}"
    print(f"{model:6} {mode:6} {batch:>6} {fmt(m)} {fmt(e)} {fmt(c)} {ratio(m, e)} {ratio(m, c):>9}")
PY
grep -E '^(Benchmark|--- FAIL|FAIL|ok|PASS)' "$OUT/bench-kernels.log" "$OUT/tests.log" 2>/dev/null | tail -40 >>"$summary"
note "total ${SECONDS}s"
exit 0
