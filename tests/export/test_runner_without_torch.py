"""The runner and ``segment --onnx``'s handler run where torch cannot be imported (docs/export.md, "The
runner"): a child process whose imports of torch fail runs them on an export and writes segment's files.
``tools/ci_export_no_torch.sh`` does the same in a virtual environment without torch installed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
from export_cases import CLASSES
from PIL import Image

#: makes every import of torch (and of what needs it) fail in the child, as if it were not installed
BLOCK_TORCH = textwrap.dedent(
    """
    import sys

    class _NoTorch:
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in ("torch", "torchvision", "triton"):
                raise ImportError(f"{name} is not installed (blocked by the test)")
            return None

    sys.meta_path.insert(0, _NoTorch())
    """
)

CHILD = textwrap.dedent(
    """
    import argparse, sys

    import groupvit_fast
    from groupvit_fast.cli_support import CliError
    from groupvit_fast.export.cli import segment_with_onnx
    from groupvit_fast.export.runner import OnnxSegmenter

    folder, images, out = sys.argv[1:4]
    runner = OnnxSegmenter(folder, ["cat", "dog", "bird"])  # open vocabulary: tokenizer.json + text.onnx
    assert runner.embedding_source == "text.onnx"
    args = argparse.Namespace(
        input=images, classes=["background,cat,dog,car"], onnx=folder, out=out, checkpoint=None, config=None,
        gt=None, bg_thresh=None, short_side=None, crop_size=None, stride=None, crop_batch_size=4, batch_size=2,
        no_overlay=False, quiet=True,
    )
    try:
        status = segment_with_onnx(args)
    except CliError as err:  # the unreadable image, reported after every readable one is written
        status = 1
        print(f"error: {err}", file=sys.stderr)
    assert "torch" not in sys.modules, sorted(m for m in sys.modules if m.startswith("torch"))
    print("no-torch-ok", status, groupvit_fast.__version__)
    """
)


def test_runner_and_segment_handler_run_without_torch(small, tmp_path):
    _, folder = small
    images = tmp_path / "images"
    images.mkdir()
    rng = np.random.default_rng(2)
    Image.fromarray(rng.integers(0, 256, (70, 110, 3), dtype=np.uint8)).save(images / "a.png")
    (images / "broken.png").write_bytes(b"not an image")
    (tmp_path / "block").mkdir()
    (tmp_path / "block" / "sitecustomize.py").write_text(BLOCK_TORCH)
    out = tmp_path / "out"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(tmp_path / "block"), os.environ.get("PYTHONPATH", "")]))
    import groupvit_fast

    root = os.path.dirname(os.path.dirname(groupvit_fast.__file__))
    proc = subprocess.run(
        [sys.executable, "-c", f"import sys; sys.path.insert(0, {root!r})\n" + CHILD, folder, str(images), str(out)],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert proc.returncode == 0 and "no-torch-ok 1" in proc.stdout, proc.stderr[-2000:]
    # the broken image is said in one line and the readable one is still written
    assert "broken.png: cannot read image" in proc.stderr, proc.stderr[-2000:]
    assert sorted(os.listdir(out)) == ["a.json", "a_label.png", "a_overlay.png", "summary.json"], proc.stderr[-2000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["classes"] == CLASSES and list(summary["images"]) == ["a"]
