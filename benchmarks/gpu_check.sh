#!/usr/bin/env bash
# One-command GPU check of groupvit_fast, for an (offline) machine with an NVIDIA GPU, torch, triton,
# pytest, nvcc and compute-sanitizer; nothing is downloaded:
#
#   bash benchmarks/gpu_check.sh plan       # on any machine (no GPU): check the prerequisites, print the stages
#   bash benchmarks/gpu_check.sh all        # build, GPU tests, memcheck + racecheck, quick bench: within 540 s
#   bash benchmarks/gpu_check.sh build      # pip install --no-index --no-build-isolation --no-deps -e .
#   bash benchmarks/gpu_check.sh test       # pytest -m gpu tests (every GPU test, never stopping at a failure)
#   bash benchmarks/gpu_check.sh sanitize   # compute-sanitizer memcheck + racecheck on benchmarks/sanitizer_cases.py
#   bash benchmarks/gpu_check.sh bench      # python -m groupvit_fast.bench --device cuda (full GPU tier: every family)
#
# Options (before the stage): --wheelhouse DIR (or GPU_CHECK_WHEELHOUSE): first install, without
# network, the wheels of DIR whose module is missing (benchmarks/wheelhouse.py; fill DIR with
# benchmarks/fill_wheelhouse.sh) into a --target folder put on PYTHONPATH, so the machine's own
# packages (torch) are never touched; --out DIR (or GPU_CHECK_OUT): the result folder (default
# benchmarks/results/gpu-check-<UTC time>); --archive FILE (or GPU_CHECK_ARCHIVE): the .tar.gz of
# that folder (default <out>.tar.gz), rewritten after every stage, for a device tool that brings
# back only a few files; --collect (plan only): also collect the test stage's tests.
#
# Time: each stage has a cap (GPU_CHECK_CAP_<STAGE>, seconds) and the caps, with a kill grace per
# stage and a fixed overhead, fit the budget GPU_CHECK_BUDGET_S (540) by configuration (`plan`
# checks it). A stage may also use what earlier stages left unused, never what later stages are
# promised; a stage run alone gets the whole budget. summary.txt (one line per stage: status,
# seconds; the test counts and failures) is rewritten at every step and also written when a stage
# times out or the script is interrupted (trap). The exit status is non-zero if any stage failed;
# later stages still run.
#
# Signals: no command substitution `$(...)` in what runs once the traps are set (stages, summary,
# environment). bash 5.2 loses a trap whose signal lands while it parses one ("trap: line 2:
# unexpected EOF while looking for matching `)'"), and the interrupted command is dropped with it;
# tests/system/test_gpu_check_plan.py checks the rule. Times come from `printf '%(...)T'`, paths
# from parameter expansion, numbers through variables that functions set.
#
# Environment: PYTHON (default python3: on the GPU machine the one that holds torch), MAX_JOBS
# (default nproc), CUDA_HOME (default: the toolkit of the nvcc found), TORCH_CUDA_ARCH_LIST (default:
# the visible GPU's), GROUPVIT_FAST_TEST_TIMEOUT (per test, default 120 s), GPU_CHECK_REQUIRE (the
# required backends of the test stage, default cpu,triton,cuda,cuda-device,nvcc), BENCH_ARGS (extra
# bench arguments; default --quick for `all`, none for `bench`). docs: benchmarks/README.md.
set -uo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.." || exit 1
ROOT=$PWD
SELF=benchmarks/gpu_check.sh

usage() { echo "usage: $SELF [--wheelhouse DIR] [--out DIR] [--archive FILE] [--collect] plan|build|test|sanitize|bench|all"; }

WHEELHOUSE=${GPU_CHECK_WHEELHOUSE:-}
DEST=${GPU_CHECK_OUT:-}
ARCHIVE=${GPU_CHECK_ARCHIVE:-}
COLLECT=0
while [ $# -gt 0 ]; do
  case "$1" in
    --wheelhouse|--out|--archive)
      if [ $# -lt 2 ]; then echo "gpu_check: $1 needs a value" >&2; usage >&2; exit 2; fi
      case "$1" in --wheelhouse) WHEELHOUSE=$2 ;; --out) DEST=$2 ;; --archive) ARCHIVE=$2 ;; esac
      shift 2 ;;
    --collect) COLLECT=1; shift ;;
    -h|--help) usage; exit 0 ;;
    -*) echo "gpu_check: unknown option $1" >&2; usage >&2; exit 2 ;;
    *) break ;;
  esac
