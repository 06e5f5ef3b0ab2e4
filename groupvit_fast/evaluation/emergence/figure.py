"""The emergence report's picture (``emergence_figure``)."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from ...common.files import atomic_write
from ...segmentation.classes import ClassSet
from ...segmentation.inference import GroupViTSegmenter, patch_grid
from ...segmentation.io import label_palette, load_image, load_label_mask
from ..datasets import find_samples, get_preset
from .metrics import chained_group_ids, emergence_settings, whole_images

__all__ = ["emergence_figure"]


def _palette(n: int, seed: int = 7) -> list[tuple[int, int, int]]:
    import colorsys
    import random

    rng = random.Random(seed)
    return [
        tuple(int(255 * c) for c in colorsys.hsv_to_rgb((i * 0.618 + rng.random() * 0.05) % 1.0, 0.65, 0.95))
        for i in range(n)
    ]


@torch.no_grad()
def emergence_figure(
    model: nn.Module,
    data_root: str,
    path: str,
    *,
    dataset: str = "scenes",
    count: int = 6,
    cell: int = 96,
    short_side: int | None = None,
    crop_size: int | None = None,
    stride: int | None = None,
    bg_thresh: float | None = None,
) -> None:
    """A PNG of ``count`` held-out scenes, one row each: the image, the stage-1 groups, the stage-2
    groups (the composed hard maps' argmax, one colour per group, of one pass over the whole image at
    the window size), the prediction and the ground truth
    (label colours of ``segment``'s PNGs), each ``cell`` pixels square (nearest-neighbour).
    ``dataset`` and the test-time settings as in ``scene_emergence``."""
    from PIL import Image, ImageDraw

    tt = emergence_settings(dataset, short_side=short_side, crop_size=crop_size, stride=stride, bg_thresh=bg_thresh)
    samples = find_samples(dataset, data_root)[:count]
    names = list(get_preset(dataset).class_names)
    labels_rgb = label_palette(names)
    was_training = model.training
    model.eval()
    try:
        segmenter = GroupViTSegmenter(
            model,
            ClassSet(tuple(names), tt.bg_thresh),
            bg_thresh=tt.bg_thresh,
            **tt.windows(),
        )
        header = 14
        sheet = Image.new("RGB", (5 * cell, header + count * cell), (255, 255, 255))
        draw = ImageDraw.Draw(sheet)
        for col, title in enumerate(("image", "stage-1 groups", "stage-2 groups", "prediction", "ground truth")):
            draw.text((col * cell + 3, 1), title, fill=(0, 0, 0))
        for row, sample in enumerate(samples):
            raw = load_image(sample.image)
            mask = load_label_mask(sample.mask)
            pred = segmenter.predict([raw])[0].cpu()
            x = whole_images([raw], tt.crop_size).to(segmenter.device)
            outs = model.img_encoder(x, return_attn=True, as_dict=True)
            grid = patch_grid(model, *x.shape[-2:])
            panels = []
            sizes = [a["hard"].shape[2] for a in outs["attn_dicts"] if a is not None]  # groups per stage
            for ids, num_groups in zip(chained_group_ids(outs["attn_dicts"]), sizes, strict=True):
                groups = ids[0].reshape(grid).numpy()
                colours = _palette(num_groups)
                panels.append(Image.fromarray(np.asarray([[colours[g] for g in r] for r in groups], dtype=np.uint8)))
            image = Image.fromarray(raw.permute(1, 2, 0).numpy())

            def paint(labels: torch.Tensor) -> Image.Image:
                lut = np.asarray(labels_rgb, dtype=np.uint8)
                return Image.fromarray(lut[labels.numpy().clip(0, len(names) - 1)])

            row_panels = [image, *(panels + panels[-1:])[:2], paint(pred), paint(mask)]
            for col, panel in enumerate(row_panels):
                sheet.paste(panel.resize((cell, cell), Image.NEAREST), (col * cell, header + row * cell))
    finally:
        model.train(was_training)
    atomic_write(path, lambda tmp: sheet.save(tmp, format="PNG"))
