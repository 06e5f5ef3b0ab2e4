"""What ``groupvit-fast eval emergence`` runs (the parser is in ``groupvit_fast/cli/evaluate.py``): the
trained model, the same architecture untrained (seed 0) and the baselines on the held-out scenes; writes
``emergence.json`` and ``emergence.png`` into ``--out`` and prints one summary line.

Test-time settings: a flag, else the checkpoint's training config (``evaluate.seg``), else the dataset's
preset (``segmentation.test_time.resolve_test_time``), as ``eval seg`` resolves them.
"""

from __future__ import annotations

import argparse
import os

import torch

from ...cli_support import CliError
from ...segmentation.io import save_json
from .figure import emergence_figure
from .metrics import emergence_settings, scene_emergence

__all__ = ["run_eval_emergence", "summary_line"]


def _rounded(values: list[float | None]) -> list[float | None]:
    return [None if v is None else round(v, 1) for v in values]


def summary_line(report: dict) -> str:
    """One line of the report's numbers: the trained model's mIoU against every baseline."""
    t, u = report["trained"], report["untrained"]
    return (
        f"mIoU trained {t['mIoU']:.1f}, untrained {u['mIoU']:.1f}, no grouping {t['no_grouping_mIoU']:.1f}, "
        f"window class on the segments' foreground {t['window_no_grouping_mIoU']:.1f}, window classifier "
        f"{t['window_classifier_mIoU']:.1f}, all background {t['all_background_mIoU']:.1f}; groups per stage trained "
        f"{[round(g['mean'], 2) for g in t['groups']]}, untrained {[round(g['mean'], 2) for g in u['groups']]}; "
        f"oracle grouping mIoU per stage trained {_rounded(t['oracle_grouping_mIoU'])}, untrained "
        f"{_rounded(u['oracle_grouping_mIoU'])}, patch grid {t['patch_grid_mIoU']:.1f}"
    )


def run_eval_emergence(args: argparse.Namespace) -> int:
    from ...checkpoint import load_checkpoint
    from ...models.registry import build_model
    from ..datasets import find_samples

    if not os.path.isfile(args.checkpoint):
        raise CliError(f"{args.checkpoint}: no such checkpoint file")
    if os.path.exists(args.out) and not os.path.isdir(args.out):
        raise CliError(f"{args.out}: exists and is not a folder")
    try:
        find_samples(args.dataset, args.data_root)  # the layout before the model
        ckpt = load_checkpoint(args.checkpoint, trust_pickle=args.trust_pickle)
        tt = emergence_settings(
            args.dataset,
            short_side=args.short_side,
            crop_size=args.crop_size,
            stride=args.stride,
            bg_thresh=args.bg_thresh,
            checkpoint=ckpt.meta.get("test_time"),
        )
    except ValueError as err:
        raise CliError(str(err)) from None
    settings = tt.as_dict()
    common = {"dataset": args.dataset, "max_images": args.max_images, **settings}
    torch.manual_seed(0)
    untrained = build_model(ckpt.config)
    report = {
        "checkpoint": args.checkpoint,
        "step": ckpt.meta.get("step"),
        "test_time": settings,
        "test_time_source": {key: tt.source[key] for key in settings},
        "trained": scene_emergence(ckpt.model, args.data_root, **common),
        "untrained": scene_emergence(untrained, args.data_root, **common),
    }
    os.makedirs(args.out, exist_ok=True)
    save_json(os.path.join(args.out, "emergence.json"), report)  # atomically, as every report
    figure = os.path.join(args.out, "emergence.png")
    emergence_figure(ckpt.model, args.data_root, figure, dataset=args.dataset, count=args.figure_count, **settings)
    print(summary_line(report))
    return 0
