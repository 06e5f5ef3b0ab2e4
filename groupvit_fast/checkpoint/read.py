"""Reading GroupViT weights in any supported format into one ``Checkpoint`` with NVlabs keys (no model built).

The file's format is sniffed (``formats``); a checkpoint dict's weights are found under ``model`` or
``state_dict`` (or it is a bare state dict, DDP's ``module.`` prefix dropped); the weights are told apart
as a full model or a vision encoder, NVlabs or Hugging Face keys, and HF keys converted
(``groupvit_fast.convert``). docs/groupvit.md, "Checkpoints".
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from ..convert import hf_to_nvlabs, is_hf_full, is_nvlabs_full
from .formats import SAFETENSORS_CONFIG_KEY, load_safetensors_file, load_torch_file, sniff_format

__all__ = ["Checkpoint", "read_checkpoint", "config_test_time"]


@dataclasses.dataclass
class Checkpoint:
    """What ``read_checkpoint`` / ``load_checkpoint`` found.

    ``state_dict``: NVlabs keys (``MultiLabelContrastive`` when ``kind == 'full'``, ``GroupViT``
    when ``'vision'``); ``source_format``: ``'nvlabs'`` or ``'hf'``; ``config``: the model config
    stored with the weights (plain dict with ``type`` keys) or ``None``; ``meta``: other scalar
    entries (``epoch``, ...); ``model``: the module the weights were loaded into (by
    ``load_checkpoint``); ``kept_keys``: model entries the file did not have and that keep their
    current values (only ``multi_label_logit_scale`` from HF weights).
    """

    state_dict: dict[str, torch.Tensor]
    kind: str
    source_format: str
    config: dict | None = None
    meta: dict = dataclasses.field(default_factory=dict)
    model: nn.Module | None = None
    kept_keys: list[str] = dataclasses.field(default_factory=list)


def _to_plain_config(config: Any) -> dict | None:
    if config is None:
        return None
    from omegaconf import DictConfig, OmegaConf  # a core dependency

    try:
        if isinstance(config, DictConfig):
            config = OmegaConf.to_container(config, resolve=True)
    except Exception:  # noqa: BLE001  (an unresolvable interpolation: no usable config)
        return None
    if isinstance(config, Mapping):
        model_cfg = config.get("model", config)
        if isinstance(model_cfg, Mapping) and "type" in model_cfg:
            return json.loads(json.dumps(model_cfg))  # plain, JSON-able copy
    return None


def config_test_time(config: Any) -> dict:
    """The non-zero ``evaluate.seg.{short_side, crop_size, stride, bg_thresh}`` of a training config (a mapping
    or an OmegaConf config; docs/segmentation.md, "Test-time settings from the checkpoint"): the
    ``checkpoint`` of ``segmentation.test_time.resolve_test_time``; ``{}`` when there are none."""
    from ..segmentation.test_time import TEST_TIME_KEYS

    try:
        seg = config["evaluate"]["seg"]
        found = {key: seg[key] for key in TEST_TIME_KEYS if key in seg}
    except (KeyError, TypeError, AttributeError):
        return {}
    except Exception:  # noqa: BLE001  (an OmegaConf config that cannot resolve: no settings)
        return {}
    out = {}
    for key, value in found.items():
        if isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0:
            out[key] = float(value) if key == "bg_thresh" else int(value)
    return out


def _extract(obj: Any, where: str) -> tuple[dict[str, torch.Tensor], dict | None, dict]:
    """``(state_dict, model config, meta)`` of a loaded object."""
    if not isinstance(obj, Mapping):
        raise ValueError(f"{where}: holds a {type(obj).__name__}, not a state dict or checkpoint dict")
    config, meta = None, {}
    state = obj
    for key in ("model", "state_dict"):
        if isinstance(obj.get(key), Mapping):
            state = obj[key]
            config = _to_plain_config(obj.get("config"))
            meta = {k: v for k, v in obj.items() if k not in (key, "config") and isinstance(v, (int, float, str, bool))}
            test_time = config_test_time(obj.get("config"))
            if test_time:
                meta["test_time"] = test_time
            break
    if not state:
        raise ValueError(f"{where}: the state dict is empty")
    bad = [k for k, v in state.items() if not isinstance(k, str) or not isinstance(v, torch.Tensor)]
    if bad:
        raise ValueError(f"{where}: {len(bad)} entries are not tensors (e.g. {bad[0]!r}); not a state dict")
    state = dict(state)
    if all(k.startswith("module.") for k in state):  # saved from DistributedDataParallel
        state = {k[len("module.") :]: v for k, v in state.items()}
    return state, config, meta


def _classify(state: dict[str, torch.Tensor], where: str) -> tuple[str, str]:
    """``(kind, source_format)``."""
    if is_nvlabs_full(state):
        return "full", "nvlabs"
    if is_hf_full(state):
        return "full", "hf"
    if any(k.startswith("vision_model.") for k in state):
        return "vision", "hf"
    if any(k.startswith(("patch_embed.", "layers.")) for k in state) and "pos_embed" in state:
        return "vision", "nvlabs"
    shown = ", ".join(list(state)[:4])
    raise ValueError(f"{where}: not GroupViT weights (keys start with: {shown})")


def _hf_folder_config(where: str, state: dict[str, torch.Tensor]) -> dict | None:
    """The model config of HF weights saved by ``save_pretrained``: the shapes' config (``infer_config``) with the
    vision encoder's head count from the ``config.json`` beside the weights (shapes do not hold it); ``None``
    without a GroupViT ``config.json``. docs/groupvit.md, "Checkpoints"."""
    from .infer import infer_config

    path = os.path.join(os.path.dirname(os.path.abspath(where)), "config.json")
    if not os.path.isfile(path):
        return None
    try:
        with open(path, encoding="utf-8") as f:
            hf = json.load(f)
    except (OSError, json.JSONDecodeError) as err:
        raise ValueError(f"{path}: not a readable JSON config ({err})") from None
    if not isinstance(hf, dict) or hf.get("model_type") not in ("groupvit", "groupvit_vision_model"):
        return None
    vision = hf.get("vision_config", hf)
    config = infer_config(state)
    img = config.get("img_encoder", config)
    heads = vision.get("num_attention_heads")
    if heads is not None:
        img["num_heads"] = [int(heads)] * len(img["num_heads"])
    text_heads = (hf.get("text_config") or {}).get("num_attention_heads")
    if "text_encoder" in config and text_heads is not None:
        ours = max(1, config["text_encoder"]["width"] // 64)
        if int(text_heads) != ours:
            raise ValueError(
                f"{path}: text_config.num_attention_heads {text_heads}: the text encoder has width // 64 = {ours} heads"
            )
    return config


def read_checkpoint(path_or_dict: str | os.PathLike | Mapping, *, trust_pickle: bool = False) -> Checkpoint:
    """Read GroupViT weights in any supported format, converted to NVlabs keys (no model built).

    Raises ``ValueError`` naming the file and what is wrong with it.
    """
    if not isinstance(path_or_dict, (str, os.PathLike, Mapping)):
        raise TypeError(
            f"path_or_dict must be a file path or a state/checkpoint dict, got {type(path_or_dict).__name__}"
        )
    config = None
    if isinstance(path_or_dict, Mapping):
        where = "checkpoint dict"
        obj = path_or_dict
    else:
        where = os.fspath(path_or_dict)
        if not os.path.exists(where):
            raise ValueError(f"{where}: no such file")
        if not os.path.isfile(where):
            raise ValueError(f"{where}: not a file")
        kind = sniff_format(where)
        if kind == "safetensors":
            obj, metadata = load_safetensors_file(where)
            if metadata.get(SAFETENSORS_CONFIG_KEY):
                try:
                    config = json.loads(metadata[SAFETENSORS_CONFIG_KEY])
                except json.JSONDecodeError:
                    raise ValueError(f"{where}: its stored model config is not valid JSON") from None
        elif kind == "torch":
            obj = load_torch_file(where, trust_pickle)
        else:
            raise ValueError(f"{where}: not a PyTorch checkpoint or safetensors file")
    state, stored_config, meta = _extract(obj, where)
    kind, source = _classify(state, where)
    if source == "hf":
        try:
            state = hf_to_nvlabs(state)
        except ValueError as err:
            raise ValueError(f"{where}: {err}") from None
        if config is None and stored_config is None and not isinstance(path_or_dict, Mapping):
            config = _hf_folder_config(where, state)
    return Checkpoint(state_dict=state, kind=kind, source_format=source, config=config or stored_config, meta=meta)
