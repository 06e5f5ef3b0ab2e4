"""Checkpoint loading (NVlabs .pth with an OmegaConf config, HF weights, safetensors) and its failure modes.

Every checkpoint here is created by the test in the format it stands for; nothing is downloaded.
"""

from __future__ import annotations

import os

import pytest
import torch
import torch.nn.functional as F

from groupvit_fast import GroupViT, build_model, load_checkpoint
from groupvit_fast.checkpoint import (
    infer_config,
    omegaconf_safe_globals,
    read_checkpoint,
    save_checkpoint,
    save_safetensors,
)
from groupvit_small import hf_small_config, random_text, save_nvlabs_training_checkpoint, small_config
from tolerances import assert_close_to_scale


def _model(seed=0, **overrides):
    torch.manual_seed(seed)
    return build_model(small_config(**overrides)).eval()


def _same_weights(a: dict, b: dict, skip=()):
    assert set(a) - set(skip) == set(b) - set(skip)
    for key in a:
        if key not in skip:
            assert torch.equal(a[key], b[key]), key


def _snapshot(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


# ---- NVlabs checkpoints ----------------------------------------------------------------------


def test_nvlabs_checkpoint_loads_safely_and_builds_its_model(tmp_path):
    config = small_config(multi_label=3)
    model = _model(**{"multi_label": 3})
    path = tmp_path / "ckpt_epoch_4.pth"
    save_nvlabs_training_checkpoint(path, model, config)
    # plain weights_only refuses it (OmegaConf objects) ...
    with pytest.raises(Exception, match="Weights only load failed"):
        torch.load(path, weights_only=True)
    # ... and our allow-list is exactly what the file needs
    needed = set(torch.serialization.get_unsafe_globals_in_checkpoint(str(path)))
    allowed = {g[1] if isinstance(g, tuple) else f"{g.__module__}.{g.__qualname__}" for g in omegaconf_safe_globals()}
    assert needed <= allowed
    assert all(name.startswith(("omegaconf.", "builtins.", "typing.", "collections.")) for name in allowed)

    ckpt = load_checkpoint(path)
    assert ckpt.kind == "full" and ckpt.source_format == "nvlabs"
    assert ckpt.config["multi_label"] == 3  # interpolation resolved
    assert ckpt.meta["epoch"] == 4
    _same_weights(ckpt.model.state_dict(), model.state_dict())
    images = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(ckpt.model.eval().encode_image(images), model.encode_image(images))


def test_pickled_code_is_refused_unless_trusted(tmp_path):
    marker = tmp_path / "ran"

    class Payload:  # unpickling it would create the marker folder
        def __reduce__(self):
            return (os.mkdir, (str(marker),))

    model = _model()
    path = tmp_path / "evil.pth"
    torch.save({"model": model.state_dict(), "extra": Payload()}, path)
    target = _model(seed=1)
    before = _snapshot(target)
    with pytest.raises(ValueError, match="refused to unpickle .*mkdir.*trust_pickle"):
        load_checkpoint(path, target)
    assert not marker.exists()
    _same_weights(target.state_dict(), before)
    with pytest.warns(UserWarning, match="arbitrary code"):
        load_checkpoint(path, target, trust_pickle=True)  # the documented opt-in
    assert marker.exists()
    _same_weights(target.state_dict(), model.state_dict())


# ---- Hugging Face weights --------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["safetensors", "bin"])
def test_hf_weights_load_and_match_transformers(tmp_path, fmt):
    from safetensors.torch import save_file
    from transformers import GroupViTModel

    torch.manual_seed(0)
    hf = GroupViTModel(hf_small_config()).eval()
    path = tmp_path / f"model.{fmt}"
    if fmt == "safetensors":
        save_file({k: v.contiguous() for k, v in hf.state_dict().items()}, str(path))
    else:
        torch.save(hf.state_dict(), path)
    target = _model(seed=5, multi_label=3)
    ml_scale = target.multi_label_logit_scale.detach().clone()
    ckpt = load_checkpoint(path, target)
    assert ckpt.source_format == "hf" and ckpt.kind == "full"
    assert ckpt.kept_keys == ["multi_label_logit_scale"]  # HF has none: the model keeps its own
    assert torch.equal(target.multi_label_logit_scale.detach(), ml_scale)
    images, text = torch.randn(2, 3, 64, 64), random_text(3)
    with torch.no_grad():
        assert_close_to_scale(
            F.normalize(target.encode_image(images), dim=-1),
            F.normalize(hf.get_image_features(pixel_values=images).pooler_output, dim=-1),
        )
        assert_close_to_scale(
            F.normalize(target.encode_text(text), dim=-1),
            F.normalize(hf.get_text_features(input_ids=text).pooler_output, dim=-1),
        )


def test_save_pretrained_folders_give_their_head_count(tmp_path):
    """Shapes do not hold the vision head count: a ``save_pretrained`` folder's config.json does (2 here, where
    ``embed_dim // 64`` would be 1); a text head count our text encoder cannot have is refused in one line."""
    import json

    from transformers import GroupViTModel

    torch.manual_seed(0)
    GroupViTModel(hf_small_config()).save_pretrained(str(tmp_path / "hf"))
    ckpt = load_checkpoint(tmp_path / "hf" / "model.safetensors")
    assert ckpt.config["img_encoder"]["num_heads"] == [2, 2, 2]
    config = json.loads((tmp_path / "hf" / "config.json").read_text())
    config["text_config"]["num_attention_heads"] = 4
    (tmp_path / "hf" / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match=r"config.json: text_config.num_attention_heads 4: .* 1 heads"):
        load_checkpoint(tmp_path / "hf" / "model.safetensors")


def test_hf_vision_weights_and_full_checkpoint_into_bare_groupvit(tmp_path):
    from transformers import GroupViTVisionModel

    torch.manual_seed(0)
    hf = GroupViTVisionModel(hf_small_config().vision_config).eval()
    torch.save(hf.state_dict(), tmp_path / "vision.bin")
    kwargs = dict(
        img_size=64,
        embed_dim=64,
        num_heads=[2, 2, 2],
        depths=[1, 1, 1],
        num_group_tokens=[8, 4, 0],
        num_output_groups=[8, 4],
    )
    vit = GroupViT(**kwargs).eval()
    ckpt = load_checkpoint(tmp_path / "vision.bin", vit)
    assert ckpt.kind == "vision"
    images = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(vit(images), hf(pixel_values=images).pooler_output, atol=2e-5, rtol=1e-5)
    # the image encoder of a full checkpoint goes into a bare GroupViT
    full = _model()
    save_checkpoint(full, tmp_path / "full.pth")
    load_checkpoint(tmp_path / "full.pth", vit)
    _same_weights(
        vit.state_dict(),
        {k[len("img_encoder.") :]: v for k, v in full.state_dict().items() if k.startswith("img_encoder.")},
    )
    # but vision-only weights do not make a full model
    with pytest.raises(ValueError, match="only vision-encoder weights"):
        load_checkpoint(tmp_path / "vision.bin", _model())


# ---- our exports -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name,hf", [("m.safetensors", False), ("hf.safetensors", True), ("m.pth", False), ("pytorch_model.bin", True)]
)
def test_exports_round_trip(tmp_path, name, hf):
    model = _model(multi_label=2)
    path = tmp_path / name
    (save_safetensors if name.endswith(".safetensors") else save_checkpoint)(model, path, hf=hf)
    ckpt = load_checkpoint(path)  # builds the model from the stored config (or the shapes)
    skip = {"multi_label_logit_scale"} if hf else set()
    _same_weights(
        {k: v for k, v in ckpt.model.state_dict().items() if k not in skip},
        {k: v for k, v in model.state_dict().items() if k not in skip},
    )
    if name.endswith(".safetensors") or not hf:
        assert ckpt.config == model.groupvit_config
    if name == "m.pth":  # our .pth stays loadable with plain weights_only=True
        torch.load(path, weights_only=True)


