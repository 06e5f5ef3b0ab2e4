"""A lever at the CI short run's scale: ``python probe.py OUT NAME SEED [key=value ...]``.

The schedule of tests/train/test_shapes_short_run.py (1,024 training scenes, 64 steps of 32, no warm-up,
32 held-out 128 px scenes, data seed 0) with the overrides given; scores the trained model and the same
architecture untrained (seed 0) at the recipe's test time and appends one JSON line to OUT/probes.jsonl.
An override ``spec.FIELD=VALUE`` sets a field of the training scenes' ``ShapeSpec`` (e.g.
``spec.colour_words=0``: captions without colour words), written into their own folder.
"""

from __future__ import annotations

import json
import os
import sys
import time

import torch

torch.set_num_threads(1)

from groupvit_fast.datasets.shapes import ShapeSpec, write_shapes  # noqa: E402
from groupvit_fast.evaluation.emergence import scene_emergence  # noqa: E402
from groupvit_fast.models.registry import build_model  # noqa: E402
from groupvit_fast.train import load_config  # noqa: E402
from groupvit_fast.train.loop import Trainer  # noqa: E402


def main() -> None:
    out, name, seed, args = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4:]
    fields = {a[5:].split("=")[0]: float(a.split("=")[1]) for a in args if a.startswith("spec.")}
    opts = [a for a in args if not a.startswith("spec.")]
    data = os.path.join(out, "data" + "".join(f"-{k}{v}" for k, v in sorted(fields.items())))
    if not os.path.isfile(os.path.join(data, "eval", "captions.jsonl")):
        write_shapes(data, train_length=1024, num_shards=2, eval_count=32, seed=0, spec=ShapeSpec(**fields))
    run_dir = os.path.join(out, "runs", f"{name}-s{seed}")
    base = [
        f"data.dataset.meta.shapes.path={data}",
        "data.dataset.meta.shapes.length=1024",
        "data.dataset.meta.shapes.prefix=shapes-{000000..000001}.tar",
        "data.batch_size=32",
        "data.num_workers=0",
        "train.epochs=2",
        "train.warmup_epochs=0",
        "train.max_steps=64",
        "print_freq=1",
        f"train.seed={seed}",
    ]
    cfg = load_config("shapes", base + opts, output=run_dir)
    wall, cpu = time.time(), time.process_time()
    trainer = Trainer(cfg, quiet=True, device="cpu")
    trainer.run()
    wall, cpu = time.time() - wall, time.process_time() - cpu
    with open(os.path.join(run_dir, "metrics.jsonl"), encoding="utf-8") as f:
        rows = [r for r in map(json.loads, f) if "loss" in r]
    seg = cfg.evaluate.seg
    tt = {"short_side": seg.short_side, "crop_size": seg.crop_size, "stride": seg.stride, "bg_thresh": seg.bg_thresh}
    trained = scene_emergence(trainer.model, os.path.join(data, "eval"), dataset="shapes", **tt)
    torch.manual_seed(0)
    untrained = scene_emergence(build_model(cfg.model), os.path.join(data, "eval"), dataset="shapes", **tt)
    row = {
        "name": name,
        "seed": seed,
        "opts": args,
        "loss_first8": sum(r["loss"] for r in rows[:8]) / 8,
        "loss_last8": sum(r["loss"] for r in rows[-8:]) / 8,
        "ml_first8": sum(r["multi_label_loss"] for r in rows[:8]) / 8,
        "ml_last8": sum(r["multi_label_loss"] for r in rows[-8:]) / 8,
        "train_wall_s": round(wall, 1),
        "train_cpu_s": round(cpu, 1),
        "loadavg": [round(x, 2) for x in os.getloadavg()],
    }
    for who, s in (("trained", trained), ("untrained", untrained)):
        row[who] = {k: s[k] for k in ("mIoU", "image_top1_present", "oracle_grouping_mIoU", "all_background_mIoU")} | {
            "groups": [g["mean"] for g in s["groups"]]
        }
    with open(os.path.join(out, "probes.jsonl"), "a", encoding="utf-8") as f:
        f.write(json.dumps(row) + "\n")
    t, u = row["trained"], row["untrained"]
    print(
        f"{name} s{seed}: loss {row['loss_first8']:.2f}->{row['loss_last8']:.2f}, ml {row['ml_first8']:.2f}->"
        f"{row['ml_last8']:.2f}; oracle {[round(x, 1) for x in t['oracle_grouping_mIoU']]} vs untrained "
        f"{[round(x, 1) for x in u['oracle_grouping_mIoU']]}; groups {[round(x, 2) for x in t['groups']]} vs "
        f"{[round(x, 2) for x in u['groups']]}; top1 {t['image_top1_present']:.2f}; mIoU {t['mIoU']:.1f}; "
        f"wall {wall:.0f} s cpu {cpu:.0f} s load {row['loadavg'][0]}",
        flush=True,
    )


if __name__ == "__main__":
    main()
