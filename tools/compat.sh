#!/usr/bin/env bash
# Supported-stack check: the README's set-up and test commands for one torch/triton pair, in a fresh
# virtual environment .compat/torch-<v>-triton-<v>/, with the outcome written to
# benchmarks/results/compat/torch-<v>-triton-<v>.md (summary) and .log (everything the run printed).
#
#   tools/compat.sh TORCH TRITON [pytest args...]     e.g.  tools/compat.sh 2.11.0 3.6.0
#
# Environment:
#   GROUPVIT_FAST_BUILD_CUDA=0  build only the CPU kernels of groupvit_fast._C (saves the CUDA compile,
#                               several minutes on 2 cores; the CUDA compile tests then skip).
#   COMPAT_REUSE=1              reuse the venv and install of an earlier run of this pair (set-up skipped;
#                               the summary says so): for re-running some tests after a code change.
#   PYTHON                      the interpreter to make the venv with (default python3).
#   COMPAT_PART=NAME            a run of part of the suite (pytest args select it): the summary and log are
#                               written as <pair>.NAME.md/.log, so the parts of one pair sit side by side.
#   MAX_JOBS, CUDA_HOME, TORCH_CUDA_ARCH_LIST  as in .ci/run.
#
# The pip calls here run with PIP_CONSTRAINT set to a file holding only the pair: it replaces a
# machine-wide constraint (pip config `constraint`, e.g. torch<=2.14.1) that would refuse the newer
# pairs (an empty PIP_CONSTRAINT= does not: pip ignores empty variables), and it keeps the extras'
# dependencies from swapping the pair's torch for another.
#
# The editable install builds groupvit_fast._C into the source tree, so runs of this script (and any
# other venv using this checkout) must not overlap: the last install's extension is the one in place.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ $# -lt 2 ]; then
  echo "usage: tools/compat.sh TORCH TRITON [pytest args...]   (e.g. tools/compat.sh 2.11.0 3.6.0)" >&2
  exit 2
fi
torch_v=$1
triton_v=$2
shift 2
pair="torch-${torch_v}-triton-${triton_v}"
venv=".compat/${pair}"
results="benchmarks/results/compat"
part=${COMPAT_PART:+.${COMPAT_PART}}
log="${results}/${pair}${part}.log"
summary="${results}/${pair}${part}.md"
junit=$(mktemp --suffix=.xml)
trap 'rm -f "$junit"' EXIT
mkdir -p "$results"

export CUDA_HOME=${CUDA_HOME:-/usr/local/cuda}
export MAX_JOBS=${MAX_JOBS:-2}
export TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-"8.0;9.0"}
if ! (command -v nvidia-smi >/dev/null && nvidia-smi -L >/dev/null 2>&1); then
  export TRITON_INTERPRET=1
fi

started=$(date -u +%s)
started_iso=$(date -u +"%Y-%m-%d %H:%M UTC")
commit="$(git rev-parse --short HEAD 2>/dev/null || echo unknown)$(git diff --quiet HEAD -- . ':!benchmarks/results' 2>/dev/null || echo ' + uncommitted changes')"

run() {
  # The README's set-up (torch and triton replaced by the pair), its info command, then its tests;
  # the first failing step ends the run.
  set -euo pipefail
  if [ "${COMPAT_REUSE:-0}" = 1 ] && [ -x "${venv}/bin/python" ]; then
    echo "== ${pair}: reusing ${venv} (COMPAT_REUSE=1, set-up skipped)"
    # shellcheck disable=SC1091
    source "${venv}/bin/activate"
  else
    setup
  fi
  echo "== python -m groupvit_fast.info"
  python -m groupvit_fast.info
  echo "== pytest -q $*"
  pytest -q --junitxml="$junit" -rfE "$@"
}

