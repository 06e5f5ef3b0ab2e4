"""The drop-in GroupViT vision encoder: NVlabs' keys, Hugging Face's outputs, NVlabs' behaviour.

Oracles: the NVlabs state-dict key/shape list (tests/data, recorded from NVlabs' models/group_vit.py
with default arguments), Hugging Face ``transformers.GroupViTVisionModel`` (an independent
implementation of the same network) through ``groupvit_fast.convert``, and the original explicit
formulation (``attn_backend="explicit", assign_backend="reference"``).
"""

from __future__ import annotations

import pytest
import torch

from groupvit_fast import GroupViT
from groupvit_fast.convert import hf_to_nvlabs, nvlabs_to_hf
from groupvit_fast.ops import backend_usage
from paths import TEST_DATA
from tolerances import assert_close_to_scale

transformers = pytest.importorskip("transformers")

KEYS_FILE = TEST_DATA / "groupvit_s_state_dict.txt"

# fp32 parity with HF: both run the same ~30 matmul-deep network in fp32; activations reach ~5, so
# round-off differences of a few 1e-6 relative are expected (measured: 2e-6); 2e-5 is the bound.
FP32_RTOL = 2e-5


def nvlabs_keys() -> list[tuple[str, tuple[int, ...]]]:
    rows = []
    for line in KEYS_FILE.read_text().splitlines():
        if line.startswith("#"):
            continue
        key, shape = line.split()
        rows.append((key, tuple(int(s) for s in shape.split("x"))))
    return rows


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).abs().max() / b.abs().max().clamp(min=1e-12)).item()


@pytest.fixture(scope="module")
def hf_and_ours():
    torch.manual_seed(0)
    hf = transformers.GroupViTVisionModel(transformers.GroupViTVisionConfig()).eval()
    ours = GroupViT().eval()
    ours.load_state_dict(hf_to_nvlabs(hf.state_dict()), strict=True)
    return hf, ours


def test_state_dict_keys_and_shapes_equal_nvlabs_groupvit_s():
    model = GroupViT()
    ours = [(k, tuple(v.shape)) for k, v in model.state_dict().items()]
    assert ours == nvlabs_keys()
    assert len(ours) == 239
    assert sum(p.numel() for p in model.parameters()) == 28_837_136  # 28.8 M


def test_nvlabs_state_dict_loads_strictly_and_round_trips():
    source = GroupViT()
    target = GroupViT()
    result = target.load_state_dict(source.state_dict(), strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    for key, value in source.state_dict().items():
        assert torch.equal(target.state_dict()[key], value), key


def test_pos_embed_of_another_grid_is_resized_on_load():
    small = GroupViT(img_size=160)  # 10x10 patches
    big = GroupViT()
    small.load_state_dict(big.state_dict(), strict=True)
    assert small.pos_embed.shape == (1, 100, 384)


@pytest.mark.parametrize("size", [224, 160, 288])
def test_eval_outputs_match_hugging_face(hf_and_ours, size):
    hf, ours = hf_and_ours
    x = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(size))
    with torch.no_grad():
        # GroupViTVisionModel.forward does not expose interpolate_pos_encoding; its parts do
        vision = hf.vision_model
        embeddings = vision.embeddings(x, interpolate_pos_encoding=size != 224)
        expected_feat = vision.layernorm(vision.encoder(hidden_states=embeddings)[0])
        out = ours(x, return_feat=True, as_dict=True)
        if size == 224:
            torch.testing.assert_close(hf(pixel_values=x).last_hidden_state, expected_feat)
    assert out["feat"].shape == (2, 8, 384) and out["x"].shape == (2, 384)
    assert rel_err(out["feat"], expected_feat) < FP32_RTOL
    assert rel_err(out["x"], expected_feat.mean(dim=1)) < FP32_RTOL


def test_eval_gradients_match_hugging_face(hf_and_ours):
    hf, ours = hf_and_ours
    x = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(7))
    hf.zero_grad()
    ours.zero_grad()
    hf(pixel_values=x).pooler_output.pow(2).sum().backward()
    ours(x).pow(2).sum().backward()
    hf_grads = hf_to_nvlabs({k: p.grad for k, p in hf.named_parameters()})
    # mathematically-zero gradients (e.g. key biases under a softmax over keys) are round-off on both
    # sides: compare each gradient relative to the largest gradient of the model
    scale = max(g.abs().max().item() for g in hf_grads.values())
    for name, param in ours.named_parameters():
        err = (param.grad - hf_grads[name]).abs().max().item() / scale
        assert err < 1e-4, f"{name}: {err:.2e}"


