"""Loading and saving GroupViT weights safely (docs/groupvit.md, "Checkpoints").

Formats read (told apart by their content, not their file name):

* NVlabs training checkpoints (``.pth``: a dict with ``model``, ``optimizer``, ``lr_scheduler``,
  ``epoch``, ``config`` as an OmegaConf object, ...), read with ``torch.load(weights_only=True)``
  plus exactly the allow-list such a file needs (``OMEGACONF_SAFE_GLOBALS``: OmegaConf's
  ``DictConfig``, ``ListConfig``, ``AnyNode``, ``Metadata``, ``ContainerMetadata``, ``typing.Any``,
  ``collections.defaultdict`` and the builtins ``dict``, ``list``, ``int``, ``float``) when
  omegaconf is installed. Nothing else is unpickled unless the caller opts in with
  ``trust_pickle=True`` (full pickle: only for files you trust);
* plain state dicts (``torch.save(model.state_dict())``, optionally under ``state_dict``/``model``,
  optionally with DDP's ``module.`` prefix), NVlabs or Hugging Face keys;
* safetensors files (ours carry the model config in their metadata; HF ``model.safetensors``).

Hugging Face ``GroupViTModel`` / ``GroupViTVisionModel`` weights are converted to NVlabs keys
(``groupvit_fast.convert``). Loading into a model checks every key and shape first and then loads
everything at once: a wrong or incomplete file raises ``ValueError`` and leaves the model as it was.
"""

from __future__ import annotations

import collections
import dataclasses
import json
import os
import pickle
import typing
import warnings
import zipfile
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from .convert import hf_to_nvlabs, is_hf_full, is_nvlabs_full, nvlabs_to_hf
from .convert.full import DROPPED_NVLABS_KEYS

__all__ = [
    "Checkpoint", "read_checkpoint", "load_checkpoint", "save_safetensors", "save_checkpoint", "infer_config",
    "omegaconf_safe_globals", "complete_from_hf",
]

_SAFETENSORS_FORMAT_KEY = "format"
_SAFETENSORS_CONFIG_KEY = "groupvit_fast_config"


def omegaconf_safe_globals() -> list:
    """What an NVlabs checkpoint (OmegaConf config, ``defaultdict(float)`` metrics) needs besides tensors.

    This is the output of ``torch.serialization.get_unsafe_globals_in_checkpoint`` for such a file,
    no more; ``[]`` when omegaconf is not installed (such files then fail to load, with a message).
    """
    try:
        from omegaconf.base import ContainerMetadata, Metadata
        from omegaconf.dictconfig import DictConfig
        from omegaconf.listconfig import ListConfig
        from omegaconf.nodes import AnyNode
    except ImportError:
        return []
    return [DictConfig, ListConfig, AnyNode, Metadata, ContainerMetadata, (typing.Any, "typing.Any"),
            collections.defaultdict, dict, list, int, float]


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


# ---- reading ---------------------------------------------------------------------------------


def _sniff(path: str) -> str:
    with open(path, "rb") as f:
        head = f.read(16)
    if head.startswith(b"PK\x03\x04"):
        return "torch"
    if head[:1] == b"\x80":  # legacy (non-zip) torch.save: a pickle stream
        return "torch"
    if len(head) >= 9:
        header_len = int.from_bytes(head[:8], "little")
        if 2 <= header_len < 100_000_000 and head[8:9] == b"{":
            return "safetensors"
    return "unknown"


def _load_torch(path: str, trust_pickle: bool):
    if trust_pickle:
        warnings.warn(f"{path}: loading with full pickle (trust_pickle=True): this can run arbitrary code",
                      stacklevel=3)
        try:
            return torch.load(path, map_location="cpu", weights_only=False)
        except Exception as err:  # noqa: BLE001  (any failure of a corrupt file)
            raise ValueError(f"{path}: not a readable PyTorch file ({_first_line(err)})") from None
    try:
        with torch.serialization.safe_globals(omegaconf_safe_globals()):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        msg = str(err)
        if "Weights only load failed" in msg or "Unsupported global" in msg:
            bad = _unsupported_global(msg)
            what = bad or _unpickler_reason(msg) or "a non-tensor object"
            hint = ("install omegaconf (NVlabs checkpoints store an OmegaConf config)"
                    if "omegaconf" in (bad or "") and not omegaconf_safe_globals()
                    else "pass trust_pickle=True only if you trust the file")
            raise ValueError(f"{path}: refused to unpickle {what} with weights_only=True; {hint}") from None
        raise ValueError(f"{path}: corrupt PyTorch file ({_first_line(err)})") from None
    except (RuntimeError, EOFError, OSError, zipfile.BadZipFile, ValueError) as err:
        raise ValueError(f"{path}: corrupt or truncated PyTorch file ({_first_line(err)})") from None


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return text[0] if text else type(err).__name__


