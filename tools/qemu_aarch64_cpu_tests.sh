#!/usr/bin/env bash
# The CPU backend's tests on aarch64, under QEMU user emulation, from an x86-64 Debian machine
# (docs/cpu_backend.md, "Platforms"). Not part of every CI run: emulation is slow (about 20-60x).
#
#   1. an arm64 Debian root file system (debootstrap's first stage, then every package unpacked
#      with dpkg-deb: no chroot, no binfmt_misc needed) with Python 3.11 and its headers;
#   2. torch's aarch64 wheel (the version of the x86 venv running this script) and the test
#      dependencies' aarch64 / pure-Python wheels, unpacked into one site folder;
#   3. groupvit_fast._C cross-compiled with aarch64-linux-gnu-g++ against that wheel's headers and
#      libraries (setup.py's flags: -O3 -fopenmp), the baseline copy of the kernels only;
#   4. the tests run with qemu-aarch64-static -L <rootfs> <rootfs>/usr/bin/python3.11 -m pytest.
#
# Known limit (2026-12-07): torch 2.14.1's aarch64 wheel on the package index is a CUDA build; its
# import needs the nvidia-*-cu13 aarch64 wheels (put them in the site folder), or use a CPU-only
# aarch64 torch wheel. The cross-compiled extension links against it either way.
#
# Usage (repository root, x86 venv active, as root for apt-get):
#   tools/qemu_aarch64_cpu_tests.sh [--minutes 60] [--out benchmarks/results/cpu-qemu-aarch64] [pytest args...]
# Default tests: tests/ops/test_cpu_backend.py tests/ops/test_cpu_isa.py and the cpu rows of
# tests/ops/test_assign_attention_parity.py. The run is time-boxed (--minutes); its log, the
# versions and the pytest summary (partial when the time box ends it) go to --out.
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
minutes=60
out="$root/benchmarks/results/cpu-qemu-aarch64"
while [[ $# -gt 0 ]]; do
  case "$1" in
    --minutes) minutes="$2"; shift 2 ;;
    --out) out="$2"; shift 2 ;;
    *) break ;;
  esac
