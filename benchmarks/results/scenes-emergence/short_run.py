"""The CI short run's schedule, scored for mIoU: ``python short_run.py DIR [SEED] [STEPS]``.

Writes 2,048 training and 64 held-out scenes (seed 0) under ``DIR/scenes``, trains the `scenes` recipe
for STEPS (96) steps of 64 with no warm-up as tests/train/test_scenes_short_run.py does, then scores
it and the same architecture untrained at 64 px and at the recipe's test time (448 px, 64 px windows).
"""

import sys
import time

import torch

from groupvit_fast.datasets.scenes import write_scenes
from groupvit_fast.evaluation.emergence import scene_emergence
from groupvit_fast.models.registry import build_model
from groupvit_fast.train import load_config
from groupvit_fast.train.loop import Trainer

root = sys.argv[1]
seed = int(sys.argv[2]) if len(sys.argv) > 2 else 0
steps = int(sys.argv[3]) if len(sys.argv) > 3 else 96
data = root + "/scenes"
start = time.time()
write_scenes(data, train_length=2048, num_shards=2, eval_count=64, seed=0)
opts = [
    f"data.dataset.meta.scenes.path={data}",
    "data.dataset.meta.scenes.length=2048",
    "data.dataset.meta.scenes.prefix=scenes-{000000..000001}.tar",
    "data.batch_size=64",
    "data.num_workers=0",
    f"train.epochs={max(3, steps // 32)}",
    "train.warmup_epochs=0",
    f"train.max_steps={steps}",
    f"train.seed={seed}",
]
trainer = Trainer(load_config("scenes", opts, output=root + "/run"), quiet=True, device="cpu")
trainer.run()
print(f"steps {steps} seed {seed}: scenes and training {time.time() - start:.0f} s", flush=True)
keys = ("mIoU", "no_grouping_mIoU", "window_no_grouping_mIoU", "window_classifier_mIoU", "all_background_mIoU")
for short_side in (64, 448):
    trained = scene_emergence(trainer.model, data + "/eval", short_side=short_side, crop_size=64, stride=32)
    torch.manual_seed(0)
    untrained = scene_emergence(build_model(trainer.cfg.model), data + "/eval", short_side=short_side)
    print(short_side, {k: round(trained[k], 1) for k in keys}, "untrained mIoU", round(untrained["mIoU"], 1))
