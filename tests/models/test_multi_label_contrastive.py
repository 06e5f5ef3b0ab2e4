"""MultiLabelContrastive: NVlabs keys, the two losses against hand-written formulas, the encoders,
and a 2-process gloo run that must equal one process on the concatenated batch."""

from __future__ import annotations

import math
import os
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

from groupvit_fast import MultiLabelContrastive, build_model
from groupvit_fast.models.registry import released_config
from groupvit_small import random_text, small_config
from paths import HELPERS, TEST_DATA
from tolerances import assert_close_to_scale

DATA = TEST_DATA


def _recorded_keys():
    rows = [
        line.split()
        for line in (DATA / "multi_label_contrastive_state_dict.txt").read_text().splitlines()
        if line and not line.startswith("#")
    ]
    return [(k, () if s == "scalar" else tuple(int(d) for d in s.split("x"))) for k, s in rows]


def test_released_config_matches_nvlabs_state_dict():
    model = build_model(released_config())
    sd = model.state_dict()
    recorded = _recorded_keys()
    assert len(sd) == len(recorded) == 407
    assert [(k, tuple(v.shape)) for k, v in sd.items()] == recorded
    n_params = sum(p.numel() for p in model.parameters())
    assert round(n_params / 1e6, 1) == 55.7
    assert isinstance(model.img_projector.linear_hidden[1], torch.nn.SyncBatchNorm)
    assert model.logit_scale.item() == pytest.approx(math.log(1 / 0.07))


def test_without_multi_label_has_no_second_scale():
    model = build_model(small_config())
    assert "multi_label_logit_scale" not in model.state_dict()
    shared = build_model(small_config(multi_label=2, share_temperature=True))
    assert "multi_label_logit_scale" not in shared.state_dict()


# ---- losses, from the formulas in docs/groupvit.md ---------------------------------------------


def _infonce_reference(image_x, text_x, scale):
    """0.5 * (CE(rows of s*x t^T, diagonal) + CE(rows of s*t x^T, diagonal)), float64, explicit."""
    x = image_x.double() / image_x.double().norm(dim=-1, keepdim=True)
    t = text_x.double() / text_x.double().norm(dim=-1, keepdim=True)
    logits = min(math.exp(scale), 100.0) * x @ t.T
    n = logits.shape[0]
    img = -sum(logits[i, i] - torch.logsumexp(logits[i], 0) for i in range(n)) / n
    txt = -sum(logits[i, i] - torch.logsumexp(logits[:, i], 0) for i in range(n)) / n
    return 0.5 * (img + txt)


def _multilabel_reference(image_feat, text_feat, scale):
    """Soft targets: an image row puts 1/L2 on each of its own prompts, a prompt row 1/L1 on its image rows."""
    b, l1, _ = image_feat.shape
    l2 = text_feat.shape[1]
    x = F.normalize(image_feat.double(), dim=-1).reshape(b * l1, -1)
    t = F.normalize(text_feat.double(), dim=-1).reshape(b * l2, -1)
    s = min(math.exp(scale), 100.0)
    logp_img = torch.log_softmax(s * x @ t.T, dim=-1)
    logp_txt = torch.log_softmax(s * t @ x.T, dim=-1)
    loss_img = -sum(logp_img[i * l1 + a, i * l2 + c] / l2 for i in range(b) for a in range(l1) for c in range(l2))
    loss_txt = -sum(logp_txt[i * l2 + c, i * l1 + a] / l1 for i in range(b) for c in range(l2) for a in range(l1))
    return 0.5 * (loss_img / (b * l1) + loss_txt / (b * l2))


