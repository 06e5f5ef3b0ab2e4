"""What a report says about where it was measured: device, versions, date, git commit, load."""

from __future__ import annotations

import datetime as _dt
import importlib.metadata
import os
import platform
import re
import subprocess
from pathlib import Path
from typing import Any

import torch

__all__ = ["REPO_ROOT", "device_slug", "environment"]

#: The source checkout when the package runs from one (editable install); elsewhere (an installed
#: wheel) a folder without git or ``benchmarks/``, which the report and the CLI then do without.
REPO_ROOT = Path(__file__).resolve().parents[2]


def _run(cmd: list[str]) -> str | None:
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=20, check=True).stdout.strip()
        return out or None
    except (OSError, subprocess.SubprocessError):
        return None


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _version(distribution: str) -> str | None:
    """Installed version, read from the package metadata (importing transformers takes seconds)."""
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


def environment(device: str) -> dict[str, Any]:
    """Device, versions, date, git commit and machine load, for the top of a report."""
    from .. import __version__
    from ..ops import backend_table

    meta: dict[str, Any] = {
        "device": device,
        "date": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC"),  # noqa: UP017 (Python 3.10)
        "git_commit": _run(["git", "-C", str(REPO_ROOT), "rev-parse", "HEAD"]),
        "git_dirty": bool(_run(["git", "-C", str(REPO_ROOT), "status", "--porcelain", "--untracked-files=no"])),
        "versions": {
            "groupvit_fast": __version__,
            "torch": torch.__version__,
            "triton": _version("triton"),
            "cuda": torch.version.cuda,
            "driver": None,
            "python": platform.python_version(),
            "transformers": _version("transformers"),
        },
        "cpu": _cpu_name(),
        "cpu_threads": torch.get_num_threads(),
        "os_cpus": os.cpu_count(),
        "loadavg_start": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "backends": {name: status for name, _devices, status in backend_table()},
    }
    if device == "cuda":
        props = torch.cuda.get_device_properties(0)
        meta["device_name"] = props.name
        meta["device_memory_gib"] = round(props.total_memory / 2**30, 1)
        meta["sm_count"] = props.multi_processor_count
        driver = _run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"])
        if driver is None:
            try:
                driver = Path("/proc/driver/nvidia/version").read_text().split("Kernel Module")[1].split()[0]
            except (OSError, IndexError):
                driver = None
        meta["versions"]["driver"] = driver.splitlines()[0] if driver else None
    else:
        meta["device_name"] = meta["cpu"]
    return meta


def device_slug(meta: dict[str, Any]) -> str:
    if meta["device"] != "cuda":
        return "cpu"
    return re.sub(r"[^a-z0-9]+", "-", meta["device_name"].lower()).strip("-")
