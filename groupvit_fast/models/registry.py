"""Build models from NVlabs-style config dicts, without mmcv.

NVlabs' configs (``configs/group_vit_gcc_yfcc_30e.yml``) describe the model as a tree of dicts with
a ``type:`` key naming the class, e.g.::

    model = build_model({
        "type": "MultiLabelContrastive",
        "img_encoder": {"type": "GroupViT", "embed_dim": 384, "num_heads": [6, 6, 6], ...},
        "text_encoder": {"type": "TextTransformer", "context_length": 77, "width": 256, ...},
        "output_dim": 256, "multi_label": 3, ...})

``build_model`` accepts such a dict, an OmegaConf ``DictConfig`` (resolved first, so
``${data.text_aug.multi_label}`` works when given the whole config), or a whole config that has a
``model`` entry. The model classes register themselves (``@register_model()``) when
``groupvit_fast.models`` is imported, which importing this module implies: the registry imports no
model, so there is no import circle. It records the (plain) config on the module as ``model.groupvit_config``, which
the savers in ``groupvit_fast.checkpoint`` store with the weights. Extra keyword arguments of our
modules (``attn_backend``, ``assign_backend``, ``proj_inner_dim``, ``sync_bn``) may appear in the
dicts too.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from torch import nn

__all__ = ["build_model", "register_model", "MODELS", "released_config"]

MODELS: dict[str, Callable[..., nn.Module]] = {}

ModelT = TypeVar("ModelT", bound=Callable[..., nn.Module])


def register_model(name: str | None = None) -> Callable[[ModelT], ModelT]:
    """Class decorator (or plain call) registering a model constructor under ``name``."""

    def wrap(cls: ModelT) -> ModelT:
        MODELS[name or cls.__name__] = cls
        return cls

    return wrap


def _to_plain(config: Any) -> Any:
    """OmegaConf containers -> plain (resolved) dicts/lists; anything else unchanged."""
    from omegaconf import DictConfig, ListConfig, OmegaConf  # a core dependency

    if isinstance(config, (DictConfig, ListConfig)):
        return OmegaConf.to_container(config, resolve=True)
    return config


def build_model(config: Mapping[str, Any]) -> nn.Module:
    """The module described by an NVlabs model config (``{'type': ..., **kwargs}``), built recursively.

    Raises ``ValueError`` for an unknown ``type`` or for arguments the class does not take.
    """
    config = _to_plain(config)
    if not isinstance(config, Mapping):
        raise TypeError(f"config must be a mapping with a 'type' key, got {type(config).__name__}")
    if "type" not in config and isinstance(config.get("model"), Mapping):
        config = config["model"]
    config = dict(config)  # nested dicts are only read, never changed
    try:
        recorded = json.loads(json.dumps(config))
    except (TypeError, ValueError):  # holds modules or other non-JSON values: nothing to record
        recorded = None
    type_name = config.pop("type", None)
    if type_name is None:
        raise ValueError(f"config has no 'type' key (keys: {sorted(config)})")
    if type_name not in MODELS:
        raise ValueError(f"unknown model type {type_name!r}; known: {sorted(MODELS)}")
    # sub-modules described by dicts are built here (MultiLabelContrastive also accepts modules)
    for key, value in list(config.items()):
        if isinstance(value, Mapping) and "type" in value:
            config[key] = build_model(value)
    try:
        model = MODELS[type_name](**config)
    except TypeError as err:
        raise ValueError(f"cannot build {type_name} from config: {err}") from None
    # kept so that exports (checkpoint.save_safetensors / save_checkpoint) can store how to rebuild it
    model.groupvit_config = recorded
    return model


def released_config(multi_label: int = 3) -> dict[str, Any]:
    """The ``model:`` section of NVlabs' ``configs/group_vit_gcc_yfcc_30e.yml`` (GroupViT-S), resolved."""
    return {
        "type": "MultiLabelContrastive",
        "img_encoder": {
            "type": "GroupViT",
            "embed_dim": 384,
            "num_heads": [6, 6, 6],
            "depths": [6, 3, 3],
            "num_group_tokens": [64, 8, 0],
            "num_output_groups": [64, 8],
            "drop_rate": 0.0,
            "drop_path_rate": 0.1,
        },
        "text_encoder": {
            "type": "TextTransformer",
            "context_length": 77,
            "width": 256,
            "layers": 12,
            "vocab_size": 49408,
        },
        "contrast_temperature": 0.07,
        "proj_num_layers": 2,
        "output_dim": 256,
        "multi_label": multi_label,
    }
