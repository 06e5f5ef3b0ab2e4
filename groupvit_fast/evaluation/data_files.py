"""The name lists shipped as package data (``groupvit_fast/data/*.txt``, one entry a line)."""

from __future__ import annotations

import functools
import os

__all__ = ["DATA_DIR", "read_names"]

DATA_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "data")


@functools.cache
def read_names(file_name: str) -> tuple[str, ...]:
    """The lines of ``groupvit_fast/data/<file_name>`` (ImageNet classes, prompt templates, ...)."""
    with open(os.path.join(DATA_DIR, file_name), encoding="utf-8") as f:
        return tuple(line.rstrip("\n") for line in f if line.strip())
