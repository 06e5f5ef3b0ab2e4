"""The gradient-caching cases: the image-text model's training step with ``train.grad_cache.chunk_size``
(``groupvit_fast.train.grad_cache``, docs/training.md "Gradient caching") against the plain step.

An implementation ``ours-gc<chunk>`` is ``ours`` (the same weights and inputs, ``ModelBank``) trained
through ``grad_cached_backward`` with chunks of ``chunk`` pairs; the plain step is ``ours``. The
question is docs/training.md's: is the step's peak memory flat in the batch (one chunk's step plus
the cache of encoder outputs) and what does the second encoder forward cost in time.
"""

from __future__ import annotations

import re
from typing import Any

import torch

from .runner import Runner

__all__ = ["grad_cache_impls", "grad_cache_chunk", "build_grad_cache_runner"]

_IMPL = re.compile(r"^ours-gc(\d+)$")


def grad_cache_chunk(impl: str) -> int | None:
    """The chunk size of a grad-cache implementation name (``ours-gc16`` -> 16), else ``None``."""
    match = _IMPL.match(impl)
    return int(match.group(1)) if match else None


def grad_cache_impls(batch: int, chunks: tuple[int, ...]) -> tuple[str, ...]:
    """``ours`` and ``ours-gc<C>`` for each chunk size ``C`` of ``chunks`` that splits ``batch`` in two or more
    (tiers.py makes the cases: the plain step at the first chunk's batch, then each batch both ways)."""
    return ("ours", *(f"ours-gc{c}" for c in chunks if batch % c == 0 and c < batch))


def build_grad_cache_runner(case: Any, impl: str, bank: Any) -> Runner:
    """One AdamW step of ``bank``'s image-text model (a ``model.ModelBank``) on ``case.batch`` pairs (a
    ``model.ModelCase``), through ``grad_cached_backward``. (No import of model.py: it dispatches here.)"""
    from groupvit_fast.ops import backend_usage
    from groupvit_fast.train.grad_cache import grad_cached_backward

    chunk = grad_cache_chunk(impl)
    if chunk is None or not bank.image_text or case.task != "train":
        raise ValueError(f"{case.id}/{impl}: gradient caching is a training step of an image-text model")
    if case.batch % chunk:
        raise ValueError(f"{case.id}/{impl}: the chunk size {chunk} must divide the batch {case.batch}")
    device = torch.device(bank.device)
    model = bank.model("ours").train()
    x, text = bank.inputs(case.batch)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5)
    dtype = torch.bfloat16 if case.dtype == "bf16-autocast" else None

    def fn():
        optimizer.zero_grad(set_to_none=True)
        losses = grad_cached_backward(model, x, text, chunk, device=device, autocast_dtype=dtype)
        optimizer.step()
        return losses["total_loss"]

    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    params.update(t.untyped_storage().data_ptr() for t in (x, text))
    runner = Runner(fn=fn, images=case.batch, owned_storages=params)
    before = backend_usage()
    with torch.no_grad(), torch.autocast(bank.device, dtype=torch.bfloat16, enabled=dtype is not None):
        model.img_encoder(x[:1])
    runner.backend = ",".join(sorted(k for k, n in backend_usage().items() if n > before.get(k, 0))) or None
    return runner
