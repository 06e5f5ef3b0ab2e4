#!/usr/bin/env bash
# The onnxruntime runner where torch is not installed (docs/export.md, "Deploying without torch").
#
#   tools/ci_export_no_torch.sh [WORKDIR]        (default WORKDIR: a new temporary folder)
#
# 1. With the current environment's python (torch and the `export` extra installed, as CI's), export a small
#    random GroupViT and build a pure-Python wheel of the package (GROUPVIT_FAST_SKIP_EXTENSION=1: no _C).
# 2. Make a virtual environment WITHOUT torch: onnxruntime, numpy, pillow and tokenizers only (through
#    PIP_CONSTRAINT when it is set, as CI's lock), and install the wheel with --no-deps.
# 3. There: check that torch cannot be imported, run OnnxSegmenter (fixed and open vocabularies) and the
#    `segment --onnx` handler on generated images, and check the files segment writes.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
WORK=${1:-$(mktemp -d -t groupvit-no-torch-XXXXXX)}
mkdir -p "$WORK"
PY=${PYTHON:-python}

echo "== export a small random model (torch side) into $WORK/onnx"
"$PY" - "$WORK" <<'PY'
import sys, torch
sys.path.insert(0, "tests/helpers")
from export_cases import CLASSES, TEST_TIME, small_model
from groupvit_fast.export import export_onnx
export_onnx(small_model(), f"{sys.argv[1]}/onnx", classes=CLASSES, test_time=TEST_TIME, force=True)
PY

echo "== a pure-Python wheel of the package"
rm -rf "$WORK/wheel"
GROUPVIT_FAST_SKIP_EXTENSION=1 "$PY" -m pip wheel -q --no-build-isolation --no-deps -w "$WORK/wheel" "$ROOT"

echo "== a virtual environment without torch"
unset PYTHONPATH   # from here on only the venv's own packages count (a checkout on the path would mask the wheel)
"$PY" -m venv --clear "$WORK/venv"
VPY="$WORK/venv/bin/python"
"$VPY" -m pip install -q onnxruntime numpy pillow tokenizers
"$VPY" -m pip install -q --no-deps "$WORK"/wheel/groupvit_fast-*.whl
"$VPY" -m pip show -q groupvit_fast >/dev/null   # installed from the wheel, not found elsewhere
if "$VPY" -c "import torch" 2>/dev/null; then
  echo "torch is importable in the venv: the check would prove nothing" >&2
  exit 1
fi

echo "== the runner there"
cd "$WORK"   # not the checkout: the installed wheel is what runs
"$VPY" - "$WORK" <<'PY'
import argparse, json, os, sys
import groupvit_fast
assert groupvit_fast.__file__.startswith(sys.prefix), f"groupvit_fast comes from {groupvit_fast.__file__}, not the venv"
import numpy as np
from PIL import Image
from groupvit_fast.cli_support import CliError
from groupvit_fast.export.cli import segment_with_onnx
from groupvit_fast.export.runner import OnnxSegmenter

work = sys.argv[1]
onnx = f"{work}/onnx"
images = f"{work}/images"
os.makedirs(images, exist_ok=True)
rng = np.random.default_rng(0)
Image.fromarray(rng.integers(0, 256, (70, 110, 3), dtype=np.uint8)).save(f"{images}/a.png")
Image.fromarray(rng.integers(0, 256, (130, 90, 3), dtype=np.uint8)).save(f"{images}/b.png")
fixed = OnnxSegmenter(onnx, ["background", "cat", "dog", "car"])
open_vocab = OnnxSegmenter(onnx, ["cat", "dog", "bird"])
assert (fixed.embedding_source, open_vocab.embedding_source) == ("export.json", "text.onnx")
labels = fixed.predict([np.asarray(Image.open(f"{images}/a.png"))])
assert labels[0].shape == (70, 110)
args = argparse.Namespace(
    input=images, classes=["background,cat,dog,car"], onnx=onnx, out=f"{work}/out", checkpoint=None, config=None,
    gt=None, bg_thresh=None, short_side=None, crop_size=None, stride=None, crop_batch_size=4, batch_size=2,
    no_overlay=False, quiet=True,
)
assert segment_with_onnx(args) == 0
written = sorted(os.listdir(f"{work}/out"))
assert written == ["a.json", "a_label.png", "a_overlay.png", "b.json", "b_label.png", "b_overlay.png", "summary.json"], written
assert "torch" not in sys.modules
print("ok: segmented", len(json.load(open(f"{work}/out/summary.json"))["images"]), "images without torch")
PY
# the console script too: its parser must build without torch (NO_TORCH_SKIP_CLI=1 leaves this step out)
if [ "${NO_TORCH_SKIP_CLI:-0}" = 1 ]; then
  echo "skipped: groupvit-fast segment --onnx (NO_TORCH_SKIP_CLI=1)"
elif "$WORK/venv/bin/groupvit-fast" segment "$WORK/images" --classes voc --onnx "$WORK/onnx" --out "$WORK/out-cli" --quiet; then
  echo "ok: groupvit-fast segment --onnx without torch"
else
  echo "groupvit-fast segment --onnx failed without torch (the command line's parser must build without torch)" >&2
  exit 1
fi
