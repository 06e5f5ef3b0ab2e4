"""Class text embeddings for zero-shot segmentation (docs/segmentation.md, "Inputs").

Each class name is put into every prompt template, tokenised, encoded by the text encoder and the
text projector; as NVlabs' ``build_text_embedding``, the template embeddings are averaged and the
mean is L2-normalised: a ``[K, C]`` matrix per (model, class list, templates), cached.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from .classes import TEMPLATES

__all__ = ["class_text_embeddings", "TextEmbeddingCache"]


def _template_list(templates: str | Sequence[str]) -> tuple[str, ...]:
    if isinstance(templates, str):
        if templates not in TEMPLATES:
            raise ValueError(f"unknown template set {templates!r}; known: {sorted(TEMPLATES)}")
        return TEMPLATES[templates]
    out = tuple(templates)
    if not out or any("{}" not in t for t in out):
        raise ValueError("templates must be a non-empty list of strings with a '{}' placeholder")
    return out


@torch.no_grad()
def class_text_embeddings(
    model: nn.Module,
    class_names: Sequence[str],
    templates: str | Sequence[str] = "simple",
    *,
    tokenizer: Callable | None = None,
    chunk: int = 256,
) -> torch.Tensor:
    """``[K, C]`` L2-normalised class embeddings of ``model`` (a ``MultiLabelContrastive``).

    ``tokenizer(list_of_str) -> LongTensor [N, L]`` defaults to ``groupvit_fast.tokenize`` with the
    text encoder's context length. Texts are encoded ``chunk`` at a time. Equivalent to
    ``model.build_text_embedding(tokens [K, T, L])``.
    """
    temps = _template_list(templates)
    names = list(class_names)
    if not names:
        raise ValueError("class_names is empty")
    if tokenizer is None:
        from ..tokenizer import tokenize

        context = getattr(model.text_encoder, "context_length", 77)
        tokenizer = lambda texts: tokenize(texts, context_length=context)  # noqa: E731
    texts = [t.format(name) for name in names for t in temps]
    tokens = tokenizer(texts)
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        parts = [model.encode_text(tokens[i : i + chunk].to(device)) for i in range(0, len(texts), chunk)]
    finally:
        model.train(was_training)
    emb = torch.cat(parts).view(len(names), len(temps), -1).float()
    return torch.nn.functional.normalize(emb.mean(dim=1), dim=-1)


class TextEmbeddingCache:
    """Caches ``class_text_embeddings`` per (model, class names, templates).

    Keyed by the model object (held weakly) and a version counter: call ``invalidate(model)``
    after changing a model's weights in place (``load_checkpoint`` into an existing model, training).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._store: weakref.WeakKeyDictionary[nn.Module, dict] = weakref.WeakKeyDictionary()

    def get(
        self, model: nn.Module, class_names: Sequence[str], templates: str | Sequence[str] = "simple", **kwargs: Any
    ) -> torch.Tensor:
        key = (tuple(class_names), _template_list(templates))
        with self._lock:
            per_model = self._store.setdefault(model, {})
            hit = per_model.get(key)
        if hit is not None:
            return hit
        emb = class_text_embeddings(model, class_names, templates, **kwargs)
        with self._lock:
            self._store.setdefault(model, {})[key] = emb
        return emb

    def put(
        self, model: nn.Module, class_names: Sequence[str], templates: str | Sequence[str], embedding: torch.Tensor
    ) -> None:
        """Store an embedding computed elsewhere (e.g. on rank 0 and broadcast) for ``get`` to return."""
        key = (tuple(class_names), _template_list(templates))
        with self._lock:
            self._store.setdefault(model, {})[key] = embedding

    def invalidate(self, model: nn.Module | None = None) -> None:
        with self._lock:
            if model is None:
                self._store = weakref.WeakKeyDictionary()
            else:
                self._store.pop(model, None)

    def __len__(self) -> int:
        with self._lock:
            return sum(len(v) for v in self._store.values())
