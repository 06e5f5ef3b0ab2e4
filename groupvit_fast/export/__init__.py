"""Deployment: GroupViT's zero-shot segmentation as ONNX graphs, and their onnxruntime runner (docs/export.md).

* ``export_onnx(model, out_dir, ...)`` (``writer``): ``image.onnx``, ``text.onnx``, ``tokenizer.json``,
  ``export.json``; needs torch and the ``export`` extra;
* ``OnnxSegmenter(out_dir, classes)`` (``runner``): ``segment`` on onnxruntime, without torch;
* ``SegmentationGraph`` / ``TextEmbeddingGraph``: the exported modules (``torch.export`` works on them too).

Names load on first use, so importing this package (the command line does, to build its parser) imports
neither torch nor onnxruntime.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._lazy import lazy_attributes

if TYPE_CHECKING:
    from .graph import SegmentationGraph
    from .runner import OnnxSegmenter
    from .text_graph import TextEmbeddingGraph
    from .writer import ExportError, export_onnx

__all__ = ["export_onnx", "ExportError", "OnnxSegmenter", "SegmentationGraph", "TextEmbeddingGraph"]

_LAZY = {
    "export_onnx": ".writer",
    "ExportError": ".writer",
    "OnnxSegmenter": ".runner",
    "SegmentationGraph": ".graph",
    "TextEmbeddingGraph": ".text_graph",
}


__getattr__, __dir__ = lazy_attributes(__name__, _LAZY, __all__)
