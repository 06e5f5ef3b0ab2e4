#!/usr/bin/env bash
# One-command GPU check of groupvit_fast, for a machine with an NVIDIA GPU and the dependencies
# installed (nothing is downloaded):
#
#   bash benchmarks/gpu_check.sh all        # build, test, sanitize, bench (quick): under 10 minutes
#   bash benchmarks/gpu_check.sh build      # pip install --no-build-isolation --no-deps -e .
#   bash benchmarks/gpu_check.sh test       # pytest tests -x -q --import-mode=importlib (no TRITON_INTERPRET)
#   bash benchmarks/gpu_check.sh sanitize   # compute-sanitizer memcheck + racecheck on benchmarks/sanitizer_cases.py
#   bash benchmarks/gpu_check.sh bench      # python -m groupvit_fast.bench (full GPU tier, time-capped)
#
# Everything goes into one folder, $GPU_CHECK_OUT (default benchmarks/results/gpu-check-<UTC time>):
# build.log, info.txt, env.txt, tests.log + tests.xml, sanitizer-<tool>.log, the benchmark report
# (<gpu>-<date>.{md,json,png}) and summary.txt (one line per stage: status and seconds).
#
# Environment: PYTHON (default python), PYTEST (default pytest), MAX_JOBS (default nproc),
# TORCH_CUDA_ARCH_LIST (default: the visible GPU's), GPU_CHECK_BUDGET_S (whole run, default 570),
# BENCH_ARGS (extra arguments of the bench; default --quick for `all`, none for `bench`).
# Each stage is capped by the time left; the bench stops starting cases 90 s before its cap and
# still writes its report. The exit status is non-zero if any stage failed; later stages still run.
set -uo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.." || exit 1
STAGE=${1:-all}
case "$STAGE" in build|test|sanitize|bench|all) ;; *)
  echo "usage: $0 build|test|sanitize|bench|all" >&2; exit 2 ;;
esac

PYTHON=${PYTHON:-python}
PYTEST=${PYTEST:-pytest}
OUT=${GPU_CHECK_OUT:-benchmarks/results/gpu-check-$(date -u +%Y%m%d-%H%M%S)}
BUDGET=${GPU_CHECK_BUDGET_S:-570}
START=$SECONDS
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
SUMMARY="$OUT/summary.txt"
FAILED=0

# Real GPU kernels only: the interpreter would run Triton on the CPU.
unset TRITON_INTERPRET
if [ -z "${CUDA_HOME:-}" ] && [ -d /usr/local/cuda ]; then export CUDA_HOME=/usr/local/cuda; fi

left() { echo $(( BUDGET - (SECONDS - START) )); }
cap() { local want=$1 have; have=$(left); if [ "$have" -lt "$want" ]; then echo "$have"; else echo "$want"; fi; }

run_stage() {  # run_stage NAME MAX_SECONDS COMMAND...
  local name=$1 max=$2; shift 2
  local limit; limit=$(cap "$max")
  if [ "$limit" -le 10 ]; then
    echo "$name: SKIPPED (time budget of ${BUDGET} s spent)" | tee -a "$SUMMARY"; FAILED=1; return
  fi
  local t0=$SECONDS rc
  echo "== $name (at most ${limit} s)"
  timeout --signal=INT --kill-after=15 "$limit" "$@"; rc=$?
  local status=ok
  if [ "$rc" -eq 124 ]; then status="TIMEOUT after ${limit} s"; elif [ "$rc" -ne 0 ]; then status="FAILED (exit $rc)"; fi
  [ "$status" = ok ] || FAILED=1
  echo "$name: $status, $((SECONDS - t0)) s" | tee -a "$SUMMARY"
}

environment() {
  {
    echo "date: $(date -u '+%Y-%m-%d %H:%M:%S UTC')"
    echo "git: $(git rev-parse HEAD 2>/dev/null) $(git status --porcelain --untracked-files=no 2>/dev/null | wc -l) modified file(s)"
    echo "host: $(uname -a)"
    nvidia-smi 2>&1 || echo "nvidia-smi: not available"
    "$PYTHON" - <<'EOF'
import importlib.metadata as md
for name in ("torch", "triton", "transformers", "pytest", "pytest-benchmark", "matplotlib", "tqdm", "numpy"):
    try:
        print(f"{name}: {md.version(name)}")
    except md.PackageNotFoundError:
        print(f"{name}: not installed")
import torch
print("torch.version.cuda:", torch.version.cuda, "| cuda available:", torch.cuda.is_available())
EOF
    command -v nvcc >/dev/null && nvcc --version | tail -n 2
    command -v compute-sanitizer >/dev/null && compute-sanitizer --version | head -n 2
  } > "$OUT/env.txt" 2>&1
}

stage_build() {
  export MAX_JOBS=${MAX_JOBS:-$(nproc)}
  run_stage build 360 bash -c "\"$PYTHON\" -m pip install --no-build-isolation --no-deps -e . > \"$OUT/build.log\" 2>&1"
  "$PYTHON" -m groupvit_fast.info > "$OUT/info.txt" 2>&1 || echo "groupvit_fast.info failed (see info.txt)" >> "$SUMMARY"
}

stage_test() {
  run_stage test 240 bash -c "\"$PYTEST\" tests -x -q --import-mode=importlib --junitxml \"$OUT/tests.xml\" > \"$OUT/tests.log\" 2>&1"
  tail -n 3 "$OUT/tests.log"
}

stage_sanitize() {
  local sanitizer
  sanitizer=$(command -v compute-sanitizer || echo "${CUDA_HOME:-/usr/local/cuda}/bin/compute-sanitizer")
  if [ ! -x "$sanitizer" ]; then
    echo "sanitize: SKIPPED (compute-sanitizer not found)" | tee -a "$SUMMARY"; FAILED=1; return
  fi
  # memcheck sees out-of-bounds accesses inside PyTorch's cached blocks only without the cache
  run_stage sanitize-memcheck 150 env PYTORCH_NO_CUDA_MEMORY_CACHING=1 "$sanitizer" --tool memcheck \
    --error-exitcode 3 --log-file "$OUT/sanitizer-memcheck.log" "$PYTHON" benchmarks/sanitizer_cases.py
  # racecheck (shared-memory hazards) is slower: the kernels' shapes, fewer of them
  run_stage sanitize-racecheck 150 "$sanitizer" --tool racecheck --racecheck-report hazard --error-exitcode 3 \
    --log-file "$OUT/sanitizer-racecheck.log" "$PYTHON" benchmarks/sanitizer_cases.py \
    --case odd-train --case heads-fp16 --case stage0-bf16
}

stage_bench() {
  local default_args=$1 limit minutes
  limit=$(cap 560)
  # stop starting new cases 90 s before the cap, so the report is always written
  minutes=$(awk -v s="$limit" 'BEGIN { m = (s - 90) / 60; if (m < 0.5) m = 0.5; printf "%.1f", m }')
  # shellcheck disable=SC2086
  run_stage bench "$limit" "$PYTHON" -m groupvit_fast.bench --device cuda --out "$OUT" --max-minutes "$minutes" \
    --no-progress ${BENCH_ARGS-$default_args}
}

environment
echo "gpu_check $STAGE -> $OUT"
case "$STAGE" in
  build) stage_build ;;
  test) stage_test ;;
  sanitize) stage_sanitize ;;
  bench) stage_bench "" ;;
  all) stage_build; stage_test; stage_sanitize; stage_bench "--quick" ;;
esac
echo "gpu_check: $((SECONDS - START)) s; results in $OUT" | tee -a "$SUMMARY"
exit $FAILED
