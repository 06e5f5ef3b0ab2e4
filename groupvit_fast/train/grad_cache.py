"""Gradient caching for the multi-label contrastive loss (docs/training.md, "Gradient caching").

The contrastive batch is the whole per-process batch (times the world size through the loss's
all-gather) while the encoders' activations never exceed one chunk of ``chunk_size`` pairs
(Gao et al., "Scaling Deep Contrastive Learning Batch Size under Memory Limited Setup", 2021):

1. the image and text encoders run chunk by chunk without a graph; their outputs (``[B, width]``
   and ``[B, 1 + M, width]``) are kept, and so is, before each chunk, the state of torch's CPU
   generator and of the device's CUDA generator. That state is everything a chunk draws:
   dropout and drop-path masks, and the fused assignment op's Gumbel noise, whose ``(seed,
   offset)`` the op draws from torch's CPU generator on every device (``ops/assign_attention.py``
   ``_seed_tensor``: ``seed = randint``, ``offset = 0``; the reference backend draws its noise
   from the device's generator);
2. the projectors (their BatchNorm sees the whole batch, as NVlabs' SyncBatchNorm sees the global
   batch), the all-gather and the losses run on the full batch with a graph, and
   ``torch.autograd.grad`` gives the gradients of the (scaled) loss with respect to the cached
   encoder outputs and the head's parameters (projectors, logit scales);
3. each chunk runs again with its generator state restored, with a graph, and back-propagates its
   slice of the cached gradients: ``backward`` of ``sum(out * grad)`` (whose gradient with respect
   to ``out`` is ``grad`` exactly). The last chunk also back-propagates ``sum(p * grad_p)`` for
   the head's parameters, so that every parameter receives its gradient in that one backward.

Under DDP each replay goes through the DDP module's forward, all but the last under ``no_sync``:
the gradients of the chunks accumulate locally and the last backward all-reduces them once, as
DDP's gradient accumulation does. The generator states after the step are those after the first
pass, so the next step draws what it would have drawn.

Exactness: for the random draws it made, the step's gradient is the gradient of the full-batch
loss (tests/train/test_grad_cache.py). A plain step of the same batch draws its masks and noise
for the whole batch at once, so for ``k > 1`` chunks its draws differ (other samples of the same
distributions); with one chunk the draws, losses and gradients are the plain step's.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable
from typing import TYPE_CHECKING

import torch
from torch import nn

from .distributed import unwrap

if TYPE_CHECKING:  # annotations only (postponed: never evaluated at run time)
    from omegaconf import DictConfig

__all__ = ["check_chunk_size", "chunk_size_from_config", "grad_cache_refusal", "grad_cached_backward"]

_ENCODERS = ("img_encoder.", "text_encoder.")


def check_chunk_size(chunk_size: object, batch: int, where: str = "train.grad_cache.chunk_size") -> int:
    """``chunk_size`` as an int, or a one-line ``ValueError``: it must be a positive int dividing ``batch``."""
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int):
        raise ValueError(f"{where} must be a positive int (or null: off), got {chunk_size!r}")
    if chunk_size <= 0:
        raise ValueError(f"{where} must be positive (null turns gradient caching off), got {chunk_size}")
    if batch % chunk_size:
        raise ValueError(f"{where}={chunk_size} must divide the per-process batch data.batch_size={batch}")
    return chunk_size


def grad_cache_refusal(*, strategy: str, world: int, compile_model: bool, model_type: str) -> str | None:
    """Why gradient caching cannot run with these settings (one line), or ``None``."""
    if model_type != "MultiLabelContrastive":
        return f"train.grad_cache needs model.type MultiLabelContrastive, got {model_type!r}"
    if strategy == "fsdp" and world > 1:
        return (
            "train.grad_cache does not run under train.strategy=fsdp: it calls the encoders and projectors "
            "one by one, outside the root module's forward, where FSDP2 does not gather their parameters"
        )
    if compile_model:
        return (
            "train.grad_cache does not run with train.compile: it calls the encoders chunk by chunk, "
            "outside the compiled forward"
        )
    return None


def chunk_size_from_config(cfg: DictConfig, world: int) -> int | None:
    """``train.grad_cache.chunk_size`` checked against the config (``None``: off), or a one-line ``ValueError``."""
    grad_cache = cfg.train.get("grad_cache") or {}
    chunk_size = grad_cache.get("chunk_size")
    if chunk_size is None:
        return None
    chunk_size = check_chunk_size(chunk_size, int(cfg.data.batch_size))
    why = grad_cache_refusal(
        strategy=str(cfg.train.strategy),
        world=world,
        compile_model=bool(cfg.train.compile),
        model_type=str(cfg.model.get("type")),
    )
    if why:
        raise ValueError(why)
    return chunk_size


@dataclasses.dataclass(frozen=True)
class _GeneratorState:
    """torch's CPU generator and, on CUDA, the device's generator: every random draw of a chunk."""

    cpu: torch.Tensor
    cuda: torch.Tensor | None
    device: torch.device

    @classmethod
    def capture(cls, device: torch.device) -> _GeneratorState:
        cuda = torch.cuda.get_rng_state(device) if device.type == "cuda" else None
        return cls(torch.get_rng_state(), cuda, device)

    def restore(self) -> None:
        torch.set_rng_state(self.cpu)
        if self.cuda is not None:
            torch.cuda.set_rng_state(self.cuda, self.device)


def _encode(model: nn.Module, image: torch.Tensor, text: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The encoders of ``MultiLabelContrastive.forward_train``, before the projectors:
    ``image [c, 3, H, W]`` -> ``[c, width]``; ``text [c, L]`` -> ``[c, width]``, ``[c, N, L]`` -> ``[c, N, width]``."""
    image_feat = model.img_encoder(image, return_feat=False, as_dict=True)["x"]
    if text.dim() == 2:
        return image_feat, model.text_encoder(text)
    return image_feat, model.text_encoder(text.flatten(0, 1)).unflatten(0, text.shape[:2])


