"""Zero-shot semantic segmentation with GroupViT (docs/segmentation.md).

Reproduces NVlabs' ``GroupViTSegInference`` (``encode_decode``) inside mmseg's sliding-window
test, with three changes that do not change the result:

* one image-encoder pass per crop gives both the grouping maps and the segment features
  (``return_attn=True, return_feat=True``; the reference runs the encoder twice);
* crops are batched, across windows and across images (the reference does one crop at a time);
* map composition, resize, argmax and scoring are a few batched tensor ops
  (``crop_class_scores``): the per-pixel one-hot-times-matrix product of the reference is a gather
  of the chosen segment's row, which is the same number.

Per crop ``[3, h, w]`` (``G`` final segments, ``K`` text classes, ``N`` patches):

1. ``M = S_0^T S_1^T ...`` : ``[N, G]`` soft assignment of patches to final segments (product of the
   grouping blocks' ``soft`` maps, each ``[G_i, N_i]`` transposed); ``assignment='hard'`` multiplies
   the blocks' one-hot ``hard`` maps instead (an ablation, not NVlabs' protocol);
2. resize ``M`` (as a ``[G, h/p, w/p]`` image) bilinearly (``align_corners=False``) to ``h x w``;
   ``seg = argmax_G`` per pixel;
3. ``A = clamp(exp(logit_scale), max=100) * normalize(img_projector(feat)) @ T^T`` ``[G, K]``,
   ``P = softmax_K(A)``; ``a = softmax_K(scale * normalize(img_projector(x)) @ T^T)``; keep the
   ``min(5, K)`` best classes of ``a``: ``Q = softmax_K(A masked to them) * P``;
4. class scores per pixel ``= Q[seg]``; with a background class, background ``= 1`` where
   ``max_K Q[seg] < min(bg_thresh, max Q)``, else 0.

Whole image: resize so the short side is 448 (and the long side at most 2048, mmseg's
``img_scale=(2048, 448)``), 448 x 448 windows at stride 224 (the last window of a row/column is
shifted back inside the image), crop scores summed and divided by the visit count, resized
bilinearly to the original size, argmax.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..common.precision import autocast_context
from .assignment import ASSIGNMENTS, check_assignment
from .classes import ClassSet, resolve_classes
from .geometry import windows_by_shape
from .preprocess import (
    IMAGENET_MEAN_255,
    IMAGENET_STD_255,
    _as_chw_tensor,
    preprocess_image,
    rescale_size,
    sliding_windows,
)
from .text import TextEmbeddingCache

__all__ = [
    "compose_soft_maps",
    "compose_assignment_maps",
    "check_assignment",
    "ASSIGNMENTS",
    "group_class_affinity",
    "crop_class_scores",
    "patch_grid",
    "top_classes",
    "sliding_windows",
    "rescale_size",
    "preprocess_image",
    "GroupViTSegmenter",
    "IMAGENET_MEAN_255",
    "IMAGENET_STD_255",
]

# ---- batched per-crop math -------------------------------------------------------------------


def compose_assignment_maps(attn_dicts: Sequence[dict | None], assignment: str = "soft") -> torch.Tensor:
    """``[B, N, G_last]``: patch-to-final-segment maps, the product of the grouping blocks' maps.

    ``attn_dicts``: per stage ``{'soft': [B, 1, G_i, N_i], 'hard': [B, 1, G_i, N_i]}`` or ``None``
    (stages without grouping). ``assignment='soft'`` (NVlabs' protocol) multiplies the ``soft``
    maps: probabilities. ``'hard'`` multiplies the ``hard`` maps (one-hot over groups in eval mode
    for blocks built with ``hard=True``): each patch belongs to exactly one final segment.
    Equivalent PyTorch: ``m_0[:, 0].mT @ m_1[:, 0].mT @ ...`` with ``m_i = attn_dicts[i][assignment]``.
    """
    check_assignment(assignment)
    maps = None
    for attn in attn_dicts:
        if attn is None:
            continue
        if assignment not in attn:
            raise ValueError(f"the grouping maps have no {assignment!r} entry (keys: {sorted(attn)})")
        stage = attn[assignment]
        if stage.dim() != 4 or stage.shape[1] != 1:
            raise ValueError(f"expected {assignment} maps [B, 1, G, N] (one assignment head), got {tuple(stage.shape)}")
        step = stage[:, 0].transpose(1, 2).float()  # [B, N_i, G_i]
        maps = step if maps is None else maps @ step
    if maps is None:
        raise ValueError("the image encoder returned no grouping maps (no grouping block?)")
    return maps


def compose_soft_maps(attn_dicts: Sequence[dict | None]) -> torch.Tensor:
    """``compose_assignment_maps(attn_dicts, 'soft')``: patch-to-final-segment probabilities."""
    return compose_assignment_maps(attn_dicts, "soft")


def image_class_probs(image_x: torch.Tensor, text: torch.Tensor, logit_scale: torch.Tensor) -> torch.Tensor:
    """``a [B, K]`` of step 3: the image-level class probabilities of projected ``image_x [B, C]``
    against normalised class embeddings ``text [K, C]``."""
    scale = torch.clamp(logit_scale.detach().float().exp(), max=100)
    return (F.normalize(image_x.float(), dim=-1) @ text.float().t() * scale).softmax(dim=-1)


def top_classes(scores: torch.Tensor, topk: int) -> torch.Tensor:
    """``[B, K]`` bool: the ``min(topk, K)`` highest of ``scores [B, K]`` per row, ties to the lower index.

    Class ``k`` is kept when fewer than ``topk`` classes rank before it (a higher score, or the same score
    at a lower index): ``scores.topk(min(topk, K))`` as a mask, in elementwise ops of fixed rank.
    """
    index = torch.arange(scores.shape[-1], device=scores.device)
    s_k, s_j = scores[:, :, None], scores[:, None, :]
    before = (s_j > s_k) | ((s_j == s_k) & (index[None, :] < index[:, None]))  # [B, K, K]: j ranks before k
    return before.sum(dim=-1) < topk


def group_class_affinity(
    image_feat: torch.Tensor, image_x: torch.Tensor, text: torch.Tensor, logit_scale: torch.Tensor, topk: int = 5
) -> torch.Tensor:
    """``Q [B, G, K]`` of step 3 from projected ``image_feat [B, G, C]``, ``image_x [B, C]`` and
    normalised class embeddings ``text [K, C]``."""
    feat = F.normalize(image_feat.float(), dim=-1)
    text = text.float()
    scale = torch.clamp(logit_scale.detach().float().exp(), max=100)
    affinity = feat @ text.t() * scale  # [B, G, K]
    prior = affinity.softmax(dim=-1)
    image_scores = image_class_probs(image_x, text, logit_scale)  # [B, K]
    # the topk best classes, as a rank test: topk(k=min(topk, K)) would make K's size part of the
    # arithmetic, which an exported graph with a dynamic class count cannot carry (docs/export.md)
    keep = top_classes(image_scores, topk)
    masked = affinity.masked_fill(~keep[:, None, :], float("-inf"))
    return masked.softmax(dim=-1) * prior


def crop_class_scores(
    maps: torch.Tensor,
    grid_hw: tuple[int, int],
    crop_hw: tuple[int, int],
    affinity: torch.Tensor,
    *,
    with_bg: bool,
    bg_thresh: float,
) -> torch.Tensor:
    """Steps 2 and 4, batched: ``[B, (1 +) K, h, w]`` class scores of ``B`` crops.

    ``maps [B, N, G]`` (``N = grid_h * grid_w``), ``affinity [B, G, K]``; background first when
    ``with_bg``. Equals, per crop, ``onehot(argmax_G(resize(maps))) @ Q`` with the background rule.
    """
    b, n, g = maps.shape
    gh, gw = grid_hw
    if gh * gw != n:
        raise ValueError(f"maps have {n} patches, not a {gh} x {gw} grid")
    grid = maps.transpose(1, 2).reshape(b, g, gh, gw)
    seg = F.interpolate(grid, size=tuple(crop_hw), mode="bilinear", align_corners=False).argmax(dim=1)  # [B, h, w]
    table = affinity
    if with_bg:
        # the background test looks at max_K Q[seg], a per-segment quantity: decide it per segment
        thresh = torch.clamp(affinity.amax(dim=(1, 2)), max=bg_thresh)  # min(bg_thresh, max Q) per crop
        bg = (affinity.amax(dim=-1) < thresh[:, None]).to(affinity.dtype)  # [B, G]
        table = torch.cat([bg.unsqueeze(-1), affinity], dim=-1)  # [B, G, 1 + K]
    # one gather for every pixel: row seg[b, y, x] of table[b]
    scores = torch.gather(table, 1, seg.reshape(b, -1, 1).expand(-1, -1, table.shape[-1]))  # [B, h*w, C]
    return scores.transpose(1, 2).reshape(b, table.shape[-1], *crop_hw)


def patch_grid(model: nn.Module, h: int | torch.SymInt, w: int | torch.SymInt) -> tuple:
    """The ``(h', w')`` token grid of an ``h x w`` crop: the patch embedding's convolution arithmetic (also on
    the symbolic sizes of an export)."""
    proj = model.img_encoder.patch_embed.proj
    k, s, p = proj.kernel_size, proj.stride, proj.padding
    return (h + 2 * p[0] - k[0]) // s[0] + 1, (w + 2 * p[1] - k[1]) // s[1] + 1


class GroupViTSegmenter:
    """Zero-shot segmentation of images into ``classes`` with a ``MultiLabelContrastive`` model.

    ``classes``: a preset (``'voc'``, ``'context'``, ``'coco'``), a list of names (first
    ``'background'`` for a thresholded background class) or a ``ClassSet``. ``crop_batch_size``
    crops go through the image encoder at once. ``assignment``: compose the grouping blocks'
    ``'soft'`` maps (default, NVlabs' protocol) or their one-hot ``'hard'`` maps.

    ``predict(images)`` -> one ``LongTensor [H, W]`` label map per image (original sizes);
    ``predict_scores(images)`` -> the ``[num_classes, H, W]`` averaged window scores before argmax.
    """

    def __init__(
        self,
        model: nn.Module,
        classes: ClassSet | str | Sequence[str],
        *,
        bg_thresh: float | None = None,
        templates: str | Sequence[str] = "simple",
        crop_size: int = 448,
        stride: int = 224,
        short_side: int = 448,
        max_long_side: int = 2048,
        crop_batch_size: int = 8,
        text_cache: TextEmbeddingCache | None = None,
        autocast_dtype: torch.dtype | None = None,
        topk: int = 5,
        assignment: str = "soft",
    ):
        for name in ("img_encoder", "img_projector", "logit_scale", "encode_text"):
            if not hasattr(model, name):
                raise TypeError(f"model must be a MultiLabelContrastive-like image-text model (no {name!r})")
        if crop_size <= 0 or stride <= 0 or crop_batch_size <= 0:
            raise ValueError("crop_size, stride and crop_batch_size must be positive")
        if isinstance(topk, bool) or not isinstance(topk, int) or topk <= 0:
            raise ValueError(f"topk must be a positive int, got {topk!r}")
        #: which grouping maps are composed: 'soft' (NVlabs) or 'hard' (docs/segmentation.md)
        self.assignment = check_assignment(assignment)
        self.model = model
        if isinstance(classes, ClassSet):
            self.class_set = classes if bg_thresh is None else ClassSet(classes.names, bg_thresh)
        else:
            self.class_set = resolve_classes(classes, bg_thresh)
        self.templates = templates
        self.crop_size = crop_size
        self.stride = stride
        self.short_side = short_side
        self.max_long_side = max_long_side
        self.crop_batch_size = crop_batch_size
        self.text_cache = text_cache if text_cache is not None else TextEmbeddingCache()
        self.autocast_dtype = autocast_dtype
        #: the image-level class filter keeps this many classes (NVlabs: 5)
        self.topk = topk

    @property
    def class_names(self) -> tuple[str, ...]:
        return self.class_set.names

    @property
    def num_classes(self) -> int:
        return len(self.class_set.names)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def text_embedding(self) -> torch.Tensor:
        """``[K, C]`` normalised embeddings of the non-background classes (cached)."""
        return self.text_cache.get(self.model, self.class_set.text_names, self.templates).to(self.device)

    def _grid(self, h: int, w: int) -> tuple[int, int]:
        return patch_grid(self.model, h, w)

    @torch.no_grad()
    def crop_scores(self, crops: torch.Tensor) -> torch.Tensor:
        """``crops [B, 3, h, w]`` (normalised) -> ``[B, num_classes, h, w]`` class scores; one encoder pass."""
        return self.crop_scores_and_image_embedding(crops)[0]

    @torch.no_grad()
    def crop_scores_and_image_embedding(self, crops: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``crop_scores`` and, from the same pass, each crop's projected image embedding ``[B, C]``."""
        model = self.model
        # images are decoded as fp32; a model converted with .half() / .to(torch.bfloat16) gets its own dtype
        crops = crops.to(self.device, dtype=model.img_encoder.patch_embed.proj.weight.dtype)
        with autocast_context(crops.device.type, self.autocast_dtype):
            outs = model.img_encoder(crops, return_attn=True, return_feat=True, as_dict=True)
            image_x = model.img_projector(outs["x"])
            image_feat = model.img_projector(outs["feat"])
        maps = compose_assignment_maps(outs["attn_dicts"], self.assignment)
        affinity = group_class_affinity(image_feat, image_x, self.text_embedding(), model.logit_scale, self.topk)
        h, w = crops.shape[-2:]
        scores = crop_class_scores(
            maps, self._grid(h, w), (h, w), affinity, with_bg=self.class_set.with_bg, bg_thresh=self.class_set.bg_thresh
        )
        return scores, image_x

    @torch.no_grad()
    def predict_scores(self, images: Iterable, *, preprocessed: bool = False) -> list[torch.Tensor]:
        """Averaged sliding-window class scores, resized to each image's original size."""
        was_training = self.model.training
        self.model.eval()
        try:
            return self._predict_scores(list(images), preprocessed)
        finally:
            self.model.train(was_training)

    def _predict_scores(self, images: list, preprocessed: bool) -> list[torch.Tensor]:
        device = self.device
        tensors, sizes = [], []
        for image in images:
            if preprocessed:
                t = image
                size = tuple(t.shape[-2:])
            else:
                raw = _as_chw_tensor(image)
                size = tuple(raw.shape[-2:])
                t = preprocess_image(raw.to(device), self.short_side, self.max_long_side)
            tensors.append(t.to(device))
            sizes.append(size)
        # sized by the first window's scores: a subclass's crop_scores may return more channels
        sums: list[torch.Tensor | None] = [None] * len(tensors)
        counts = [t.new_zeros(1, *t.shape[-2:]) for t in tensors]
        sizes_now = [(t.shape[-2], t.shape[-1]) for t in tensors]
        for chunk in windows_by_shape(sizes_now, self.crop_size, self.stride, self.crop_batch_size):
            crops = torch.stack([tensors[i][:, y1:y2, x1:x2] for i, (y1, y2, x1, x2) in chunk])
            scores = self.crop_scores(crops)
            for (i, (y1, y2, x1, x2)), s in zip(chunk, scores, strict=True):
                if sums[i] is None:
                    sums[i] = tensors[i].new_zeros(s.shape[0], *tensors[i].shape[-2:])
                sums[i][:, y1:y2, x1:x2] += s.to(sums[i].dtype)
                counts[i][:, y1:y2, x1:x2] += 1
        out = []
        for s, c, size in zip(sums, counts, sizes, strict=True):
            avg = s / c
            if tuple(avg.shape[-2:]) != size:
                avg = F.interpolate(avg[None], size=size, mode="bilinear", align_corners=False)[0]
            out.append(avg)
        return out

    @torch.no_grad()
    def predict(self, images: Iterable, *, preprocessed: bool = False) -> list[torch.Tensor]:
        """One ``LongTensor [H, W]`` of label indices (into ``class_names``) per image."""
        return [s.argmax(dim=0) for s in self.predict_scores(images, preprocessed=preprocessed)]

    def __call__(self, image) -> torch.Tensor:
        return self.predict([image])[0]
