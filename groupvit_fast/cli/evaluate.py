"""``groupvit-fast eval seg|cls|emergence``: the published zero-shot evaluation protocol (docs/evaluation.md;
the ``eval`` extra), and the emergence report of a model trained on the generated scenes (docs/training.md,
"Scenes: segmentation from captions"). The handlers live in ``groupvit_fast/evaluation/cli.py`` and
``groupvit_fast/evaluation/emergence/command.py``; under ``torchrun`` every rank runs the same command
(``python -m groupvit_fast.cli eval ...``)."""

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


def _run_emergence(args: argparse.Namespace) -> int:
    require_command_extra("eval", "eval")
    from ..evaluation.emergence.command import run_eval_emergence

    return run_eval_emergence(args)


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
    """Register ``eval seg``, ``eval cls`` and ``eval emergence`` on the top-level ``groupvit-fast`` subparsers."""
    from ..evaluation.presets import DATASETS  # data: no torch, no extra

    ev = subparsers.add_parser(
        "eval",
        help="zero-shot evaluation: ImageNet top-1 (cls), benchmark mIoU (seg), the scenes report (emergence)",
    )
    sub = ev.add_subparsers(dest="eval_command", required=True)
    seg = sub.add_parser("seg", help=f"zero-shot mIoU on a benchmark ({', '.join(DATASETS)})")
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
    em = sub.add_parser(
        "emergence",
        help="held-out scenes: a trained model against the same architecture untrained and grouping-free baselines",
    )
    em.add_argument("--checkpoint", required=True, help="a training checkpoint (its config builds the untrained twin)")
    em.add_argument("--data-root", required=True, help="the held-out scenes (prepare-data scenes' --out or its eval/)")
    em.add_argument(
        "--dataset",
        default="scenes",
        choices=tuple(name for name, preset in DATASETS.items() if preset.bg_thresh is not None),
        help="the preset whose layout, classes and test time apply (default: %(default)s)",
    )
    em.add_argument("--out", required=True, help="folder for emergence.json and emergence.png")
    em.add_argument(
        "--bg-thresh",
        type=float,
        help="background threshold (default: the checkpoint config's evaluate.seg.bg_thresh, else the dataset's)",
    )
    add_test_time_arguments(em, "the dataset's")
    em.add_argument("--max-images", type=positive_int, help="score only the first N scenes")
    em.add_argument(
        "--figure-count", type=positive_int, default=6, help="scenes in emergence.png (default: %(default)s)"
    )
    em.add_argument(
        "--trust-pickle", action="store_true", help="allow full unpickling of the checkpoint (only for files you trust)"
    )
    em.set_defaults(func=_run_emergence)
    return ev
