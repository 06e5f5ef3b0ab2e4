"""``groupvit-fast segment IMAGE_OR_DIR --classes voc|NAME NAME ...``: zero-shot segmentation of one image or
every image of a folder (docs/segmentation.md; the ``text`` extra for the tokenizer).

Writes ``<stem>_label.png`` (palette PNG), ``<stem>_overlay.png`` and ``<stem>.json`` (per-class pixel
fractions) per image, and ``summary.json`` (with mIoU when ``--gt`` is given); ``--assign hard`` composes
the grouping blocks' one-hot maps instead of the soft ones. In a folder, an image (or its ground truth)
that cannot be read is reported in one line and skipped: every readable image is still written, and the
command exits with status 1 at the end (``--strict`` stops at the first instead).
"""

from __future__ import annotations

import argparse
import math
import os
import sys

from ..cli_support import (
    PROG,
    CliError,
    add_assign_argument,
    add_test_time_arguments,
    build_model_from_args,
    input_images,
    positive_int,
    require_command_extra,
    test_time_settings,
)


def _inputs(path: str) -> list[str]:
    return input_images(path)


def _gt_for(gt: str | None, image_path: str, single: bool) -> str | None:
    if gt is None:
        return None
    if os.path.isdir(gt):
        stem = os.path.splitext(os.path.basename(image_path))[0]
        for ext in (".png", ".PNG"):
            candidate = os.path.join(gt, stem + ext)
            if os.path.isfile(candidate):
                return candidate
        raise CliError(f"{gt}: no ground-truth mask {stem}.png for {image_path}")
    if os.path.isfile(gt):
        if not single:
            raise CliError(f"--gt {gt} is a file but the input is a folder: give a folder of masks")
        return gt
    raise CliError(f"{gt}: no such file or folder")


def _class_set(args: argparse.Namespace):
    from ..segmentation import resolve_classes

    # "--classes cat dog", "--classes cat,dog" and "--classes 'traffic light',car" all work
    tokens = [part.strip() for arg in args.classes for part in arg.split(",")]
    tokens = [t for t in tokens if t] or [""]
    try:
        return resolve_classes(tokens[0] if len(tokens) == 1 else tokens, args.bg_thresh)
    except ValueError as err:
        raise CliError(str(err)) from None


def _segmenter(args: argparse.Namespace, class_set):
    """The model's segmenter at the test-time settings, and those settings."""
    from ..segmentation import GroupViTSegmenter, resolve_classes

    model = build_model_from_args(args)
    # flags, else the checkpoint's training config, else NVlabs' protocol (docs/segmentation.md,
    # "Test-time settings from the checkpoint"): a 64 px recipe is not cut into 448 px windows
    tt = test_time_settings(args)
    try:
        if tt.bg_thresh is not None and class_set.with_bg:
            class_set = resolve_classes(list(class_set.names), tt.bg_thresh)
        segmenter = GroupViTSegmenter(
            model,
            class_set,
            templates=args.templates,
            crop_batch_size=args.crop_batch_size,
            assignment=args.assign,
            **tt.windows(),
        )
        segmenter.text_embedding()  # tokeniser and text encoder once, before the progress bar
    except (ImportError, ValueError) as err:
        raise CliError(str(err)) from None
    return segmenter, class_set, tt


def _read(path: str, gt: str | None, single: bool):
    """``(image, mask or None)`` of one input; ``ValueError``/``CliError`` with the culprit's name."""
    from ..segmentation import load_image, load_label_mask

    image = load_image(path)
    gt_path = _gt_for(gt, path, single)
    return image, (load_label_mask(gt_path) if gt_path is not None else None)


def run_or_onnx(args: argparse.Namespace) -> int:
    """``segment``: an export folder on onnxruntime with ``--onnx`` (docs/export.md, "The runner"), else the model."""
    if args.onnx:
        from ..export.cli import segment_with_onnx

        return segment_with_onnx(args)
    return run(args)