def _unpickler_reason(msg: str) -> str | None:
    """The reason line torch gives after 'WeightsUnpickler error:' (e.g. a defaultdict with items)."""
    if "WeightsUnpickler error:" not in msg:
        return None
    rest = msg.split("WeightsUnpickler error:", 1)[1].strip().splitlines()
    return f"an object torch does not allow ({rest[0].strip()})" if rest else None


def _unsupported_global(msg: str) -> str | None:
    for marker in ("Unsupported global: GLOBAL ", "GLOBAL "):
        if marker in msg:
            return msg.split(marker, 1)[1].split()[0]
    return None


def _load_safetensors(path: str):
    from safetensors import safe_open

    try:
        tensors = {}
        with safe_open(path, framework="pt", device="cpu") as f:
            metadata = f.metadata() or {}
            for key in f.keys():
                tensors[key] = f.get_tensor(key)
    except Exception as err:  # noqa: BLE001  (SafetensorError and friends)
        raise ValueError(f"{path}: corrupt safetensors file ({_first_line(err)})") from None
    return tensors, metadata


def _to_plain_config(config: Any) -> dict | None:
    if config is None:
        return None
    try:
        from omegaconf import DictConfig, OmegaConf

        if isinstance(config, DictConfig):
            config = OmegaConf.to_container(config, resolve=True)
    except ImportError:
        pass
    except Exception:  # noqa: BLE001  (an unresolvable interpolation: no usable config)
        return None
    if isinstance(config, Mapping):
        model_cfg = config.get("model", config)
        if isinstance(model_cfg, Mapping) and "type" in model_cfg:
            return json.loads(json.dumps(model_cfg))  # plain, JSON-able copy
    return None


#: ``evaluate.seg`` keys of a training config that set how its checkpoint is segmented (0: not set)
TEST_TIME_KEYS = ("short_side", "crop_size", "stride", "bg_thresh")


def _test_time_settings(config: Any) -> dict:
    """The non-zero ``evaluate.seg.{short_side, crop_size, stride, bg_thresh}`` of a training config
    (docs/segmentation.md, "Test-time settings from the checkpoint"); ``{}`` when there are none."""
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
            meta = {k: v for k, v in obj.items()
                    if k not in (key, "config") and isinstance(v, (int, float, str, bool))}
            test_time = _test_time_settings(obj.get("config"))
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
        state = {k[len("module."):]: v for k, v in state.items()}
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


def read_checkpoint(path_or_dict: str | os.PathLike | Mapping, *, trust_pickle: bool = False) -> Checkpoint:
    """Read GroupViT weights in any supported format, converted to NVlabs keys (no model built).

    Raises ``ValueError`` naming the file and what is wrong with it.
    """
    if not isinstance(path_or_dict, (str, os.PathLike, Mapping)):
        raise TypeError(f"path_or_dict must be a file path or a state/checkpoint dict, "
                        f"got {type(path_or_dict).__name__}")
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
        kind = _sniff(where)
        if kind == "safetensors":
            obj, metadata = _load_safetensors(where)
            if metadata.get(_SAFETENSORS_CONFIG_KEY):
                try:
                    config = json.loads(metadata[_SAFETENSORS_CONFIG_KEY])
                except json.JSONDecodeError:
                    raise ValueError(f"{where}: its stored model config is not valid JSON") from None
        elif kind == "torch":
            obj = _load_torch(where, trust_pickle)
        else:
            raise ValueError(f"{where}: not a PyTorch checkpoint or safetensors file")
    state, stored_config, meta = _extract(obj, where)
    kind, source = _classify(state, where)
    if source == "hf":
        try:
            state = hf_to_nvlabs(state)
        except ValueError as err:
            raise ValueError(f"{where}: {err}") from None
    return Checkpoint(state_dict=state, kind=kind, source_format=source, config=config or stored_config, meta=meta)


