"""Saving weights: safetensors with the model config in its metadata, or a ``torch.save`` dict in
NVlabs' layout; NVlabs or Hugging Face keys (docs/groupvit.md, "Checkpoints")."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping

import torch
from torch import nn

from ..convert import nvlabs_to_hf
from .formats import SAFETENSORS_CONFIG_KEY, SAFETENSORS_FORMAT_KEY

__all__ = ["save_checkpoint", "save_safetensors"]


def _state_of(obj: nn.Module | Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    state = obj.state_dict() if isinstance(obj, nn.Module) else dict(obj)
    return {k: v.detach().cpu().contiguous().clone() for k, v in state.items()}


def save_safetensors(
    obj: nn.Module | Mapping[str, torch.Tensor],
    path: str | os.PathLike,
    *,
    hf: bool = False,
    config: Mapping | None = None,
) -> None:
    """Write a model / NVlabs-keyed state dict as safetensors (HF keys with ``hf=True``).

    The model config (``config``, else ``model.groupvit_config`` set by ``build_model``) is stored
    in the file's metadata so ``load_checkpoint`` can rebuild the model.
    """
    from safetensors.torch import save_file

    state = _state_of(obj)
    if hf:
        state = nvlabs_to_hf(state)
    if config is None and isinstance(obj, nn.Module):
        config = getattr(obj, "groupvit_config", None)
    metadata = {SAFETENSORS_FORMAT_KEY: "pt", "groupvit_fast_keys": "hf" if hf else "nvlabs"}
    if config is not None:
        metadata[SAFETENSORS_CONFIG_KEY] = json.dumps(config)
    save_file(state, os.fspath(path), metadata=metadata)


def save_checkpoint(
    obj: nn.Module | Mapping[str, torch.Tensor],
    path: str | os.PathLike,
    *,
    hf: bool = False,
    config: Mapping | None = None,
) -> None:
    """``torch.save`` a model's weights: ``{'model': state_dict, 'config': dict}`` (NVlabs layout, loadable
    with ``weights_only=True``), or with ``hf=True`` a bare HF-keyed state dict (``pytorch_model.bin``)."""
    state = _state_of(obj)
    if config is None and isinstance(obj, nn.Module):
        config = getattr(obj, "groupvit_config", None)
    if hf:
        torch.save(nvlabs_to_hf(state), os.fspath(path))
    else:
        torch.save({"model": state, "config": dict(config) if config is not None else None}, os.fspath(path))