done
STAGE=${1:-all}
if [ $# -gt 1 ]; then echo "gpu_check: one stage only, got: $*" >&2; usage >&2; exit 2; fi
case "$STAGE" in plan|build|test|sanitize|bench|all) ;; *) echo "gpu_check: unknown stage $STAGE" >&2; usage >&2; exit 2 ;; esac

# ------------------------------------------------------------------------------------------------
# Configuration: what runs, and how long each stage may take
# ------------------------------------------------------------------------------------------------

PYTHON=${PYTHON:-python3}
BUDGET=${GPU_CHECK_BUDGET_S:-540}
TEST_TIMEOUT=${GROUPVIT_FAST_TEST_TIMEOUT:-120}
REQUIRE=${GPU_CHECK_REQUIRE:-cpu,triton,cuda,cuda-device,nvcc}
KILL_GRACE=5   # after a stage's cap: SIGINT (pytest still writes its XML), then SIGKILL this much later
OVERHEAD=25    # outside the stages: env.txt, info.txt, summary, archive (each step time-limited)
declare -A CAP=(
  [wheelhouse]=${GPU_CHECK_CAP_WHEELHOUSE:-25}
  [build]=${GPU_CHECK_CAP_BUILD:-130}
  [test]=${GPU_CHECK_CAP_TEST:-210}
  [memcheck]=${GPU_CHECK_CAP_MEMCHECK:-60}
  [racecheck]=${GPU_CHECK_CAP_RACECHECK:-30}
  [bench]=${GPU_CHECK_CAP_BENCH:-30}
)
for name in "${!CAP[@]}"; do
  case "${CAP[$name]}" in ''|*[!0-9]*) echo "gpu_check: the cap of $name is not a whole number of seconds: '${CAP[$name]}'" >&2; exit 2 ;; esac
done
for value in "$BUDGET" "$TEST_TIMEOUT"; do
  case "$value" in ''|*[!0-9]*) echo "gpu_check: GPU_CHECK_BUDGET_S and GROUPVIT_FAST_TEST_TIMEOUT take whole seconds, got '$value'" >&2; exit 2 ;; esac
done

case "$STAGE" in
  plan|all) STAGES=(build test memcheck racecheck bench) ;;
  sanitize) STAGES=(memcheck racecheck) ;;
  *) STAGES=("$STAGE") ;;
esac
[ -z "$WHEELHOUSE" ] || STAGES=(wheelhouse "${STAGES[@]}")

if [ -z "$DEST" ]; then DEST=benchmarks/results/gpu-check-$(date -u +%Y%m%d-%H%M%S); fi
[ "$STAGE" = plan ] || { mkdir -p "$DEST" && DEST=$(cd "$DEST" && pwd); } || { echo "gpu_check: cannot create $DEST" >&2; exit 1; }
[ -n "$ARCHIVE" ] || ARCHIVE=$DEST.tar.gz
ARCHIVE_DIR=$(dirname "$ARCHIVE") DEST_PARENT=$(dirname "$DEST") DEST_NAME=$(basename "$DEST")
SITE=${TMPDIR:-/tmp}/groupvit_fast_wheelhouse_site   # where --wheelhouse installs (outside the archive)

# The interpreter's own bin folder first: the build calls `ninja` (a pip package there) by name.
if PY_BIN=$("$PYTHON" -c 'import os, sys; print(os.path.dirname(sys.executable))' 2>/dev/null); then
  export PATH="$PY_BIN:$PATH"
fi
# Real GPU kernels only: the interpreter would run Triton on the CPU.
unset TRITON_INTERPRET
export PYTHONUNBUFFERED=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INPUT=1
export MAX_JOBS=${MAX_JOBS:-$(nproc)}
# torch guesses CUDA_HOME from `which nvcc`; through a link in /usr/local/bin it would guess /usr/local.
if [ -z "${CUDA_HOME:-}" ] || [ ! -x "$CUDA_HOME/bin/nvcc" ]; then
  if [ -x /usr/local/cuda/bin/nvcc ]; then
    export CUDA_HOME=/usr/local/cuda
  elif command -v nvcc >/dev/null; then
    CUDA_HOME=$(dirname "$(dirname "$(readlink -f "$(command -v nvcc)")")"); export CUDA_HOME
  fi
