"""Score every finished run of runs.txt and the untrained architectures: ``python score.py RUNS DATA/eval OUT``.

Writes ``OUT/<name>.json`` (``scene_emergence`` at the test-time settings of the flags, by default
the recipe's, read from its config through the resolver (``train/configs/scenes.yml``: short side 448,
64 px windows at stride 32, background threshold 0.5), soft maps, top-5 filter; plus the run's final
logged loss and median images/s) for each ``RUNS/<name>/checkpoint.pth``
not scored yet, and ``untrained-<run>-<seed>`` (the architecture of ``<run>``, drawn with
``torch.manual_seed(seed)``) for the names given with ``--untrained RUN``. One thread, so that it
can share the cores with training.
"""

import argparse
import json
import os

import torch

from groupvit_fast.checkpoint import config_test_time, load_checkpoint
from groupvit_fast.common.files import atomic_write
from groupvit_fast.evaluation.emergence import emergence_settings, scene_emergence
from groupvit_fast.models.registry import build_model
from groupvit_fast.train import load_config


def write_json(path: str, data: dict) -> None:
    def write(tmp: str) -> None:
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(data, f, indent=1)

    atomic_write(path, write)


parser = argparse.ArgumentParser()
parser.add_argument("runs")
parser.add_argument("data")
parser.add_argument("out")
parser.add_argument("--final-step", type=int, default=1024, help="score only checkpoints of this step (finished runs)")
parser.add_argument("--untrained", nargs="*", default=[], help="runs whose architecture to score untrained, seeds 0-2")
parser.add_argument("--only", nargs="*", help="score only these names (e.g. to split the work between cores)")
for flag in ("--short-side", "--crop-size", "--stride"):
    parser.add_argument(flag, type=int, help="test-time setting (default: the recipe's)")
parser.add_argument("--bg-thresh", type=float, help="background threshold (default: the recipe's)")
args = parser.parse_args()
# the flags, else the recipe's config (what its checkpoints carry), else the scenes preset: one resolver
recipe = config_test_time(load_config("scenes"))
given = {"short_side": args.short_side, "crop_size": args.crop_size, "stride": args.stride, "bg_thresh": args.bg_thresh}
settings = emergence_settings("scenes", checkpoint=recipe, **given).as_dict()
torch.set_num_threads(1)
os.makedirs(args.out, exist_ok=True)
jobs = [(name, None) for name in sorted(os.listdir(args.runs)) if os.path.isfile(f"{args.runs}/{name}/checkpoint.pth")]
jobs += [(f"untrained-{run}-{seed}", (run, seed)) for run in args.untrained for seed in range(3)]
for name, untrained in jobs:
    target = f"{args.out}/{name}.json"
    if os.path.exists(target) or (args.only is not None and name not in args.only):
        continue
    extra = {}
    if untrained:
        config = load_checkpoint(f"{args.runs}/{untrained[0]}/checkpoint.pth").config  # (loading builds a model)
        torch.manual_seed(untrained[1])
        model, step = build_model(config), 0
    else:
        ckpt = load_checkpoint(f"{args.runs}/{name}/checkpoint.pth")
        model, step = ckpt.model, ckpt.meta.get("step")
        if step != args.final_step:  # still training
            continue
        lines = [json.loads(line) for line in open(f"{args.runs}/{name}/metrics.jsonl")]
        speeds = sorted(line["images_per_s"] for line in lines if "images_per_s" in line)
        extra = {"final_total_loss": lines[-1].get("total_loss"), "median_images_per_s": speeds[len(speeds) // 2]}
    result = scene_emergence(model, args.data, **settings)
    result.update(name=name, step=step, **extra)
    write_json(target, result)
    print(name, f"mIoU {result['mIoU']:.1f}", flush=True)
