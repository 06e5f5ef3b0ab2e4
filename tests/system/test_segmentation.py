"""Zero-shot segmentation: the batched per-crop math against a step-by-step path written from
docs/segmentation.md, the sliding-window protocol, the single encoder pass, mIoU and the output files."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from groupvit_fast import build_model
from groupvit_fast.reference.segmentation import reference_crop_scores, reference_segment_scores
from groupvit_fast.segmentation import (
    ClassSet,
    ConfusionMatrix,
    GroupViTSegmenter,
    TextEmbeddingCache,
    check_assignment,
    class_fractions,
    class_text_embeddings,
    compose_assignment_maps,
    compose_soft_maps,
    crop_class_scores,
    group_class_affinity,
    load_image,
    load_label_mask,
    preprocess_image,
    rescale_size,
    resolve_classes,
    save_json,
    save_label_png,
    save_overlay_png,
    sliding_windows,
)
from groupvit_small import small_config
from tolerances import assert_close_to_scale

# ---- the step-by-step reference (docs/segmentation.md, one crop at a time) -----------------------
# lives in groupvit_fast.reference.segmentation (the benchmark's baseline too)


def _reference_crop(soft0, soft1, feat, x, text, logit_scale, crop_hw, grid_hw, with_bg, bg_thresh):
    return reference_crop_scores([soft0, soft1], feat, x, text, logit_scale, crop_hw, grid_hw, with_bg, bg_thresh)


def _random_crop_inputs(b, n_grid, g0, g, k, seed):
    gen = torch.Generator().manual_seed(seed)
    n = n_grid[0] * n_grid[1]
    soft0 = torch.randn(b, 1, g0, n, generator=gen).mul(3).softmax(dim=2)  # softmax over groups, as the model's
    soft1 = torch.randn(b, 1, g, g0, generator=gen).mul(3).softmax(dim=2)
    feat = torch.randn(b, g, 16, generator=gen)
    x = torch.randn(b, 16, generator=gen)
    text = F.normalize(torch.randn(k, 16, generator=gen), dim=-1)
    return soft0, soft1, feat, x, text


@pytest.mark.parametrize(
    "k,with_bg,grid,crop",
    [
        (3, True, (4, 4), (64, 64)),
        (9, True, (3, 5), (45, 77)),
        (9, False, (4, 4), (64, 64)),
        (1, True, (2, 2), (32, 32)),
    ],
)
def test_batched_crop_scores_equal_step_by_step(k, with_bg, grid, crop):
    b, g0, g = 5, 8, 4
    soft0, soft1, feat, x, text = _random_crop_inputs(b, grid, g0, g, k, seed=k)
    scale = torch.tensor(math.log(40.0))
    maps = compose_soft_maps([{"soft": soft0}, {"soft": soft1}, None])
    affinity = group_class_affinity(feat, x, text, scale)
    scores = crop_class_scores(maps, grid, crop, affinity, with_bg=with_bg, bg_thresh=0.6)
    assert scores.shape == (b, k + with_bg, *crop)
    for i in range(b):
        ref = _reference_crop(soft0[i, 0], soft1[i, 0], feat[i], x[i], text, scale, crop, grid, with_bg, 0.6)
        assert_close_to_scale(scores[i], ref)
        assert torch.equal(scores[i].argmax(0), ref.argmax(0))
    if with_bg:
        assert scores[:, 0].unique().tolist() in ([0.0], [1.0], [0.0, 1.0])


def test_logit_scale_is_clamped_at_100():
    soft0, soft1, feat, x, text = _random_crop_inputs(2, (4, 4), 8, 4, 6, seed=0)
    a = group_class_affinity(feat, x, text, torch.tensor(math.log(100.0)))
    b = group_class_affinity(feat, x, text, torch.tensor(math.log(5000.0)))
    torch.testing.assert_close(a, b)


# ---- the whole-image protocol ------------------------------------------------------------------


def test_rescale_and_windows_follow_mmseg():
    assert rescale_size(375, 500) == (448, 597)  # short side 448, ratio kept, rounded half up
    assert rescale_size(100, 1000) == (205, 2048)  # the long side is capped at 2048 first
    assert sliding_windows(448, 600) == [(0, 448, 0, 448), (0, 448, 152, 600)]
    assert sliding_windows(448, 448) == [(0, 448, 0, 448)]
    wins = sliding_windows(700, 1000)
    assert len(wins) == 3 * 4 and wins[-1] == (252, 700, 552, 1000)
    count = torch.zeros(700, 1000)
    for y1, y2, x1, x2 in wins:
        assert y2 - y1 == 448 and x2 - x1 == 448
        count[y1:y2, x1:x2] += 1
    assert count.min() >= 1
    assert sliding_windows(200, 300) == [(0, 200, 0, 300)]  # smaller than one crop: one window


def test_preprocess_normalises_like_mmseg():
    img = torch.randint(0, 256, (3, 30, 40), dtype=torch.uint8)
    out = preprocess_image(img, short_side=30)
    mean = torch.tensor([123.675, 116.28, 103.53])[:, None, None]
    std = torch.tensor([58.395, 57.12, 57.375])[:, None, None]
    torch.testing.assert_close(out, (img.float() - mean) / std)
    assert preprocess_image(img, short_side=60).shape == (3, 60, 80)
    hwc = img.permute(1, 2, 0).numpy()
    torch.testing.assert_close(preprocess_image(hwc, short_side=30), out)


def _small_model(seed=0):
    torch.manual_seed(seed)
    model = build_model(small_config(text_encoder={"context_length": 16})).eval()
    with torch.no_grad():
        model.logit_scale.fill_(math.log(100.0))
    return model


def _fake_tokenizer(texts):
    # a stand-in tokenizer (the real one needs open_clip): distinct ids per text, end token 99
    out = torch.zeros(len(texts), 16, dtype=torch.long)
    for i, t in enumerate(texts):
        ids = [3 + (sum(map(ord, t)) * (j + 7)) % 80 for j in range(min(len(t), 10))]
        out[i, : len(ids)] = torch.tensor(ids)
        out[i, len(ids)] = 99
    return out


def _segmenter(model, names, **kwargs):
    cache = TextEmbeddingCache()
    seg = GroupViTSegmenter(
        model, ClassSet(tuple(names), 0.5), crop_size=64, stride=32, short_side=64, text_cache=cache, **kwargs
    )
    cache.get(model, seg.class_set.text_names, "simple", tokenizer=_fake_tokenizer)  # fill it: no open_clip
    return seg


def _reference_image(model, image, names, bg_thresh, crop=64, stride=32, short=64):
    """The protocol step by step (groupvit_fast.reference.segmentation): resize, one crop at a time
    through the encoder (twice, as NVlabs), per-crop reference scores, average, resize back."""
    with_bg = names[0] == "background"
    text = class_text_embeddings(model, names[1:] if with_bg else names, tokenizer=_fake_tokenizer)
    return reference_segment_scores(
        model, image, text, with_bg=with_bg, bg_thresh=bg_thresh, crop=crop, stride=stride, short_side=short
    )


@pytest.mark.parametrize("with_bg", [True, False])
def test_pipeline_equals_step_by_step_and_batches_images(with_bg):
    names = (["background"] if with_bg else []) + ["cat", "dog", "sky", "road", "tree", "car", "boat"]
    gen = torch.Generator().manual_seed(0)
    images = [
        torch.randint(0, 256, (3, 50, 90), dtype=torch.uint8, generator=gen),
        torch.randint(0, 256, (3, 70, 41), dtype=torch.uint8, generator=gen),
        torch.randint(0, 256, (3, 64, 64), dtype=torch.uint8, generator=gen),
    ]
    # A random model whose labelling of these images is not constant (else the comparison below proves
    # little): the first of a few seeds; which one depends on torch's initialisers (2.11 and 2.14 differ).
    for seed in range(8):
        model = _small_model(seed)
        seg = _segmenter(model, names, crop_batch_size=3)
        batched = seg.predict_scores(images)  # different sizes in one call
        if len(torch.cat([s.argmax(0).flatten() for s in batched]).unique()) >= 2:
            break
    else:
        pytest.fail("every seed gives a constant labelling: the comparison would be vacuous")
    with torch.no_grad():
        for image, scores in zip(images, batched, strict=True):
            ref = _reference_image(model, image, names, 0.5)
            assert scores.shape == (len(names), *image.shape[-2:])
            torch.testing.assert_close(scores, ref, atol=1e-5, rtol=1e-5)
            assert (scores.argmax(0) == ref.argmax(0)).float().mean() > 0.999
    labels = seg.predict(images)
    for lab, s in zip(labels, batched, strict=True):
        assert torch.equal(lab, s.argmax(0))


# ---- soft vs hard assignment (docs/segmentation.md, "Soft or hard assignment") ---------------


def _attn_dicts(model, b=3, hw=64, seed=0):
    gen = torch.Generator().manual_seed(seed)
    crops = torch.randn(b, 3, hw, hw, generator=gen)
    with torch.no_grad():
        return model.img_encoder(crops, return_attn=True, as_dict=True)["attn_dicts"]


def _one_hot_over_groups(soft):
    # the oracle's own hard map: each patch (column) to the group of largest soft probability
    s = soft[:, 0].float()  # [B, G_i, N_i]
    return F.one_hot(s.argmax(dim=1), num_classes=s.shape[1]).float()  # [B, N_i, G_i]


def test_hard_assignment_composes_one_hot_maps():
    model = _small_model()
    attn = _attn_dicts(model)
    stages = [a for a in attn if a is not None]
    assert len(stages) == 2  # two grouping blocks: the product is a real composition
    hard = compose_assignment_maps(attn, "hard")
    b, n, g = hard.shape
    assert (b, g) == (3, stages[-1]["soft"].shape[2])
    # every patch belongs to exactly one final segment
    assert torch.equal(hard.sum(dim=-1), torch.ones(b, n))
    assert torch.equal((hard == 1).sum(dim=-1), torch.ones(b, n, dtype=torch.long))
    assert torch.equal((hard == 0).sum(dim=-1), torch.full((b, n), g - 1))
    # independent oracle: one-hot of the argmax of each stage's soft map, multiplied in stage order
    oracle = _one_hot_over_groups(stages[0]["soft"])
    for stage in stages[1:]:
        oracle = oracle @ _one_hot_over_groups(stage["soft"])
    assert torch.equal(hard, oracle)
    # the soft composition is not one-hot: the two options really compose different maps
    soft = compose_assignment_maps(attn, "soft")
    assert not torch.equal(soft, hard) and (soft.amax(dim=-1) < 1).any()


def test_soft_assignment_is_unchanged():
    model = _small_model()
    attn = _attn_dicts(model, seed=1)
    stages = [a["soft"] for a in attn if a is not None]
    # the composition as it was before the option existed, op for op: bit-identical
    before = stages[0][:, 0].transpose(1, 2).float() @ stages[1][:, 0].transpose(1, 2).float()
    assert torch.equal(compose_soft_maps(attn), before)
    assert torch.equal(compose_assignment_maps(attn), before)
    assert torch.equal(compose_assignment_maps(attn, "soft"), before)
    names = ["background", "cat", "dog", "sky"]
    image = torch.randint(0, 256, (3, 50, 90), dtype=torch.uint8, generator=torch.Generator().manual_seed(3))
    default = _segmenter(model, names).predict_scores([image])[0]
    assert torch.equal(_segmenter(model, names, assignment="soft").predict_scores([image])[0], default)


@pytest.mark.parametrize("with_bg", [True, False])
def test_hard_assignment_pipeline_equals_step_by_step(with_bg):
    model = _small_model()
    names = (["background"] if with_bg else []) + ["cat", "dog", "sky", "road", "tree", "car", "boat"]
    gen = torch.Generator().manual_seed(0)
    images = [
        torch.randint(0, 256, (3, 50, 90), dtype=torch.uint8, generator=gen),
        torch.randint(0, 256, (3, 70, 41), dtype=torch.uint8, generator=gen),
    ]
    hard = _segmenter(model, names, assignment="hard", crop_batch_size=3).predict_scores(images)
    soft = _segmenter(model, names, crop_batch_size=3).predict_scores(images)
    text = class_text_embeddings(model, names[1:] if with_bg else names, tokenizer=_fake_tokenizer)
    with torch.no_grad():
        for image, scores in zip(images, hard, strict=True):
            ref = reference_segment_scores(
                model, image, text, with_bg=with_bg, bg_thresh=0.5, crop=64, stride=32, short_side=64, assignment="hard"
            )
            torch.testing.assert_close(scores, ref, atol=1e-5, rtol=1e-5)
            assert (scores.argmax(0) == ref.argmax(0)).float().mean() > 0.999
    # and the option changes the segmentation (else the comparison above would say nothing)
    assert any((h.argmax(0) != s.argmax(0)).any() for h, s in zip(hard, soft, strict=True))


def test_assignment_value_is_checked():
    model = _small_model()
    attn = _attn_dicts(model, b=1)
    for bad in ("Hard", "argmax", "", None, 1):
        with pytest.raises(ValueError, match="^assignment must be one of 'soft', 'hard', got") as err:
            compose_assignment_maps(attn, bad)
        assert len(str(err.value).splitlines()) == 1
        with pytest.raises(ValueError, match="^assignment must be one of"):
            _segmenter(model, ["cat", "dog"], assignment=bad)
    with pytest.raises(ValueError, match="^--assign must be one of"):
        check_assignment("x", "--assign")
    assert check_assignment("hard") == "hard"
    # maps without the requested entry (e.g. a hand-built dict) are refused with the key named
    with pytest.raises(ValueError, match="no 'hard' entry"):
        compose_assignment_maps([{"soft": attn[0]["soft"]}], "hard")
    with pytest.raises(ValueError, match="assignment must be 'soft' or 'hard'"):
        reference_segment_scores(
            model, torch.zeros(3, 8, 8), torch.zeros(2, 8), with_bg=False, bg_thresh=0.5, assignment="onehot"
        )


def test_one_encoder_pass_per_crop_batch():
    model = _small_model()
    seg = _segmenter(model, ["background", "cat", "dog"], crop_batch_size=4)
    calls = []
    handle = model.img_encoder.register_forward_hook(lambda m, args, out: calls.append(args[0].shape[0]))
    image = torch.randint(0, 256, (3, 64, 160), dtype=torch.uint8)  # 64 x 160 -> 4 windows
    seg.predict([image])
    handle.remove()
    assert calls == [4]  # one pass for all four crops: maps and features together


def test_text_embeddings_cache_and_formula():
    model = _small_model()
    names = ["cat", "dog"]
    emb = class_text_embeddings(model, names, ["a photo of a {}.", "a {}."], tokenizer=_fake_tokenizer)
    tokens = _fake_tokenizer(["a photo of a cat.", "a cat.", "a photo of a dog.", "a dog."]).view(2, 2, -1)
    torch.testing.assert_close(emb, model.build_text_embedding(tokens))
    torch.testing.assert_close(emb.norm(dim=-1), torch.ones(2))
    cache = TextEmbeddingCache()
    first = cache.get(model, names, tokenizer=_fake_tokenizer)
    assert cache.get(model, names, tokenizer=_fake_tokenizer) is first and len(cache) == 1
    cache.invalidate(model)
    assert len(cache) == 0
    with pytest.raises(ValueError, match="template"):
        class_text_embeddings(model, names, "nonexistent", tokenizer=_fake_tokenizer)


def test_resolve_classes():
    voc = resolve_classes("voc")
    assert voc.with_bg and len(voc.names) == 21 and voc.bg_thresh == 0.95
    assert resolve_classes("context").bg_thresh == 0.35
    assert resolve_classes(["cat", "dog"]).with_bg is False
    assert resolve_classes("background,cat", bg_thresh=0.3).bg_thresh == 0.3
    for bad, msg in [
        ("vco", "unknown class preset"),
        (["cat", "cat"], "duplicate"),
        (["cat", ""], "empty"),
        (["cat", "background"], "first"),
        (["cat"], "two or more"),
    ]:
        with pytest.raises(ValueError, match=msg):
            resolve_classes(bad)


# ---- mIoU ----------------------------------------------------------------------------------------


def test_confusion_matrix_is_exact_with_ignore_index():
    gen = torch.Generator().manual_seed(0)
    k = 5
    cm = ConfusionMatrix(k)
    brute = np.zeros((k, k), dtype=np.int64)
    for _ in range(3):
        gt = torch.randint(0, k, (37, 23), generator=gen)
        gt[torch.rand(37, 23, generator=gen) < 0.2] = 255
        pred = torch.randint(0, k, (37, 23), generator=gen)
        cm.update(pred, gt)
        for g_, p_ in zip(gt.flatten().tolist(), pred.flatten().tolist(), strict=True):
            if g_ != 255:
                brute[g_, p_] += 1
    assert np.array_equal(cm.counts.numpy(), brute)
    ious = [brute[i, i] / (brute[i].sum() + brute[:, i].sum() - brute[i, i]) for i in range(k)]
    assert cm.iou() == pytest.approx(ious)
    assert cm.miou() == pytest.approx(sum(ious) / k)
    # a class absent from ground truth and prediction is left out of the mean
    cm2 = ConfusionMatrix(3)
    cm2.update(torch.tensor([[0, 1]]), torch.tensor([[0, 1]]))
    assert math.isnan(cm2.iou()[2]) and cm2.miou() == 1.0
    with pytest.raises(ValueError, match="outside"):
        cm2.update(torch.tensor([[0]]), torch.tensor([[7]]))
    with pytest.raises(ValueError, match="differ"):
        cm2.update(torch.tensor([[0, 1]]), torch.tensor([[0]]))


# ---- files ---------------------------------------------------------------------------------------


def test_output_files(tmp_path):
    from PIL import Image

    names = ["background", "cat", "dog"]
    labels = torch.tensor([[0, 1, 1, 2], [2, 2, 0, 1]])
    save_label_png(str(tmp_path / "l.png"), labels, names)
    img = Image.open(tmp_path / "l.png")
    assert img.mode == "P" and np.array_equal(np.array(img), labels.numpy())
    assert tuple(img.getpalette()[:3]) == (0, 0, 0)  # background black
    assert torch.equal(load_label_mask(str(tmp_path / "l.png")), labels)

    image = torch.full((3, 2, 4), 200, dtype=torch.uint8)
    save_overlay_png(str(tmp_path / "o.png"), image, labels, names)
    over = np.array(Image.open(tmp_path / "o.png"))
    assert over.shape == (2, 4, 3)
    assert (over[0, 0] == 200).all()  # background pixels untouched
    palette = img.getpalette()
    cat_color = np.array(palette[3:6])
    assert np.abs(over[0, 1].astype(float) - (0.5 * 200 + 0.5 * cat_color)).max() <= 1

    fr = class_fractions(labels, names)
    assert fr == {"background": 0.25, "cat": 0.375, "dog": 0.375}
    save_json(str(tmp_path / "f.json"), fr)
    assert json.loads((tmp_path / "f.json").read_text()) == fr
    assert not list(tmp_path.glob(".tmp-*"))  # atomic writes leave no temporary files

    Image.fromarray(np.zeros((5, 7, 3), dtype=np.uint8)).save(tmp_path / "rgb.png")
    assert load_image(str(tmp_path / "rgb.png")).shape == (3, 5, 7)
    (tmp_path / "bad.jpg").write_bytes(b"nope")
    with pytest.raises(ValueError, match="bad.jpg: cannot read image"):
        load_image(str(tmp_path / "bad.jpg"))
    with pytest.raises(ValueError, match="single-channel"):
        load_label_mask(str(tmp_path / "rgb.png"))


def test_segmenter_rejects_a_vision_only_model():
    from groupvit_fast import GroupViT

    with pytest.raises(TypeError, match="image-text model"):
        GroupViTSegmenter(
            GroupViT(
                img_size=64,
                embed_dim=64,
                num_heads=[2, 2, 2],
                depths=[1, 1, 1],
                num_group_tokens=[8, 4, 0],
                num_output_groups=[8, 4],
            ),
            "voc",
        )