fi
if [ -n "${CUDA_HOME:-}" ]; then export PATH="$CUDA_HOME/bin:$PATH"; fi
SANITIZER=$(command -v compute-sanitizer || true)
for candidate in "${CUDA_HOME:-/usr/local/cuda}/bin/compute-sanitizer" "${CUDA_HOME:-/usr/local/cuda}/compute-sanitizer/compute-sanitizer"; do
  if [ -z "$SANITIZER" ] && [ -x "$candidate" ]; then SANITIZER=$candidate; fi
done

# Each stage's command, as an array: `plan` prints exactly what the stages run.
CMD_wheelhouse=("$PYTHON" benchmarks/wheelhouse.py install "$WHEELHOUSE" "$SITE")
CMD_build=("$PYTHON" -m pip install --no-index --no-build-isolation --no-deps -v -e .)
CMD_test=(env "GROUPVIT_FAST_REQUIRE=$REQUIRE" "GROUPVIT_FAST_TEST_TIMEOUT=$TEST_TIMEOUT" "$PYTHON" -m pytest -m gpu tests
  -q --maxfail=1000 -rfEs --durations=15 -o "faulthandler_timeout=$((TEST_TIMEOUT + 15))" --junitxml "$DEST/tests.xml")
# memcheck sees out-of-bounds accesses inside PyTorch's cached blocks only without the cache
CMD_memcheck=(env PYTORCH_NO_CUDA_MEMORY_CACHING=1 "${SANITIZER:-compute-sanitizer}" --tool memcheck --error-exitcode 3
  --print-limit 20 "$PYTHON" benchmarks/sanitizer_cases.py)
# racecheck (shared-memory hazards) is slower: the kernels' shapes, fewer of them
CMD_racecheck=("${SANITIZER:-compute-sanitizer}" --tool racecheck --racecheck-report hazard --error-exitcode 3
  --print-limit 20 "$PYTHON" benchmarks/sanitizer_cases.py --case odd-train --case heads-fp16 --case stage0-bf16)
if [ "$STAGE" = bench ]; then BENCH_DEFAULT=""; else BENCH_DEFAULT="--quick"; fi
read -r -a BENCH_EXTRA <<< "${BENCH_ARGS-$BENCH_DEFAULT}"
CMD_bench=("$PYTHON" -m groupvit_fast.bench --device cuda --out "$DEST" --no-progress "${BENCH_EXTRA[@]}")

declare -A WRITES=(
  [wheelhouse]="wheelhouse.log; packages in $SITE (on PYTHONPATH)"
  [build]="build.log, info.txt (python -m groupvit_fast.info)"
  [test]="tests.log, tests.xml (JUnit)"
  [memcheck]="sanitizer-memcheck.log"
  [racecheck]="sanitizer-racecheck.log"
  [bench]="bench.log, <gpu>-<date>.md/.json/.png"
)
declare -A LOG=([wheelhouse]=wheelhouse.log [build]=build.log [test]=tests.log [memcheck]=sanitizer-memcheck.log
  [racecheck]=sanitizer-racecheck.log [bench]=bench.log)

