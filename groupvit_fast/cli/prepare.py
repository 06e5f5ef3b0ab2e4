"""``groupvit-fast prepare-data scenes|shapes|context|coco-object``: generate the scenes or shapes data set
(shards need the ``train`` extra) or build the PASCAL Context / COCO-Object label maps (the ``eval`` extra)."""

from __future__ import annotations

import argparse

from ..cli_support import CliError, positive_int, require_command_extra


def run(args: argparse.Namespace) -> int:
    try:
        if args.dataset == "scenes":
            require_command_extra("prepare-data scenes", "train")  # the shards: webdataset
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
            require_command_extra("prepare-data shapes", "train")  # the shards: webdataset
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
            require_command_extra("prepare-data context", "eval")
            from ..evaluation.prepare import convert_context

            counts = convert_context(args.devkit, args.json, progress=not args.quiet)
            print(f"wrote PASCAL Context labels: {', '.join(f'{k} {v}' for k, v in sorted(counts.items()))}")
        else:
            require_command_extra("prepare-data coco-object", "eval")
            from ..evaluation.prepare import convert_coco_object

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


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register ``prepare-data context``, ``prepare-data coco-object`` and ``prepare-data scenes``."""
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
        p.set_defaults(func=run)
    return prep
