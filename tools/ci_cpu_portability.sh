#!/usr/bin/env bash
# The CPU backend on the compilers and architectures people use (docs/cpu_backend.md, "Building"):
#
#   1. clang: builds groupvit_fast._C a second time with clang++ (CPU kernels only) in a scratch
#      copy of the tree and runs the CPU backend's tests against that build. Debian's clang has no
#      libomp, so this is also the build without an OpenMP runtime (Apple's clang without libomp):
#      it must build, say so, and pass the tests.
#   2. aarch64: compiles csrc/cpu/*.cpp and csrc/ops.cpp for aarch64 (object files only) with the
#      GNU cross compiler and with clang --target=aarch64-linux-gnu, against the installed torch's
#      headers, so that no x86-only intrinsic, builtin or flag can land outside the x86 guards.
#
# Installs what it needs (apt-get: CI machines start bare). About 3-4 minutes on 2 cores.
# Usage: tools/ci_cpu_portability.sh [clang|aarch64|all]   (from the repository root, in the venv)
set -euo pipefail

what="${1:-all}"
root="$(cd "$(dirname "$0")/.." && pwd)"
scratch="$(mktemp -d "${TMPDIR:-/tmp}/gvf-portability.XXXXXX")"
trap 'rm -rf "$scratch"' EXIT

need=()
command -v clang++ >/dev/null || need+=(clang)
if [[ "$what" != clang ]]; then command -v aarch64-linux-gnu-g++ >/dev/null || need+=(g++-aarch64-linux-gnu); fi
if ((${#need[@]})); then
  echo "== apt-get install ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq && apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

if [[ "$what" == clang || "$what" == all ]]; then
  echo "== clang build of the CPU kernels ($(clang++ --version | head -1))"
  # A scratch copy of the tree (tracked and untracked, not ignored files): the build writes its
  # .so and _build_info.json there, never over the checkout's own build.
  (cd "$root" && git ls-files -co --exclude-standard -z | xargs -0 tar -cf - --no-recursion) | tar -xf - -C "$scratch"
  (cd "$scratch" && CC=clang CXX=clang++ LDSHARED="clang++ -shared" GROUPVIT_FAST_BUILD_CUDA=0 \
    MAX_JOBS="${MAX_JOBS:-2}" python setup.py -q build_ext --inplace 2>&1 | grep -Ev '^\[[0-9]+/[0-9]+\]' || true)
  test -f "$scratch"/groupvit_fast/_C*.so || { echo "clang build FAILED" >&2; exit 1; }
  python - "$scratch" <<'PY'
import json, sys
info = json.load(open(f"{sys.argv[1]}/groupvit_fast/_build_info.json"))
print("clang build:", info)
PY
  echo "== CPU backend tests against the clang build"
  (cd "$scratch" && PYTHONPATH="$scratch" GROUPVIT_FAST_REQUIRE=cpu python -m pytest -q -p no:cacheprovider \
    tests/ops/test_cpu_backend.py tests/ops/test_cpu_isa.py)
fi

if [[ "$what" == aarch64 || "$what" == all ]]; then
  torch_inc="$(python -c 'from torch.utils.cpp_extension import include_paths; print(" ".join("-I" + p for p in include_paths()))')"
  py_inc="$(python -c 'import sysconfig; print(sysconfig.get_paths()["include"])')"
  # The flags setup.py gives GCC and clang, but -fopenmp: torch's aarch64 wheels thread with OpenMP
  # too, but Debian's clang has no omp.h of its own, and the syntax-level OpenMP (-fopenmp-simd)
  # is all an object-only compile checks for clang.
  flags=(-std=c++20 -O3 -fPIC -Wall -DTORCH_API_INCLUDE_EXTENSION_H -DTORCH_EXTENSION_NAME=_C
    -I"$root/csrc" $torch_inc -I"$py_inc")
  sources=("$root"/csrc/cpu/*.cpp "$root"/csrc/ops.cpp)
  for cxx in "aarch64-linux-gnu-g++ -fopenmp" "clang++ --target=aarch64-linux-gnu -fopenmp-simd"; do
    tag="${cxx%% *}"
    echo "== aarch64 compile with $cxx"
    pids=()
    for src in "${sources[@]}"; do
      $cxx "${flags[@]}" -c "$src" -o "$scratch/aarch64-$tag-$(basename "$src" .cpp).o" &
      pids+=($!)
      if ((${#pids[@]} >= ${MAX_JOBS:-2})); then wait "${pids[0]}"; pids=("${pids[@]:1}"); fi
    done
    for pid in "${pids[@]}"; do wait "$pid"; done
    # Every object is an aarch64 ELF (e_machine 183 = EM_AARCH64) and one per source.
    python - "$scratch" "$tag" "${#sources[@]}" <<'PY'
import glob, sys
objs = glob.glob(f"{sys.argv[1]}/aarch64-{sys.argv[2]}-*.o")
machines = {int.from_bytes(open(o, "rb").read(20)[18:20], "little") for o in objs}
assert len(objs) == int(sys.argv[3]) and machines == {183}, (objs, machines)
print(f"{len(objs)} aarch64 objects")
PY
  done
fi
echo "== CPU portability checks passed"