# RESERVED = seconds promised to the stages after index $1 of STAGES, their kill grace included
reserved_after() {
  local i
  RESERVED=0
  for ((i = $1 + 1; i < ${#STAGES[@]}; i++)); do RESERVED=$((RESERVED + CAP[${STAGES[$i]}] + KILL_GRACE)); done
}

# ------------------------------------------------------------------------------------------------
# plan: every prerequisite that can be checked without a GPU, then the stage plan
# ------------------------------------------------------------------------------------------------

plan() {
  local missing=() file name total
  note() { missing+=("$1"); }
  for file in "$SELF" benchmarks/fill_wheelhouse.sh; do
    if [ ! -f "$file" ]; then note "$file: missing"; elif ! bash -n "$file" 2>/dev/null; then note "$file: bash syntax error ($(bash -n "$file" 2>&1 | head -n 1))"; fi
  done
  if ! command -v "$PYTHON" >/dev/null; then
    note "PYTHON=$PYTHON: not found"
  else
    # one interpreter for all Python-side checks: each line it prints is one problem
    local line
    while IFS= read -r line; do [ -z "$line" ] || note "$line"; done < <("$PYTHON" - "$PYTHON" "$REQUIRE" <<'EOF' 2>&1
import ast, importlib.util, os, sys
python, require = sys.argv[1], sys.argv[2]
if sys.version_info < (3, 10):
    print(f"{python}: Python {sys.version.split()[0]} is older than 3.10")
for name in ("torch", "pytest", "pip", "setuptools"):
    if importlib.util.find_spec(name) is None:
        print(f"{python}: cannot import {name} (a stage needs it)")
trees = {}
for path in ("setup.py", "benchmarks/sanitizer_cases.py", "benchmarks/wheelhouse.py", "groupvit_fast/bench/__main__.py",
             "groupvit_fast/info.py", "tests/conftest.py", "tests/helpers/requirements.py"):
    if not os.path.isfile(path):
        print(f"{path}: missing (a stage runs it)")
        continue
    try:
        trees[path] = ast.parse(open(path).read(), path)
    except SyntaxError as err:
        print(f"{path}: does not parse under {python} (line {err.lineno}: {err.msg})")
tree = trees.get("tests/helpers/requirements.py")
if tree is not None:
    tables = [ast.literal_eval(n.value) for n in tree.body
              if isinstance(n, ast.Assign) and any(getattr(t, "id", "") == "NAMES" for t in n.targets)]
    unknown = sorted({x.strip() for x in require.split(",") if x.strip()} - (tables[0].keys() if tables else set()))
    if unknown:
        print(f"GPU_CHECK_REQUIRE={require}: unknown name(s) {' '.join(unknown)} (tests/helpers/requirements.py NAMES)")
EOF
    )
    if [ -n "$WHEELHOUSE" ] && [ -f benchmarks/wheelhouse.py ]; then
      while IFS= read -r line; do [ -z "$line" ] || note "$line"; done < <("$PYTHON" benchmarks/wheelhouse.py check "$WHEELHOUSE" 2>&1 >/dev/null)
    fi
  fi
  grep -Eq '^[[:space:]]+gpu:' pytest.ini 2>/dev/null || note "pytest.ini: no 'gpu' marker registered (pytest -m gpu would select nothing)"
  for name in timeout tar nproc; do command -v "$name" >/dev/null || note "$name: command not found"; done
  reserved_after -1
  total=$((RESERVED + OVERHEAD))
  [ "$total" -le "$BUDGET" ] || note "stage caps: $total s (caps + ${KILL_GRACE} s grace each + ${OVERHEAD} s overhead) exceed GPU_CHECK_BUDGET_S=$BUDGET"
  [ "$BUDGET" -le 540 ] || note "GPU_CHECK_BUDGET_S=$BUDGET: more than 540 s does not fit one 10-minute device command with its start"
  [ "$TEST_TIMEOUT" -gt 0 ] && [ "$TEST_TIMEOUT" -lt "${CAP[test]}" ] || note "GROUPVIT_FAST_TEST_TIMEOUT=$TEST_TIMEOUT: must be > 0 and below the test stage's cap (${CAP[test]} s)"
  if [ "$COLLECT" = 1 ] && [ ${#missing[@]} -eq 0 ]; then
    local collected
    collected=$("${CMD_test[@]:0:4}" -m pytest -m gpu tests -q --collect-only -p no:cacheprovider 2>&1 | tail -n 1)
    case "$collected" in *" selected"*|*" collected"*|*"tests collected"*) ;; *) note "test stage: collection failed: $collected" ;; esac
  fi

  echo "gpu_check plan: all in ${BUDGET} s (stages ${total} s with grace and overhead), results in ${DEST}, archive ${ARCHIVE}"
  echo "here: nvcc ${CUDA_HOME:-not found}${CUDA_HOME:+/bin/nvcc}; compute-sanitizer ${SANITIZER:-not found};" \
       "MAX_JOBS=$MAX_JOBS; GPU: $(command -v nvidia-smi >/dev/null && nvidia-smi -L 2>/dev/null | head -n 1 || echo none) (the stages need them, plan does not)"
  [ -z "${collected:-}" ] || echo "test stage collects: $collected"
  for name in "${STAGES[@]}"; do
    local var="CMD_$name[@]"
    printf '%-10s %4s s  %s\n           writes: %s\n' "$name" "${CAP[$name]}" "$(printf '%q ' "${!var}")" "${WRITES[$name]}"
    # the bench stage's cases per family, as the harness lists them (listing needs no GPU), e.g.
    # "measures: op 24, model 7, segment 2, train 2, eval 4 (case x implementation; ...)"
    [ "$name" = bench ] || continue
    local listed
    if listed=$("${CMD_bench[@]}" --list 2>&1); then
      printf '           measures: %s (case x implementation; add --list to its command for each)\n' \
        "$(printf '%s\n' "$listed" | cut -d/ -f1 | uniq -c | awk '{printf "%s%s %s", (NR > 1 ? ", " : ""), $2, $1}')"
    else
      printf '           measures: the harness cannot list its cases here (%s)\n' "$(printf '%s\n' "$listed" | tail -n 1)"
    fi
  done
  echo "then: summary.txt and the archive, after every stage and on any exit"
  if [ ${#missing[@]} -gt 0 ]; then
    printf 'gpu_check plan: MISSING: %s\n' "${missing[@]}" >&2
    return 1
  fi
  echo "gpu_check plan: ok"
}

if [ "$STAGE" = plan ]; then plan; exit $?; fi

# ------------------------------------------------------------------------------------------------
# Running the stages: summary and archive after every step, also on a timeout or a signal
# ------------------------------------------------------------------------------------------------

START=$SECONDS
SUMMARY="$DEST/summary.txt"
RESULTS=()      # "stage: status, seconds" of the finished stages
RUNNING=""      # the line of the stage in flight
CHILD=""        # its timeout process
FAILED=0
FINAL=""        # the last line, once the run is over

left() { LEFT=$((BUDGET - (SECONDS - START))); }  # LEFT = seconds of the budget not spent yet

now_utc() { TZ=UTC printf -v NOW "%($1)T" -1; }  # NOW = the time in UTC, strftime format $1

write_summary() {
  {
    now_utc '%Y-%m-%d %H:%M:%S UTC'
    echo "gpu_check $STAGE: $NOW, $((SECONDS - START)) s of ${BUDGET} s; results in $DEST"
    echo "required backends (GPU_CHECK_REQUIRE): $REQUIRE; per-test limit ${TEST_TIMEOUT} s"
    printf '%s\n' "${RESULTS[@]}"
    [ -z "$RUNNING" ] || echo "$RUNNING"
    if [ -f "$DEST/tests.xml" ]; then
      timeout 20 "$PYTHON" - "$DEST/tests.xml" <<'EOF' 2>/dev/null || true
import sys, xml.etree.ElementTree as ET
root = ET.parse(sys.argv[1]).getroot()
suites = [root] if root.tag == "testsuite" else list(root)
n = {k: sum(int(s.get(k, 0)) for s in suites) for k in ("tests", "failures", "errors", "skipped")}
passed = n["tests"] - n["failures"] - n["errors"] - n["skipped"]
print(f"tests: {passed} passed, {n['failures']} failed, {n['errors']} errors, {n['skipped']} skipped (tests.xml)")
EOF
    fi
    if [ -f "$DEST/tests.log" ]; then grep -E '^(FAILED|ERROR) ' "$DEST/tests.log" | head -n 40; fi
    [ -z "$FINAL" ] || echo "$FINAL"
    true  # no FAILED line is no error
  } > "$SUMMARY.tmp" 2>&1
  mv -f "$SUMMARY.tmp" "$SUMMARY"
  # the archive beside the folder, rewritten whole, then renamed: a kill never leaves half of one
  mkdir -p "$ARCHIVE_DIR" && timeout 30 tar -czf "$ARCHIVE.tmp" -C "$DEST_PARENT" "$DEST_NAME" \
    && mv "$ARCHIVE.tmp" "$ARCHIVE"
}

on_signal() {  # the stage in flight gets the signal too; its line says so; then the EXIT trap writes it all
  local sig=$1
  trap - INT TERM HUP
  if [ -n "$CHILD" ]; then kill -"$sig" "$CHILD" 2>/dev/null; wait "$CHILD" 2>/dev/null; fi
  if [ -n "$RUNNING" ]; then RESULTS+=("${RUNNING%%:*}: INTERRUPTED (SIG$sig)"); RUNNING=""; fi
  RESULTS+=("gpu_check: interrupted by SIG$sig")
  FAILED=1
  [ "$sig" = INT ] && exit 130
  exit 143
}

finish() {
  local verdict='every stage ok'
  [ "$FAILED" = 0 ] || verdict='some stage FAILED'
  FINAL="gpu_check: $((SECONDS - START)) s, $verdict"
  write_summary
  echo "== summary ($SUMMARY, archive $ARCHIVE)"
  cat "$SUMMARY"
}

trap 'on_signal INT' INT
trap 'on_signal TERM' TERM
trap 'on_signal HUP' HUP
trap finish EXIT

run_stage() {  # run_stage INDEX: the stage STAGES[INDEX], its output in its log, within its limit
  local name=${STAGES[$1]} limit t0=$SECONDS rc status var="CMD_${STAGES[$1]}[@]"
  left
  reserved_after "$1"
  limit=$((LEFT - RESERVED - KILL_GRACE - OVERHEAD / 2))
  if [ "$limit" -lt 10 ]; then
    RESULTS+=("$name: SKIPPED (${limit} s left of the ${BUDGET} s budget)"); FAILED=1; write_summary; return
  fi
  echo "== $name (at most ${limit} s; cap ${CAP[$name]} s) -> $DEST/${LOG[$name]}"
  now_utc '%H:%M:%S'
  RUNNING="$name: RUNNING since $NOW, at most ${limit} s"
  write_summary
  # in the background, so that a signal to this script is handled at once (trap), not after the stage
  timeout --signal=INT --kill-after="$KILL_GRACE" "$limit" "${!var}" > "$DEST/${LOG[$name]}" 2>&1 &
  CHILD=$!
  wait "$CHILD"; rc=$?
  CHILD=""
  case "$rc" in
    0) status=ok ;;
    124|137) status="TIMEOUT after ${limit} s" ;;
    *) status="FAILED (exit $rc)" ;;
  esac
  [ "$status" = ok ] || FAILED=1
  RUNNING=""
  RESULTS+=("$name: $status, $((SECONDS - t0)) s")
  echo "${RESULTS[-1]}"
  tail -n 3 "$DEST/${LOG[$name]}"
  write_summary
}

environment() {
  {
    now_utc '%Y-%m-%d %H:%M:%S UTC'
    echo "date: $NOW"
    printf 'git: '; git rev-parse HEAD 2>/dev/null || echo 'no git'
    printf 'git: modified tracked files: '; git status --porcelain --untracked-files=no 2>/dev/null | wc -l
    printf 'host: '; uname -a
    printf 'cores: '; nproc
    echo "MAX_JOBS=$MAX_JOBS; CUDA_HOME=${CUDA_HOME:-unset}; compute-sanitizer: ${SANITIZER:-not found}"
    printf 'python: %s: ' "$PYTHON"; "$PYTHON" -V 2>&1
    echo "PYTHONPATH=${PYTHONPATH:-}; GPU_CHECK_REQUIRE=$REQUIRE; GROUPVIT_FAST_TEST_TIMEOUT=$TEST_TIMEOUT"
    timeout 20 nvidia-smi || echo "nvidia-smi: not available"
    timeout 60 "$PYTHON" - <<'EOF'
import importlib.metadata as md
for name in ("torch", "triton", "transformers", "pytest", "pytest-benchmark", "setuptools", "pip", "ninja",
             "open_clip_torch", "omegaconf", "ftfy", "webdataset", "nltk", "numpy"):
    try:
        print(f"{name}: {md.version(name)}")
    except md.PackageNotFoundError:
        print(f"{name}: not installed")
import torch
print("torch.version.cuda:", torch.version.cuda, "| cuda available:", torch.cuda.is_available())
EOF
    command -v nvcc >/dev/null && timeout 20 nvcc --version | tail -n 2
    [ -z "$SANITIZER" ] || timeout 20 "$SANITIZER" --version | head -n 2
  } > "$DEST/env.txt" 2>&1
}

echo "gpu_check $STAGE -> $DEST (stages: ${STAGES[*]}; budget ${BUDGET} s)"
environment
for ((i = 0; i < ${#STAGES[@]}; i++)); do
  case "${STAGES[$i]}" in
    wheelhouse)
      run_stage "$i"
      export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}" ;;
    build)
      run_stage "$i"
      timeout 60 "$PYTHON" -m groupvit_fast.info > "$DEST/info.txt" 2>&1 || RESULTS+=("info: python -m groupvit_fast.info failed (info.txt)") ;;
    memcheck|racecheck)
      if [ -z "$SANITIZER" ]; then RESULTS+=("${STAGES[$i]}: FAILED (compute-sanitizer not found)"); FAILED=1; continue; fi
      run_stage "$i" ;;
    bench)
      # stop starting cases halfway through the stage's time (90 s before it at most), so the report is written
      left
      bench_limit=$((LEFT - KILL_GRACE - OVERHEAD / 2))
      reserve=$((bench_limit / 2 < 90 ? bench_limit / 2 : 90))
      centiminutes=$(((bench_limit - reserve) * 100 / 60))
      [ "$centiminutes" -ge 20 ] || centiminutes=20
      printf -v bench_minutes '%d.%02d' $((centiminutes / 100)) $((centiminutes % 100))
      CMD_bench+=(--max-minutes "$bench_minutes")
      run_stage "$i" ;;
    *) run_stage "$i" ;;
  esac
done
exit $FAILED
