"""Held-out mIoU of checkpoints at several test-time settings, on a validation split of scenes that is
neither the training data nor the held-out split the tables use (``write_scene_eval(DIR, 200, seed=1)``):
``python select_test_time.py CKPT VAL SHORT:CROP:STRIDE:THRESH ...``; one line per setting.
"""

import sys
import time

import torch

from groupvit_fast.checkpoint import load_checkpoint
from groupvit_fast.evaluation.emergence import scene_emergence

torch.set_num_threads(1)
checkpoint, data = sys.argv[1], sys.argv[2]
model = load_checkpoint(checkpoint).model
for spec in sys.argv[3:]:
    short_side, crop_size, stride, bg_thresh = spec.split(":")
    start = time.time()
    settings = {"short_side": int(short_side), "crop_size": int(crop_size), "stride": int(stride)}
    result = scene_emergence(model, data, bg_thresh=float(bg_thresh), **settings)
    print(checkpoint.split("/")[-2], spec, f"mIoU {result['mIoU']:.1f}", f"{time.time() - start:.0f}s", flush=True)
