"""The image graph: normalised pixels and class embeddings in, per-class scores and labels out
(docs/export.md, "The image graph").

``SegmentationGraph`` is the segmentation pipeline's per-crop step as one module, so that
``torch.export`` / ``torch.onnx.export`` see a single ``forward``: it calls the very functions
``GroupViTSegmenter.crop_scores`` calls (``compose_assignment_maps``, ``group_class_affinity``,
``crop_class_scores``), with the class embeddings and the background threshold as inputs instead of
attributes. What stays outside (resize, windows, stitching, the final resize and argmax) is the runner's
job, on either side.
"""

from __future__ import annotations

import torch
from torch import nn

from ..segmentation.inference import (
    check_assignment,
    compose_assignment_maps,
    crop_class_scores,
    group_class_affinity,
    patch_grid,
)

__all__ = ["SegmentationGraph", "INPUT_NAMES", "OUTPUT_NAMES"]

#: the graph's inputs and outputs, in order (docs/export.md, "The image graph")
INPUT_NAMES = ("images", "text_embeddings", "bg_thresh")
OUTPUT_NAMES = ("scores", "labels")


class SegmentationGraph(nn.Module):
    """One forward from crops to class scores, for export.

    ``forward(images [B, 3, H, W] float32 normalised, text_embeddings [K, D] L2-normalised,
    bg_thresh [] float32)`` -> ``(scores [B, 1 + K, H, W] float32, labels [B, H, W] int64)``.
    ``scores[:, 0]`` is the background channel (1 where NVlabs' rule paints background, else 0),
    ``scores[:, 1:]`` the classes' scores ``Q[seg]``; ``labels = scores.argmax(1)``: 0 is background,
    ``1 + k`` class ``k``. With ``bg_thresh = 0`` no pixel is background (``Q >= 0``).

    Equivalent PyTorch: ``GroupViTSegmenter(model, ['background', *names], bg_thresh=t).crop_scores(images)``.
    """

    def __init__(self, model: nn.Module, *, assignment: str = "soft", topk: int = 5):
        super().__init__()
        for name in ("img_encoder", "img_projector", "logit_scale"):
            if not hasattr(model, name):
                raise TypeError(f"model must be a MultiLabelContrastive-like image-text model (no {name!r})")
        self.model = model
        self.assignment = check_assignment(assignment)
        self.topk = int(topk)

    def forward(
        self, images: torch.Tensor, text_embeddings: torch.Tensor, bg_thresh: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        model = self.model
        outs = model.img_encoder(images, return_attn=True, return_feat=True, as_dict=True)
        image_x = model.img_projector(outs["x"])
        image_feat = model.img_projector(outs["feat"])
        maps = compose_assignment_maps(outs["attn_dicts"], self.assignment)
        affinity = group_class_affinity(image_feat, image_x, text_embeddings, model.logit_scale, self.topk)
        h, w = images.shape[-2:]
        scores = crop_class_scores(maps, patch_grid(model, h, w), (h, w), affinity, with_bg=True, bg_thresh=bg_thresh)
        return scores, scores.argmax(dim=1)
