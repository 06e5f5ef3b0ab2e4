"""``groupvit-fast``: the command line.

Subcommands, one module each in this package:

* ``segment IMAGE_OR_DIR --classes voc|NAME NAME ... [--checkpoint PATH] [--out DIR] [--gt MASK_OR_DIR]``:
  zero-shot segmentation of one image or every image of a folder (``segment.py``);
* ``info``: what is built and usable (``groupvit_fast.info``);
* ``bench ...``: the benchmark harness (``groupvit_fast.bench``, the ``bench`` extra);
* ``convert SRC DST [--to nvlabs|hf]``: NVlabs ``.pth`` <-> HF weights <-> safetensors;
* ``eval seg|cls ...`` and ``prepare-data ...``: the published evaluation protocol (the ``eval`` extra);
* ``train --config CFG [--opts k=v ...]``: training (the ``train`` extra, docs/training.md);
* ``export onnx --out DIR [--checkpoint PATH] [--classes ...]``: ONNX graphs for onnxruntime, which
  ``segment ... --onnx DIR`` runs (the ``export`` extra, docs/export.md).

Building the parser imports no optional extra and no pipeline: ``groupvit-fast --help`` and every
``groupvit-fast COMMAND --help`` work with the core install alone. A subcommand whose extra is missing
says which one to install, in one line, when it runs (``cli_support.require_command_extra``).

Errors (bad paths, unreadable images or checkpoints, unknown classes, a missing extra) end the command
with one line on stderr and exit status 1; usage errors exit with 2. Output files are written
atomically and an existing file is never replaced by ``convert`` without ``--force``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from ..cli_support import PROG, CliError
from . import bench, convert, evaluate, export, info, prepare, segment, train

__all__ = ["main", "build_parser", "CliError", "SUBCOMMANDS"]

#: Every subcommand module: each has ``add_parser(subparsers)``, which sets ``func`` to its runner.
SUBCOMMANDS = (segment, info, bench, convert, evaluate, prepare, train, export)


def build_parser() -> argparse.ArgumentParser:
    """The ``groupvit-fast`` parser with every subcommand (imports no extra)."""
    parser = argparse.ArgumentParser(
        prog=PROG, description="GroupViT with fused kernels: segmentation, evaluation, training, weights, diagnostics."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    for command in SUBCOMMANDS:
        command.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``groupvit-fast`` console script; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    # `bench` forwards everything after it, --help included, to the harness
    if argv[:1] == ["bench"]:
        args = argparse.Namespace(func=bench.run, bench_args=argv[1:])
    else:
        args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except CliError as err:
        print(f"{PROG}: error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
