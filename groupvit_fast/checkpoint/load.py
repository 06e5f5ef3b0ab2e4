"""Loading weights into a model: every key and shape checked first, then all copied at once
(docs/groupvit.md, "Checkpoints"). A wrong or incomplete file raises ``ValueError`` and leaves the model
as it was; without a model, one is built from the stored or inferred config.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

import torch
from torch import nn

from ..convert.full import DROPPED_NVLABS_KEYS
from .infer import infer_config
from .read import Checkpoint, read_checkpoint

__all__ = ["load_checkpoint"]


def _resize_pos_embed(tensor: torch.Tensor, module: nn.Module) -> torch.Tensor:
    from ..models.group_vit import interpolate_pos_encoding

    h, w = module.patches_resolution[1], module.patches_resolution[0]
    return interpolate_pos_encoding(tensor.float(), h, w).to(tensor.dtype)


def _prepare(model: nn.Module, ckpt: Checkpoint, strict: bool, where: str) -> tuple[dict, list[str]]:
    """The complete state dict to load into ``model`` (validated), and the model keys kept as they are."""
    state = ckpt.state_dict
    target_full = hasattr(model, "img_encoder") and hasattr(model, "text_encoder")
    if ckpt.kind == "full" and not target_full:
        # the vision encoder of a full checkpoint, loaded into a bare GroupViT
        state = {k[len("img_encoder.") :]: v for k, v in state.items() if k.startswith("img_encoder.")}
    elif ckpt.kind == "vision" and target_full:
        raise ValueError(f"{where}: holds only vision-encoder weights; load it into model.img_encoder")
    expected = model.state_dict()
    allowed_missing = set(DROPPED_NVLABS_KEYS) if ckpt.source_format == "hf" else set()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    kept = [k for k in missing if k in allowed_missing or not strict]
    missing = [k for k in missing if k not in kept]
    if missing or (unexpected and strict):
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing (e.g. {', '.join(missing[:3])})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected (e.g. {', '.join(unexpected[:3])})")
        raise ValueError(f"{where}: weights do not fit the model: {'; '.join(parts)}")
    merged = {}
    for key, value in expected.items():
        if key in kept:
            merged[key] = value
            continue
        tensor = state[key]
        if tensor.shape != value.shape:
            owner_name = key.rsplit(".", 1)[0] if "." in key else ""
            owner = model.get_submodule(owner_name) if owner_name else model
            if (
                key.endswith("pos_embed")
                and getattr(owner, "pos_embed_type", None) == "simple"
                and tensor.dim() == 3
                and tensor.shape[-1] == value.shape[-1]
            ):
                tensor = _resize_pos_embed(tensor, owner)  # as NVlabs: a learned grid of another size
            else:
                raise ValueError(
                    f"{where}: {key} has shape {tuple(tensor.shape)}, the model expects {tuple(value.shape)}"
                )
        merged[key] = tensor
    return merged, kept


def load_checkpoint(
    path_or_dict: str | os.PathLike | Mapping,
    model: nn.Module | None = None,
    *,
    trust_pickle: bool = False,
    strict: bool = True,
) -> Checkpoint:
    """Load GroupViT weights (NVlabs ``.pth``, HF weights, safetensors, state dicts) into a model.

    ``model``: a ``MultiLabelContrastive`` or a ``GroupViT`` (a full checkpoint's vision encoder
    goes into a bare ``GroupViT``). Without one, the model is built from the config stored with
    the weights, or inferred from their shapes (``infer_config``). Returns the ``Checkpoint``
    with ``.model`` set. Keys and shapes are all checked before anything is copied (``strict``
    also refuses unexpected keys); a ``pos_embed`` of another grid size is resized bicubically,
    as NVlabs does. ``trust_pickle=True`` allows full unpickling (only for files you trust).
    """
    ckpt = read_checkpoint(path_or_dict, trust_pickle=trust_pickle)
    where = "checkpoint dict" if isinstance(path_or_dict, Mapping) else os.fspath(path_or_dict)
    if model is None:
        from ..models.registry import build_model

        config = ckpt.config if ckpt.config is not None else infer_config(ckpt.state_dict)
        model = build_model(config)
        ckpt.config = config
    merged, kept = _prepare(model, ckpt, strict, where)
    model.load_state_dict(merged, strict=True)
    ckpt.model = model
    ckpt.kept_keys = kept
    return ckpt
