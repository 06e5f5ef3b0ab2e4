"""``groupvit-fast train --config CFG [--opts key=value ...]``: training on image-text pairs
(docs/training.md; the ``train`` extra).

    groupvit-fast train --config CFG [--opts key=value ...] [--output DIR] [--tag TAG]
                        [--resume PATH|auto] [--init WEIGHTS] [--device cpu|cuda] [--quiet]

``CFG`` is a YAML file (NVlabs' format) or a shipped recipe name (``tiny``, ``scenes``,
``group_vit_gcc_yfcc_30e``, ``group_vit_gcc_redcap_30e``). ``python -m groupvit_fast.train ...`` and
``torchrun -m groupvit_fast.train ...`` are the same command.
"""

from __future__ import annotations

import argparse

from ..cli_support import require_command_extra


def run(args: argparse.Namespace) -> int:
    require_command_extra("train", "train")
    from ..train.cli import run_train

    return run_train(args)


def add_train_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config",
        "--cfg",
        required=True,
        help="YAML config or recipe name (tiny, group_vit_gcc_yfcc_30e, group_vit_gcc_redcap_30e)",
    )
    parser.add_argument(
        "--opts",
        nargs="+",
        default=[],
        metavar="KEY=VALUE",
        help="config overrides, e.g. data.batch_size=128 train.epochs=10",
    )
    parser.add_argument("--output", help="run folder (default: output/<config>_bs<batch>x<world>)")
    parser.add_argument("--tag", help="sub-folder of the run folder (NVlabs' --tag)")
    parser.add_argument(
        "--resume",
        metavar="PATH|auto",
        help="a checkpoint to continue, or 'auto' for the run "
        "folder's latest (the default while checkpoint.auto_resume is true)",
    )
    parser.add_argument(
        "--init",
        metavar="WEIGHTS",
        help="start from these weights (our checkpoints, NVlabs .pth, "
        "HF weights, safetensors) with a fresh optimiser and schedule",
    )
    parser.add_argument("--device", help="cpu or cuda (default: cuda when available)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register ``train`` on a ``groupvit-fast`` subparsers object."""
    parser = subparsers.add_parser("train", help="train GroupViT on image-text pairs (docs/training.md)")
    add_train_arguments(parser)
    parser.set_defaults(func=run)
    return parser
