"""Evaluation reports: a JSON file and a markdown per-class table, optionally overlay PNGs.

Everything is written through ``atomic_write`` after the evaluation has finished, so a failed run
leaves no file behind and an existing report is either the old one or the complete new one.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from ..common.files import atomic_write
from ..segmentation.io import save_json, save_overlay_png

__all__ = ["markdown_table", "write_report"]


def _fmt(v) -> str:
    return "n/a" if v is None else f"{v:.2f}"


def markdown_table(result: dict) -> str:
    """The summary line and the per-class table of a segmentation or classification result."""
    if "mIoU" in result:
        lines = [
            f"# {result['dataset']}: mIoU {_fmt(result['mIoU'])}, mAcc {_fmt(result['mAcc'])}, "
            f"aAcc {_fmt(result['aAcc'])} ({result['num_images']} images)",
            "",
            "| class | IoU | Acc |",
            "| --- | ---: | ---: |",
        ]
        lines += [f"| {name} | {_fmt(v['IoU'])} | {_fmt(v['Acc'])} |" for name, v in result["per_class"].items()]
    else:
        settings = result.get("settings", {})
        among = (
            f", among the {settings['num_classes']} ImageNet classes present (WordNet-id folders)"
            if settings.get("class_set") == "imagenet-subset"
            else ""
        )
        lines = [
            f"# zero-shot classification: top-1 {_fmt(result['top1'])}, top-5 {_fmt(result['top5'])} "
            f"({result['num_images']} images{among})",
            "",
            "| class | top-1 | top-5 | images |",
            "| --- | ---: | ---: | ---: |",
        ]
        lines += [
            f"| {name} | {_fmt(v['top1'])} | {_fmt(v['top5'])} | {v['images']} |"
            for name, v in result["per_class"].items()
        ]
    settings = ", ".join(f"{k}={v}" for k, v in result.get("settings", {}).items() if k != "templates")
    return "\n".join(lines + ["", f"Settings: {settings}.", ""])


def write_report(result: dict, out_dir: str, name: str, class_names: Sequence[str] | None = None) -> list[str]:
    """Write ``<name>.json`` and ``<name>.md`` (and ``<name>_overlays/*.png`` for the result's
    ``predictions``) under ``out_dir``; returns the paths written."""
    os.makedirs(out_dir, exist_ok=True)
    predictions = result.get("predictions", [])
    data = {k: v for k, v in result.items() if k != "predictions"}
    paths = [os.path.join(out_dir, f"{name}.json"), os.path.join(out_dir, f"{name}.md")]
    save_json(paths[0], data)
    text = markdown_table(data)

    def write_markdown(tmp: str) -> None:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)

    atomic_write(paths[1], write_markdown)
    if predictions:
        folder = os.path.join(out_dir, f"{name}_overlays")
        os.makedirs(folder, exist_ok=True)
        for p in predictions:
            stem = os.path.splitext(os.path.basename(p["image"]))[0]
            path = os.path.join(folder, f"{stem}.png")
            save_overlay_png(path, p["raw"], p["pred"], list(class_names))
            paths.append(path)
    return paths