done
tests=("$@")
if ((${#tests[@]} == 0)); then
  tests=(tests/ops/test_cpu_backend.py tests/ops/test_cpu_isa.py tests/ops/test_assign_attention_parity.py -k "cpu or not parity")
fi
work="${GVF_QEMU_DIR:-/tmp/gvf-qemu}"
rootfs="$work/rootfs"
site="$work/site"
mkdir -p "$work" "$out"

# -- 1. tools and the arm64 root file system ------------------------------------------------------
need=()
command -v qemu-aarch64-static >/dev/null || need+=(qemu-user-static)
command -v debootstrap >/dev/null || need+=(debootstrap)
command -v aarch64-linux-gnu-g++ >/dev/null || need+=(g++-aarch64-linux-gnu)
if ((${#need[@]})); then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq && apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
if [[ ! -x "$rootfs/usr/bin/python3.11" || ! -f "$rootfs/usr/include/aarch64-linux-gnu/python3.11/pyconfig.h" ]]; then
  echo "== arm64 root file system (debootstrap, first stage)"
  debootstrap --foreign --arch=arm64 --variant=minbase --include=python3,libpython3.11-dev,libgomp1 \
    bookworm "$rootfs" http://deb.debian.org/debian >"$work/debootstrap.log" 2>&1
  for deb in "$rootfs"/var/cache/apt/archives/*.deb; do dpkg-deb -x "$deb" "$rootfs"; done
fi
py_arm=(qemu-aarch64-static -L "$rootfs" "$rootfs/usr/bin/python3.11")

# -- 2. torch's aarch64 wheel and the test dependencies -------------------------------------------
torch_version="$(python -c 'import torch; print(torch.__version__.split("+")[0])')"
if [[ ! -f "$site/.torch-$torch_version" ]]; then
  echo "== torch $torch_version (aarch64) and the test dependencies"
  rm -rf "$site" && mkdir -p "$site" "$work/wheels"
  pins="$(python - <<'PY'
import importlib.metadata as m
names = ["pytest", "pluggy", "iniconfig", "packaging", "typing_extensions", "sympy", "mpmath", "networkx",
         "jinja2", "markupsafe", "filelock", "fsspec", "numpy", "pillow"]
print(" ".join(f"{n}=={m.version(n)}" for n in names))
PY
)"
  # shellcheck disable=SC2086
  python -m pip download -q --no-deps --only-binary=:all: --python-version 3.11 --platform manylinux_2_28_aarch64 \
    --platform manylinux2014_aarch64 --platform manylinux_2_17_aarch64 -d "$work/wheels" "torch==$torch_version" $pins
  for whl in "$work"/wheels/*.whl; do python -m zipfile -e "$whl" "$site"; done
  touch "$site/.torch-$torch_version"
fi

# -- 3. the extension, cross-compiled ------------------------------------------------------------
tree="$work/tree"
rm -rf "$tree" && mkdir -p "$tree"
(cd "$root" && git ls-files -co --exclude-standard -z | xargs -0 tar -cf - --no-recursion) | tar -xf - -C "$tree"
echo "== cross-compiling groupvit_fast._C for aarch64"
tinc="$site/torch/include"
flags=(-std=c++20 -O3 -fPIC -fopenmp -Wall -DTORCH_API_INCLUDE_EXTENSION_H -DTORCH_EXTENSION_NAME=_C
  -D_GLIBCXX_USE_CXX11_ABI=1 -I"$tree/csrc" -I"$tinc" -I"$tinc/torch/csrc/api/include"
  -I"$rootfs/usr/include/python3.11" -idirafter "$rootfs/usr/include")  # pyconfig.h: <aarch64-linux-gnu/...>
objs=()
for src in "$tree"/csrc/cpu/*.cpp "$tree"/csrc/ops.cpp; do
  obj="$work/$(basename "$src" .cpp).o"
  aarch64-linux-gnu-g++ "${flags[@]}" -c "$src" -o "$obj" &
  objs+=("$obj")
done
wait
so="$tree/groupvit_fast/_C.cpython-311-aarch64-linux-gnu.so"
aarch64-linux-gnu-g++ -shared -fopenmp "${objs[@]}" -L"$site/torch/lib" -lc10 -ltorch -ltorch_cpu -ltorch_python \
  -o "$so"
printf '{\n "torch_version": "%s",\n "with_cuda": false,\n "cuda_version": null,\n "cuda_archs": null,\n "cpu_threading": "openmp"\n}\n' \
  "$torch_version" >"$tree/groupvit_fast/_build_info.json"

# -- 4. the tests, under emulation, time-boxed ----------------------------------------------------
stamp="$(date -u +%Y-%m-%d)"
log="$out/cpu-qemu-aarch64-$stamp.log"
{
  echo "# CPU backend tests on aarch64 under QEMU user emulation"
  echo "date: $(date -u '+%Y-%m-%d %H:%M:%S UTC'); git commit: $(git -C "$root" rev-parse HEAD)"
  echo "host: $(uname -m), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(nproc) CPUs"
  echo "qemu: $(qemu-aarch64-static --version | head -1)"
  echo "cross compiler: $(aarch64-linux-gnu-g++ --version | head -1)"
  echo "guest: Debian $(cat "$rootfs/etc/debian_version") arm64, $("${py_arm[@]}" -c 'import sys; print("Python", sys.version.split()[0])')"
  echo "torch: $torch_version (manylinux aarch64 wheel)"
  echo "time box: $minutes min; tests: ${tests[*]}"
  echo
} | tee "$log"
set +e
(cd "$tree" && PYTHONPATH="$tree:$site" GROUPVIT_FAST_REQUIRE=cpu OMP_NUM_THREADS=2 \
  timeout --signal=INT "$((minutes * 60))" "${py_arm[@]}" -c \
  'import torch, platform; from groupvit_fast.ops.backends.native import native_ops; print(platform.machine(), "torch", torch.__version__, native_ops().build_info())' \
  && PYTHONPATH="$tree:$site" GROUPVIT_FAST_REQUIRE=cpu OMP_NUM_THREADS=2 timeout --signal=INT "$((minutes * 60))" \
  "${py_arm[@]}" -m pytest -q -p no:cacheprovider -o addopts="--import-mode=importlib" --durations=5 "${tests[@]}") \
  2>&1 | tee -a "$log"
rc=${PIPESTATUS[0]}
set -e
echo "exit status: $rc (124 or 130: stopped by the $minutes-minute time box; the summary above is partial)" | tee -a "$log"
exit "$rc"