def run(args: argparse.Namespace) -> int:  # noqa: C901 (one loop: read, predict, score, write, per image)
    require_command_extra("segment", "text")
    from tqdm import tqdm

    from ..segmentation import ConfusionMatrix, class_fractions, save_json, save_label_png, save_overlay_png

    class_set = _class_set(args)
    images = _inputs(args.input)
    single = len(images) == 1 and os.path.isfile(args.input)
    if args.gt is not None and not os.path.exists(args.gt):
        raise CliError(f"{args.gt}: no such file or folder")
    out_dir = args.out
    if os.path.exists(out_dir) and not os.path.isdir(out_dir):
        raise CliError(f"{out_dir}: exists and is not a folder")
    os.makedirs(out_dir, exist_ok=True)
    segmenter, class_set, tt = _segmenter(args, class_set)

    names = list(class_set.names)
    confusion = ConfusionMatrix(len(names)) if args.gt is not None else None
    per_image: dict[str, dict] = {}
    failed: dict[str, str] = {}

    def fail(path: str, reason: str) -> None:
        if args.strict or single:
            raise CliError(reason)
        failed[path] = reason
        print(f"{PROG}: error: {reason} (skipped)", file=sys.stderr)

    for start in tqdm(
        range(0, len(images), args.batch_size),
        desc="segment",
        unit="batch",
        disable=args.quiet or None,
        file=sys.stderr,
    ):
        paths, batch, masks = [], [], []
        for path in images[start : start + args.batch_size]:
            try:
                image, mask = _read(path, args.gt, single)
            except (ValueError, CliError) as err:
                fail(path, str(err))
                continue
            paths.append(path)
            batch.append(image)
            masks.append(mask)
        if not batch:
            continue
        labels = segmenter.predict(batch)
        for path, image, label, mask in zip(paths, batch, labels, masks, strict=True):
            stem = os.path.splitext(os.path.basename(path))[0]
            label = label.cpu()
            if mask is not None:
                if tuple(mask.shape) != tuple(label.shape):
                    fail(path, f"{path}: ground truth is {tuple(mask.shape)}, the image {tuple(label.shape)}")
                    continue
                try:
                    confusion.update(label, mask)
                except ValueError as err:
                    fail(path, f"{path}: {err}")
                    continue
            fractions = class_fractions(label, names)
            save_label_png(os.path.join(out_dir, f"{stem}_label.png"), label, names)
            if not args.no_overlay:
                save_overlay_png(os.path.join(out_dir, f"{stem}_overlay.png"), image, label, names)
            record = {"image": path, "size": list(label.shape), "fractions": fractions}
            save_json(os.path.join(out_dir, f"{stem}.json"), {"classes": names, **record})
            per_image[stem] = {k: v for k, v in fractions.items() if v > 0}
    summary = {
        "classes": names,
        "background_threshold": class_set.bg_thresh if class_set.with_bg else None,
        "assignment": args.assign,
        "checkpoint": args.checkpoint,
        "test_time": {
            "short_side": tt.short_side,
            "crop_size": tt.crop_size,
            "stride": tt.stride,
            "source": dict(tt.source),
        },
        "images": per_image,
        "failed": failed,
    }
    if confusion is not None:
        ious = confusion.iou()
        summary["miou"] = confusion.miou()
        summary["pixel_accuracy"] = confusion.pixel_accuracy()
        summary["iou"] = {n: (None if math.isnan(v) else v) for n, v in zip(names, ious, strict=True)}
        if summary["miou"] != summary["miou"]:  # NaN: no labelled pixel
            summary["miou"] = None
        print(f"mIoU {100 * summary['miou']:.2f}" if summary["miou"] is not None else "mIoU n/a (no labelled pixel)")
    save_json(os.path.join(out_dir, "summary.json"), summary)
    print(f"wrote {len(per_image)} result(s) to {out_dir}")
    if failed:
        raise CliError(f"{len(failed)} of {len(images)} image(s) could not be segmented (listed in summary.json)")
    return 0


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser("segment", help="zero-shot semantic segmentation of an image or a folder of images")
    parser.add_argument("input", metavar="IMAGE_OR_DIR")
    parser.add_argument(
        "--classes",
        nargs="+",
        required=True,
        help="a preset (voc, context, coco) or two or more class names (first 'background' for a "
        "thresholded background), space- or comma-separated",
    )
    parser.add_argument("--checkpoint", help="NVlabs .pth, HF weights or safetensors (omit: random weights)")
    parser.add_argument("--config", help="model config (JSON or NVlabs YAML) when the checkpoint carries none")
    parser.add_argument("--onnx", metavar="DIR", help="run an export folder (groupvit-fast export onnx) on onnxruntime")
    parser.add_argument("--out", default="groupvit_out", help="output folder (default: %(default)s)")
    parser.add_argument("--gt", help="ground-truth label PNG, or a folder of <stem>.png masks: report mIoU")
    parser.add_argument(
        "--bg-thresh",
        type=float,
        help="background threshold (default: the checkpoint config's "
        "evaluate.parser.bg_thresh, else the preset's, else 0.95)",
    )
    add_test_time_arguments(parser)
    add_assign_argument(parser)
    parser.add_argument("--templates", default="simple", help="prompt template set (default: %(default)s)")
    parser.add_argument("--device", help="cpu, cuda, cuda:1 ... (default: cuda if available)")
    parser.add_argument("--batch-size", type=positive_int, default=4, help="images per batch (default: %(default)s)")
    parser.add_argument(
        "--crop-batch-size", type=positive_int, default=8, help="448x448 crops per encoder call (default: %(default)s)"
    )
    parser.add_argument("--no-overlay", action="store_true", help="skip the overlay PNGs")
    parser.add_argument(
        "--trust-pickle", action="store_true", help="allow full unpickling of the checkpoint (only for files you trust)"
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.add_argument(
        "--strict",
        action="store_true",
        help="stop at the first unreadable image (default: segment every readable image, report each "
        "unreadable one, exit 1 at the end)",
    )
    parser.set_defaults(func=run_or_onnx)
    return parser
