"""The onnxruntime runner: ``segment`` around an exported image graph, without torch (docs/export.md,
"The runner").

It does what ``GroupViTSegmenter.predict_scores`` does around ``crop_scores``, with numpy: the resize to the
test scale (``geometry.rescale_size``) with 8-bit rounding and normalisation, the sliding windows batched by
shape (``geometry.windows_by_shape``, the same code the PyTorch pipeline runs), the image graph per batch,
the averaged window scores, the resize back to the image's size and the argmax. The bilinear resizes follow
``F.interpolate(mode='bilinear', align_corners=False)`` (half-pixel centres, no antialias) in float32.
Imports: numpy, onnxruntime, and ``tokenizers`` only for classes outside the exported vocabulary.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from ..segmentation.classes import ClassSet, resolve_classes
from ..segmentation.geometry import (
    IMAGENET_MEAN_255,
    IMAGENET_STD_255,
    rescale_size,
    windows_by_shape,
)
from ..segmentation.test_time import TestTimeSettings, resolve_test_time
from .layout import EXPORT_FILES, FORMAT

__all__ = ["OnnxSegmenter", "resize_bilinear", "preprocess_array", "read_export_config"]


def _axis_weights(n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Source indices and weights of one axis, as ATen's ``upsample_bilinear2d`` (align_corners=False)
    computes them in float32: ``src = max(scale * (dst + 0.5) - 0.5, 0)`` with ``scale = n_in / n_out``."""
    scale = np.float32(n_in) / np.float32(n_out)
    src = scale * (np.arange(n_out, dtype=np.float32) + np.float32(0.5)) - np.float32(0.5)
    src = np.maximum(src, np.float32(0))
    i0 = np.minimum(src.astype(np.int64), n_in - 1)
    i1 = np.minimum(i0 + 1, n_in - 1)
    l1 = (src - i0.astype(np.float32)).astype(np.float32)
    return i0, i1, np.float32(1) - l1, l1


