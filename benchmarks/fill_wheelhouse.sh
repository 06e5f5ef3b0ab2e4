#!/usr/bin/env bash
# Fills the GPU check's wheelhouse: the pure-Python packages the offline GPU machine lacks
# (benchmarks/wheelhouse.py lists them, pinned), as wheels for CPython 3.12 on x86-64 Linux.
# Run it on a machine with a package index (pip's own configuration is used), then carry the folder:
#
#   bash benchmarks/fill_wheelhouse.sh          # into .whl/ (git-ignored)
#   bash benchmarks/fill_wheelhouse.sh DIR
#   bash benchmarks/gpu_check.sh --wheelhouse .whl all    # on the GPU machine, with .whl carried along
#
# Each package is downloaded alone (--no-deps: their other requirements are on the GPU machine), as a
# wheel for Python 3.12; one that is published as a source archive only (antlr4-python3-runtime) is
# built into a py3-none-any wheel here with `pip wheel`. The folder is then checked
# (`wheelhouse.py check`) and its size printed. Environment: PYTHON (default python3).
set -uo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.." || exit 1
DIR=${1:-.whl}
PYTHON=${PYTHON:-python3}
mkdir -p "$DIR" || exit 1
export PIP_DISABLE_PIP_VERSION_CHECK=1

# manylinux tags are matched exactly by pip download, so name the usual ones
PLATFORMS=()
for tag in manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64 manylinux1_x86_64; do
  PLATFORMS+=(--platform "$tag")
done

mapfile -t REQUIREMENTS < <("$PYTHON" benchmarks/wheelhouse.py requirements) || exit 1
[ "${#REQUIREMENTS[@]}" -gt 0 ] || { echo "fill_wheelhouse: benchmarks/wheelhouse.py listed no package" >&2; exit 1; }
status=0
for requirement in "${REQUIREMENTS[@]}"; do
  if "$PYTHON" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
      --abi cp312 --abi abi3 --abi none "${PLATFORMS[@]}" -d "$DIR" "$requirement"; then
    echo "fill_wheelhouse: $requirement: downloaded"
  elif "$PYTHON" -m pip wheel -q --no-deps -w "$DIR" "$requirement"; then
    echo "fill_wheelhouse: $requirement: no wheel published; built one from its source archive"
  else
    echo "fill_wheelhouse: $requirement: neither a wheel nor a buildable source archive found" >&2
    status=1
  fi
done

"$PYTHON" benchmarks/wheelhouse.py check "$DIR" || status=1
echo "fill_wheelhouse: $(find "$DIR" -maxdepth 1 -type f -name '*.whl' | wc -l) wheel(s), $(du -sh "$DIR" | cut -f1) in $DIR"
exit $status
