"""Parity of GroupViT-S, the paper's model (random weights), in the test run (docs/export.md, "Parity"): its image
graph, exported once for every case, on onnxruntime's CPU provider against ``GroupViTSegmenter.crop_scores``
with the 21 VOC classes, soft maps, at two image sizes and two batch sizes. The sizes are small multiples of the
16 px patch (one 64 px or 96 x 128 px window each): what the graph computes does not change with the size, and
the export, not the run, is what costs (its wall time is printed)."""

from __future__ import annotations

import os
import time

import pytest
from export_cases import PARITY_CROPS, check_crop_scores

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def groupvit_s(tmp_path_factory):
    """``(model, folder with image.onnx)``: GroupViT-S, seed 0, its image graph alone (``export_image_graph``)."""
    import torch

    from groupvit_fast import build_model
    from groupvit_fast.export.writer import OPSET, export_image_graph
    from groupvit_fast.models.registry import released_config

    torch.manual_seed(0)
    model = build_model(released_config()).eval()
    folder = tmp_path_factory.mktemp("onnx-groupvit-s")
    start, load = time.perf_counter(), os.getloadavg()[0]
    export_image_graph(model, str(folder / "image.onnx"), assignment="soft", opset=OPSET, bg_thresh=0.95)
    print(f"GroupViT-S image graph export: {time.perf_counter() - start:.0f} s (load average {load:.1f})")
    return model, str(folder)


@pytest.mark.parametrize(("batch", "h", "w"), PARITY_CROPS)
def test_groupvit_s_image_graph_matches_the_segmenter_crop_scores(groupvit_s, batch, h, w):
    from groupvit_fast.segmentation import resolve_classes

    model, folder = groupvit_s
    check_crop_scores(model, folder, list(resolve_classes("voc").names), "soft", batch, h, w)
