"""Telling checkpoint formats apart by their content, and reading each safely (docs/groupvit.md, "Checkpoints").

``sniff_format``: a zip or pickle stream is a PyTorch file, an 8-byte length and ``{`` a safetensors
file. ``load_torch_file`` unpickles nothing but tensors and the allow-list an NVlabs checkpoint needs
(``omegaconf_safe_globals``) unless the caller trusts the file; ``load_safetensors_file`` returns the
tensors and the metadata. Every failure is a one-line ``ValueError`` naming the file.
"""

from __future__ import annotations

import collections
import pickle
import typing
import warnings
import zipfile

import torch

__all__ = [
    "SAFETENSORS_CONFIG_KEY",
    "SAFETENSORS_FORMAT_KEY",
    "first_line",
    "load_safetensors_file",
    "load_torch_file",
    "omegaconf_safe_globals",
    "sniff_format",
]

SAFETENSORS_FORMAT_KEY = "format"
SAFETENSORS_CONFIG_KEY = "groupvit_fast_config"


def omegaconf_safe_globals() -> list:
    """What an NVlabs checkpoint (OmegaConf config, ``defaultdict(float)`` metrics) needs besides tensors.

    This is the output of ``torch.serialization.get_unsafe_globals_in_checkpoint`` for such a file,
    no more.
    """
    from omegaconf.base import ContainerMetadata, Metadata  # a core dependency
    from omegaconf.dictconfig import DictConfig
    from omegaconf.listconfig import ListConfig
    from omegaconf.nodes import AnyNode

    return [
        DictConfig,
        ListConfig,
        AnyNode,
        Metadata,
        ContainerMetadata,
        (typing.Any, "typing.Any"),
        collections.defaultdict,
        dict,
        list,
        int,
        float,
    ]


def sniff_format(path: str) -> str:
    """``'torch'``, ``'safetensors'`` or ``'unknown'``, from the first 16 bytes of ``path``."""
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


def load_torch_file(path: str, trust_pickle: bool) -> typing.Any:
    """``torch.load`` on the CPU: ``weights_only`` with ``omegaconf_safe_globals`` unless ``trust_pickle``."""
    if trust_pickle:
        warnings.warn(
            f"{path}: loading with full pickle (trust_pickle=True): this can run arbitrary code", stacklevel=3
        )
        try:
            return torch.load(path, map_location="cpu", weights_only=False)
        except Exception as err:  # noqa: BLE001  (any failure of a corrupt file)
            raise ValueError(f"{path}: not a readable PyTorch file ({first_line(err)})") from None
    try:
        with torch.serialization.safe_globals(omegaconf_safe_globals()):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        msg = str(err)
        if "Weights only load failed" in msg or "Unsupported global" in msg:
            bad = _unsupported_global(msg)
            what = bad or _unpickler_reason(msg) or "a non-tensor object"
            hint = (
                "install omegaconf (NVlabs checkpoints store an OmegaConf config)"
                if "omegaconf" in (bad or "") and not omegaconf_safe_globals()
                else "pass trust_pickle=True only if you trust the file"
            )
            raise ValueError(f"{path}: refused to unpickle {what} with weights_only=True; {hint}") from None
        raise ValueError(f"{path}: corrupt PyTorch file ({first_line(err)})") from None
    except (RuntimeError, EOFError, OSError, zipfile.BadZipFile, ValueError) as err:
        raise ValueError(f"{path}: corrupt or truncated PyTorch file ({first_line(err)})") from None


def first_line(err: BaseException) -> str:
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


def load_safetensors_file(path: str) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """``(tensors, metadata)`` of a safetensors file (on the CPU)."""
    from safetensors import safe_open

    try:
        tensors = {}
        with safe_open(path, framework="pt", device="cpu") as f:
            metadata = f.metadata() or {}
            for key in f.keys():
                tensors[key] = f.get_tensor(key)
    except Exception as err:  # noqa: BLE001  (SafetensorError and friends)
        raise ValueError(f"{path}: corrupt safetensors file ({first_line(err)})") from None
    return tensors, metadata
