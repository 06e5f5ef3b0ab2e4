"""The text graph: token ids of each class's prompts in, the class embedding out (docs/export.md, "The text
side"): what ``segmentation.text.class_text_embeddings`` computes around the text encoder, as one module.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["TextEmbeddingGraph", "TEXT_INPUT_NAMES", "TEXT_OUTPUT_NAMES"]

TEXT_INPUT_NAMES = ("tokens",)
TEXT_OUTPUT_NAMES = ("text_embeddings",)


class TextEmbeddingGraph(nn.Module):
    """``tokens [K, T, L] int64`` (``T`` prompt templates per class, ``L`` the context length) ->
    ``text_embeddings [K, D] float32``: the templates' projected embeddings averaged, then L2-normalised.

    Equivalent PyTorch: ``class_text_embeddings(model, names, templates)`` with ``tokens`` its tokenised prompts.
    """

    def __init__(self, model: nn.Module):
        super().__init__()
        if not hasattr(model, "encode_text"):
            raise TypeError("model must be a MultiLabelContrastive-like image-text model (no 'encode_text')")
        self.model = model

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        k, t, length = tokens.shape
        emb = self.model.encode_text(tokens.reshape(k * t, length)).float()
        return F.normalize(emb.reshape(k, t, -1).mean(dim=1), dim=-1)