def test_attention_maps_have_nvlabs_shapes_and_are_assignments(hf_and_ours):
    _, ours = hf_and_ours
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        _, _, attn_dicts = ours(x, return_feat=True, return_attn=True)
    assert attn_dicts[2] is None
    for attn, (g, n) in zip(attn_dicts[:2], [(64, 196), (8, 64)], strict=True):
        assert attn["hard"].shape == attn["soft"].shape == (1, 1, g, n)
        torch.testing.assert_close(attn["hard"].sum(dim=2), torch.ones(1, 1, n))  # one group per token
        torch.testing.assert_close(attn["soft"].sum(dim=2), torch.ones(1, 1, n))  # softmax over groups
        assert torch.equal(attn["hard"].argmax(dim=2), attn["soft"].argmax(dim=2))  # eval: no noise


def test_output_forms_follow_nvlabs():
    model = GroupViT(depths=(1, 1, 1), num_group_tokens=(8, 4, 0), num_output_groups=(8, 4)).eval()
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        assert isinstance(model(x), torch.Tensor)
        x_out, feat = model(x, return_feat=True)
        assert feat.shape == (1, 4, 384)
        out = model(x, return_feat=True, return_attn=True, as_dict=True)
    assert set(out) == {"x", "feat", "attn_dicts"}
    torch.testing.assert_close(out["x"], x_out)


def test_fast_model_equals_original_formulation():
    fast = GroupViT(depths=(2, 1, 1)).eval()
    original = GroupViT(depths=(2, 1, 1), attn_backend="explicit", assign_backend="reference").eval()
    original.load_state_dict(fast.state_dict())
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        assert rel_err(fast(x), original(x)) < FP32_RTOL


def test_grouping_blocks_run_the_selected_assign_backend():
    model = GroupViT(depths=(1, 1, 1), assign_backend="reference").eval()
    before = backend_usage().get("reference", 0)
    with torch.no_grad():
        model(torch.randn(1, 3, 224, 224))
    assert backend_usage()["reference"] == before + 2  # two grouping blocks


def test_training_mode_is_random_and_reproducible_with_manual_seed():
    model = GroupViT(depths=(1, 1, 1), drop_path_rate=0.5).train()
    x = torch.randn(2, 3, 224, 224)
    outs = []
    for seed in (0, 0, 1):
        torch.manual_seed(seed)
        outs.append(model(x, return_attn=True)[1][0]["hard"])
    assert torch.equal(outs[0], outs[1])
    assert not torch.equal(outs[0], outs[2])  # Gumbel noise (and DropPath) changed the assignment
    hard = outs[0]
    assert set(hard.unique().tolist()) <= {0.0, 1.0}


@pytest.mark.parametrize(
    ("kwargs", "gumbel", "tau"),
    [
        ({}, True, 1.0),  # NVlabs: noise whenever the assignment is hard
        ({"hard_assignment": False}, False, 1.0),
        ({"gumbel": False}, False, 1.0),  # hard one-hot of the plain softmax, straight-through gradient
        ({"gumbel_tau": 2.5}, True, 2.5),
    ],
)
def test_gumbel_noise_and_temperature_reach_every_grouping_block(kwargs, gumbel, tau):
    model = GroupViT(depths=(1, 1, 1), **kwargs)
    blocks = [layer.downsample for layer in model.layers if layer.downsample is not None]
    assert len(blocks) == 2
    assert all(b.assign.gumbel is gumbel and b.assign.gumbel_tau == tau for b in blocks)


def test_successive_training_steps_draw_fresh_gumbel_noise():
    model = GroupViT(depths=(1, 1, 1), drop_path_rate=0.0).train()  # no DropPath: only the noise is random
    x = torch.randn(2, 3, 224, 224)
    torch.manual_seed(0)
    first, second = (model(x) for _ in range(2))  # a training step's call: no maps, the op's in-kernel noise
    assert not torch.equal(first, second)


def test_hard_assignment_without_gumbel_is_deterministic_in_training_mode():
    model = GroupViT(depths=(1, 1, 1), gumbel=False).train()
    x = torch.randn(2, 3, 224, 224)
    maps = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        maps.append(model(x, return_attn=True)[1][0]["hard"])
    assert torch.equal(maps[0], maps[1])
    assert set(maps[0].unique().tolist()) <= {0.0, 1.0}


def test_eval_mode_is_deterministic():
    model = GroupViT(depths=(1, 1, 1)).eval()
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        torch.manual_seed(0)
        a = model(x)
        torch.manual_seed(1)
        b = model(x)
    assert torch.equal(a, b)


