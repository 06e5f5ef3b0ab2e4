"""One optimiser step of image-text training: forward + loss + backward over the micro-batches, then update.

``train_step`` runs ``len(batches)`` micro-batches (gradient accumulation: each loss divided by
their number, DDP's all-reduce only on the last one), under ``torch.autocast`` when an autocast
dtype is given (fp16 through a ``GradScaler``), clips the gradient norm (``clip_grad > 0``;
NVlabs: 5.0) and steps the optimiser. Gradients are zeroed with ``set_to_none``. With a
``chunk_size`` each micro-batch's forward and backward is ``grad_cache.grad_cached_backward``'s
(docs/training.md, "Gradient caching").
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence

import torch
from torch import nn

from .grad_cache import grad_cached_backward

__all__ = ["train_step", "total_loss"]


def total_loss(losses: dict[str, torch.Tensor]) -> torch.Tensor:
    """The sum of every entry whose name contains ``loss`` (NVlabs' ``parse_losses``)."""
    return sum(value for key, value in losses.items() if "loss" in key)


def _no_sync(model: nn.Module, last: bool):
    if last:
        return contextlib.nullcontext()
    if hasattr(model, "no_sync"):  # DDP
        return model.no_sync()
    if hasattr(model, "set_requires_gradient_sync"):  # FSDP2
        model.set_requires_gradient_sync(False)
    return contextlib.nullcontext()


def train_step(
    model: nn.Module,
    batches: Sequence[dict],
    optimizer: torch.optim.Optimizer,
    *,
    device: torch.device,
    autocast_dtype: torch.dtype | None = None,
    scaler: torch.amp.GradScaler | None = None,
    clip_grad: float = 5.0,
    chunk_size: int | None = None,
) -> dict[str, float | torch.Tensor]:
    """Update ``model`` on ``batches`` (each ``{'image' [B, 3, S, S], 'text' [B, 1+M, L]}``).

    ``chunk_size``: gradient caching, the encoders run ``chunk_size`` pairs at a time while the
    loss sees each whole micro-batch (``None``: the plain forward and backward).

    Returns the detached losses averaged over the micro-batches (``loss``, ``multi_label_loss``,
    ``total_loss``) and the gradient norm before clipping (``grad_norm``, a 0-D tensor).
    """
    optimizer.zero_grad(set_to_none=True)
    logged: dict[str, torch.Tensor] = {}
    count = len(batches)
    for index, batch in enumerate(batches):
        last = index == count - 1
        if last and hasattr(model, "set_requires_gradient_sync"):
            model.set_requires_gradient_sync(True)
        image = batch["image"].to(device, non_blocking=True)
        text = batch["text"].to(device, non_blocking=True)
        if chunk_size:  # the encoders chunk by chunk, the loss on the whole micro-batch
            losses = grad_cached_backward(
                model,
                image,
                text,
                chunk_size,
                device=device,
                autocast_dtype=autocast_dtype,
                sync=last,
                scale=lambda value: scaler.scale(value / count) if scaler is not None else value / count,
            )
            loss = losses.pop("total_loss")
        else:
            with _no_sync(model, last):
                autocast = torch.autocast(
                    device.type, dtype=autocast_dtype or torch.float32, enabled=autocast_dtype is not None
                )
                with autocast:
                    losses = model(image, text)
                    loss = total_loss(losses)
                scaled = loss / count
                (scaler.scale(scaled) if scaler is not None else scaled).backward()
        for key, value in {**losses, "total_loss": loss}.items():
            logged[key] = logged.get(key, 0) + value.detach().float() / count
    if scaler is not None:
        scaler.unscale_(optimizer)
    params = [p for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
    grad_norm = torch.nn.utils.clip_grad_norm_(params, clip_grad if clip_grad and clip_grad > 0 else float("inf"))
    if scaler is not None:
        scaler.step(optimizer)
        scaler.update()
    else:
        optimizer.step()
    logged["grad_norm"] = grad_norm.detach()
    return logged
