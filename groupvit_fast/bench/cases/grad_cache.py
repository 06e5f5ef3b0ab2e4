"""The gradient-caching cases: the image-text model's training step with ``train.grad_cache.chunk_size``
(``groupvit_fast.train.grad_cache``, docs/training.md "Gradient caching") against the plain step.

An implementation ``ours-gc<chunk>`` is ``ours`` (the same weights and inputs, ``ModelBank``) trained
through ``grad_cached_backward`` with chunks of ``chunk`` pairs; the plain step is ``ours``. The
question is docs/training.md's: is the step's peak memory flat in the batch (one chunk's step plus
the cache of encoder outputs) and what does the second encoder forward cost in time.
"""

from __future__ import annotations

import re

import torch

from .model import ModelCase, _autocast
from .runner import Runner

__all__ = ["GRAD_CACHE_IMPL_INFO", "grad_cache_cases", "grad_cache_chunk", "build_grad_cache_runner"]

_IMPL = re.compile(r"^ours-gc(\d+)$")

GRAD_CACHE_IMPL_INFO = {
    "ours-gc<C>": "ours trained with gradient caching, chunks of C pairs (groupvit_fast.train.grad_cache)",
}


def grad_cache_chunk(impl: str) -> int | None:
    """The chunk size of a grad-cache implementation name (``ours-gc16`` -> 16), else ``None``."""
    match = _IMPL.match(impl)
    return int(match.group(1)) if match else None


def grad_cache_cases(config: str, batches: tuple[int, ...], chunks: tuple[int, ...],
                     dtype: str) -> tuple[ModelCase, ...]:
    """The plain step at the first chunk's batch (what the grad-cached step's memory is judged against), then
    each batch of ``batches`` plain and in chunks of each size of ``chunks`` that splits it in two or more."""
    return (ModelCase(config, "train", chunks[0], dtype, ("ours",)),
            *(ModelCase(config, "train", batch, dtype, ("ours", *(f"ours-gc{c}" for c in chunks
                                                                  if batch % c == 0 and c < batch)))
              for batch in batches))


def build_grad_cache_runner(case: ModelCase, impl: str, bank) -> Runner:
    """One AdamW step of ``bank``'s image-text model on ``case.batch`` pairs, through ``grad_cached_backward``."""
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
    with torch.no_grad(), _autocast(bank.device, case.dtype):
        model.img_encoder(x[:1])
    runner.backend = ",".join(sorted(k for k, n in backend_usage().items() if n > before.get(k, 0))) or None
    return runner
