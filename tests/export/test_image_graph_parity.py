"""The image graph on onnxruntime's CPU provider against PyTorch's ``segment`` path (docs/export.md, "Parity"):
scores within 1e-4 relative at fp32, label maps identical but for ties at the background threshold (counted,
at most 0.1 % of pixels), at two image sizes and two batch sizes, for soft and hard maps, on the small random
model (the trained tiny model: test_trained_model_parity.py)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from export_cases import (
    CLASSES,
    PARITY_CROPS,
    TEST_TIME,
    check_crop_scores,
    check_end_to_end,
    compare_scores,
    image_session,
    random_crops,
)

from groupvit_fast.export.graph import SegmentationGraph
from groupvit_fast.segmentation import GroupViTSegmenter


@pytest.mark.parametrize("fixture", ["small", "small_hard"])
@pytest.mark.parametrize(("batch", "h", "w"), PARITY_CROPS)
def test_image_graph_matches_the_segmenter_crop_scores(request, fixture, batch, h, w):
    model, folder = request.getfixturevalue(fixture)
    check_crop_scores(model, folder, CLASSES, "hard" if fixture == "small_hard" else "soft", batch, h, w)


def test_bg_thresh_defaults_to_the_export_value(small):
    model, folder = small
    seg = GroupViTSegmenter(model, CLASSES, bg_thresh=0.95)
    crops = random_crops(2, 64, 64, seed=3)
    scores = image_session(folder).run(
        ["scores"], {"images": crops.numpy(), "text_embeddings": seg.text_embedding().numpy()}
    )
    compare_scores(seg.crop_scores(crops).numpy(), scores[0], "default bg_thresh")


def test_the_graph_module_is_the_segmenter_step(small):
    """SegmentationGraph (what is exported) equals GroupViTSegmenter.crop_scores in PyTorch, bit for bit."""
    model, _ = small
    seg = GroupViTSegmenter(model, CLASSES, bg_thresh=0.7)
    crops = random_crops(2, 64, 96, seed=5)
    with torch.no_grad():
        scores, labels = SegmentationGraph(model)(crops, seg.text_embedding(), torch.tensor(0.7))
    torch.testing.assert_close(scores, seg.crop_scores(crops), rtol=0, atol=0)
    torch.testing.assert_close(labels, scores.argmax(1))


@pytest.mark.parametrize("classes", [CLASSES, ["cat", "dog", "bird"]], ids=["stored-with-bg", "open-no-bg"])
def test_runner_matches_segment_end_to_end(small, classes):
    """The whole protocol (resize, windows, stitch, resize back, argmax) on onnxruntime vs predict_scores."""
    from groupvit_fast.export.runner import OnnxSegmenter

    model, folder = small
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (70, 110, 3), dtype=np.uint8), rng.integers(0, 256, (130, 90, 3), dtype=np.uint8)]
    assert OnnxSegmenter(folder, classes).embedding_source == ("export.json" if classes is CLASSES else "text.onnx")
    check_end_to_end(model, folder, classes, images, TEST_TIME)
