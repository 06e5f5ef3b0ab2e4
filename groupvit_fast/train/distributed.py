"""torch.distributed for training: the model wrappers (DDP, FSDP2) and the collectives the loop uses.

Joining torchrun's process group is ``groupvit_fast.common.distributed`` (shared with the evaluation
CLI), re-exported here as ``init_distributed`` / ``cleanup`` / ``DistInfo``. A plain
``python -m groupvit_fast.train`` / ``groupvit-fast train`` is one process and needs no process group.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import nn

from ..common.distributed import DistInfo, rank_and_world
from ..common.distributed import join_process_group as init_distributed
from ..common.distributed import leave_process_group as cleanup

__all__ = [
    "DistInfo",
    "init_distributed",
    "wrap_model",
    "unwrap",
    "barrier",
    "all_reduce_mean",
    "cleanup",
    "fsdp_state_to_checkpoint",
    "checkpoint_state_to_fsdp",
]


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
    if rank_and_world()[1] > 1:
        dist.barrier()


def all_reduce_mean(values: torch.Tensor) -> torch.Tensor:
    """The mean over ranks of a tensor (itself in one process)."""
    world = rank_and_world()[1]
    if world > 1:
        values = values.clone()
        dist.all_reduce(values)
        values /= world
    return values
