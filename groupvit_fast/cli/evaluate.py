"""``groupvit-fast eval seg|cls``: the published zero-shot evaluation protocol (docs/evaluation.md; the
``eval`` extra). The handlers live in ``groupvit_fast/evaluation/cli.py``; under ``torchrun`` every rank
runs the same command (``python -m groupvit_fast.cli eval ...``)."""

from __future__ import annotations

import argparse

from ..cli_support import add_assign_argument, add_test_time_arguments, positive_int, require_command_extra


def _run_seg(args: argparse.Namespace) -> int:
    require_command_extra("eval", "eval")
    from ..evaluation.cli import run_eval_seg

    return run_eval_seg(args)


def _run_cls(args: argparse.Namespace) -> int:
    require_command_extra("eval", "eval")
    from ..evaluation.cli import run_eval_cls

    return run_eval_cls(args)


def _common(p: argparse.ArgumentParser, batch: int) -> None:
    p.add_argument("--checkpoint", required=True, help="NVlabs .pth, HF weights or safetensors")
    p.add_argument("--config", help="model config (JSON or NVlabs YAML) when the checkpoint carries none")
    p.add_argument("--out", default="eval_out", help="report folder (default: %(default)s)")
    p.add_argument("--batch-size", type=positive_int, default=batch, help="images per step (default: %(default)s)")
    p.add_argument("--workers", type=int, default=2, help="DataLoader workers per process (default: %(default)s)")
    p.add_argument("--autocast", choices=("bf16", "fp16"), help="mixed precision for the image encoder (GPU)")
    p.add_argument("--max-images", type=positive_int, help="evaluate only the first N images")
    p.add_argument(
        "--device", help="cpu, cuda, cuda:1 ... (default: cuda if available; cuda:LOCAL_RANK under torchrun)"
    )
    p.add_argument(
        "--trust-pickle", action="store_true", help="allow full unpickling of the checkpoint (only for files you trust)"
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register ``eval seg`` and ``eval cls`` on the top-level ``groupvit-fast`` subparsers."""
    from ..evaluation.datasets import DATASETS  # the presets: data, no extra

    ev = subparsers.add_parser("eval", help="zero-shot evaluation: ImageNet top-1 (cls), benchmark mIoU (seg)")
    sub = ev.add_subparsers(dest="eval_command", required=True)
    seg = sub.add_parser("seg", help="zero-shot mIoU on VOC, Context, COCO-Object, ADE20K or Cityscapes")
    seg.add_argument("--dataset", required=True, choices=tuple(DATASETS), metavar="|".join(DATASETS))
    seg.add_argument("--data-root", required=True, help="folder holding the dataset's layout (docs/evaluation.md)")
    seg.add_argument("--split", default="val", help="split to evaluate (default: %(default)s)")
    seg.add_argument(
        "--bg-thresh",
        type=float,
        help="background threshold (default: the checkpoint config's evaluate.seg.bg_thresh, else the dataset's)",
    )
    add_test_time_arguments(seg, "the dataset's")
    seg.add_argument("--topk", type=positive_int, default=5, help="image-level class filter (default: %(default)s)")
    add_assign_argument(seg)
    seg.add_argument("--templates", default="simple", help="prompt template set (default: %(default)s)")
    seg.add_argument(
        "--crop-batch-size", type=positive_int, default=8, help="448x448 crops per encoder call (default: %(default)s)"
    )
    seg.add_argument("--overlays", type=int, default=0, help="write overlay PNGs of the first N images")
    _common(seg, 4)
    seg.set_defaults(func=_run_seg)
    cls = sub.add_parser("cls", help="zero-shot top-1/top-5 on ImageNet val (ImageFolder or webdataset shards)")
    cls.add_argument(
        "--data",
        required=True,
        help="val/<wnid>/*.JPEG folder, a folder of .tar shards, or 'imagenet-val-{000000..000049}.tar'",
    )
    cls.add_argument("--templates", default="subset", help="subset (NVlabs' 7, default), full (CLIP's 80), simple")
    cls.add_argument("--class-names", help="file with one class name a line (default: the 1000 ImageNet names)")
    cls.add_argument(
        "--resize", type=positive_int, default=256, help="shorter side before the crop (default: %(default)s)"
    )
    cls.add_argument("--crop", type=positive_int, default=224, help="centre crop (default: %(default)s)")
    cls.add_argument("--cache-dir", help="cache the text classifier here per (checkpoint, classes, templates)")
    _common(cls, 64)
    cls.set_defaults(func=_run_cls)
    return ev
