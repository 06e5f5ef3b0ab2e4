"""What ``groupvit-fast eval cls|seg`` runs (the parsers are in ``groupvit_fast/cli/evaluate.py``).

Under ``torchrun`` (``WORLD_SIZE`` > 1) the commands join a process group (NCCL with GPUs, gloo
without), each rank evaluates its slice on ``cuda:LOCAL_RANK`` and rank 0 writes the report. All
arguments and inputs are checked before the model is loaded; a failure is one line on stderr
(exit status 1) and writes no report.
"""

from __future__ import annotations

import argparse
import os

from ..cli_support import CliError, test_time_settings

__all__ = ["run_eval_seg", "run_eval_cls"]


def _init_distributed(args) -> tuple[int, int]:
    """``(rank, world)``; under torchrun, joins the process group and sets ``args.device`` to this rank's."""
    from ..common.distributed import join_process_group, launched_world_size, rank_and_world

    if launched_world_size() <= 1:
        return rank_and_world()
    try:
        info = join_process_group(args.device)
    except ValueError as err:
        raise CliError(str(err)) from None
    args.device = str(info.device)
    return info.rank, info.world


def _check_out(out: str) -> None:
    if os.path.exists(out) and not os.path.isdir(out):
        raise CliError(f"{out}: exists and is not a folder")


def _run(args, evaluate) -> int:
    """Shared driver: distributed set-up, model, evaluation, report on rank 0."""
    from ..cli_support import build_model_from_args as _build_model
    from ..common.distributed import launched_world_size, leave_process_group
    from .report import markdown_table, write_report

    _check_out(args.out)
    rank, _ = _init_distributed(args)
    try:
        if args.checkpoint is None or not os.path.isfile(args.checkpoint):
            raise CliError(f"{args.checkpoint}: no such checkpoint file")
        model = _build_model(args)
        try:
            result, name, class_names = evaluate(model)
        except (ValueError, TypeError, ImportError) as err:
            raise CliError(str(err)) from None
        if rank == 0:
            paths = write_report(result, args.out, name, class_names)
            print(markdown_table(result).splitlines()[0].lstrip("# "))
            print(f"wrote {', '.join(paths[:2])}" + (f" and {len(paths) - 2} overlay(s)" if len(paths) > 2 else ""))
    finally:
        if launched_world_size() > 1:
            leave_process_group()
    return 0


def run_eval_seg(args: argparse.Namespace) -> int:
    from .datasets import check_sizes, find_samples, get_preset
    from .segmentation import evaluate_segmentation

    try:
        preset = get_preset(args.dataset)
        # the layout before the model: a wrong --data-root fails in a second, not after loading weights
        samples = find_samples(preset.name, args.data_root, args.split)
        check_sizes(samples[: args.max_images] if args.max_images else samples)
    except ValueError as err:
        raise CliError(str(err)) from None

    def evaluate(model):
        # flags, else the checkpoint's training config, else the dataset's (docs/segmentation.md,
        # "Test-time settings from the checkpoint")
        tt = test_time_settings(args, {"short_side": None, "crop_size": None, "stride": None, "bg_thresh": None})
        result = evaluate_segmentation(
            model,
            dataset=preset.name,
            data_root=args.data_root,
            bg_thresh=tt["bg_thresh"],
            topk=args.topk,
            batch_size=args.batch_size,
            num_workers=args.workers,
            progress=not args.quiet,
            split=args.split,
            templates=args.templates,
            crop_batch_size=args.crop_batch_size,
            autocast=args.autocast,
            max_images=args.max_images,
            keep_predictions=args.overlays,
            assignment=args.assign,
            short_side=tt["short_side"],
            crop_size=tt["crop_size"],
            stride=tt["stride"],
        )
        result["settings"]["source"] = tt["source"]
        return result, preset.name, preset.class_names

    return _run(args, evaluate)


def run_eval_cls(args: argparse.Namespace) -> int:
    from .classification import evaluate_classification, resolve_templates

    try:
        resolve_templates(args.templates)
    except ValueError as err:
        raise CliError(str(err)) from None
    names = None
    if args.class_names:
        if not os.path.isfile(args.class_names):
            raise CliError(f"{args.class_names}: no such class-name file")
        with open(args.class_names, encoding="utf-8") as f:
            names = [line.strip() for line in f if line.strip()]
    if not os.path.exists(args.data) and not any(c in args.data for c in "*?[{"):
        raise CliError(f"{args.data}: no such folder or shard")

    def evaluate(model):
        result = evaluate_classification(
            model,
            args.data,
            class_names=names,
            templates=args.templates,
            batch_size=args.batch_size,
            num_workers=args.workers,
            resize=args.resize,
            crop=args.crop,
            progress=not args.quiet,
            cache_dir=args.cache_dir,
            checkpoint=args.checkpoint if args.cache_dir else None,
            max_images=args.max_images,
            autocast=args.autocast,
        )
        return result, "classification", result["class_names"]

    return _run(args, evaluate)
