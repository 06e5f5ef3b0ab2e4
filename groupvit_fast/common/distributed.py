"""Rank, world size and joining torchrun's process group: the one place the package reads them.

A plain ``python ...`` is one process and needs no process group. Under ``torchrun`` (``RANK``,
``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` set, one or many nodes through its rendezvous) the
group is NCCL on GPUs and gloo on CPUs, and each process uses GPU ``LOCAL_RANK`` unless told another.
"""

from __future__ import annotations

import dataclasses
import os

import torch
import torch.distributed as dist

__all__ = ["DistInfo", "rank_and_world", "join_process_group", "leave_process_group", "launched_world_size"]


@dataclasses.dataclass(frozen=True)
class DistInfo:
    rank: int
    world: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def rank_and_world() -> tuple[int, int]:
    """``(rank, world_size)`` of the default process group, ``(0, 1)`` without one."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def launched_world_size() -> int:
    """The number of processes torchrun started (``WORLD_SIZE``; 1 for a plain ``python``)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def join_process_group(device: str | None = None) -> DistInfo:
    """Join torchrun's process group (if launched by it) and pick this process's device.

    ``device``: ``cpu``, ``cuda``, ``cuda:N`` or ``None`` (``cuda`` when available, else ``cpu``); a CUDA
    device without an index is ``cuda:LOCAL_RANK``. Raises ``ValueError`` for ``cuda`` without a CUDA device.
    """
    world = launched_world_size()
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    dev = torch.device(device)
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"--device {device}: no CUDA device is available")
        dev = torch.device("cuda", local_rank if dev.index is None else dev.index)
        torch.cuda.set_device(dev)
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if dev.type == "cuda" else "gloo", device_id=dev if dev.type == "cuda" else None)
    if dist.is_initialized():
        rank, world = dist.get_rank(), dist.get_world_size()
    return DistInfo(rank=rank, world=world, local_rank=local_rank, device=dev)


def leave_process_group() -> None:
    """Destroy the default process group, if there is one."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
