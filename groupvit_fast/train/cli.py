"""``groupvit-fast train`` / ``python -m groupvit_fast.train``: the command line of training.

    groupvit-fast train --config CFG [--opts key=value ...] [--output DIR] [--tag TAG]
                        [--resume PATH|auto] [--init WEIGHTS] [--device cpu|cuda] [--quiet]

``CFG`` is a YAML file (NVlabs' format) or a shipped recipe name (``tiny``,
``group_vit_gcc_yfcc_30e``, ``group_vit_gcc_redcap_30e``). Under ``torchrun`` every process runs
the same command. Config and data errors end the command with one line and exit status 1.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

__all__ = ["add_train_parser", "add_train_arguments", "run_train", "main"]


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


def run_train(args: argparse.Namespace) -> int:
    """Load the config, train, leave the process group; ``ValueError``/``TypeError``/``RuntimeError``
    before training become one line."""
    import os

    from .config import load_config
    from .distributed import cleanup
    from .loop import Trainer

    world = int(os.environ.get("WORLD_SIZE", "1"))
    try:
        try:
            cfg = load_config(args.config, args.opts, output=args.output, tag=args.tag, world_size=world)
            trainer = Trainer(cfg, resume=args.resume, init=args.init, device=args.device, quiet=args.quiet)
        except (ValueError, TypeError, RuntimeError) as err:
            print(f"groupvit-fast train: error: {err}", file=sys.stderr)
            return 1
        trainer.run()
        return 0
    finally:
        # a gloo/NCCL group still alive at interpreter exit can abort a rank ("terminate called
        # without an active exception") and turn a finished run into a failed torchrun
        cleanup()


def add_train_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register ``train`` on a ``groupvit-fast`` subparsers object."""
    parser = subparsers.add_parser("train", help="train GroupViT on image-text pairs (docs/training.md)")
    add_train_arguments(parser)
    parser.set_defaults(func=run_train)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m groupvit_fast.train", description="Train GroupViT on image-text pairs (docs/training.md)."
    )
    add_train_arguments(parser)
    args = parser.parse_args(argv)
    return run_train(args)
