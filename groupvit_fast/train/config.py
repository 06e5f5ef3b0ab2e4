"""Training configs: OmegaConf YAML with ``_base_`` inheritance and ``--opts key=value`` overrides.

The format is NVlabs GroupViT's (``configs/default.yml`` and the recipes inheriting from it), so
the original files load as they are. ``configs/default.yml`` in this package lists every key a
config may set: a key it does not have, or a value of another type, is refused with a one-line
``ValueError`` naming the key and where it came from, before anything is built. Two sections
are free-form: ``model`` (checked by ``build_model``) and ``data.dataset.meta`` (each entry is
checked by ``check_dataset_meta``).
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Mapping, Sequence
from importlib import resources
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # annotations only (postponed: never evaluated at run time)
    from omegaconf import DictConfig

__all__ = ["CONFIG_DIR", "RECIPES", "load_config", "resolve_config_path", "run_name", "validate_keys"]

#: The shipped recipes (package data).
CONFIG_DIR = os.fspath(resources.files("groupvit_fast.train") / "configs")
RECIPES = ("default", "tiny", "scenes", "group_vit_gcc_yfcc_30e", "group_vit_gcc_redcap_30e")

# Sections whose keys are not fixed by default.yml.
_FREE_FORM = ("model", "data.dataset.meta")
_DATASET_TYPES = ("img_txt_pair", "img_cls_pair", "manifest", "synthetic", "scenes")


def resolve_config_path(name: str) -> str:
    """A config file path, or a shipped recipe's name (``tiny``, ``group_vit_gcc_yfcc_30e`` ...)."""
    if os.path.isfile(name):
        return name
    stem = os.path.splitext(os.path.basename(name))[0]
    if os.sep not in name and stem in RECIPES:
        return os.path.join(CONFIG_DIR, stem + ".yml")
    raise ValueError(f"{name}: no such config file (shipped recipes: {', '.join(RECIPES)})")


def _load_with_bases(path: str, seen: tuple[str, ...] = ()):
    from omegaconf import OmegaConf

    real = os.path.realpath(path)
    if real in seen:
        raise ValueError(f"{path}: _base_ inheritance loops back to this file")
    try:
        cfg = OmegaConf.load(path)
    except Exception as err:  # noqa: BLE001  (yaml errors of every kind)
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ValueError(f"{path}: not a valid YAML config ({first})") from None
    if not OmegaConf.is_dict(cfg):
        raise ValueError(f"{path}: a config must be a mapping of sections, got {type(cfg).__name__}")
    bases = cfg.pop("_base_", None)
    if bases is None:
        return cfg
    if isinstance(bases, str):
        bases = [bases]
    merged = OmegaConf.create({})
    for base in bases:
        candidate = os.path.join(os.path.dirname(path), str(base))
        if not os.path.isfile(candidate):  # an original recipe copied elsewhere: our default.yml
            candidate = os.path.join(CONFIG_DIR, os.path.basename(str(base)))
        if not os.path.isfile(candidate):
            raise ValueError(f"{path}: _base_ {base!r} not found next to it")
        merged = OmegaConf.merge(merged, _load_with_bases(candidate, seen + (real,)))
    return OmegaConf.merge(merged, cfg)


def _kind(value: Any) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "float"
    if isinstance(value, str):
        return "str"
    if isinstance(value, Mapping):
        return "mapping"
    if isinstance(value, Sequence):
        return "list"
    return "null" if value is None else type(value).__name__


def _accepts(expected: Any, value: Any) -> bool:
    want, got = _kind(expected), _kind(value)
    for interpolated in (expected, value):
        if isinstance(interpolated, str) and (interpolated == "???" or interpolated.startswith("${")):
            return True  # mandatory or interpolated: checked again once resolved
    if want == "null" or got == want:
        return True
    return want == "float" and got == "int"


def validate_keys(cfg: Mapping, schema: Mapping, where: str, prefix: str = "") -> None:
    """Refuse keys of ``cfg`` (resolved, plain) that ``schema`` lacks and values of another type."""
    for key, value in cfg.items():
        dotted = f"{prefix}{key}"
        if dotted in _FREE_FORM:
            continue
        if key not in schema:
            close = difflib.get_close_matches(str(key), [str(k) for k in schema], n=1)
            hint = f" (did you mean '{prefix}{close[0]}'?)" if close else ""
            raise ValueError(f"unknown config key {dotted!r} in {where}{hint}")
        expected = schema[key]
        if not _accepts(expected, value):
            raise ValueError(f"config key {dotted!r} in {where} must be a {_kind(expected)}, got "
                             f"{_kind(value)} {value!r}")
        if isinstance(value, Mapping) and isinstance(expected, Mapping):
            validate_keys(value, expected, where, dotted + ".")


