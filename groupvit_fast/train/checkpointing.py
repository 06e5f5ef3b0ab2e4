"""Training checkpoints: atomic writes, the last K kept, auto-resume (docs/training.md, "Checkpoints").

A checkpoint is one ``torch.save`` dict that ``torch.load(weights_only=True)`` reads (tensors,
numbers, strings, lists, tuples, dicts only), so ``groupvit_fast.load_checkpoint`` and
``groupvit-fast convert`` take it as they take an NVlabs ``.pth``: ``model`` (NVlabs keys),
``optimizer``, ``lr_scheduler``, ``scaler``, ``epoch``, ``step`` (optimiser steps done),
``epoch_step`` (of them, in ``epoch``), ``config`` (the resolved config), ``metrics``, and per rank
``rng`` (torch CPU/CUDA, Python, NumPy generator states) and ``data`` (each loader worker's read
position and the round-robin offset).

Files in the run folder: ``checkpoint.pth`` (the latest), ``ckpt_epoch_<E>.pth`` after epoch
``E`` (every ``checkpoint.save_freq`` epochs; the newest ``checkpoint.max_kept`` are kept, all
when it is -1). Each is written to a temporary file in the same folder, flushed to disk and
renamed over the old one, so a kill at any moment leaves the previous checkpoint readable.
"""

from __future__ import annotations

import glob
import os
import random
import re

import numpy as np
import torch

from ..common.files import atomic_write

__all__ = [
    "atomic_save",
    "find_latest",
    "load_training_checkpoint",
    "rng_state",
    "set_rng_state",
    "prune_epoch_files",
    "LATEST",
    "epoch_file",
]

LATEST = "checkpoint.pth"
_EPOCH_RE = re.compile(r"ckpt_epoch_(\d+)\.pth$")


def epoch_file(folder: str, epoch: int) -> str:
    return os.path.join(folder, f"ckpt_epoch_{epoch}.pth")


def atomic_save(obj: dict, path: str) -> None:
    """``torch.save(obj, path)`` through ``atomic_write`` (all or nothing, flushed to the disk)."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    atomic_write(path, lambda tmp: torch.save(obj, tmp), durable=True)


def prune_epoch_files(folder: str, max_kept: int) -> list[str]:
    """Delete all but the newest ``max_kept`` ``ckpt_epoch_*.pth`` (none when ``max_kept < 0``); returns them."""
    if max_kept < 0:
        return []
    found = sorted(
        (int(m.group(1)), p) for p in glob.glob(os.path.join(folder, "ckpt_epoch_*.pth")) if (m := _EPOCH_RE.search(p))
    )
    doomed = [p for _, p in found[: max(0, len(found) - max_kept)]]
    for path in doomed:
        os.remove(path)
    return doomed


def find_latest(folder: str) -> str | None:
    """``checkpoint.pth`` in ``folder``, else the newest ``ckpt_epoch_*.pth``, else ``None``."""
    latest = os.path.join(folder, LATEST)
    if os.path.isfile(latest):
        return latest
    found = sorted(
        (int(m.group(1)), p) for p in glob.glob(os.path.join(folder, "ckpt_epoch_*.pth")) if (m := _EPOCH_RE.search(p))
    )
    return found[-1][1] if found else None


def load_training_checkpoint(path: str) -> dict:
    """A checkpoint written by ``atomic_save`` (``weights_only`` loading); ``ValueError`` naming the file."""
    if not os.path.isfile(path):
        raise ValueError(f"--resume {path}: no such file")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001  (truncated, not a torch file, foreign pickles)
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ValueError(f"{path}: not a readable training checkpoint ({first})") from None
    missing = [k for k in ("model", "optimizer", "lr_scheduler", "step") if k not in obj]
    if missing:
        raise ValueError(
            f"{path}: not a groupvit-fast training checkpoint (no {', '.join(missing)}); to start "
            f"from weights only use --init"
        )
    return obj


def rng_state() -> dict:
    """This process's generator states, in types ``weights_only`` loading accepts."""
    name, keys, pos, has_gauss, gauss = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "python": random.getstate(),
        "numpy": [name, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(gauss)],
    }


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    random.setstate(state["python"])
    name, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
