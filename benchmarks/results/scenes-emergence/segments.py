"""How the final segments are recognised: ``python segments.py CKPT DATA/eval [N]``.

For the first N (100) held-out scenes at 64 px, each final segment that holds pixels (hard assignment,
stages chained) gets the ground-truth class most of its pixels have; the text side's prediction for it
is the softmax over the six nouns of its projected feature (the model's logit scale, clamped at 100,
as the segmentation pipeline scores groups). Prints, for background segments, the mean top probability
and the share labelled as an object drawn in the scene, and for object segments the mean top
probability and the share labelled with their own class.
"""

import sys

import torch
import torch.nn.functional as F

from groupvit_fast.checkpoint import load_checkpoint
from groupvit_fast.evaluation.datasets import find_samples
from groupvit_fast.evaluation.emergence import chained_group_ids
from groupvit_fast.segmentation.classes import ClassSet
from groupvit_fast.segmentation.inference import GroupViTSegmenter
from groupvit_fast.segmentation.io import load_image, load_label_mask
from groupvit_fast.segmentation.preprocess import preprocess_image
from groupvit_fast.train.data.scenes import SCENE_CLASSES

torch.set_num_threads(1)
model = load_checkpoint(sys.argv[1]).model.eval()
count = int(sys.argv[3]) if len(sys.argv) > 3 else 100
text = GroupViTSegmenter(model, ClassSet(SCENE_CLASSES, 0.5), short_side=64).text_embedding().float()
scale = model.logit_scale.exp().clamp(max=100).item()
background, objects = [], []  # (top probability, labelled as a drawn object / as its own class)
with torch.no_grad():
    for sample in find_samples("scenes", sys.argv[2])[:count]:
        mask = load_label_mask(sample.mask)
        image = preprocess_image(load_image(sample.image), 64, 128)[None]
        image = F.interpolate(image, size=(64, 64), mode="bilinear", align_corners=False)
        outs = model.img_encoder(image, return_attn=True, return_feat=True, as_dict=True)
        patches = chained_group_ids(outs["attn_dicts"])[-1][0]  # [N]: final group of each patch
        side = int(patches.numel() ** 0.5)
        ids = F.interpolate(patches.reshape(1, 1, side, side).float(), size=tuple(mask.shape))[0, 0].long()
        feats = F.normalize(model.img_projector(outs["feat"]).float(), dim=-1)[0]
        probs = (feats @ text.t() * scale).softmax(dim=-1)  # [G, 6]
        drawn = set(mask.unique().tolist()) - {0}
        for group in ids.unique().tolist():
            label = int(torch.bincount(mask[ids == group].flatten(), minlength=7).argmax())
            top, noun = probs[group].max(dim=0)
            if label == 0:
                background.append((top.item(), int(noun) + 1 in drawn))
            else:
                objects.append((top.item(), int(noun) + 1 == label))


def mean(values):
    return sum(values) / max(1, len(values))


print(
    f"{sys.argv[1]}: logit scale {scale:.1f}; {len(background)} background segments: top probability "
    f"{mean([p for p, _ in background]):.2f}, labelled as a drawn object {mean([d for _, d in background]):.2f}; "
    f"{len(objects)} object segments: top probability {mean([p for p, _ in objects]):.2f}, "
    f"labelled with their class {mean([c for _, c in objects]):.2f}"
)