# ---- loading into a model --------------------------------------------------------------------


def infer_config(state_dict: Mapping[str, torch.Tensor]) -> dict:
    """A model config (``type`` dicts) that fits an NVlabs-keyed state dict, from its tensor shapes.

    Shapes fix every size except the number of attention heads of the vision encoder, taken as
    ``embed_dim // 64`` (64-channel heads, as GroupViT-S: 384 / 6); the text encoder uses
    ``width // 64`` heads by construction. ``hard_assignment`` is not stored and stays True.
    """
    full = is_nvlabs_full(state_dict)
    prefix = "img_encoder." if full else ""
    vision = {k[len(prefix):]: v for k, v in state_dict.items() if k.startswith(prefix)}
    try:
        patch_w = vision["patch_embed.proj.weight"]  # [C, in_chans, p, p]
        embed_dim, in_chans, patch = patch_w.shape[0], patch_w.shape[1], patch_w.shape[2]
        num_patches = vision["pos_embed"].shape[1]
        side = int(round(num_patches ** 0.5))
        stages = sorted({int(k.split(".")[1]) for k in vision if k.startswith("layers.")})
        depths = [len({k.split(".")[3] for k in vision if k.startswith(f"layers.{s}.blocks.")}) for s in stages]
        group_tokens = [vision[f"layers.{s}.group_token"].shape[1] if f"layers.{s}.group_token" in vision else 0
                        for s in stages]
        output_groups = [vision[f"layers.{s}.downsample.mlp_inter.fc2.weight"].shape[0] for s in stages[:-1]]
    except (KeyError, IndexError, ValueError) as err:
        raise ValueError(f"state_dict: cannot infer the GroupViT config ({err!r} missing or malformed)") from None
    img = {"type": "GroupViT", "img_size": side * patch, "patch_size": patch, "in_chans": in_chans,
           "embed_dim": embed_dim, "depths": depths, "num_heads": [max(1, embed_dim // 64)] * len(stages),
           "num_group_tokens": group_tokens, "num_output_groups": output_groups}
    if "head.weight" in vision:
        img["num_classes"] = vision["head.weight"].shape[0]
    if not full:
        return img
    try:
        tok = state_dict["text_encoder.token_embedding.weight"]
        ctx = state_dict["text_encoder.positional_embedding"].shape[0]
        layers = len({k.split(".")[3] for k in state_dict if k.startswith("text_encoder.transformer.resblocks.")})
        hidden = sorted(int(k.split(".")[2]) for k in state_dict
                        if k.startswith("img_projector.linear_hidden.") and k.endswith(".weight")
                        and state_dict[k].dim() == 3)
        out_w = state_dict.get("img_projector.linear_out.weight")
    except KeyError as err:
        raise ValueError(f"state_dict: cannot infer the text encoder config ({err!r} missing)") from None
    cfg = {
        "type": "MultiLabelContrastive", "img_encoder": img,
        "text_encoder": {"type": "TextTransformer", "context_length": ctx, "width": tok.shape[1], "layers": layers,
                         "vocab_size": tok.shape[0]},
        # the count of noun prompts is not stored; any M > 0 has the same weights: take the released 3
        "multi_label": 3 if "multi_label_logit_scale" in state_dict else 0,
    }
    if out_w is not None:
        cfg["output_dim"] = out_w.shape[0]
        cfg["proj_num_layers"] = len(hidden) + 1
        if hidden:
            cfg["proj_inner_dim"] = state_dict[f"img_projector.linear_hidden.{hidden[0]}.weight"].shape[0]
    else:
        cfg["proj_num_layers"] = 0
    return cfg


def complete_from_hf(state_dict: dict[str, torch.Tensor], config: Mapping | None) -> list[str]:
    """Add what an NVlabs model of ``config`` has and HF weights lack (in place); returns the added keys.

    That is only ``multi_label_logit_scale`` (a model with ``multi_label > 0`` and its own
    multi-label temperature), set to NVlabs' initial value ``log(1 / contrast_temperature)``.
    """
    import math

    if not config or config.get("type") != "MultiLabelContrastive":
        return []
    if config.get("multi_label", 0) <= 0 or config.get("share_temperature", False):
        return []
    if "multi_label_logit_scale" in state_dict:
        return []
    temperature = float(config.get("contrast_temperature", 0.07))
    state_dict["multi_label_logit_scale"] = torch.tensor(math.log(1 / temperature))
    return ["multi_label_logit_scale"]


def _resize_pos_embed(tensor: torch.Tensor, module: nn.Module) -> torch.Tensor:
    from .models.group_vit import interpolate_pos_encoding

    h, w = module.patches_resolution[1], module.patches_resolution[0]
    return interpolate_pos_encoding(tensor.float(), h, w).to(tensor.dtype)


def _prepare(model: nn.Module, ckpt: Checkpoint, strict: bool, where: str) -> tuple[dict, list[str]]:
    """The complete state dict to load into ``model`` (validated), and the model keys kept as they are."""
    state = ckpt.state_dict
    target_full = hasattr(model, "img_encoder") and hasattr(model, "text_encoder")
    if ckpt.kind == "full" and not target_full:
        # the vision encoder of a full checkpoint, loaded into a bare GroupViT
        state = {k[len("img_encoder."):]: v for k, v in state.items() if k.startswith("img_encoder.")}
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
            if key.endswith("pos_embed") and getattr(owner, "pos_embed_type", None) == "simple" \
                    and tensor.dim() == 3 and tensor.shape[-1] == value.shape[-1]:
                tensor = _resize_pos_embed(tensor, owner)  # as NVlabs: a learned grid of another size
            else:
                raise ValueError(f"{where}: {key} has shape {tuple(tensor.shape)}, the model expects "
                                 f"{tuple(value.shape)}")
        merged[key] = tensor
    return merged, kept


def load_checkpoint(path_or_dict: str | os.PathLike | Mapping, model: nn.Module | None = None, *,
                    trust_pickle: bool = False, strict: bool = True) -> Checkpoint:
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
        from .models.registry import build_model

        config = ckpt.config if ckpt.config is not None else infer_config(ckpt.state_dict)
        model = build_model(config)
        ckpt.config = config
    merged, kept = _prepare(model, ckpt, strict, where)
    model.load_state_dict(merged, strict=True)
    ckpt.model = model
    ckpt.kept_keys = kept
    return ckpt


# ---- saving ----------------------------------------------------------------------------------


def _state_of(obj: nn.Module | Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    state = obj.state_dict() if isinstance(obj, nn.Module) else dict(obj)
    return {k: v.detach().cpu().contiguous().clone() for k, v in state.items()}


def save_safetensors(obj: nn.Module | Mapping[str, torch.Tensor], path: str | os.PathLike, *, hf: bool = False,
                     config: Mapping | None = None) -> None:
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
    metadata = {_SAFETENSORS_FORMAT_KEY: "pt", "groupvit_fast_keys": "hf" if hf else "nvlabs"}
    if config is not None:
        metadata[_SAFETENSORS_CONFIG_KEY] = json.dumps(config)
    save_file(state, os.fspath(path), metadata=metadata)


def save_checkpoint(obj: nn.Module | Mapping[str, torch.Tensor], path: str | os.PathLike, *, hf: bool = False,
                    config: Mapping | None = None) -> None:
    """``torch.save`` a model's weights: ``{'model': state_dict, 'config': dict}`` (NVlabs layout, loadable
    with ``weights_only=True``), or with ``hf=True`` a bare HF-keyed state dict (``pytorch_model.bin``)."""
    state = _state_of(obj)
    if config is None and isinstance(obj, nn.Module):
        config = getattr(obj, "groupvit_config", None)
    if hf:
        torch.save(nvlabs_to_hf(state), os.fspath(path))
    else:
        torch.save({"model": state, "config": dict(config) if config is not None else None}, os.fspath(path))
