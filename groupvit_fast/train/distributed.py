"""torch.distributed setup from torchrun's environment, and the model wrappers (DDP, FSDP2).

A plain ``python -m groupvit_fast.train`` / ``groupvit-fast train`` is one process and needs no
process group. Under ``torchrun`` (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` set,
one or many nodes through its rendezvous) the group is NCCL on GPUs and gloo on CPUs; each
process uses GPU ``LOCAL_RANK``.
"""

from __future__ import annotations

import dataclasses
import os

import torch
import torch.distributed as dist
from torch import nn

__all__ = ["DistInfo", "init_distributed", "wrap_model", "unwrap", "barrier", "all_reduce_mean", "cleanup",
           "fsdp_state_to_checkpoint", "checkpoint_state_to_fsdp"]


@dataclasses.dataclass(frozen=True)
class DistInfo:
    rank: int
    world: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed(device: str | None = None) -> DistInfo:
    """Join torchrun's process group (if launched by it) and pick this process's device."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    dev = torch.device(device)
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError("--device cuda: no CUDA device is available")
        dev = torch.device("cuda", local_rank if dev.index is None else dev.index)
        torch.cuda.set_device(dev)
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if dev.type == "cuda" else "gloo",
                                device_id=dev if dev.type == "cuda" else None)
    if dist.is_initialized():
        rank, world = dist.get_rank(), dist.get_world_size()
    return DistInfo(rank=rank, world=world, local_rank=local_rank, device=dev)


def _fsdp_units(model: nn.Module) -> list[nn.Module]:
    """The transformer blocks (sharded one by one, so only one block's full weights live at a time)."""
    from ..models.group_vit import GroupingLayer

    units = []
    for module in model.modules():
        if isinstance(module, GroupingLayer):
            units.extend(module.blocks)
    text = getattr(model, "text_encoder", None)
    transformer = getattr(text, "transformer", None)
    units.extend(getattr(transformer, "resblocks", []))
    return units


#: Set on a model by ``wrap_model(..., "fsdp")``: the names of its 0-D parameters, held as ``[1]``.
FSDP_SCALARS = "_groupvit_fsdp_scalars"


def _scalars_to_vectors(model: nn.Module) -> None:
    """Hold every 0-D parameter (the logit scales) as a ``[1]`` parameter, in place.

    FSDP2 shards along dim 0 and refuses 0-D parameters ("fully_shard doesn't support scalar
    parameters"); the model only broadcasts the scales, so ``[1]`` computes the same. Checkpoints
    keep NVlabs' 0-D shape: ``fsdp_state_to_checkpoint`` / ``checkpoint_state_to_fsdp``.
    """
    names = []
    for module_name, module in model.named_modules():
        for name, param in list(module.named_parameters(recurse=False)):
            if param.ndim == 0:
                setattr(module, name, nn.Parameter(param.detach().reshape(1), requires_grad=param.requires_grad))
                names.append(f"{module_name}.{name}" if module_name else name)
    setattr(model, FSDP_SCALARS, tuple(names))


def _reshape_entries(model_state: dict, optim_state: dict, names: tuple[str, ...], shape: tuple[int, ...]) -> None:
    """``names``' tensors (and their AdamW moments, keyed by name as ``get_state_dict`` keys them) to ``shape``."""
    for name in names:
        if name in model_state:
            model_state[name] = model_state[name].reshape(shape)
        for key, value in optim_state.get("state", {}).get(name, {}).items():
            if torch.is_tensor(value) and value.numel() == 1 and key != "step":
                optim_state["state"][name][key] = value.reshape(shape)


def fsdp_state_to_checkpoint(model: nn.Module, model_state: dict, optim_state: dict) -> None:
    """Full FSDP state dicts (``get_state_dict``) -> the checkpoint's shapes (0-D logit scales), in place."""
    _reshape_entries(model_state, optim_state, getattr(unwrap(model), FSDP_SCALARS, ()), ())


def checkpoint_state_to_fsdp(model: nn.Module, model_state: dict, optim_state: dict) -> None:
    """The inverse of ``fsdp_state_to_checkpoint``, before ``set_state_dict``, in place."""
    _reshape_entries(model_state, optim_state, getattr(unwrap(model), FSDP_SCALARS, ()), (1,))


def wrap_model(model: nn.Module, info: DistInfo, strategy: str = "ddp") -> nn.Module:
    """DDP (default) or FSDP2 ``fully_shard`` around ``model`` (already on ``info.device``); no-op for one process."""
    if strategy not in ("ddp", "fsdp"):
        raise ValueError(f"train.strategy must be 'ddp' or 'fsdp', got {strategy!r}")
    if info.world == 1:
        return model
    if strategy == "fsdp":
        from torch.distributed.fsdp import fully_shard

        _scalars_to_vectors(model)
        for unit in _fsdp_units(model):
            fully_shard(unit)
        return fully_shard(model)
    ids = [info.device.index] if info.device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=ids)


def unwrap(model: nn.Module) -> nn.Module:
    """The bare model inside DDP / torch.compile wrappers."""
    while True:
        if isinstance(model, nn.parallel.DistributedDataParallel):
            model = model.module
        elif hasattr(model, "_orig_mod"):
            model = model._orig_mod
        else:
            return model


def barrier() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def all_reduce_mean(values: torch.Tensor) -> torch.Tensor:
    """The mean over ranks of a tensor (itself in one process)."""
    if dist.is_available() and dist.is_initialized():
        values = values.clone()
        dist.all_reduce(values)
        values /= dist.get_world_size()
    return values


def cleanup() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
