"""What an export folder holds (docs/export.md, "Files"): the file names and the ``export.json`` format tag,
shared by the writer (torch) and the runner (no torch)."""

from __future__ import annotations

__all__ = ["EXPORT_FILES", "FORMAT", "MAX_SIDE"]

#: the files an export writes, by role
EXPORT_FILES = {"image": "image.onnx", "text": "text.onnx", "tokenizer": "tokenizer.json", "config": "export.json"}
#: what export.json's ``format`` says (the runner refuses anything else)
FORMAT = "groupvit_fast-onnx/1"
#: the largest image side the image graph takes (the exported dynamic range)
MAX_SIDE = 4096
