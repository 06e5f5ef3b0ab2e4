"""One raw record -> ``(PIL image, caption)``, or ``None`` for a sample to skip (and count).

Shard records carry the image under ``jpg``, ``png`` or ``jpeg`` and the caption under ``txt`` or
``text`` (img2dataset's layout, NVlabs' ``rename``), and may carry the caption's nouns in ``json``
(``{"nouns": [...]}``, written by the scene generator; ``record_nouns``); manifest records a file ``path`` and a
``caption``. A corrupt or missing image, or an empty caption, is skipped, never an exception.
"""

from __future__ import annotations

import io
import json
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # annotations only (postponed: never evaluated at run time)
    from PIL import Image

__all__ = ["decode_record", "record_nouns", "IMAGE_KEYS", "TEXT_KEYS"]

IMAGE_KEYS = ("jpg", "png", "jpeg")
TEXT_KEYS = ("txt", "text")


def _first(record: dict, keys: tuple[str, ...]):
    for key in keys:
        if key in record:
            return record[key]
    return None


def decode_record(record: dict) -> tuple[Image.Image, str] | None:
    """``(PIL.Image (RGB), caption)`` or ``None``."""
    from PIL import Image

    if "path" in record:
        try:
            with open(record["path"], "rb") as f:
                data = f.read()
        except OSError:
            return None
        caption = record.get("caption")
    else:
        data, caption = _first(record, IMAGE_KEYS), _first(record, TEXT_KEYS)
        if isinstance(caption, bytes):
            caption = caption.decode("utf-8", errors="replace")
    if data is None or not isinstance(caption, str) or not caption.strip():
        return None
    try:
        with Image.open(io.BytesIO(data)) as image:
            image.load()  # decode now: a truncated file fails here, not in the transform
            return image.convert("RGB"), caption.strip()
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError):
        return None


def record_nouns(record: dict) -> list[str] | None:
    """The nouns a shard record carries (``json`` ``{"nouns": [str, ...]}``), else ``None``.

    Generated data knows its nouns; with them the multi-label prompts need no tagger
    (docs/training.md, "Scenes: segmentation from captions"). Anything malformed counts as absent.
    """
    meta = record.get("json")
    if meta is None:
        return None
    try:
        nouns = json.loads(meta.decode("utf-8") if isinstance(meta, bytes) else meta).get("nouns")
    except (ValueError, AttributeError, UnicodeDecodeError):
        return None
    if not isinstance(nouns, list) or not all(isinstance(n, str) and n.strip() for n in nouns):
        return None
    return [n.strip() for n in nouns]
