"""``groupvit-fast export onnx`` and ``groupvit-fast segment --onnx DIR``: the command line of the export
(docs/export.md). This module imports the standard library only; the handlers import the rest when they run,
so every parser builds without torch or the ``export`` extra.
"""

from __future__ import annotations

import argparse
import os
import sys

__all__ = ["add_export_parser", "segment_with_onnx"]


def add_export_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register ``export onnx`` on the ``groupvit-fast`` subparsers."""
    from ..cli_support import add_assign_argument, add_test_time_arguments

    export = subparsers.add_parser("export", help="export the model for deployment (ONNX)")
    formats = export.add_subparsers(dest="format", required=True, metavar="FORMAT")
    onnx = formats.add_parser(
        "onnx",
        help="image graph (pixels -> class scores and labels), text graph and settings for onnxruntime",
        description="Write DIR/image.onnx, DIR/text.onnx, DIR/tokenizer.json and DIR/export.json (docs/export.md). "
        "The image graph takes images [B, 3, H, W] with dynamic B, H and W (any size from two patches to 4096 "
        "pixels a side), class embeddings [K, D] with dynamic K, and bg_thresh.",
    )
    onnx.add_argument("--checkpoint", help="NVlabs .pth, HF weights or safetensors (omit: random weights)")
    onnx.add_argument("--config", help="model config (JSON or NVlabs YAML) when the checkpoint carries none")
    onnx.add_argument("--out", required=True, metavar="DIR", help="output folder")
    onnx.add_argument(
        "--classes",
        nargs="+",
        help="a fixed vocabulary whose embeddings go into export.json: a preset (voc, context, coco) or class "
        "names, space- or comma-separated (other classes still work through the text graph)",
    )
    add_assign_argument(onnx)
    onnx.add_argument("--opset", type=int, default=18, help="ONNX opset, 18 or newer (default: %(default)s)")
    onnx.add_argument("--templates", default="simple", help="prompt template set (default: %(default)s)")
    onnx.add_argument(
        "--bg-thresh", type=float, help="default background threshold of the graph (default: the checkpoint's)"
    )
    add_test_time_arguments(onnx, "448, 448 and 224, NVlabs' protocol")
    onnx.add_argument("--force", action="store_true", help="replace existing output files")
    onnx.add_argument(
        "--trust-pickle", action="store_true", help="allow full unpickling of the checkpoint (only for files you trust)"
    )
    onnx.set_defaults(func=_cmd_export_onnx, device="cpu")
    return export


def _class_tokens(classes: list[str]) -> list[str]:
    """``--classes cat dog``, ``--classes cat,dog`` -> names (as ``segment`` reads them)."""
    tokens = [part.strip() for arg in classes for part in arg.split(",")]
    return [t for t in tokens if t] or [""]


def _cmd_export_onnx(args: argparse.Namespace) -> int:
    from ..cli_support import CliError, build_model_from_args, require_command_extra, test_time_settings

    require_command_extra("export onnx", "export")
    from ..segmentation.classes import resolve_classes
    from .writer import ExportError, check_opset, check_outputs, export_onnx

    try:
        # before the checkpoint is read: a bad flag or an existing file costs nothing
        check_opset(args.opset)
        check_outputs(args.out, args.force)
        names = None
        if args.classes:
            tokens = _class_tokens(args.classes)
            names = list(resolve_classes(tokens[0] if len(tokens) == 1 else tokens).names)
    except (ExportError, ValueError) as err:
        raise CliError(str(err)) from None
    model = build_model_from_args(args)
    tt = test_time_settings(args)  # flags, else the checkpoint's training config, else NVlabs' protocol
    try:
        record = export_onnx(
            model,
            args.out,
            classes=names,
            templates=args.templates,
            assignment=args.assign,
            opset=args.opset,
            test_time=tt,
            force=args.force,
            source={"checkpoint": args.checkpoint, "config": args.config, "test_time_source": dict(tt.source)},
        )
    except (ExportError, ImportError) as err:  # ImportError: open_clip's vocabulary (the text extra)
        raise CliError(str(err).splitlines()[0]) from None
    sizes = record["sizes_bytes"]
    print(
        f"wrote {args.out}: image.onnx {sizes['image'] / 2**20:.1f} MiB, text.onnx {sizes['text'] / 2**20:.1f} MiB, "
        f"opset {record['opset']}, {len(record['classes']['names']) if record['classes'] else 0} stored classes"
    )
    return 0


def _check_fixed_at_export(args: argparse.Namespace, config: dict) -> None:
    """``--assign`` and ``--templates`` are fixed when the graphs are exported: a different value is refused
    rather than silently ignored."""
    from ..cli_support import CliError
    from ..segmentation.classes import TEMPLATES

    exported = config["image_graph"]["assignment"]
    if getattr(args, "assign", exported) != exported:
        raise CliError(f"--assign {args.assign}: {args.onnx} was exported with --assign {exported}")
    prompts = TEMPLATES.get(getattr(args, "templates", None) or "")
    if prompts is not None and list(prompts) != list(config["templates"]):
        raise CliError(f"--templates {args.templates}: {args.onnx} was exported with other prompt templates")


def segment_with_onnx(args: argparse.Namespace) -> int:
    """``segment IMAGES --onnx DIR``: ``segment``'s outputs (label and overlay PNGs, per-image JSON,
    ``summary.json``) from an export folder on onnxruntime; torch is not needed (``--gt`` needs it)."""
    from ..cli_support import CliError, input_images

    try:
        from .runner import OnnxSegmenter
    except ImportError as err:
        raise CliError(f"segment --onnx needs onnxruntime ({err}): pip install 'groupvit_fast[export]'") from None
    from ..segmentation.io import class_fractions, load_image_array, save_json, save_label_png, save_overlay_png

    if args.checkpoint or args.config:
        raise CliError("--onnx runs an exported model: drop --checkpoint/--config (they are the export's)")
    if args.gt is not None:
        raise CliError("--gt is not supported with --onnx: score with segment --checkpoint or eval seg")
    if args.bg_thresh is not None and not 0.0 <= args.bg_thresh <= 1.0:
        raise CliError(f"--bg-thresh must be in [0, 1], got {args.bg_thresh}")
    images = input_images(args.input)
    out_dir = args.out
    if os.path.exists(out_dir) and not os.path.isdir(out_dir):
        raise CliError(f"{out_dir}: exists and is not a folder")
    tokens = _class_tokens(args.classes)
    try:
        segmenter = OnnxSegmenter(
            args.onnx,
            tokens[0] if len(tokens) == 1 else tokens,
            bg_thresh=args.bg_thresh,
            short_side=args.short_side,
            crop_size=args.crop_size,
            stride=args.stride,
            crop_batch_size=args.crop_batch_size,
        )
    except (ImportError, ValueError) as err:
        raise CliError(str(err)) from None
    _check_fixed_at_export(args, segmenter.config)
    os.makedirs(out_dir, exist_ok=True)
    names = list(segmenter.class_names)
    per_image: dict[str, dict] = {}
    failed: dict[str, str] = {}
    single = len(images) == 1 and os.path.isfile(args.input)
    for start in range(0, len(images), args.batch_size):
        paths, batch = [], []
        for path in images[start : start + args.batch_size]:
            try:
                batch.append(load_image_array(path))
                paths.append(path)
            except ValueError as err:  # as segment: said in one line, every readable image still written
                if getattr(args, "strict", False) or single:
                    raise CliError(str(err)) from None
                failed[path] = str(err)
                print(f"groupvit-fast: error: {err} (skipped)", file=sys.stderr)
        try:
            labels = segmenter.predict(batch)
        except ValueError as err:
            raise CliError(str(err)) from None
        for path, image, label in zip(paths, batch, labels, strict=True):
            stem = os.path.splitext(os.path.basename(path))[0]
            fractions = class_fractions(label, names)
            save_label_png(os.path.join(out_dir, f"{stem}_label.png"), label, names)
            if not args.no_overlay:
                save_overlay_png(os.path.join(out_dir, f"{stem}_overlay.png"), image.transpose(2, 0, 1), label, names)
            record = {"image": path, "size": list(label.shape), "fractions": fractions}
            save_json(os.path.join(out_dir, f"{stem}.json"), {"classes": names, **record})
            per_image[stem] = {k: v for k, v in fractions.items() if v > 0}
    config = segmenter.config
    summary = {
        "classes": names,
        "background_threshold": segmenter.class_set.bg_thresh if segmenter.class_set.with_bg else None,
        "assignment": config["image_graph"]["assignment"],
        "checkpoint": (config.get("source") or {}).get("checkpoint"),
        "onnx": args.onnx,
        "test_time": {"short_side": segmenter.short_side, "crop_size": segmenter.crop_size, "stride": segmenter.stride},
        "images": per_image,
        "failed": failed,
    }
    save_json(os.path.join(out_dir, "summary.json"), summary)
    print(f"wrote {len(per_image)} result(s) to {out_dir}")
    if failed:
        raise CliError(f"{len(failed)} of {len(images)} image(s) could not be segmented (listed in summary.json)")
    return 0
