"""``groupvit-fast eval cls|seg`` and ``groupvit-fast prepare-data context|coco-object``.

Under ``torchrun`` (``WORLD_SIZE`` > 1) the commands join a process group (NCCL with GPUs, gloo
without), each rank evaluates its slice on ``cuda:LOCAL_RANK`` and rank 0 writes the report. All
arguments and inputs are checked before the model is loaded; a failure is one line on stderr
(exit status 1) and writes no report.
"""

from __future__ import annotations

import argparse
import os

from ..cli_support import CliError, add_assign_argument, add_test_time_arguments, positive_int, test_time_settings

__all__ = ["add_eval_parser", "add_prepare_parser"]


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


def _cmd_eval_seg(args) -> int:
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


def _cmd_eval_cls(args) -> int:
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


def _common(p: argparse.ArgumentParser, batch: int) -> None:
    p.add_argument("--checkpoint", required=True, help="NVlabs .pth, HF weights or safetensors")
    p.add_argument("--config", help="model config (JSON or NVlabs YAML) when the checkpoint carries none")
    p.add_argument("--out", default="eval_out", help="report folder (default: %(default)s)")
    p.add_argument("--batch-size", type=positive_int, default=batch, help="images per step (default: %(default)s)")
    p.add_argument("--workers", type=int, default=2, help="DataLoader workers per process (default: %(default)s)")
    p.add_argument("--autocast", choices=("bf16", "fp16"), help="mixed precision for the image encoder (GPU)")
    p.add_argument("--max-images", type=positive_int, help="evaluate only the first N images")
    p.add_argument(
        "--device", help="cpu, cuda, cuda:1 ... (default: cuda if available; cuda:LOCAL_RANK under torchrun)"
    )
    p.add_argument(
        "--trust-pickle", action="store_true", help="allow full unpickling of the checkpoint (only for files you trust)"
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def add_eval_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> argparse.ArgumentParser:
    """Register ``eval seg`` and ``eval cls`` on the top-level ``groupvit-fast`` subparsers."""
    from .datasets import DATASETS

    ev = subparsers.add_parser("eval", help="zero-shot evaluation: ImageNet top-1 (cls), benchmark mIoU (seg)")
    sub = ev.add_subparsers(dest="eval_command", required=True)
    seg = sub.add_parser("seg", help="zero-shot mIoU on VOC, Context, COCO-Object, ADE20K or Cityscapes")
    seg.add_argument("--dataset", required=True, choices=tuple(DATASETS), metavar="|".join(DATASETS))
    seg.add_argument("--data-root", required=True, help="folder holding the dataset's layout (docs/evaluation.md)")
    seg.add_argument("--split", default="val", help="split to evaluate (default: %(default)s)")
    seg.add_argument(
        "--bg-thresh",
        type=float,
        help="background threshold (default: the checkpoint config's evaluate.seg.bg_thresh, else the dataset's)",
    )
    add_test_time_arguments(seg, "the dataset's")
    seg.add_argument("--topk", type=positive_int, default=5, help="image-level class filter (default: %(default)s)")
    add_assign_argument(seg)
    seg.add_argument("--templates", default="simple", help="prompt template set (default: %(default)s)")
    seg.add_argument(
        "--crop-batch-size", type=positive_int, default=8, help="448x448 crops per encoder call (default: %(default)s)"
    )
    seg.add_argument("--overlays", type=int, default=0, help="write overlay PNGs of the first N images")
    _common(seg, 4)
    seg.set_defaults(func=_cmd_eval_seg)
    cls = sub.add_parser("cls", help="zero-shot top-1/top-5 on ImageNet val (ImageFolder or webdataset shards)")
    cls.add_argument(
        "--data",
        required=True,
        help="val/<wnid>/*.JPEG folder, a folder of .tar shards, or 'imagenet-val-{000000..000049}.tar'",
    )
    cls.add_argument("--templates", default="subset", help="subset (NVlabs' 7, default), full (CLIP's 80), simple")
    cls.add_argument("--class-names", help="file with one class name a line (default: the 1000 ImageNet names)")
    cls.add_argument(
        "--resize", type=positive_int, default=256, help="shorter side before the crop (default: %(default)s)"
    )
    cls.add_argument("--crop", type=positive_int, default=224, help="centre crop (default: %(default)s)")
    cls.add_argument("--cache-dir", help="cache the text classifier here per (checkpoint, classes, templates)")
    _common(cls, 64)
    cls.set_defaults(func=_cmd_eval_cls)
    return ev


def _cmd_prepare(args) -> int:
    from .prepare import convert_coco_object, convert_context

    try:
        if args.dataset == "scenes":
            from ..datasets.scenes import SceneSpec, write_scenes

            spec = SceneSpec(args.min_size, args.max_size, args.min_objects, args.max_objects)
            folders = write_scenes(
                args.out,
                train_length=args.train_length,
                num_shards=args.shards,
                eval_count=args.eval_count,
                seed=args.seed,
                spec=spec,
            )
            print(
                f"wrote {args.train_length} training scenes in {args.shards} shards under {folders['train']} and "
                f"{args.eval_count} held-out scenes with masks under {folders['eval']}"
            )
        elif args.dataset == "shapes":
            from ..datasets.shapes import ShapeSpec, write_shapes

            spec = ShapeSpec(
                args.min_size, args.max_size, args.min_objects, args.max_objects, args.min_radius, args.max_radius
            )
            folders = write_shapes(
                args.out,
                train_length=args.train_length,
                num_shards=args.shards,
                eval_count=args.eval_count,
                seed=args.seed,
                spec=spec,
                # held-out objects keep the default radii whatever the training ones
                eval_spec=ShapeSpec(args.eval_size, args.eval_size, args.min_objects, args.max_objects),
            )
            print(
                f"wrote {args.train_length} training scenes of shapes in {args.shards} shards under {folders['train']} "
                f"and {args.eval_count} held-out scenes with masks under {folders['eval']}"
            )
        elif args.dataset == "context":
            counts = convert_context(args.devkit, args.json, progress=not args.quiet)
            print(f"wrote PASCAL Context labels: {', '.join(f'{k} {v}' for k, v in sorted(counts.items()))}")
        else:
            n = convert_coco_object(args.stuff_dir, args.out_root, args.split, progress=not args.quiet)
            print(f"wrote {n} COCO-Object label maps under {args.out_root}")
    except ValueError as err:
        raise CliError(str(err)) from None
    return 0


def _generated_arguments(p: argparse.ArgumentParser, side: str) -> None:
    """The arguments ``prepare-data scenes`` and ``prepare-data shapes`` share (their sizes are ``side``)."""
    p.add_argument("--out", required=True, help="output folder (gets train/ and eval/)")
    p.add_argument("--train-length", type=positive_int, default=16384, help="training scenes (default: %(default)s)")
    p.add_argument("--shards", type=positive_int, default=8, help="training shards (default: %(default)s)")
    p.add_argument("--eval-count", type=positive_int, default=200, help="held-out scenes (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default: %(default)s)")
    p.add_argument("--min-size", type=positive_int, default=64, help=f"smallest {side} (default: %(default)s)")
    p.add_argument("--max-size", type=positive_int, default=128, help=f"largest {side} (default: %(default)s)")
    p.add_argument("--min-objects", type=positive_int, default=1, help="default: %(default)s")
    p.add_argument("--max-objects", type=positive_int, default=3, help="default: %(default)s (at most 3)")


def add_prepare_parser(
    subparsers: argparse._SubParsersAction[argparse.ArgumentParser],
) -> argparse.ArgumentParser:
    """Register ``prepare-data context``, ``coco-object``, ``scenes`` and ``shapes``."""
    prep = subparsers.add_parser(
        "prepare-data", help="build PASCAL Context / COCO-Object label maps, or generate the scenes or shapes dataset"
    )
    sub = prep.add_subparsers(dest="dataset", required=True)
    scenes = sub.add_parser(
        "scenes",
        help="generated scenes: training shards (captions + nouns) and a held-out "
        "split with label masks (docs/training.md)",
    )
    _generated_arguments(scenes, "image side")
    shapes = sub.add_parser(
        "shapes",
        help="generated shapes in shared colours: training shards (captions + nouns) and a held-out "
        "split with label masks (docs/training.md)",
    )
    _generated_arguments(shapes, "training side")
    shapes.add_argument("--eval-size", type=positive_int, default=128, help="held-out side (default: %(default)s)")
    shapes.add_argument(
        "--min-radius", type=float, default=0.12, help="training objects' radius / side (default: %(default)s)"
    )
    shapes.add_argument(
        "--max-radius", type=float, default=0.25, help="training objects' radius / side (default: %(default)s)"
    )
    ctx = sub.add_parser("context", help="SegmentationClassContext from Detail's trainval_merged.json")
    ctx.add_argument("--devkit", required=True, help="the VOCdevkit folder (holding VOC2010)")
    ctx.add_argument("--json", required=True, help="trainval_merged.json")
    coco = sub.add_parser("coco-object", help="*_instanceTrainIds.png from COCO-Stuff-164k label maps")
    coco.add_argument("--stuff-dir", required=True, help="stuffthingmaps_trainval2017/val2017")
    coco.add_argument("--out-root", required=True, help="the COCO-Object root (gets annotations/<split>2017)")
    coco.add_argument("--split", default="val", help="default: %(default)s")
    for p in (ctx, coco, scenes, shapes):
        p.add_argument("--quiet", action="store_true", help="no progress bar")
        p.set_defaults(func=_cmd_prepare)
    return prep
