"""Image-text manifests for custom data: CSV, TSV or JSONL rows of an image path and a caption.

Columns (CSV/TSV header, JSONL keys): the image in ``path``, ``image``, ``file`` or ``filepath``;
the caption in ``caption``, ``text`` or ``title``. Relative image paths are taken relative to the
manifest's folder. Errors name the file and the line.
"""

from __future__ import annotations

import csv
import json
import os

__all__ = ["read_manifest", "IMAGE_COLUMNS", "CAPTION_COLUMNS"]

IMAGE_COLUMNS = ("path", "image", "file", "filepath")
CAPTION_COLUMNS = ("caption", "text", "title")


def _pick(row: dict, names: tuple[str, ...]) -> str | None:
    for name in names:
        if name in row:
            return name
    return None


def read_manifest(path: str) -> list[dict]:
    """``[{'path': absolute image path, 'caption': str}, ...]``; ``ValueError`` naming the problem."""
    if not os.path.isfile(path):
        raise ValueError(f"{path}: no such manifest file")
    ext = os.path.splitext(path)[1].lower()
    with open(path, encoding="utf-8", newline="") as f:
        if ext == ".jsonl":
            rows = []
            for number, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as err:
                    raise ValueError(f"{path}:{number}: not a JSON object ({err.msg})") from None
        elif ext in (".csv", ".tsv"):
            rows = list(csv.DictReader(f, delimiter="\t" if ext == ".tsv" else ","))
        else:
            raise ValueError(f"{path}: a manifest must end in .csv, .tsv or .jsonl")
    if not rows:
        raise ValueError(f"{path}: the manifest has no rows")
    image_col, caption_col = _pick(rows[0], IMAGE_COLUMNS), _pick(rows[0], CAPTION_COLUMNS)
    if image_col is None or caption_col is None:
        raise ValueError(
            f"{path}: needs an image column ({'/'.join(IMAGE_COLUMNS)}) and a caption column "
            f"({'/'.join(CAPTION_COLUMNS)}); found {sorted(rows[0])}"
        )
    root = os.path.dirname(os.path.abspath(path))
    out = []
    for number, row in enumerate(rows, 1):
        image, caption = row.get(image_col), row.get(caption_col)
        if not isinstance(image, str) or not isinstance(caption, str):
            raise ValueError(f"{path}: row {number} lacks {image_col!r} or {caption_col!r}")
        out.append({"path": os.path.join(root, image), "caption": caption})
    return out
