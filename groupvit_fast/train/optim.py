"""AdamW with NVlabs' weight-decay groups, linearly scaled learning rates and a per-step cosine schedule.

* Decay groups: every parameter is decayed except 1-D ones and ``*.bias`` (NVlabs'
  ``set_weight_decay``), so ``pos_embed``, the group tokens and the 0-D logit scales *are* decayed,
  as in the original; ``skip_decay_embeddings=True`` exempts those too.
* Scaling: ``base_lr``, ``warmup_lr`` and ``min_lr`` are multiplied by the contrastive batch
  ``batch * world`` over 4096 (NVlabs' linear scaling rule, whose global batch of 4096 is the
  contrastive batch: every image against every caption). Gradient caching does not change it;
  accumulation does not enlarge it (each micro-batch is its own contrastive batch, with its own
  negatives), so it does not count, where NVlabs also multiplied by the accumulation steps
  (docs/training.md, "Batch sizes and the learning rate").
* Schedule, per optimiser step ``t``: timm's ``CosineLRScheduler(t_initial=T, warmup_t=W,
  t_in_epochs=False)`` itself, as NVlabs builds it: ``warmup_lr + t * (base_lr - warmup_lr) / W`` for
  ``t < W``, then ``min_lr + 0.5 * (base_lr - min_lr) * (1 + cos(pi * t / T))``, and ``min_lr``
  from ``T`` on, with ``T = epochs * steps_per_epoch`` and ``W = warmup_epochs * steps_per_epoch``.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

import torch
from torch import nn

if TYPE_CHECKING:  # annotations only (postponed: never evaluated at run time)
    from omegaconf import DictConfig

__all__ = ["param_groups", "build_optimizer", "scaled_lrs", "CosineWarmup", "EMBEDDING_NAMES"]

#: Parameter names (last component) exempted with ``skip_decay_embeddings``.
EMBEDDING_NAMES = (
    "pos_embed",
    "group_token",
    "logit_scale",
    "multi_label_logit_scale",
    "positional_embedding",
    "token_embedding.weight",
)


def _is_embedding(name: str) -> bool:
    return any(name == e or name.endswith("." + e) for e in EMBEDDING_NAMES)


def param_groups(
    named: Iterable[tuple[str, nn.Parameter]], weight_decay: float, skip_decay_embeddings: bool = False
) -> list[dict]:
    """``[{'params': decayed, 'weight_decay': wd}, {'params': not decayed, 'weight_decay': 0}]``."""
    decay, no_decay = [], []
    for name, param in named:
        if not param.requires_grad:
            continue
        exempt = param.ndim == 1 or name.endswith(".bias") or (skip_decay_embeddings and _is_embedding(name))
        (no_decay if exempt else decay).append(param)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def scaled_lrs(train_cfg: DictConfig, contrastive_batch: int) -> tuple[float, float, float]:
    """``(base_lr, warmup_lr, min_lr)`` scaled by ``contrastive_batch / 4096`` (``batch * world``, no accumulation)."""
    factor = contrastive_batch / 4096.0
    return train_cfg.base_lr * factor, train_cfg.warmup_lr * factor, train_cfg.min_lr * factor


def build_optimizer(model: nn.Module, train_cfg: DictConfig, lr: float) -> torch.optim.Optimizer:
    """AdamW over ``param_groups``; the fused implementation on CUDA parameters."""
    name = str(train_cfg.optimizer.name).lower()
    if name != "adamw":
        raise ValueError(f"train.optimizer.name: only 'adamw' is supported, got {name!r}")
    groups = param_groups(
        model.named_parameters(), float(train_cfg.weight_decay), bool(train_cfg.skip_decay_embeddings)
    )
    on_cuda = all(p.is_cuda for g in groups for p in g["params"])
    return torch.optim.AdamW(
        groups, lr=lr, eps=float(train_cfg.optimizer.eps), betas=tuple(train_cfg.optimizer.betas), fused=on_cuda or None
    )


class CosineWarmup:
    """timm's per-step cosine schedule (module docstring) that counts its own optimiser steps.

    timm's ``step_update(t)`` wants the caller to track ``t``; this class holds it (``step()`` after each
    optimiser step) and keeps the checkpoint's ``lr_scheduler`` entry the small dict it always was, so
    checkpoints written before and after timm took over the arithmetic resume alike. timm is imported
    here, not at the top: ``groupvit_fast.train`` imports without the ``train`` extra.
    """

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        base_lr: float,
        warmup_lr: float,
        min_lr: float,
        total_steps: int,
        warmup_steps: int,
    ):
        from timm.scheduler import CosineLRScheduler

        if total_steps <= 0:
            raise ValueError(f"the schedule needs at least one step, got total_steps={total_steps}")
        # timm reads the peak from ``initial_lr`` and only sets it where absent: the optimiser was built
        # at ``warmup_lr``, so the peak is written here.
        for group in optimizer.param_groups:
            group["initial_lr"] = base_lr
        self.timm = CosineLRScheduler(
            optimizer,
            t_initial=total_steps,
            lr_min=min_lr,
            warmup_t=warmup_steps,
            warmup_lr_init=warmup_lr,
            cycle_limit=1,
            t_in_epochs=False,
        )
        self.optimizer = optimizer
        self.base_lr, self.warmup_lr, self.min_lr = base_lr, warmup_lr, min_lr
        self.total_steps, self.warmup_steps = total_steps, warmup_steps
        self.step_count = 0
        self.timm.step_update(0)

    def lr_at(self, step: int) -> float:
        """The learning rate of optimiser step ``step``: timm's ``_get_lr``, the one hook every timm
        scheduler defines (``step_update`` is ``_get_lr`` plus writing the optimiser's groups)."""
        return self.timm._get_lr(step)[0]

    def step(self) -> None:
        """After an optimiser step: set the learning rate of the next one."""
        self.step_count += 1
        self.timm.step_update(self.step_count)

    def get_last_lr(self) -> float:
        return self.optimizer.param_groups[0]["lr"]

    def state_dict(self) -> dict:
        return {
            "step_count": self.step_count,
            "base_lr": self.base_lr,
            "warmup_lr": self.warmup_lr,
            "min_lr": self.min_lr,
            "total_steps": self.total_steps,
            "warmup_steps": self.warmup_steps,
        }

    def load_state_dict(self, state: dict) -> None:
        self.step_count = int(state["step_count"])
        self.timm.step_update(self.step_count)
