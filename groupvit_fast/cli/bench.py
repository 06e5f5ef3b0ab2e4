"""``groupvit-fast bench ...``: the benchmark harness (``groupvit_fast.bench``, the ``bench`` extra);
every argument after ``bench``, ``--help`` included, goes to the harness."""

from __future__ import annotations

import argparse

from ..cli_support import require_command_extra


def run(args: argparse.Namespace) -> int:
    require_command_extra("bench", "bench")
    from .. import bench

    return int(bench.main(list(args.bench_args)) or 0)


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser("bench", help="benchmarks (arguments go to groupvit_fast.bench)", add_help=False)
    parser.add_argument("bench_args", nargs=argparse.REMAINDER)
    parser.set_defaults(func=run)
    return parser
