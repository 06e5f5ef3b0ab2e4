"""Key-renaming rules shared by the converters: templates like ``layers.{s}.norm.{p}`` that work
in both directions (HF -> NVlabs and back)."""

from __future__ import annotations

import re
from collections.abc import Iterable

import torch

__all__ = ["compile_rules", "rename", "unknown_keys_error", "split_fused_qkv", "join_qkv"]


def _compile(template: str, placeholders: dict[str, str]) -> re.Pattern:
    parts = re.split(r"\{(\w+)\}", template)
    return re.compile(
        "".join(re.escape(part) if i % 2 == 0 else f"(?P<{part}>{placeholders[part]})" for i, part in enumerate(parts))
    )


def compile_rules(
    rules: list[tuple[str, str]],
    placeholders: dict[str, str],
) -> tuple[list[tuple[re.Pattern[str], str]], list[tuple[re.Pattern[str], str]]]:
    """``(hf_to_nvlabs, nvlabs_to_hf)`` lists of ``(regex, target template)`` from ``(hf, nvlabs)`` pairs."""
    return (
        [(_compile(hf, placeholders), nv) for hf, nv in rules],
        [(_compile(nv, placeholders), hf) for hf, nv in rules],
    )


def rename(key: str, rules: Iterable[tuple[re.Pattern[str], str]]) -> str | None:
    """The target key of the first rule whose pattern matches ``key`` whole, else ``None``."""
    for regex, target in rules:
        match = regex.fullmatch(key)
        if match:
            return target.format(**match.groupdict())
    return None


def unknown_keys_error(kind: str, keys: list[str]) -> ValueError:
    shown = ", ".join(keys[:5]) + (" ..." if len(keys) > 5 else "")
    return ValueError(f"state_dict: {len(keys)} key(s) are not {kind}: {shown}")


def split_fused_qkv(key: str, tensor: torch.Tensor) -> dict[str, torch.Tensor]:
    """A fused ``[3C, ...]`` projection (rows ordered q, k, v) -> ``{"q", "k", "v"}`` copies."""
    if tensor.shape[0] % 3:
        raise ValueError(f"state_dict: {key} has {tensor.shape[0]} rows, not a fused q/k/v (multiple of 3)")
    return {which: part.clone() for which, part in zip("qkv", tensor.chunk(3, dim=0), strict=True)}


def join_qkv(parts: dict[str, torch.Tensor], where: str) -> torch.Tensor:
    """``{"q", "k", "v"}`` projections -> one fused ``[3C, ...]`` tensor (rows ordered q, k, v)."""
    if set(parts) != {"q", "k", "v"}:
        raise ValueError(f"state_dict: {where} lacks some of q/k/v_proj")
    return torch.cat([parts["q"], parts["k"], parts["v"]], dim=0)
