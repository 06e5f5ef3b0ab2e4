"""``groupvit-fast info``: versions, built extensions and usable backends (``groupvit_fast.info``)."""

from __future__ import annotations

import argparse


def run(args: argparse.Namespace) -> int:
    from .. import info

    return int(info.main() or 0)


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser("info", help="versions, built extensions and usable backends")
    parser.set_defaults(func=run)
    return parser
