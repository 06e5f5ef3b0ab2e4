"""One row of the shapes report: ``python run.py OUT NAME SEED [key=value ...]``.

Writes (once) the shapes data under ``OUT/data`` (8,192 training scenes in 8 shards, 96 held-out 128 px
scenes, data seed 0), trains the `shapes` recipe with the overrides given (``--opts`` syntax, e.g.
``train.base_lr=0.016``) and ``train.seed=SEED`` on one thread, then scores the trained model and the same
architecture untrained on the held-out scenes at the recipe's test time (the faithful miniature: 128 px
short side, 128 px windows, stride 64) and, as an extra row, at 64 px. Appends one JSON line to
``OUT/runs.jsonl``: the scores, the baselines, groups used on 3-object scenes, the final losses, wall and
process CPU seconds and the load average (the machine is shared: wall time is inflated).
"""

from __future__ import annotations

import json
import os
import sys
import time

import torch

torch.set_num_threads(1)

from baselines import groups_on_three_object_scenes, saturation_no_grouping  # noqa: E402

from groupvit_fast.datasets.shapes import write_shapes  # noqa: E402
from groupvit_fast.evaluation.emergence import scene_emergence  # noqa: E402
from groupvit_fast.models.registry import build_model  # noqa: E402
from groupvit_fast.train import load_config  # noqa: E402
from groupvit_fast.train.loop import Trainer  # noqa: E402

TRAIN, SHARDS, EVAL = 8192, 8, 96
KEYS = (
    "mIoU",
    "no_grouping_mIoU",
    "window_classifier_mIoU",
    "all_background_mIoU",
    "image_top1_present",
    "oracle_grouping_mIoU",
    "groups",
    "per_class",
)


def main() -> None:
    out, name, seed, opts = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4:]
    data = os.path.join(out, "data")
    if not os.path.isfile(os.path.join(data, "eval", "captions.jsonl")):
        write_shapes(data, train_length=TRAIN, num_shards=SHARDS, eval_count=EVAL, seed=0)
    overrides = [
        f"data.dataset.meta.shapes.path={data}",
        f"data.dataset.meta.shapes.length={TRAIN}",
        f"data.dataset.meta.shapes.prefix=shapes-{{000000..{SHARDS - 1:06d}}}.tar",
        "data.num_workers=0",
        f"train.seed={seed}",
        *opts,
    ]
    cfg = load_config("shapes", overrides, output=os.path.join(out, "runs", f"{name}-s{seed}"))
    wall, cpu = time.time(), time.process_time()
    trainer = Trainer(cfg, quiet=True, device="cpu")
    last = trainer.run()
    wall, cpu = time.time() - wall, time.process_time() - cpu
    load = os.getloadavg()
    seg = cfg.evaluate.seg
    eval_dir = os.path.join(data, "eval")
    torch.manual_seed(0)
    untrained = build_model(cfg.model)
    row = {
        "name": name,
        "seed": seed,
        "opts": opts,
        "steps": trainer.global_step if hasattr(trainer, "global_step") else None,
        "last": {k: v for k, v in last.items() if isinstance(v, (int, float))} if isinstance(last, dict) else None,
        "train_wall_s": round(wall, 1),
        "train_cpu_s": round(cpu, 1),
        "loadavg_after": [round(x, 2) for x in load],
        "test_time": {"short_side": seg.short_side, "crop_size": seg.crop_size, "stride": seg.stride},
    }
    for label, settings in (("miniature", (seg.short_side, seg.crop_size, seg.stride)), ("at_64", (64, 64, 32))):
        tt = dict(zip(("short_side", "crop_size", "stride"), settings, strict=True), bg_thresh=seg.bg_thresh)
        for who, model in (("trained", trainer.model), ("untrained", untrained)):
            scores = scene_emergence(model, eval_dir, dataset="shapes", **tt)
            row[f"{label}_{who}"] = {k: scores[k] for k in KEYS}
            if label == "miniature":
                row[f"{label}_{who}"]["saturation_no_grouping_mIoU"] = saturation_no_grouping(model, eval_dir, **tt)
                row[f"{label}_{who}"]["groups_on_3_object_scenes"] = groups_on_three_object_scenes(
                    model, eval_dir, tt["crop_size"]
                )
    with open(os.path.join(out, "runs.jsonl"), "a", encoding="utf-8") as f:
        f.write(json.dumps(row) + "\n")
    m, u = row["miniature_trained"], row["miniature_untrained"]
    print(
        f"{name} s{seed}: mIoU {m['mIoU']:.1f} (untrained {u['mIoU']:.1f}), top1 {m['image_top1_present']:.2f}, "
        f"oracle {m['oracle_grouping_mIoU']} (untrained {u['oracle_grouping_mIoU']}), groups "
        f"{[round(g['mean'], 1) for g in m['groups']]}, wall {wall:.0f} s cpu {cpu:.0f} s load {load[0]:.1f}",
        flush=True,
    )


if __name__ == "__main__":
    main()
