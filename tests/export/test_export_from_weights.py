"""``export onnx`` from the weights users have (docs/export.md, "Parity"): Hugging Face weights saved by
``save_pretrained`` and converted by ``groupvit-fast convert``, and an NVlabs training checkpoint (OmegaConf
config, optimizer state) exported directly; each graph on onnxruntime's CPU provider against our segmenter on
the model the checkpoint holds, and the converted model's image embedding against Hugging Face's own."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from export_cases import CLASSES, PARITY_CROPS, TEST_TIME, check_crop_scores, small_export_config, small_model

from groupvit_fast.checkpoint import load_checkpoint
from groupvit_fast.cli import main
from groupvit_small import save_nvlabs_training_checkpoint
from tolerances import assert_close_to_scale

TT_FLAGS = [f"--{k.replace('_', '-')}={v}" for k, v in TEST_TIME.items() if v is not None]


def _hf_model():
    """A random ``transformers.GroupViTModel`` of the small export model, with non-trivial BatchNorm statistics
    and temperature (so that they must carry over)."""
    from transformers import GroupViTModel

    from groupvit_fast.convert.hf_config import hf_groupvit_config

    torch.manual_seed(0)
    hf = GroupViTModel(hf_groupvit_config(small_export_config())).eval()
    with torch.no_grad():
        for m in hf.modules():
            if isinstance(m, torch.nn.BatchNorm1d):
                m.running_mean.normal_(0, 0.2)
                m.running_var.uniform_(0.5, 2.0)
        hf.logit_scale.fill_(3.1)
    return hf


def _export(checkpoint: str, out) -> None:
    argv = ["export", "onnx", "--checkpoint", checkpoint, "--out", str(out), "--classes", ",".join(CLASSES)]
    assert main([*argv, *TT_FLAGS]) == 0


@pytest.fixture(scope="module")
def from_hf(tmp_path_factory):
    """``(hf model, our model from the converted checkpoint, export folder)``: ``save_pretrained`` ->
    ``groupvit-fast convert model.safetensors converted.pth`` -> ``export onnx --checkpoint converted.pth``."""
    pytest.importorskip("transformers")
    root = tmp_path_factory.mktemp("from-hf")
    hf = _hf_model()
    hf.save_pretrained(str(root / "hf"))
    converted = str(root / "converted.pth")
    assert main(["convert", str(root / "hf" / "model.safetensors"), converted]) == 0
    _export(converted, root / "onnx")
    return hf, load_checkpoint(converted).model.eval(), str(root / "onnx")


@pytest.mark.parametrize(("batch", "h", "w"), PARITY_CROPS)
def test_graph_of_converted_hf_weights_matches_the_segmenter(from_hf, batch, h, w):
    _, model, folder = from_hf
    check_crop_scores(model, folder, CLASSES, "soft", batch, h, w)


@pytest.mark.parametrize("batch", [1, 3])
def test_converted_model_embeds_images_as_hugging_face(from_hf, batch):
    """The exported graph runs our encoder on the converted weights: its image embedding (what the graph's
    grouping and projection compute) equals Hugging Face's ``image_embeds`` on the same pixels. Only at the
    training size: ``GroupViTModel.forward`` takes no other (it does not pass ``interpolate_pos_encoding`` on)."""
    hf, model, _ = from_hf
    pixels = torch.randn(batch, 3, 64, 64, generator=torch.Generator().manual_seed(batch))
    text = torch.tensor([[49406, 320, 49407] + [0] * 13])  # start, "a", end: HF's forward needs a text
    with torch.no_grad():
        theirs = hf(input_ids=text, pixel_values=pixels).image_embeds
        ours = F.normalize(model.encode_image(pixels), dim=-1)
    assert_close_to_scale(ours, theirs)


def test_nvlabs_training_checkpoint_exports_and_matches(tmp_path):
    model = small_model(seed=3)
    path = tmp_path / "ckpt_epoch_4.pth"
    save_nvlabs_training_checkpoint(path, model, small_export_config())
    _export(str(path), tmp_path / "onnx")  # no --trust-pickle: the OmegaConf config loads through the allow-list
    for batch, h, w in (PARITY_CROPS[0], PARITY_CROPS[-1]):
        check_crop_scores(model, str(tmp_path / "onnx"), CLASSES, "soft", batch, h, w)