def resize_bilinear(x: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """``x [C, H, W]`` float32 -> ``[C, h, w]``: ``F.interpolate(x[None], size, mode='bilinear',
    align_corners=False)[0]`` (width first, then height, in ATen's order of operations)."""
    c, h_in, w_in = x.shape
    h_out, w_out = size
    if (h_in, w_in) == (h_out, w_out):
        return x.astype(np.float32, copy=True)
    x = x.astype(np.float32, copy=False)
    w0, w1, lw0, lw1 = _axis_weights(w_in, w_out)
    h0, h1, lh0, lh1 = _axis_weights(h_in, h_out)
    rows0, rows1 = x[:, h0], x[:, h1]  # [C, h_out, W_in]
    top = rows0[:, :, w0] * lw0 + rows0[:, :, w1] * lw1
    bottom = rows1[:, :, w0] * lw0 + rows1[:, :, w1] * lw1
    return (top * lh0[:, None] + bottom * lh1[:, None]).astype(np.float32, copy=False)


def preprocess_array(image: np.ndarray, short_side: int, max_long_side: int) -> np.ndarray:
    """``uint8 [H, W, 3]`` RGB -> normalised float32 ``[3, h, w]`` at the test scale: ``preprocess_image``
    (bilinear resize rounded to 8 bits, then ``(x - mean) / std``) in numpy."""
    if image.ndim != 3 or image.shape[-1] != 3:
        raise ValueError(f"image must be RGB [H, W, 3], got shape {image.shape}")
    t = np.ascontiguousarray(image.transpose(2, 0, 1)).astype(np.float32)
    h, w = t.shape[-2:]
    nh, nw = rescale_size(h, w, short_side, max_long_side)
    if (nh, nw) != (h, w):
        t = np.clip(np.round(resize_bilinear(t, (nh, nw))), 0, 255)
    mean = np.asarray(IMAGENET_MEAN_255, dtype=np.float32)[:, None, None]
    std = np.asarray(IMAGENET_STD_255, dtype=np.float32)[:, None, None]
    return ((t - mean) / std).astype(np.float32)


def read_export_config(onnx_dir: str) -> dict[str, Any]:
    """``export.json`` of an export folder, checked: ``ValueError`` (one line) when it is not one."""
    path = os.path.join(onnx_dir, EXPORT_FILES["config"])
    if not os.path.isdir(onnx_dir):
        raise ValueError(f"{onnx_dir}: no such folder")
    if not os.path.isfile(path):
        raise ValueError(f"{onnx_dir}: no export.json (not a folder written by 'groupvit-fast export onnx')")
    try:
        with open(path, encoding="utf-8") as f:
            config = json.load(f)
    except (OSError, json.JSONDecodeError) as err:
        raise ValueError(f"{path}: cannot read ({err})") from None
    if not isinstance(config, dict) or config.get("format") != FORMAT:
        raise ValueError(
            f"{path}: format {config.get('format') if isinstance(config, dict) else None!r}, expected {FORMAT!r}"
        )
    return config


class OnnxSegmenter:
    """``GroupViTSegmenter`` on onnxruntime: zero-shot segmentation of images into ``classes`` with an export
    folder (``groupvit-fast export onnx``).

    ``classes``: as ``segment --classes`` (a preset or two or more names, ``'background'`` first for the
    thresholded background). Their embeddings come from ``export.json`` when the export's vocabulary holds
    every name with the same templates, else from the text graph (``tokenizer.json`` + ``text.onnx``).
    Test-time settings and ``bg_thresh``: the arguments, else the export's (its checkpoint's), else NVlabs'.
    ``text_embeddings [K, D]`` (normalised, one row per non-background class) replaces both.

    ``predict_scores(images)`` -> one float32 ``[num_classes, H, W]`` per ``uint8 [H, W, 3]`` image;
    ``predict(images)`` -> one int64 ``[H, W]`` label map per image.
    """

    def __init__(
        self,
        onnx_dir: str,
        classes: ClassSet | str | Sequence[str],
        *,
        bg_thresh: float | None = None,
        short_side: int | None = None,
        crop_size: int | None = None,
        stride: int | None = None,
        crop_batch_size: int = 8,
        providers: Sequence[str] | None = None,
        threads: int | None = None,
        text_embeddings: np.ndarray | None = None,
    ):
        import onnxruntime as ort

        self.onnx_dir = onnx_dir
        self.config = read_export_config(onnx_dir)
        tt = self.config["test_time"]
        # as segment: --bg-thresh, else the checkpoint's (stored at export), else the preset's, else 0.95
        base = classes if isinstance(classes, ClassSet) else resolve_classes(classes)
        chosen = bg_thresh if bg_thresh is not None else self.config.get("bg_thresh")
        self.class_set = base if chosen is None else ClassSet(base.names, float(chosen))
        # the arguments, else the export's settings (its checkpoint's), with the one resolver of segment
        stored = TestTimeSettings(**{k: int(tt[k]) for k in ("short_side", "crop_size", "stride", "max_long_side")})
        settings = resolve_test_time(
            stored, overrides={"short_side": short_side, "crop_size": crop_size, "stride": stride}
        )
        self.short_side, self.crop_size, self.stride = settings.short_side, settings.crop_size, settings.stride
        self.max_long_side = settings.max_long_side
        if crop_batch_size <= 0:
            raise ValueError(f"crop_batch_size must be positive, got {crop_batch_size}")
        self.crop_batch_size = int(crop_batch_size)
        options = ort.SessionOptions()
        # bg_thresh is an input with a default (an initializer of the same name): onnxruntime warns about
        # every such input at each load; errors still print
        options.log_severity_level = 3
        if threads:
            options.intra_op_num_threads = int(threads)
        self._ort = ort
        self._options = options
        self._providers = list(providers or ["CPUExecutionProvider"])
        self.session = ort.InferenceSession(
            os.path.join(onnx_dir, self.config["image_graph"]["file"]), options, providers=self._providers
        )
        if text_embeddings is None:
            self.text_embeddings = self._class_embeddings()
        else:
            self.text_embeddings = self._checked_embeddings(text_embeddings)
            self._embedding_source = "argument"
        #: where the class embeddings came from: 'export.json', 'text.onnx' or 'argument'
        self.embedding_source = self._embedding_source

    @property
    def class_names(self) -> tuple[str, ...]:
        return self.class_set.names

    def _checked_embeddings(self, emb: np.ndarray) -> np.ndarray:
        emb = np.asarray(emb, dtype=np.float32)
        k, d = len(self.class_set.text_names), int(self.config["image_graph"]["embed_dim"])
        if emb.shape != (k, d):
            raise ValueError(
                f"text_embeddings must be [K, D] = [{k}, {d}] (one row per non-background class, the export's "
                f"embedding width), got {list(emb.shape)}"
            )
        return emb

    def _class_embeddings(self) -> np.ndarray:
        stored = self.config.get("classes")
        wanted = list(self.class_set.text_names)
        if stored and set(wanted) <= set(stored["text_names"]):
            rows = {name: i for i, name in enumerate(stored["text_names"])}
            table = np.asarray(stored["embeddings"], dtype=np.float32)
            self._embedding_source = "export.json"
            return table[[rows[n] for n in wanted]]
        from .clip_tokenizer import ClipTokenizer

        text = self.config["text_graph"]
        tokenizer = ClipTokenizer(os.path.join(self.onnx_dir, text["tokenizer"]), int(text["context_length"]))
        prompts = self.config["templates"]
        tokens = tokenizer([t.format(name) for name in wanted for t in prompts]).reshape(len(wanted), len(prompts), -1)
        session = self._ort.InferenceSession(
            os.path.join(self.onnx_dir, text["file"]), self._options, providers=self._providers
        )
        self._embedding_source = "text.onnx"
        return session.run(None, {"tokens": tokens})[0].astype(np.float32)

    def crop_scores(self, crops: np.ndarray) -> np.ndarray:
        """``crops [B, 3, h, w]`` float32 (normalised) -> ``[B, num_classes, h, w]`` class scores."""
        graph = self.config["image_graph"]
        h, w = crops.shape[-2:]
        if min(h, w) < graph["min_side"] or max(h, w) > graph["max_side"]:
            raise ValueError(
                f"a {h}x{w} window is outside the image graph's sizes ({graph['min_side']} to {graph['max_side']} "
                "pixels a side)"
            )
        feeds = {
            "images": np.ascontiguousarray(crops, dtype=np.float32),
            "text_embeddings": self.text_embeddings,
            "bg_thresh": np.asarray(self.class_set.bg_thresh, dtype=np.float32),
        }
        scores = self.session.run(["scores"], feeds)[0]
        # the graph always carries the background channel; a class list without background drops it
        return scores if self.class_set.with_bg else scores[:, 1:]

    def predict_scores(self, images: Iterable[np.ndarray]) -> list[np.ndarray]:
        """Averaged sliding-window class scores ``[num_classes, H, W]``, at each image's original size."""
        raws = [np.asarray(image) for image in images]
        tensors = [preprocess_array(raw, self.short_side, self.max_long_side) for raw in raws]
        sums: list[np.ndarray | None] = [None] * len(tensors)
        counts = [np.zeros((1, *t.shape[-2:]), dtype=np.float32) for t in tensors]
        sizes = [(t.shape[-2], t.shape[-1]) for t in tensors]
        for chunk in windows_by_shape(sizes, self.crop_size, self.stride, self.crop_batch_size):
            crops = np.stack([tensors[i][:, y1:y2, x1:x2] for i, (y1, y2, x1, x2) in chunk])
            for (i, (y1, y2, x1, x2)), s in zip(chunk, self.crop_scores(crops), strict=True):
                if sums[i] is None:
                    sums[i] = np.zeros((s.shape[0], *tensors[i].shape[-2:]), dtype=np.float32)
                sums[i][:, y1:y2, x1:x2] += s
                counts[i][:, y1:y2, x1:x2] += 1
        out = []
        for s, c, raw in zip(sums, counts, raws, strict=True):
            avg = s / c
            size = raw.shape[:2]
            out.append(avg if tuple(avg.shape[-2:]) == tuple(size) else resize_bilinear(avg, size))
        return out

    def predict(self, images: Iterable[np.ndarray]) -> list[np.ndarray]:
        """One int64 ``[H, W]`` label map (indices into ``class_names``) per ``uint8 [H, W, 3]`` image."""
        return [s.argmax(axis=0) for s in self.predict_scores(images)]
