"""``python -m groupvit_fast.info``: versions, device, and which backends are built and usable.

Prints, for each backend of each op (``assign_attention`` and ``multi_head_attention``), whether it is
usable on this machine and, if not, whether it is absent or broken and why: the same backend protocol
and reasons that ``backend="auto"`` acts on (``groupvit_fast/ops/dispatch.py``).
"""

from __future__ import annotations

import importlib
import platform
import sys

import torch

from . import _extension
from ._version import __version__
from .ops.attention import ATTENTION
from .ops.dispatch import ASSIGN

__all__ = ["collect", "main"]


def _version_of(module_name: str) -> str:
    try:
        module = importlib.import_module(module_name)
    except Exception as err:  # noqa: BLE001 - any import failure means "not usable", with its reason
        return f"not available ({type(err).__name__}: {err})"
    return getattr(module, "__version__", "installed")


def _device() -> str:
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        return f"cuda:0 {props.name} (sm_{props.major}{props.minor}, {props.total_memory / 2**30:.0f} GiB)"
    return f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads), no CUDA device"


def collect() -> dict:
    """Everything ``main`` prints, as a dict (used by the benchmark report too)."""
    return {
        "groupvit_fast": __version__,
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "cuda (torch build)": torch.version.cuda or "none (CPU-only build)",
        "triton": _version_of("triton"),
        "xformers": _version_of("xformers"),
        "extension build": _extension.build_info() or "not built",
        "device": _device(),
        "ops": {
            d.op: {
                "env": d.env_var,
                "priority": {dev: list(order) for dev, order in d.priority.items()},
                "backends": d.table(),
            }
            for d in (ASSIGN, ATTENTION)
        },
    }


def main(argv: list[str] | None = None) -> int:
    info = collect()
    print(f"groupvit_fast {info['groupvit_fast']}")
    for key in ("python", "torch", "cuda (torch build)", "triton", "xformers", "extension build", "device"):
        print(f"  {key:<20} {info[key]}")
    for op, facts in info["ops"].items():
        order = "; ".join(f"{d}: {' > '.join(o)}" for d, o in facts["priority"].items())
        print(f"\n{op} backends (auto priority: {order}; override: {facts['env']})")
        for name, devices, status in facts["backends"]:
            print(f"  {name:<10} [{devices}] {status}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
