"""``groupvit-fast export onnx ...``: the model as ONNX graphs for onnxruntime (docs/export.md; the ``export``
extra). The parser and the handler are ``groupvit_fast.export.cli``'s (standard library only at import)."""

from __future__ import annotations

import argparse


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    from ..export.cli import add_export_parser

    return add_export_parser(subparsers)