def _head_losses(model: nn.Module, image_feat: torch.Tensor, text_feat: torch.Tensor) -> dict[str, torch.Tensor]:
    """The rest of ``MultiLabelContrastive.forward_train`` on the whole batch: projectors (BatchNorm
    statistics over every row, as ``encode_text`` projects the flattened ``[B * N, width]``), losses."""
    image_x = model.img_projector(image_feat)
    if text_feat.dim() == 2:
        text_x, prompts_x = model.text_projector(text_feat), None
    else:
        projected = model.text_projector(text_feat.flatten(0, 1)).unflatten(0, text_feat.shape[:2])
        text_x, prompts_x = projected[:, 0], projected[:, 1:]
    losses = {"loss": model.loss(image_x, text_x)}
    if model.with_multi_label:
        losses["multi_label_loss"] = (
            model.multi_label_loss(image_x.unsqueeze(1), prompts_x) * model.multi_label_loss_weight
        )
    return losses


def _check_inputs(model: nn.Module, image: torch.Tensor, text: torch.Tensor, chunk_size: int) -> None:
    if image.shape[0] != text.shape[0]:
        raise ValueError(
            f"image and text must hold the same batch of pairs, got {image.shape[0]} images and {text.shape[0]} texts"
        )
    multi = model.multi_label
    if multi and (text.dim() != 3 or text.shape[1] != 1 + multi):
        raise ValueError(f"multi_label={multi} needs text [B, {1 + multi}, L], got shape {tuple(text.shape)}")
    if not multi and not (text.dim() == 2 or (text.dim() == 3 and text.shape[1] == 1)):
        raise ValueError(
            f"multi_label=0 trains on one caption per image: text [B, L] or [B, 1, L], got shape {tuple(text.shape)}"
        )
    check_chunk_size(chunk_size, image.shape[0], "grad cache chunk_size")