@pytest.mark.parametrize("scale", [math.log(1 / 0.07), math.log(250.0)])  # the second is clamped to 100
def test_contrastive_loss_matches_formula(scale):
    model = build_model(small_config())
    with torch.no_grad():
        model.logit_scale.fill_(scale)
    g = torch.Generator().manual_seed(0)
    image_x, text_x = torch.randn(5, 32, generator=g), torch.randn(5, 32, generator=g)
    loss = model.loss(image_x, text_x)
    torch.testing.assert_close(loss.double(), _infonce_reference(image_x, text_x, scale), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("l1,l2,share", [(1, 3, False), (2, 3, False), (1, 2, True)])
def test_multi_label_loss_matches_formula(l1, l2, share):
    model = build_model(small_config(multi_label=l2, share_temperature=share))
    with torch.no_grad():
        model.logit_scale.fill_(2.0)
        if not share:
            model.multi_label_logit_scale.fill_(3.0)
    g = torch.Generator().manual_seed(0)
    image_feat, text_feat = torch.randn(4, l1, 32, generator=g), torch.randn(4, l2, 32, generator=g)
    loss = model.multi_label_loss(image_feat, text_feat)
    ref = _multilabel_reference(image_feat, text_feat, 2.0 if share else 3.0)
    torch.testing.assert_close(loss.double(), ref, atol=1e-5, rtol=1e-5)


def test_forward_train_returns_both_losses_and_checks_text_shape():
    torch.manual_seed(0)
    model = build_model(small_config(multi_label=2, multi_label_loss_weight=0.5, sync_bn=False)).train()
    images = torch.randn(3, 3, 64, 64)
    texts = torch.stack([random_text(3) for _ in range(3)])
    losses = model(images, texts)
    assert set(losses) == {"loss", "multi_label_loss"}
    sum(losses.values()).backward()
    assert model.multi_label_logit_scale.grad is not None and model.logit_scale.grad is not None
    # the weight multiplies the multi-label term
    model.eval()
    unweighted = model.multi_label_loss(model.encode_image(images).unsqueeze(1), model.encode_text(texts)[1])
    torch.testing.assert_close(model.forward_train(images, texts)["multi_label_loss"], 0.5 * unweighted)
    with pytest.raises(ValueError, match="multi_label=2"):
        model.forward_train(images, texts[:, 0])
    with pytest.raises(ValueError, match="3 images and 2 texts"):
        model.forward_train(images, texts[:2])


def test_single_caption_training_refuses_several_texts_per_image():
    model = build_model(small_config(sync_bn=False)).train()
    images = torch.randn(2, 3, 64, 64)
    texts = torch.stack([random_text(2) for _ in range(2)])  # [B, 2, L]
    with pytest.raises(ValueError, match="multi_label=0 trains on one caption"):
        model(images, texts)
    assert set(model(images, texts[:, :1])) == {"loss"}  # [B, 1, L] is one caption per image


def test_encoders_and_zero_shot():
    torch.manual_seed(0)
    model = build_model(small_config()).eval()
    images = torch.randn(2, 3, 64, 64)
    image_x, image_feat = model.encode_image(images, return_feat=True)
    assert image_x.shape == (2, 32) and image_feat.shape == (2, 4, 32)
    outs = model.img_encoder(images, return_feat=True, as_dict=True)
    torch.testing.assert_close(image_feat, model.img_projector(outs["feat"]))
    texts = torch.stack([random_text(3) for _ in range(2)])  # [B=2, 3, L]
    text_x, multi = model.encode_text(texts)
    flat = model.encode_text(texts.flatten(0, 1)).view(2, 3, -1)
    torch.testing.assert_close(text_x, flat[:, 0])
    torch.testing.assert_close(multi, flat[:, 1:])
    # class embeddings: mean of the template projections, then L2 normalised (NVlabs build_text_embedding)
    tokens = torch.stack([random_text(2) for _ in range(4)])  # [K=4, T=2, L]
    emb = model.build_text_embedding(tokens)
    ref = F.normalize(model.encode_text(tokens.flatten(0, 1)).view(4, 2, -1).mean(1), dim=-1)
    torch.testing.assert_close(emb, ref)
    logits = model(images, emb)  # eval forward = zero-shot prediction
    torch.testing.assert_close(logits, F.normalize(image_x, dim=-1) @ emb.T)


def test_builder_accepts_modules_and_rejects_bad_configs():
    from groupvit_fast import GroupViT, TextTransformer

    img = GroupViT(
        img_size=64,
        embed_dim=64,
        num_heads=[2, 2, 2],
        depths=[1, 1, 1],
        num_group_tokens=[8, 4, 0],
        num_output_groups=[8, 4],
    )
    txt = TextTransformer(context_length=16, width=64, layers=1, vocab_size=100)
    model = MultiLabelContrastive(img, txt, output_dim=16, proj_num_layers=1)
    assert model.img_projector.linear_out.weight.shape == (16, 64, 1)
    built = build_model({"model": small_config()})  # a whole config with a `model:` entry
    assert built.groupvit_config == small_config()
    with pytest.raises(ValueError, match="unknown model type"):
        build_model({"type": "NoSuchModel"})
    with pytest.raises(ValueError, match="cannot build GroupViT"):
        build_model({"type": "GroupViT", "no_such_arg": 1})


def test_build_model_resolves_omegaconf_interpolation():
    omegaconf = pytest.importorskip("omegaconf")
    cfg = omegaconf.OmegaConf.create(
        {
            "data": {"text_aug": {"multi_label": 2}},
            "model": dict(small_config(), multi_label="${data.text_aug.multi_label}"),
        }
    )
    model = build_model(cfg)
    assert model.multi_label == 2 and "multi_label_logit_scale" in model.state_dict()


# ---- distributed: 2 gloo processes == 1 process on the concatenated batch -----------------------


def test_two_process_gloo_equals_single_process(tmp_path):
    from dist_contrastive_case import build_case, feature_losses, model_losses
    from dist_contrastive_worker import run

    world = 2
    here = HELPERS
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(here), os.environ.get("PYTHONPATH", "")]))
    init = tmp_path / "init"
    # rank 1 in a second process, rank 0 here (one interpreter start instead of two)
    proc = subprocess.Popen(
        [
            sys.executable,
            str(here / "dist_contrastive_worker.py"),
            "1",
            str(world),
            str(init),
            str(tmp_path / "rank1.pt"),
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        rank0 = run(0, world, str(init))
    finally:
        log = proc.communicate(timeout=240)[0]
    assert proc.returncode == 0, log
    ranks = [rank0, torch.load(tmp_path / "rank1.pt", weights_only=True)]

    case = build_case()
    model = case["model"]
    feats = {k: case[k].clone().requires_grad_(True) for k in ("image_x", "text_x", "prompt_x")}
    single = feature_losses(model, feats)
    sum(single.values()).backward()
    # the mean of the per-rank losses is the loss of the whole batch
    for key, value in single.items():
        torch.testing.assert_close(sum(r["feature_losses"][key] for r in ranks) / world, value.detach())
    # all_gather's backward sums every rank's gradient into a rank's own slice: W x d(mean loss)
    b = case["images"].shape[0] // world
    for key, leaf in feats.items():
        got = torch.cat([r["feature_grads"][key] for r in ranks]) / world
        assert_close_to_scale(got, leaf.grad, rel=1e-05, msg=key)
    for name, p in model.named_parameters():
        if "logit_scale" in name:
            got = sum(r["scale_grads"][name] for r in ranks) / world
            assert_close_to_scale(got, p.grad, rel=1e-05, msg=name)
    model.zero_grad(set_to_none=True)

    single = model_losses(model, case["images"], case["texts"])
    sum(single.values()).backward()
    for key, value in single.items():
        torch.testing.assert_close(
            sum(r["model_losses"][key] for r in ranks) / world, value.detach(), atol=1e-5, rtol=1e-5
        )
    num = den = 0.0
    for name, p in model.named_parameters():
        ref = p.grad if p.grad is not None else torch.zeros_like(p)
        got = ranks[0]["model_grads"][name]
        torch.testing.assert_close(got, ranks[1]["model_grads"][name])  # all-reduced: identical on every rank
        num += (got - ref).square().sum().item()
        den += ref.square().sum().item()
        if ref.abs().max() > 1e-4:  # gradients that are not zero up to rounding, one by one
            torch.testing.assert_close(got, ref, atol=1e-5, rtol=1e-3, msg=name)
    assert math.sqrt(num / den) < 1e-4
    assert b == 3
