"""``torch.export.export`` of the model and of the segmenter's graph with the custom ops (their fake kernels):
the ExportedProgram runs and matches eager (docs/export.md, "torch.export")."""

from __future__ import annotations

import torch
from export_cases import CLASSES, small_model

from groupvit_fast.export.graph import SegmentationGraph
from groupvit_fast.export.writer import image_dynamic_shapes
from groupvit_fast.segmentation import GroupViTSegmenter
from tolerances import assert_close_to_scale


class _Encoder(torch.nn.Module):
    """The vision encoder with its grouping maps, as the segmenter calls it."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, images):
        outs = self.model.img_encoder(images, return_attn=True, return_feat=True, as_dict=True)
        maps = [m for stage in outs["attn_dicts"] if stage is not None for m in (stage["soft"], stage["hard"])]
        return outs["x"], outs["feat"], *maps


def test_torch_export_of_the_model_runs_the_custom_op_and_matches():
    model = small_model()
    images = torch.randn(2, 3, 64, 96)
    program = torch.export.export(_Encoder(model), (images,))
    targets = {str(node.target) for node in program.graph.nodes if node.op == "call_function"}
    assert "groupvit_fast.assign_attention.default" in targets, sorted(targets)
    with torch.no_grad():
        expected = _Encoder(model)(images)
    for got, want in zip(program.module()(images), expected, strict=True):
        assert_close_to_scale(got, want)


def test_torch_export_of_the_segmenter_graph_with_dynamic_shapes_matches():
    model = small_model()
    seg = GroupViTSegmenter(model, CLASSES, bg_thresh=0.6)
    text = seg.text_embedding()
    images = torch.randn(2, 3, 64, 96)
    program = torch.export.export(
        SegmentationGraph(model).eval(), (images, text, torch.tensor(0.6)), dynamic_shapes=image_dynamic_shapes(model)
    )
    run = program.module()
    for shape in [(1, 3, 64, 64), (3, 3, 96, 128)]:  # other batch sizes and image sizes than traced
        crops = torch.randn(*shape)
        scores, labels = run(crops, text, torch.tensor(0.6))
        expected = seg.crop_scores(crops)
        assert_close_to_scale(scores, expected)
        assert (labels == expected.argmax(1)).float().mean() >= 0.999
    # another class count than traced
    more = torch.nn.functional.normalize(torch.randn(7, text.shape[1]), dim=-1)
    scores, _ = run(torch.randn(1, 3, 64, 64), more, torch.tensor(0.6))
    assert scores.shape == (1, 8, 64, 64)
