"""GroupViT-S (random weights, seed 0) exported to ONNX: the image graph on onnxruntime's CPU provider against
``GroupViTSegmenter.crop_scores`` at fp32, at two image sizes and two batch sizes (docs/export.md, "Parity").

    python benchmarks/onnx_parity_groupvit_s.py OUT_DIR      # writes OUT_DIR/onnx and prints a markdown table
"""

from __future__ import annotations

import os
import sys
import time

import numpy as np
import onnxruntime as ort
import torch

from groupvit_fast import build_model
from groupvit_fast.export import export_onnx
from groupvit_fast.models.registry import released_config
from groupvit_fast.segmentation import GroupViTSegmenter, resolve_classes


def main(out: str) -> None:
    torch.manual_seed(0)
    model = build_model(released_config()).eval()
    folder = os.path.join(out, "onnx")
    start = time.time()
    export_onnx(model, folder, force=True)
    print(f"export: {time.time() - start:.0f} s; load average {os.getloadavg()[0]:.1f}")
    classes = list(resolve_classes("voc").names)
    seg = GroupViTSegmenter(model, classes, bg_thresh=0.95)
    text = seg.text_embedding().numpy()
    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(os.path.join(folder, "image.onnx"), options, providers=["CPUExecutionProvider"])
    print("| batch x size | max abs err / max score | pixels with scores off by > 1e-4 rel | labels differing |")
    print("| --- | --- | --- | --- |")
    for b, h, w in ((1, 448, 448), (2, 448, 448), (1, 224, 336), (2, 224, 336)):
        crops = torch.randn(b, 3, h, w, generator=torch.Generator().manual_seed(h + w + b))
        expected = seg.crop_scores(crops).numpy()
        scores, labels = session.run(None, {"images": crops.numpy(), "text_embeddings": text})
        scale = np.abs(expected).max()
        far = (np.abs(scores - expected) > 1e-4 * scale).any(axis=1)
        differ = labels != expected.argmax(1)
        err = np.abs(scores - expected).max() / scale
        print(f"| {b} x {h}x{w} | {err:.2e} | {far.mean():.4%} | {differ.mean():.4%} ({int(differ.sum())} px) |")


if __name__ == "__main__":
    main(sys.argv[1])