def check_dataset_meta(meta: Mapping, where: str) -> None:
    """Each ``data.dataset.meta`` entry: ``type`` (one of ``_DATASET_TYPES``), ``path``, ``prefix``, ``length``."""
    for name, entry in meta.items():
        key = f"data.dataset.meta.{name}"
        if not isinstance(entry, Mapping):
            raise ValueError(f"config key {key!r} in {where} must be a mapping (type, path, prefix, length)")
        unknown = sorted(set(entry) - {"type", "path", "prefix", "length"})
        if unknown:
            raise ValueError(f"unknown config key '{key}.{unknown[0]}' in {where} (known: type, path, prefix, length)")
        if entry.get("type") not in _DATASET_TYPES:
            raise ValueError(f"config key '{key}.type' in {where} must be one of {_DATASET_TYPES}, got "
                             f"{entry.get('type')!r}")
        for field, kind in (("path", str), ("prefix", str), ("length", int)):
            value = entry.get(field, "" if field == "prefix" else None)
            if not isinstance(value, kind) or isinstance(value, bool):
                raise ValueError(f"config key '{key}.{field}' in {where} must be a {kind.__name__}, got {value!r}")


def run_name(cfg: DictConfig, config_path: str, world_size: int) -> str:
    """NVlabs' run name: ``model_name`` (default: the config file's stem) + ``_bs{batch}x{world}``."""
    stem = cfg.model_name or os.path.splitext(os.path.basename(config_path))[0]
    return f"{stem}_bs{cfg.data.batch_size}x{world_size}"


def load_config(path: str, opts: Sequence[str] = (), *, output: str | None = None, tag: str | None = None,
                world_size: int = 1) -> DictConfig:
    """The resolved, checked training config (an OmegaConf ``DictConfig``).

    ``path``: a YAML file or a shipped recipe name; ``opts``: ``key=value`` overrides (OmegaConf
    dot-list syntax, values parsed as YAML). ``output`` defaults to ``output/<run name>`` and gets
    ``/<tag>`` appended when a tag is given, as NVlabs does. Raises ``ValueError`` (one line, naming
    the key and the file or ``--opts``) for an unknown key or a value of the wrong type.
    """
    from omegaconf import OmegaConf

    path = resolve_config_path(path)
    schema = OmegaConf.to_container(OmegaConf.load(os.path.join(CONFIG_DIR, "default.yml")), resolve=False)
    cfg = _load_with_bases(path)
    validate_keys(OmegaConf.to_container(cfg, resolve=False), schema, path)
    cfg = OmegaConf.merge(_load_with_bases(os.path.join(CONFIG_DIR, "default.yml")), cfg)
    for opt in opts:
        if "=" not in opt or opt.startswith("="):
            raise ValueError(f"--opts expects key=value, got {opt!r}")
        try:
            layer = OmegaConf.from_dotlist([opt])
        except Exception as err:  # noqa: BLE001
            raise ValueError(f"--opts {opt!r}: {str(err).splitlines()[0]}") from None
        validate_keys(OmegaConf.to_container(layer, resolve=False), schema, f"--opts {opt}")
        cfg = OmegaConf.merge(cfg, layer)
    try:
        plain = OmegaConf.to_container(cfg, resolve=True, throw_on_missing=False)
    except Exception as err:  # noqa: BLE001  (a dangling ${...})
        raise ValueError(f"{path}: cannot resolve the config ({str(err).splitlines()[0]})") from None
    validate_keys(plain, schema, path)  # interpolated values, now resolved
    check_dataset_meta(plain["data"]["dataset"]["meta"], path)
    if "model" not in plain or not isinstance(plain["model"], Mapping) or "type" not in plain["model"]:
        raise ValueError(f"{path}: no 'model' section with a 'type' (e.g. MultiLabelContrastive)")
    name = run_name(cfg, path, world_size)
    cfg.model_name = name
    out = output or (cfg.output if not OmegaConf.is_missing(cfg, "output") else os.path.join("output", name))
    if tag:
        cfg.tag = tag
        out = os.path.join(out, tag)
    cfg.output = out
    cfg.local_rank = int(os.environ.get("LOCAL_RANK", 0))
    return cfg
