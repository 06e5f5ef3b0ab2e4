"""Parity on a trained model (docs/export.md, "Parity"): the small GroupViT trained by the project's training
loop (``trained_checkpoint`` proves it learnt), its training checkpoint exported by ``groupvit-fast export onnx``
with the test time stored in its config, then the same checks as on the random model: the image graph on
onnxruntime's CPU provider against ``GroupViTSegmenter.crop_scores`` (scores within 1e-4 relative at fp32, labels
equal but for counted ties, at most 0.1 %) at two image sizes and two batch sizes, soft and hard maps, and the
runner's whole protocol against ``predict_scores``. A trained model's assignments are sharper and its class
affinities spread wider than a random model's, so the background test and the segment argmax meet other values."""

from __future__ import annotations

import json

import numpy as np
import pytest
from export_cases import PARITY_CROPS, TRAINED_CLASSES, TRAINED_TEST_TIME, check_crop_scores, check_end_to_end


@pytest.mark.parametrize("fixture", ["trained", "trained_hard"])
@pytest.mark.parametrize(("batch", "h", "w"), PARITY_CROPS)
def test_trained_image_graph_matches_the_segmenter_crop_scores(request, fixture, batch, h, w):
    model, folder = request.getfixturevalue(fixture)
    check_crop_scores(model, folder, TRAINED_CLASSES, "hard" if fixture == "trained_hard" else "soft", batch, h, w)


def _shape_images() -> list[np.ndarray]:
    """Two images of the generated shapes the model learnt, not square (so that windows overlap)."""
    import random

    from PIL import Image

    from groupvit_fast.train.data.synthetic import draw_shape

    rng = random.Random(0)
    drawn = [("red", "circle", (70, 110)), ("blue", "square", (130, 90))]
    return [np.array(draw_shape(c, s, 64, rng).resize(size[::-1], Image.BILINEAR)) for c, s, size in drawn]


@pytest.mark.parametrize(
    "classes", [TRAINED_CLASSES, ["red circle", "blue square", "yellow triangle"]], ids=["stored-with-bg", "open"]
)
def test_trained_runner_matches_segment_end_to_end(trained, classes):
    model, folder = trained
    config = json.load(open(f"{folder}/export.json", encoding="utf-8"))
    assert {k: config["test_time"][k] for k in ("short_side", "crop_size", "stride")} == {
        k: TRAINED_TEST_TIME[k] for k in ("short_side", "crop_size", "stride")
    }
    assert config["bg_thresh"] == TRAINED_TEST_TIME["bg_thresh"]
    check_end_to_end(model, folder, classes, _shape_images(), TRAINED_TEST_TIME)
