"""Small building blocks shared by the GroupViT modules (MLPs, stochastic depth, init)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import torch
from torch import nn

__all__ = ["Mlp", "MixerMlp", "DropPath", "trunc_normal_", "to_2tuple"]

T = TypeVar("T")


def to_2tuple(x: T | Sequence[T]) -> tuple[Any, ...]:
    """``7 -> (7, 7)``; a tuple or list is returned as a tuple unchanged."""
    return tuple(x) if isinstance(x, (tuple, list)) else (x, x)


def trunc_normal_(tensor: torch.Tensor, std: float = 1.0) -> torch.Tensor:
    """Truncated normal at [-2, 2] absolute (timm's default, used by NVlabs' init)."""
    return nn.init.trunc_normal_(tensor, mean=0.0, std=std, a=-2.0, b=2.0)


class Mlp(nn.Module):
    """``fc2(drop(act(fc1(x))))``, then dropout; NVlabs parameter names ``fc1`` / ``fc2``."""

    def __init__(
        self,
        in_features: int,
        hidden_features: int | None = None,
        out_features: int | None = None,
        act_layer: Callable[[], nn.Module] = nn.GELU,
        drop: float = 0.0,
    ):
        super().__init__()
        out_features = out_features or in_features
        hidden_features = hidden_features or in_features
        self.fc1 = nn.Linear(in_features, hidden_features)
        self.act = act_layer()
        self.fc2 = nn.Linear(hidden_features, out_features)
        self.drop = nn.Dropout(drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.fc2(self.drop(self.act(self.fc1(x)))))


class MixerMlp(Mlp):
    """An Mlp over the token axis: ``[B, L, C] -> [B, L', C]``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.transpose(1, 2)).transpose(1, 2)


class DropPath(nn.Module):
    """Stochastic depth per sample. Draws one Bernoulli per sample, as timm does, so the RNG stream
    (and with it training runs under a fixed seed) matches the original."""

    def __init__(self, drop_prob: float = 0.0):
        super().__init__()
        self.drop_prob = drop_prob

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.drop_prob == 0.0 or not self.training:
            return x
        keep_prob = 1.0 - self.drop_prob
        shape = (x.shape[0],) + (1,) * (x.ndim - 1)
        mask = x.new_empty(shape).bernoulli_(keep_prob)
        if keep_prob > 0.0:
            mask.div_(keep_prob)
        return x * mask

    def extra_repr(self) -> str:
        return f"drop_prob={self.drop_prob}"