def test_activation_checkpointing_gives_the_same_outputs_and_gradients():
    plain = GroupViT(depths=(2, 1, 1), drop_path_rate=0.2).train()
    ckpt = GroupViT(depths=(2, 1, 1), drop_path_rate=0.2, use_checkpoint=True).train()
    ckpt.load_state_dict(plain.state_dict())
    x = torch.randn(2, 3, 224, 224)
    grads = []
    for model in (plain, ckpt):
        torch.manual_seed(3)
        model.zero_grad()
        out = model(x)
        out.pow(2).sum().backward()
        grads.append((out.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}))
    torch.testing.assert_close(grads[0][0], grads[1][0])
    largest = max(g.abs().max().item() for g in grads[1][1].values())  # some gradients are pure round-off
    for name in grads[0][1]:
        assert_close_to_scale(grads[0][1][name], grads[1][1][name], rel=1e-5, msg=name, scale=largest)


def test_fourier_position_embedding_is_fixed():
    model = GroupViT(pos_embed_type="fourier")
    assert not model.pos_embed.requires_grad
    assert model.pos_embed.shape == (1, 196, 384)


@pytest.mark.parametrize(
    "bad,match",
    [
        (torch.randn(3, 224, 224), "rank|\\[B, C, H, W\\]"),
        (torch.randn(1, 1, 224, 224), "channels"),
        (torch.randn(1, 3, 8, 224), "smaller than one"),
    ],
)
def test_bad_images_raise_value_error(bad, match):
    model = GroupViT(depths=(1, 1, 1)).eval()
    with pytest.raises(ValueError, match=match):
        model(bad)


@pytest.mark.parametrize(
    "bad,match",
    [
        (torch.zeros(1, 3, 224, 224, dtype=torch.uint8), "floating-point"),  # raw pixels, not normalised
        (torch.zeros(1, 3, 224, 224, dtype=torch.float64), "float64 but the model's parameters are torch.float32"),
    ],
)
def test_image_dtype_errors_name_x(bad, match):
    model = GroupViT(depths=(1, 1, 1)).eval()
    with pytest.raises(TypeError, match=match):
        model(bad)


def test_autocast_accepts_fp32_images_for_a_bf16_run():
    model = GroupViT(depths=(1, 1, 1)).eval()
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        assert model(torch.randn(1, 3, 64, 64)).shape == (1, 384)


def test_training_needs_the_configured_image_size():
    model = GroupViT(depths=(1, 1, 1)).train()
    with pytest.raises(ValueError, match="img_size"):
        model(torch.randn(1, 3, 160, 160))


def test_bad_constructor_arguments_raise():
    with pytest.raises(ValueError, match="attn_backend"):
        GroupViT(attn_backend="flash3")
    with pytest.raises(ValueError, match="patch_size"):
        GroupViT(patch_size=14)
    with pytest.raises(ValueError, match=r"num_heads\[0\]=5 must divide .* 384"):
        GroupViT(num_heads=(5, 5, 5))
    with pytest.raises(ValueError, match=r"num_heads\[2\]=7 must divide .* 768"):
        GroupViT(embed_factors=(1, 1, 2), num_heads=(6, 6, 7))
    with pytest.raises(ValueError, match="assign_backend"):  # at construction, not at the first forward
        GroupViT(assign_backend="fastest")
    with pytest.raises(ValueError, match="gumbel=True needs hard_assignment=True"):
        GroupViT(hard_assignment=False, gumbel=True)
    for tau in (0.0, -1.0, float("nan"), "2"):
        with pytest.raises(ValueError, match="gumbel_tau"):
            GroupViT(gumbel_tau=tau)


def test_xformers_attention_matches_sdpa():
    pytest.importorskip("xformers.ops")
    device = "cuda" if torch.cuda.is_available() else "cpu"
    sdpa = GroupViT(depths=(1, 1, 1)).eval().to(device)
    xf = GroupViT(depths=(1, 1, 1), attn_backend="xformers").eval().to(device)
    xf.load_state_dict(sdpa.state_dict())
    x = torch.randn(1, 3, 224, 224, device=device)
    with torch.no_grad():
        assert rel_err(xf(x), sdpa(x)) < 1e-4


def test_converter_round_trips_and_rejects_foreign_keys(hf_and_ours):
    hf, ours = hf_and_ours
    back = nvlabs_to_hf(ours.state_dict())
    assert set(back) == set(hf.state_dict())
    for key, value in hf.state_dict().items():
        assert torch.equal(back[key], value), key
    with pytest.raises(ValueError, match="not"):
        hf_to_nvlabs({"vision_model.something_else.weight": torch.zeros(1)})
    with pytest.raises(ValueError, match="not"):
        nvlabs_to_hf({"classifier.weight": torch.zeros(1)})
