"""Training configs: OmegaConf YAML with ``_base_`` inheritance and ``--opts key=value`` overrides.

The format is NVlabs GroupViT's (``configs/default.yml`` and the recipes inheriting from it), so
the original files load as they are. Every key, its type and its default live in one place, the
structured config ``config_schema.TrainingConfig``; the files and ``--opts`` are merged onto it, so a
key it does not have, or a value that does not convert to the key's type, is refused with a one-line
``ValueError`` naming the key and where it came from, before anything is built. Two sections are
free-form: ``model`` (checked by ``build_model``) and the names under ``data.dataset.meta``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
import os
from collections.abc import Iterator, Sequence
from importlib import resources
from typing import TYPE_CHECKING

from .config_schema import DATASET_TYPES, TrainingConfig

if TYPE_CHECKING:  # annotations only (postponed: never evaluated at run time)
    from omegaconf import DictConfig

__all__ = ["CONFIG_DIR", "RECIPES", "load_config", "resolve_config_path", "run_name"]

#: The shipped recipes (package data).
CONFIG_DIR = os.fspath(resources.files("groupvit_fast.train") / "configs")
RECIPES = ("default", "tiny", "scenes", "shapes", "group_vit_gcc_yfcc_30e", "group_vit_gcc_redcap_30e")

#: Keys ``load_config`` itself fills in after checking: still missing while the files are checked.
_FILLED_IN = ("output", "local_rank")


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


def _one_line(err: Exception, where: str) -> ValueError:
    """An OmegaConf error as one line naming the key and where its value came from."""
    from omegaconf.errors import ConfigKeyError

    key = getattr(err, "full_key", None)
    msg = str(getattr(err, "msg", None) or err).strip().splitlines()[0]
    if isinstance(err, ConfigKeyError) and key:
        # OmegaConf's own hint names the field only; ours the dotted key, as --opts takes it
        owner = getattr(err, "object_type", None)
        fields = [f.name for f in dataclasses.fields(owner)] if dataclasses.is_dataclass(owner) else []
        prefix, _, leaf = str(key).rpartition(".")
        close = difflib.get_close_matches(leaf, fields, n=1)
        hint = f" (did you mean '{prefix + '.' if prefix else ''}{close[0]}'?)" if close else ""
        return ValueError(f"unknown config key {key!r} in {where}{hint}")
    if key:
        return ValueError(f"config key {key!r} in {where}: {msg}")
    return ValueError(f"{where}: {msg}")


@contextlib.contextmanager
def _naming_the_key(where: str) -> Iterator[None]:
    """OmegaConf's errors inside the block, reworded by ``_one_line``."""
    from omegaconf.errors import OmegaConfBaseException

    try:
        yield
    except OmegaConfBaseException as err:
        raise _one_line(err, where) from None


def _check_filled(cfg: DictConfig, path: str) -> None:
    """Every mandatory key has a value, and each dataset's ``type`` is one the loader reads."""
    from omegaconf import OmegaConf

    missing = sorted(k for k in OmegaConf.missing_keys(cfg) if k not in _FILLED_IN)
    if missing:
        raise ValueError(f"config key {missing[0]!r} in {path} has no value (it has no default)")
    for name, entry in cfg.data.dataset.meta.items():
        if entry.type not in DATASET_TYPES:
            raise ValueError(
                f"config key 'data.dataset.meta.{name}.type' in {path} must be one of {DATASET_TYPES}, "
                f"got {entry.type!r}"
            )


def run_name(cfg: DictConfig, config_path: str, world_size: int) -> str:
    """NVlabs' run name: ``model_name`` (default: the config file's stem) + ``_bs{batch}x{world}``."""
    stem = cfg.model_name or os.path.splitext(os.path.basename(config_path))[0]
    return f"{stem}_bs{cfg.data.batch_size}x{world_size}"


def load_config(
    path: str, opts: Sequence[str] = (), *, output: str | None = None, tag: str | None = None, world_size: int = 1
) -> DictConfig:
    """The resolved, checked training config (an OmegaConf ``DictConfig``).

    ``path``: a YAML file or a shipped recipe name; ``opts``: ``key=value`` overrides (OmegaConf
    dot-list syntax, values parsed as YAML). ``output`` defaults to ``output/<run name>`` and gets
    ``/<tag>`` appended when a tag is given, as NVlabs does. Raises ``ValueError`` (one line, naming
    the key and the file or ``--opts``) for an unknown key or a value of the wrong type. The result is
    in struct mode: setting a key that ``TrainingConfig`` lacks raises too.
    """
    from omegaconf import OmegaConf

    path = resolve_config_path(path)
    schema = OmegaConf.structured(TrainingConfig)
    with _naming_the_key(path):
        cfg = OmegaConf.merge(schema, _load_with_bases(path))
    for opt in opts:
        if "=" not in opt or opt.startswith("="):
            raise ValueError(f"--opts expects key=value, got {opt!r}")
        try:
            layer = OmegaConf.from_dotlist([opt])
        except Exception as err:  # noqa: BLE001
            raise ValueError(f"--opts {opt!r}: {str(err).splitlines()[0]}") from None
        with _naming_the_key(f"--opts {opt}"):
            cfg = OmegaConf.merge(cfg, layer)
    # interpolated values, resolved and converted to their key's type (a dangling ${...} names its key)
    with _naming_the_key(path):
        OmegaConf.to_container(cfg, resolve=True, throw_on_missing=False)
    _check_filled(cfg, path)
    if "type" not in cfg.model:
        raise ValueError(f"{path}: no 'model' section with a 'type' (e.g. MultiLabelContrastive)")
    OmegaConf.set_struct(cfg, True)  # a key the schema lacks is refused on assignment too
    name = run_name(cfg, path, world_size)
    cfg.model_name = name
    out = output or (cfg.output if not OmegaConf.is_missing(cfg, "output") else os.path.join("output", name))
    if tag:
        cfg.tag = tag
        out = os.path.join(out, tag)
    cfg.output = out
    cfg.local_rank = int(os.environ.get("LOCAL_RANK", 0))
    return cfg
