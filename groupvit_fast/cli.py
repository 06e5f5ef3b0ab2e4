"""``groupvit-fast``: the command line.

Subcommands:

* ``segment IMAGE_OR_DIR --classes voc|NAME NAME ... [--checkpoint PATH] [--out DIR] [--gt MASK_OR_DIR]``:
  zero-shot segmentation of one image or every image of a folder; writes ``<stem>_label.png``
  (palette PNG), ``<stem>_overlay.png`` and ``<stem>.json`` (per-class pixel fractions) per
  image, and ``summary.json`` (with mIoU when ``--gt`` is given); ``--assign hard`` composes the
  grouping blocks' one-hot maps instead of the soft ones;
* ``info``: what is built and usable (``groupvit_fast.info``);
* ``bench ...``: the benchmark harness (``groupvit_fast.bench``);
* ``convert SRC DST [--to nvlabs|hf]``: NVlabs ``.pth`` <-> HF weights <-> safetensors;
* ``train --config CFG [--opts k=v ...]``: training (``groupvit_fast.train``, docs/training.md);
* ``export onnx --out DIR [--checkpoint PATH] [--classes ...]``: ONNX graphs for onnxruntime, and
  ``segment ... --onnx DIR`` runs them (``groupvit_fast.export``, docs/export.md).

Errors (bad paths, unreadable images or checkpoints, unknown classes) end the command with one
line on stderr and exit status 1; usage errors exit with 2. Output files are written atomically
and an existing file is never replaced by ``convert`` without ``--force``.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from .cli_support import (
    PROG,
    CliError,
    add_assign_argument,
    add_test_time_arguments,
    build_model_from_args,
    input_images,
    positive_int,
    test_time_settings,
)

__all__ = ["main", "build_parser", "CliError"]


# ---- helpers ---------------------------------------------------------------------------------


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


# ---- subcommands -----------------------------------------------------------------------------


def _cmd_segment_or_onnx(args) -> int:
    """``segment``: an export folder on onnxruntime with ``--onnx`` (docs/export.md, "The runner"), else the model."""
    if args.onnx:
        from .export.cli import segment_with_onnx

        return segment_with_onnx(args)
    return _cmd_segment(args)


def _cmd_segment(args) -> int:
    import math

    from tqdm import tqdm

    from .segmentation import (
        ConfusionMatrix,
        GroupViTSegmenter,
        class_fractions,
        load_image,
        load_label_mask,
        resolve_classes,
        save_json,
        save_label_png,
        save_overlay_png,
    )

    # "--classes cat dog", "--classes cat,dog" and "--classes 'traffic light',car" all work
    tokens = [part.strip() for arg in args.classes for part in arg.split(",")]
    tokens = [t for t in tokens if t] or [""]
    try:
        class_set = resolve_classes(tokens[0] if len(tokens) == 1 else tokens, args.bg_thresh)
    except ValueError as err:
        raise CliError(str(err)) from None
    images = _inputs(args.input)
    single = len(images) == 1 and os.path.isfile(args.input)
    if args.gt is not None and not os.path.exists(args.gt):
        raise CliError(f"{args.gt}: no such file or folder")
    out_dir = args.out
    if os.path.exists(out_dir) and not os.path.isdir(out_dir):
        raise CliError(f"{out_dir}: exists and is not a folder")
    os.makedirs(out_dir, exist_ok=True)

    model = build_model_from_args(args)
    # flags, else the checkpoint's training config, else NVlabs' protocol (docs/segmentation.md,
    # "Test-time settings from the checkpoint"): a 64 px recipe is not cut into 448 px windows
    tt = test_time_settings(args, {"short_side": 448, "crop_size": 448, "stride": 224, "bg_thresh": None})
    try:
        if tt["bg_thresh"] is not None and class_set.with_bg:
            class_set = resolve_classes(list(class_set.names), tt["bg_thresh"])
        segmenter = GroupViTSegmenter(
            model,
            class_set,
            templates=args.templates,
            crop_batch_size=args.crop_batch_size,
            assignment=args.assign,
            short_side=tt["short_side"],
            crop_size=tt["crop_size"],
            stride=tt["stride"],
            max_long_side=max(tt["short_side"], 2048 * tt["short_side"] // 448),
        )
        segmenter.text_embedding()  # tokeniser and text encoder once, before the progress bar
    except (ImportError, ValueError) as err:
        raise CliError(str(err)) from None

    names = list(class_set.names)
    confusion = ConfusionMatrix(len(names)) if args.gt is not None else None
    per_image = {}
    for start in tqdm(
        range(0, len(images), args.batch_size),
        desc="segment",
        unit="batch",
        disable=args.quiet or None,
        file=sys.stderr,
    ):
        paths = images[start : start + args.batch_size]
        try:
            batch = [load_image(p) for p in paths]
            gts = [_gt_for(args.gt, p, single) for p in paths]
            masks = [load_label_mask(g) if g is not None else None for g in gts]
        except ValueError as err:
            raise CliError(str(err)) from None
        labels = segmenter.predict(batch)
        for path, image, label, mask in zip(paths, batch, labels, masks, strict=True):
            stem = os.path.splitext(os.path.basename(path))[0]
            label = label.cpu()
            fractions = class_fractions(label, names)
            record = {"image": path, "size": list(label.shape), "fractions": fractions}
            if mask is not None:
                if tuple(mask.shape) != tuple(label.shape):
                    raise CliError(f"{path}: ground truth is {tuple(mask.shape)}, the image {tuple(label.shape)}")
                try:
                    confusion.update(label, mask)
                except ValueError as err:
                    raise CliError(f"{path}: {err}") from None
            save_label_png(os.path.join(out_dir, f"{stem}_label.png"), label, names)
            if not args.no_overlay:
                save_overlay_png(os.path.join(out_dir, f"{stem}_overlay.png"), image, label, names)
            save_json(os.path.join(out_dir, f"{stem}.json"), {"classes": names, **record})
            per_image[stem] = {k: v for k, v in fractions.items() if v > 0}
    summary = {
        "classes": names,
        "background_threshold": class_set.bg_thresh if class_set.with_bg else None,
        "assignment": args.assign,
        "checkpoint": args.checkpoint,
        "test_time": {k: tt[k] for k in ("short_side", "crop_size", "stride")} | {"source": tt["source"]},
        "images": per_image,
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
    print(f"wrote {len(images)} result(s) to {out_dir}")
    return 0


def _cmd_info(args) -> int:
    from . import info

    return int(info.main() or 0)


def _cmd_bench(args) -> int:
    try:
        from . import bench
    except ImportError as err:
        raise CliError(f"the benchmark harness is not available ({err})") from None
    return int(bench.main(list(args.bench_args)) or 0)


def _cmd_convert(args) -> int:
    from .checkpoint import complete_from_hf, infer_config, read_checkpoint, save_checkpoint, save_safetensors

    src, dst = args.src, args.dst
    if not os.path.exists(src):
        raise CliError(f"{src}: no such file")
    if os.path.abspath(src) == os.path.abspath(dst):
        raise CliError("SRC and DST are the same file")
    if os.path.isdir(dst):
        raise CliError(f"{dst}: is a folder; give a file name ending in .safetensors, .pth, .pt or .bin")
    if os.path.exists(dst) and not args.force:
        raise CliError(f"{dst}: exists (use --force to replace it)")
    ext = os.path.splitext(dst)[1].lower()
    if ext not in (".safetensors", ".pth", ".pt", ".bin"):
        raise CliError(f"{dst}: unknown output format {ext or '(none)'}; use .safetensors, .pth, .pt or .bin")
    out_dir = os.path.dirname(os.path.abspath(dst))
    if not os.path.isdir(out_dir):
        raise CliError(f"{out_dir}: no such folder")
    try:
        ckpt = read_checkpoint(src, trust_pickle=args.trust_pickle)
        config = ckpt.config
        if config is None:
            config = infer_config(ckpt.state_dict)
    except ValueError as err:
        raise CliError(str(err)) from None
    hf = args.to == "hf"
    added = [] if hf or ckpt.source_format != "hf" else complete_from_hf(ckpt.state_dict, config)
    from .common.files import atomic_write

    def write(tmp: str) -> None:
        if ext == ".safetensors":
            save_safetensors(ckpt.state_dict, tmp, hf=hf, config=config)
        else:
            save_checkpoint(ckpt.state_dict, tmp, hf=hf, config=config)

    try:
        atomic_write(dst, write)
    except ValueError as err:
        raise CliError(str(err)) from None
    notes = ""
    if hf and "multi_label_logit_scale" in ckpt.state_dict:
        notes = "; multi_label_logit_scale dropped (no HF counterpart)"
    elif added:
        notes = f"; {', '.join(added)} set to its initial value (HF weights have none)"
    print(f"{src} ({ckpt.source_format}, {ckpt.kind}) -> {dst} ({args.to} keys, {len(ckpt.state_dict)} tensors{notes})")
    return 0


# ---- parser ----------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG, description="GroupViT with fused kernels: segmentation, weights, diagnostics."
    )
    sub = parser.add_subparsers(dest="command", required=True)

    seg = sub.add_parser("segment", help="zero-shot semantic segmentation of an image or a folder of images")
    seg.add_argument("input", metavar="IMAGE_OR_DIR")
    seg.add_argument(
        "--classes",
        nargs="+",
        required=True,
        help="a preset (voc, context, coco) or two or more class names (first 'background' for a "
        "thresholded background), space- or comma-separated",
    )
    seg.add_argument("--checkpoint", help="NVlabs .pth, HF weights or safetensors (omit: random weights)")
    seg.add_argument("--config", help="model config (JSON or NVlabs YAML) when the checkpoint carries none")
    seg.add_argument("--onnx", metavar="DIR", help="run an export folder (groupvit-fast export onnx) on onnxruntime")
    seg.add_argument("--out", default="groupvit_out", help="output folder (default: %(default)s)")
    seg.add_argument("--gt", help="ground-truth label PNG, or a folder of <stem>.png masks: report mIoU")
    seg.add_argument(
        "--bg-thresh",
        type=float,
        help="background threshold (default: the checkpoint config's "
        "evaluate.seg.bg_thresh, else the preset's, else 0.95)",
    )
    add_test_time_arguments(seg, "448, 448 and 224, NVlabs' protocol")
    add_assign_argument(seg)
    seg.add_argument("--templates", default="simple", help="prompt template set (default: %(default)s)")
    seg.add_argument("--device", help="cpu, cuda, cuda:1 ... (default: cuda if available)")
    seg.add_argument("--batch-size", type=positive_int, default=4, help="images per batch (default: %(default)s)")
    seg.add_argument(
        "--crop-batch-size", type=positive_int, default=8, help="448x448 crops per encoder call (default: %(default)s)"
    )
    seg.add_argument("--no-overlay", action="store_true", help="skip the overlay PNGs")
    seg.add_argument(
        "--trust-pickle", action="store_true", help="allow full unpickling of the checkpoint (only for files you trust)"
    )
    seg.add_argument("--quiet", action="store_true", help="no progress bar")
    seg.set_defaults(func=_cmd_segment_or_onnx)

    info = sub.add_parser("info", help="versions, built extensions and usable backends")
    info.set_defaults(func=_cmd_info)

    bench = sub.add_parser("bench", help="benchmarks (arguments go to groupvit_fast.bench)", add_help=False)
    bench.add_argument("bench_args", nargs=argparse.REMAINDER)
    bench.set_defaults(func=_cmd_bench)

    conv = sub.add_parser("convert", help="convert weights: NVlabs .pth <-> HF <-> safetensors")
    conv.add_argument("src", metavar="SRC")
    conv.add_argument("dst", metavar="DST", help="output file: .safetensors, or .pth/.pt/.bin (torch.save)")
    conv.add_argument(
        "--to", choices=("nvlabs", "hf"), default="nvlabs", help="key names to write (default: %(default)s)"
    )
    conv.add_argument("--force", action="store_true", help="replace DST if it exists")
    conv.add_argument(
        "--trust-pickle", action="store_true", help="allow full unpickling of SRC (only for files you trust)"
    )
    conv.set_defaults(func=_cmd_convert)

    from .evaluation.cli import add_eval_parser, add_prepare_parser

    add_eval_parser(sub)
    add_prepare_parser(sub)

    from .train.cli import add_train_parser

    add_train_parser(sub)

    from .export.cli import add_export_parser

    add_export_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``groupvit-fast`` console script; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    # `bench` forwards everything after it, --help included, to the harness
    if argv[:1] == ["bench"]:
        args = argparse.Namespace(func=_cmd_bench, bench_args=argv[1:])
    else:
        args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except CliError as err:
        print(f"{PROG}: error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