def test_infer_config_from_shapes():
    model = _model(multi_label=3)
    cfg = infer_config(model.state_dict())
    rebuilt = build_model(cfg)
    assert {k: tuple(v.shape) for k, v in rebuilt.state_dict().items()} == {
        k: tuple(v.shape) for k, v in model.state_dict().items()
    }
    assert cfg["img_encoder"]["depths"] == [1, 1, 1]
    assert cfg["text_encoder"]["context_length"] == 16 and cfg["proj_inner_dim"] == 128
    vision = infer_config(model.img_encoder.state_dict())
    assert vision["type"] == "GroupViT" and vision["num_group_tokens"] == [8, 4, 0]


def test_ddp_prefix_and_state_dict_inputs(tmp_path):
    model = _model()
    torch.save({"state_dict": {f"module.{k}": v for k, v in model.state_dict().items()}}, tmp_path / "ddp.pth")
    target = _model(seed=3)
    load_checkpoint(tmp_path / "ddp.pth", target)
    _same_weights(target.state_dict(), model.state_dict())
    target2 = _model(seed=4)
    load_checkpoint(model.state_dict(), target2)  # a state dict in memory
    _same_weights(target2.state_dict(), model.state_dict())
    torch.save(model.state_dict(), tmp_path / "legacy.pth", _use_new_zipfile_serialization=False)
    target3 = _model(seed=5)
    load_checkpoint(tmp_path / "legacy.pth", target3)  # the pre-1.6 (non-zip) torch.save format
    _same_weights(target3.state_dict(), model.state_dict())