def _through(model: nn.Module, core: nn.Module, fn: Callable[[], torch.Tensor]) -> torch.Tensor:
    """``fn()`` run as the forward of ``model`` (a DDP wrapper: so its reducer sees the backward), else directly."""
    if model is core:
        return fn()
    core.forward = fn  # an instance attribute shadows the class's forward for this one call
    try:
        return model()
    finally:
        del core.forward


def grad_cached_backward(
    model: nn.Module,
    image: torch.Tensor,
    text: torch.Tensor,
    chunk_size: int,
    *,
    device: torch.device,
    autocast_dtype: torch.dtype | None = None,
    scale: Callable[[torch.Tensor], torch.Tensor] = lambda loss: loss,
    sync: bool = True,
) -> dict[str, torch.Tensor]:
    """Accumulate into ``.grad`` the gradient of ``scale(total loss)`` of one batch, ``chunk_size`` pairs at a time.

    ``model``: a ``MultiLabelContrastive``, bare or inside DDP; ``image [B, 3, S, S]`` and ``text
    [B, L]`` or ``[B, 1 + M, L]`` on ``device``; ``scale``: what multiplies the loss before its
    backward (the accumulation's ``1 / count``, a GradScaler's scale); ``sync``: let DDP all-reduce
    in this call's last backward (``False`` for all but the last micro-batch of an accumulation).
    Returns the detached losses (``loss``, ``multi_label_loss``?, ``total_loss``), as the plain
    step computes them: the parameter gradients equal ``scale(total_loss).backward()``'s of
    ``model(image, text)`` for the random draws of the chunks (module docstring).
    """
    core = unwrap(model)
    _check_inputs(core, image, text, chunk_size)
    rows = [slice(start, start + chunk_size) for start in range(0, image.shape[0], chunk_size)]

    def autocast() -> contextlib.AbstractContextManager:
        return torch.autocast(device.type, dtype=autocast_dtype or torch.float32, enabled=autocast_dtype is not None)

    # 1. the encoders without a graph, chunk by chunk, and each chunk's generator state
    states, image_parts, text_parts = [], [], []
    with torch.no_grad():
        for part in rows:
            states.append(_GeneratorState.capture(device))
            with autocast():
                image_feat, text_feat = _encode(core, image[part], text[part])
            image_parts.append(image_feat)
            text_parts.append(text_feat)
    after = _GeneratorState.capture(device)

    # 2. projectors, all-gather and losses on the whole batch; gradients w.r.t. the cached outputs
    image_feat = torch.cat(image_parts).requires_grad_(True)
    text_feat = torch.cat(text_parts).requires_grad_(True)
    del image_parts, text_parts
    head = [p for name, p in core.named_parameters() if p.requires_grad and not name.startswith(_ENCODERS)]
    with autocast():
        losses = _head_losses(core, image_feat, text_feat)
        loss = sum(value for key, value in losses.items() if "loss" in key)
    grads = torch.autograd.grad(scale(loss), [image_feat, text_feat, *head], allow_unused=True)
    image_grad, text_grad = grads[0], grads[1]
    head_grads = [(p, g) for p, g in zip(head, grads[2:], strict=True) if g is not None]
    del image_feat, text_feat, grads

    # 3. each chunk again, as it ran in 1, back-propagating its slice of the cached gradients
    for index, part in enumerate(rows):
        last = index == len(rows) - 1

        def replay(part: slice = part, last: bool = last) -> torch.Tensor:
            with autocast():
                image_out, text_out = _encode(core, image[part], text[part])
            surrogate = (image_out * image_grad[part]).sum() + (text_out * text_grad[part]).sum()
            if last:  # the head's gradients join the last backward (DDP reduces every parameter once)
                surrogate = surrogate + sum((p * g).sum() for p, g in head_grads)
            return surrogate

        states[index].restore()
        quiet = model.no_sync() if hasattr(model, "no_sync") and not (last and sync) else contextlib.nullcontext()
        with quiet:
            _through(model, core, replay).backward()
    after.restore()
    return {**{key: value.detach() for key, value in losses.items()}, "total_loss": loss.detach()}
