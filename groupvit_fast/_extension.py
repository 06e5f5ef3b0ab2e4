"""Loading the compiled extension ``groupvit_fast._C`` (csrc/), safely.

The extension is optional: without it the package works on the reference and Triton backends.
``setup.py`` records the torch it was compiled against in ``groupvit_fast/_build_info.json``; a
mismatch is detected *before* the shared object is loaded, so a stale build is reported as one
clear message instead of an ``undefined symbol`` crash. Any failure is logged once, and
``unavailable_reason()`` tells dispatch and ``python -m groupvit_fast.info`` why.
"""

from __future__ import annotations

import importlib
import json
import logging
import os
from functools import lru_cache
from pathlib import Path

import torch

__all__ = ["load_extension", "unavailable_reason", "build_info", "DISABLE_ENV_VAR"]

logger = logging.getLogger("groupvit_fast")

#: Set to 1 to pretend the extension is not built (tests of the fallback path use it).
DISABLE_ENV_VAR = "GROUPVIT_FAST_DISABLE_EXTENSION"
_BUILD_INFO = Path(__file__).with_name("_build_info.json")
_REBUILD = "rebuild it with `pip install --no-build-isolation -e .`"


def build_info() -> dict:
    """What setup.py recorded at build time (empty when nothing was built)."""
    try:
        return json.loads(_BUILD_INFO.read_text())
    except (OSError, ValueError):
        return {}


def _torch_base_version(version: str) -> str:
    return version.split("+")[0]


@lru_cache(maxsize=None)
def _load():
    if os.environ.get(DISABLE_ENV_VAR, "") not in ("", "0"):
        return None, f"disabled by {DISABLE_ENV_VAR}"
    info = build_info()
    if not info:
        return None, f"the C++ extension groupvit_fast._C is not built ({_REBUILD})"
    built_with = info.get("torch_version", "?")
    if _torch_base_version(built_with) != _torch_base_version(torch.__version__):
        return None, (f"groupvit_fast._C was built against torch {built_with} but torch {torch.__version__} "
                      f"is running; {_REBUILD}")
    try:
        module = importlib.import_module("groupvit_fast._C")
    except (ImportError, OSError) as err:
        return None, f"groupvit_fast._C failed to load ({err}); {_REBUILD}"
    return module, None


def load_extension():
    """The loaded ``groupvit_fast._C`` module, or ``None`` (the reason is logged once)."""
    module, reason = _load()
    if module is None and not getattr(load_extension, "_logged", False):
        load_extension._logged = True
        logger.info("groupvit_fast: compiled backends unavailable: %s", reason)
    return module


def unavailable_reason(need_cuda: bool = False) -> str | None:
    """``None`` if the extension (with CUDA kernels when ``need_cuda``) is loaded, else why not."""
    module = load_extension()
    if module is None:
        return _load()[1]
    if need_cuda and not build_info().get("with_cuda", False):
        return "groupvit_fast._C was built without CUDA kernels (CPU-only torch at build time)"
    return None
