"""Loading the compiled extension ``groupvit_fast._C`` (csrc/), safely.

The extension is optional: without it the package works on the reference and Triton backends.
``setup.py`` records the torch it was compiled against in ``groupvit_fast/_build_info.json``; a
mismatch is detected *before* the shared object is loaded, so a stale build is reported as one
clear message instead of an ``undefined symbol`` crash. ``availability()`` tells dispatch and
``python -m groupvit_fast.info`` whether it is absent (not built, disabled: logged once as info) or
broken (stale, unloadable: logged once as an error), and why.
"""

from __future__ import annotations

import importlib
import json
import logging
import os
from functools import cache
from pathlib import Path
from types import ModuleType

import torch

from ._availability import USABLE, Availability

__all__ = ["load_extension", "availability", "unavailable_reason", "build_info", "DISABLE_ENV_VAR"]

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


_serial_warned = False


def warn_if_serial(info: dict | None = None) -> None:
    """Log once (a warning) that the ``cpu`` backend runs on one thread when setup.py built it so.

    ``at::parallel_for`` is inline: with torch's OpenMP builds its threads are compiled into the
    extension, and a compiler without OpenMP (Apple's clang without libomp) gives a one-thread
    build (``cpu_threading: "serial"`` in ``_build_info.json``; docs/cpu_backend.md, "Building")."""
    global _serial_warned
    info = build_info() if info is None else info
    if info.get("cpu_threading") == "serial" and not _serial_warned:
        _serial_warned = True
        logger.warning(
            "groupvit_fast: the cpu backend was built without OpenMP and runs on ONE thread; rebuild with "
            "a compiler that has OpenMP (GCC, or clang with libomp) for threads"
        )


@cache
def _load():
    """``(module or None, Availability)``, decided once per process."""
    if os.environ.get(DISABLE_ENV_VAR, "") not in ("", "0"):
        return None, Availability("absent", f"disabled by {DISABLE_ENV_VAR}")
    info = build_info()
    if not info:
        return None, Availability("absent", f"the C++ extension groupvit_fast._C is not built ({_REBUILD})")
    built_with = info.get("torch_version", "?")
    if _torch_base_version(built_with) != _torch_base_version(torch.__version__):
        return None, Availability(
            "broken",
            f"groupvit_fast._C was built against torch {built_with} but torch "
            f"{torch.__version__} is running; {_REBUILD}",
        )
    try:
        module = importlib.import_module("groupvit_fast._C")
    except (ImportError, OSError) as err:
        return None, Availability("broken", f"groupvit_fast._C failed to load ({err}); {_REBUILD}")
    warn_if_serial(info)
    return module, USABLE


def load_extension() -> ModuleType | None:
    """The loaded ``groupvit_fast._C`` module, or ``None`` (the reason is logged once)."""
    module, status = _load()
    if module is None and not getattr(load_extension, "_logged", False):
        load_extension._logged = True
        log = logger.error if status.status == "broken" else logger.info
        log(
            "groupvit_fast: compiled backends %s: %s",
            "BROKEN" if status.status == "broken" else "unavailable",
            status.reason,
        )
    return module


def availability(need_cuda: bool = False) -> Availability:
    """Whether the extension (with CUDA kernels when ``need_cuda``) is loaded: usable, absent or broken."""
    module = load_extension()
    if module is None:
        return _load()[1]
    if need_cuda and not build_info().get("with_cuda", False):
        return Availability("absent", "groupvit_fast._C was built without CUDA kernels (CPU-only torch at build time)")
    return USABLE


def unavailable_reason(need_cuda: bool = False) -> str | None:
    """``None`` if the extension (with CUDA kernels when ``need_cuda``) is loaded, else why not."""
    return availability(need_cuda).reason