def test_pos_embed_of_another_grid_is_resized(tmp_path):
    model = _model()
    save_checkpoint(model, tmp_path / "m.pth")
    bigger = build_model(small_config(img_encoder={"img_size": 96}))
    load_checkpoint(tmp_path / "m.pth", bigger)
    assert bigger.img_encoder.pos_embed.shape == (1, 36, 64)
    grid = model.img_encoder.pos_embed.reshape(1, 4, 4, 64).permute(0, 3, 1, 2)
    ref = F.interpolate(grid, size=(6, 6), mode="bicubic", align_corners=False).permute(0, 2, 3, 1).reshape(1, 36, 64)
    torch.testing.assert_close(bigger.img_encoder.pos_embed.detach(), ref)


# ---- failures: clear ValueError, model untouched ---------------------------------------------


def _corrupt_files(tmp_path):
    model = _model()
    save_checkpoint(model, tmp_path / "good.pth")
    save_safetensors(model, tmp_path / "good.safetensors")
    files = {
        "garbage.pth": (b"this is not a checkpoint at all", "not a PyTorch checkpoint or safetensors"),
        "empty.pth": (b"", "not a PyTorch checkpoint or safetensors"),
        "truncated.pth": ((tmp_path / "good.pth").read_bytes()[:4000], "corrupt"),
        "truncated.safetensors": ((tmp_path / "good.safetensors").read_bytes()[:4000], "corrupt safetensors"),
    }
    for name, (data, _) in files.items():
        (tmp_path / name).write_bytes(data)
    torch.save({"a": torch.zeros(3)}, tmp_path / "other_model.pth")
    torch.save([torch.zeros(3)], tmp_path / "a_list.pth")
    torch.save({"model": {"x": 1}}, tmp_path / "not_tensors.pth")
    expected = {name: msg for name, (_, msg) in files.items()}
    expected.update(
        {
            "other_model.pth": "not GroupViT weights",
            "a_list.pth": "not a state dict",
            "not_tensors.pth": "not tensors",
            "missing.pth": "no such file",
        }
    )
    return expected


def test_bad_files_raise_clear_errors_and_leave_the_model_alone(tmp_path):
    target = _model(seed=9)
    before = _snapshot(target)
    for name, message in _corrupt_files(tmp_path).items():
        with pytest.raises(ValueError, match=message) as err:
            load_checkpoint(tmp_path / name, target)
        assert name in str(err.value)
        _same_weights(target.state_dict(), before)


def test_a_path_of_the_wrong_type_is_a_type_error():
    with pytest.raises(TypeError, match="path_or_dict"):
        load_checkpoint(42)
    with pytest.raises(TypeError, match="path_or_dict"):
        read_checkpoint([("img_encoder.pos_embed", torch.zeros(1))])


def test_mismatched_weights_raise_before_anything_is_copied(tmp_path):
    save_checkpoint(_model(), tmp_path / "m.pth")
    other = build_model(small_config(output_dim=16))
    before = _snapshot(other)
    with pytest.raises(ValueError, match=r"img_projector.linear_out.weight has shape \(32, 128, 1\)"):
        load_checkpoint(tmp_path / "m.pth", other)
    _same_weights(other.state_dict(), before)
    # missing keys (text tower deeper than the file's)
    deeper = build_model(small_config(text_encoder={"layers": 3}))
    before = _snapshot(deeper)
    with pytest.raises(ValueError, match="missing.*resblocks.2"):
        load_checkpoint(tmp_path / "m.pth", deeper)
    _same_weights(deeper.state_dict(), before)
    # extra keys are refused by default, tolerated with strict=False
    shallower = build_model(small_config(text_encoder={"layers": 1}))
    with pytest.raises(ValueError, match="unexpected"):
        load_checkpoint(tmp_path / "m.pth", shallower)
    load_checkpoint(tmp_path / "m.pth", shallower, strict=False)


def test_read_checkpoint_reports_format_without_building(tmp_path):
    save_safetensors(_model(), tmp_path / "hf.safetensors", hf=True)
    ckpt = read_checkpoint(tmp_path / "hf.safetensors")
    assert ckpt.model is None and ckpt.source_format == "hf" and ckpt.kind == "full"
    assert "img_encoder.pos_embed" in ckpt.state_dict  # converted to NVlabs keys
