"""Throughput of ``eval seg`` (ours vs the step-by-step reference, VOC protocol) and ``eval cls``.

Tiny model and one small image by default (runs in seconds, also with ``--benchmark-disable``);
``python -m groupvit_fast.evaluation.speed`` measures GroupViT-S at VOC sizes for the reports.
"""

from __future__ import annotations

import pytest
import torch

from groupvit_fast.evaluation.speed import _model, cls_runner, seg_runners

pytest.importorskip("open_clip", reason="the prompts need open_clip_torch's tokenizer")


@pytest.fixture(scope="module")
def setup():
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model = _model("groupvit-s" if device == "cuda" else "tiny", device)
    hw = (375, 500) if device == "cuda" else (60, 80)
    g = torch.Generator().manual_seed(0)
    images = [torch.randint(0, 256, (3, *hw), generator=g, dtype=torch.uint8) for _ in range(4 if device == "cuda"
                                                                                             else 2)]
    return model, images, device


@pytest.mark.parametrize("impl", ["ours", "reference"])
def test_eval_seg_voc(benchmark, setup, impl):
    model, images, _ = setup
    ours, reference = seg_runners(model, images)
    benchmark.group = "eval seg (VOC protocol)"
    benchmark.extra_info["images"] = len(images)
    labels = benchmark.pedantic(ours if impl == "ours" else reference, rounds=1, iterations=1, warmup_rounds=0)
    assert [tuple(lab.shape) for lab in labels] == [tuple(im.shape[-2:]) for im in images]
    if impl == "reference":
        # same weights and math: the fast path's labels equal the reference's almost everywhere
        agree = sum(int((a.cpu() == b.cpu()).sum()) for a, b in zip(ours(), labels, strict=True))
        assert agree >= 0.99 * sum(lab.numel() for lab in labels)


def test_eval_cls(benchmark, setup):
    model, _, device = setup
    run = cls_runner(model, 8, device=device)
    benchmark.group = "eval cls"
    benchmark.extra_info["images"] = 8
    top5 = benchmark.pedantic(run, rounds=1, iterations=1, warmup_rounds=0)
    assert tuple(top5.shape) == (8, 5) and int(top5.max()) < 1000