setup() {
  echo "== ${pair}: fresh venv ${venv}"
  rm -rf "$venv"
  "${PYTHON:-python3}" -m venv "$venv"
  # shellcheck disable=SC1091
  source "${venv}/bin/activate"
  # A fresh Python 3.11 venv has setuptools 65, whose build lacks `bdist_wheel`: the editable install
  # below (no build isolation) needs a current one.
  PIP_CONSTRAINT=/dev/null python -m pip install -q --upgrade pip setuptools
  echo "== set-up (README, with torch==${torch_v} triton==${triton_v})"
  # The pair is the constraint of both steps: the second would otherwise let a dependency (open-clip-torch
  # -> torchvision) swap torch for the version that dependency's newest release pins.
  local pins="${venv}/pair-constraints.txt"
  printf 'torch==%s\ntriton==%s\n' "$torch_v" "$triton_v" > "$pins"
  PIP_CONSTRAINT="$pins" python -m pip install "setuptools>=77" ninja "torch==${torch_v}" "triton==${triton_v}"
  PIP_CONSTRAINT="$pins" python -m pip install --no-build-isolation -e ".[test]"
  echo "== installed"
  python -m pip list 2>/dev/null | grep -Ei '^(torch|triton|numpy|transformers|open.clip.torch) '
}

set +e
run "$@" 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
set -e
wall=$(( $(date -u +%s) - started ))

# The summary, from pytest's JUnit XML (absent when the set-up itself failed).
"${PYTHON:-python3}" - "$junit" "$summary" "$pair" "$started_iso" "$wall" "$status" "$venv" "$commit" "$*" <<'PY'
import os
import subprocess
import sys
import xml.etree.ElementTree as ET

junit, summary, pair, started, wall, status, venv, commit, args = sys.argv[1:]
py = os.path.join(venv, "bin", "python")


def version(mod: str) -> str:
    """The version of ``mod`` in the pair's venv, or why it could not be read."""
    if not os.path.exists(py):
        return "(venv missing)"
    out = subprocess.run([py, "-c", f"import {mod}; print({mod}.__version__)"], capture_output=True, text=True)
    return out.stdout.strip() or "(not importable)"


python = subprocess.run([py, "-V"], capture_output=True, text=True).stdout.strip() if os.path.exists(py) else "?"
lines = [f"# Compatibility run: {pair}", "",
         f"- date: {started}, commit {commit}",
         f"- torch {version('torch')}, triton {version('triton')}, {python}",
         f"- command: `tools/compat.sh {pair.split('-')[1]} {pair.split('-')[3]}{' ' + args if args else ''}`",
         f"- GROUPVIT_FAST_BUILD_CUDA={os.environ.get('GROUPVIT_FAST_BUILD_CUDA', '1 (default)')}, "
         f"COMPAT_REUSE={os.environ.get('COMPAT_REUSE', '0')}, "
         f"TRITON_INTERPRET={os.environ.get('TRITON_INTERPRET', 'unset')}",
         f"- wall time: {int(wall) // 60} min {int(wall) % 60} s (set-up included)",
         f"- exit status: {status}", ""]
if os.path.getsize(junit) if os.path.exists(junit) else 0:
    suites = ET.parse(junit).getroot()
    cases = list(suites.iter("testcase"))
    failed = [c for c in cases if c.find("failure") is not None or c.find("error") is not None]
    skipped = [c for c in cases if c.find("skipped") is not None]
    passed = len(cases) - len(failed) - len(skipped)
    lines += [f"**{passed} passed, {len(failed)} failed, {len(skipped)} skipped** ({len(cases)} tests)", ""]
    if failed:
        lines += ["## Failures", ""]
        for c in failed:
            bad = c.find("failure") if c.find("failure") is not None else c.find("error")
            msg = (bad.get("message") or "").strip().splitlines()
            lines.append(f"- `{c.get('classname')}::{c.get('name')}`: {msg[0][:300] if msg else '(no message)'}")
        lines.append("")
    reasons = {}
    for c in skipped:
        why = (c.find("skipped").get("message") or "").strip()
        reasons[why] = reasons.get(why, 0) + 1
    if reasons:
        lines += ["## Skips", ""] + [f"- {n} x {why}" for why, n in sorted(reasons.items())] + [""]
else:
    lines += ["**No test report**: the set-up failed or the run was stopped (see the exit status and the log).", ""]
lines.append(f"Raw log: `{os.path.basename(summary)[:-3]}.log`.")
with open(summary, "w") as f:
    f.write("\n".join(lines) + "\n")
print("\n".join(lines))
PY
exit "$status"
