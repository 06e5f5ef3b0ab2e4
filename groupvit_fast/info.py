"""``python -m groupvit_fast.info``: versions, device, and which backends are built and usable.

Prints, for each backend of each op, whether it is built and usable on this machine and, if not,
why (the same reasons ``backend="auto"`` acts on), plus the attention backends of the model.
"""

from __future__ import annotations

import importlib
import platform
import sys

import torch

from . import _extension
from ._version import __version__
from .ops import PRIORITY, backend_table

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


def _attention_backends() -> list[tuple[str, str]]:
    rows = [("sdpa", "usable (torch.nn.functional.scaled_dot_product_attention)"), ("explicit", "usable")]
    xformers = _version_of("xformers.ops")
    rows.append(("xformers", "usable" if not xformers.startswith("not available") else f"unusable: {xformers}"))
    return rows


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
        "assign_attention backends": backend_table(),
        "auto priority": {device: list(order) for device, order in PRIORITY.items()},
        "attention backends (GroupViT attn_backend)": _attention_backends(),
    }


def main(argv: list[str] | None = None) -> int:
    info = collect()
    print(f"groupvit_fast {info['groupvit_fast']}")
    for key in ("python", "torch", "cuda (torch build)", "triton", "xformers", "extension build", "device"):
        print(f"  {key:<20} {info[key]}")
    print("\nassign_attention backends (auto priority: "
          + "; ".join(f"{d}: {' > '.join(o)}" for d, o in info["auto priority"].items()) + ")")
    for name, devices, status in info["assign_attention backends"]:
        print(f"  {name:<10} [{devices}] {status}")
    print("\nattention backends (GroupViT attn_backend=...)")
    for name, status in info["attention backends (GroupViT attn_backend)"]:
        print(f"  {name:<10} {status}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
