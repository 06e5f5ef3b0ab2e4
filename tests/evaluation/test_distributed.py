"""Two processes (torchrun, gloo) give exactly the single-process metrics, for ``eval seg`` and ``eval cls``."""

import json
import os
import subprocess
import sys

import pytest

from eval_data import CLASSES, SIZES, make_layout, write_imagefolder
from groupvit_fast.cli import main

pytest.importorskip("open_clip", reason="the prompts need open_clip_torch's tokenizer")


def torchrun(args, cwd):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc-per-node",
        "2",
        "-m",
        "groupvit_fast.cli",
        *args,
    ]
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def _metrics(report, keys):
    return {k: report[k] for k in keys}


def test_two_processes_equal_one(tmp_path, eval_checkpoint):
    # 3 images over 2 ranks: the slices differ in size (2 + 1), as in real datasets
    make_layout(str(tmp_path / "voc"), "voc", sizes=SIZES)
    write_imagefolder(str(tmp_path / "imagenet" / "val"))
    names = tmp_path / "names.txt"
    names.write_text("\n".join(CLASSES) + "\n")
    seg = [
        "eval",
        "seg",
        "--dataset",
        "voc",
        "--data-root",
        str(tmp_path / "voc"),
        "--checkpoint",
        eval_checkpoint,
        "--bg-thresh",
        "0.2",
        "--quiet",
        "--workers",
        "1",
        "--device",
        "cpu",
    ]
    cls = [
        "eval",
        "cls",
        "--data",
        str(tmp_path / "imagenet"),
        "--class-names",
        str(names),
        "--checkpoint",
        eval_checkpoint,
        "--quiet",
        "--workers",
        "1",
        "--device",
        "cpu",
        "--batch-size",
        "3",
    ]
    assert main(seg + ["--out", str(tmp_path / "one")]) == 0
    assert main(cls + ["--out", str(tmp_path / "one")]) == 0
    torchrun(seg + ["--out", str(tmp_path / "two")], tmp_path)
    torchrun(cls + ["--out", str(tmp_path / "two")], tmp_path)
    for name, keys in (
        ("voc", ["mIoU", "mAcc", "aAcc", "per_class", "num_images"]),
        ("classification", ["top1", "top5", "per_class", "num_images", "mean_per_class_top1"]),
    ):
        one = json.loads((tmp_path / "one" / f"{name}.json").read_text())
        two = json.loads((tmp_path / "two" / f"{name}.json").read_text())
        assert two["settings"]["world_size"] == 2 and one["settings"]["world_size"] == 1
        assert _metrics(two, keys) == _metrics(one, keys)  # integer counts summed: exactly equal
