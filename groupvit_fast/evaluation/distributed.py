"""Evaluation under ``torch.distributed`` (torchrun): disjoint rank slices, summed counts, one text pass.

Every metric here is a ratio of integer counts summed over the dataset, so summing the per-rank
counts with ``all_reduce`` gives exactly the single-process numbers, whatever the slicing. Without
an initialised process group every function is the single-process identity.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.distributed as dist

from ..common.distributed import rank_and_world

__all__ = ["rank_and_world", "rank_slice", "all_reduce_sum", "compute_once_and_broadcast", "all_gather_errors"]


def rank_slice(num_items: int, rank: int, world: int) -> list[int]:
    """Item indices of ``rank``: every ``world``-th item from ``rank`` on (disjoint, covering, and
    balanced within one item, also when neighbouring items differ in cost)."""
    return list(range(rank, num_items, world))


def _comm_device() -> torch.device:
    # NCCL reduces CUDA tensors only; gloo CPU ones
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    """Sum of ``t`` over all ranks (a new CPU tensor; ``t`` unchanged); ``t`` itself in one process."""
    if rank_and_world()[1] == 1:
        return t
    buf = t.to(_comm_device(), copy=True)
    dist.all_reduce(buf, op=dist.ReduceOp.SUM)
    return buf.cpu()


def compute_once_and_broadcast(fn: Callable[[], torch.Tensor]) -> torch.Tensor:
    """``fn()`` on rank 0, sent to every rank (a CPU tensor); ``fn()`` in one process.

    Used for the text classifier: one text-encoder pass instead of one per rank.
    """
    rank, world = rank_and_world()
    if world == 1:
        return fn()
    box = [fn().cpu() if rank == 0 else None]
    dist.broadcast_object_list(box, src=0, device=_comm_device())
    return box[0]


def all_gather_errors(message: str | None) -> str | None:
    """The first rank's error message, on every rank, so that all ranks fail together (none hangs
    in a later collective waiting for a rank that stopped)."""
    rank, world = rank_and_world()
    if world == 1:
        return message
    messages: list[str | None] = [None] * world
    dist.all_gather_object(messages, message)
    return next((m for m in messages if m is not None), None)
