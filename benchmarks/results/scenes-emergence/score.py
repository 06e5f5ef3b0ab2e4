"""Score a checkpoint as the table does: ``python score.py CKPT DATA/eval THRESH:TOPK:ASSIGN ...``
(e.g. ``0.5:5:soft 0.9:3:soft``); prints mIoU, the no-grouping baseline, the share of images whose top
class is drawn, the groups used per stage and the per-class IoU."""

import sys

import torch

from groupvit_fast.checkpoint import load_checkpoint
from groupvit_fast.evaluation.emergence import scene_emergence

torch.set_num_threads(1)
ckpt = load_checkpoint(sys.argv[1])
model = ckpt.model.eval()
for spec in sys.argv[3:]:
    thresh, topk, assign = spec.split(":")
    r = scene_emergence(model, sys.argv[2], bg_thresh=float(thresh), topk=int(topk), assignment=assign)
    per_class = ", ".join(f"{k}: {v:.0f}" for k, v in r["per_class"].items() if v is not None)
    print(
        f"{sys.argv[1]} step {ckpt.meta.get('step')} thr {thresh} topk {topk} {assign}: mIoU {r['mIoU']:.1f} "
        f"nogroup {r['no_grouping_mIoU']:.1f} top1present {r['image_top1_present']:.3f} "
        f"groups {[round(g['mean'], 2) for g in r['groups']]} per_class {{{per_class}}}",
        flush=True,
    )
