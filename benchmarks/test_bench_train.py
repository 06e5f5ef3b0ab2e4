"""The full image-text training step (vision + text + multi-label loss + backward + AdamW) and the loader.

    pytest benchmarks/test_bench_train.py                      # timed (pytest-benchmark)
    pytest benchmarks/test_bench_train.py --benchmark-disable  # each case once: a smoke test

Variants: ``ours`` (sdpa + the fastest assignment backend) and ``original`` (NVlabs' explicit
attention and the reference assignment), eager, at the ``small`` preset (GroupViT-S's layout at
a fraction of its width and depth) on a CPU with batch 2, or GroupViT-S at batch 64 bf16 on a GPU.
The markdown/json report with peak memory, torch.compile and the 30-epoch projection is
``python -m groupvit_fast.train.benchmark`` (docs/training.md, "Benchmark").
"""

from __future__ import annotations

import math

import pytest
import torch

pytest.importorskip("omegaconf")

ON_GPU = torch.cuda.is_available()
DEVICE = torch.device("cuda" if ON_GPU else "cpu")


@pytest.mark.parametrize("variant", ["ours", "original"])
def test_train_step(benchmark, variant):
    from omegaconf import OmegaConf

    from groupvit_fast.models.registry import build_model
    from groupvit_fast.train.benchmark import VARIANTS, _model_config
    from groupvit_fast.train.optim import build_optimizer
    from groupvit_fast.train.step import train_step

    preset, batch = ("groupvit-s", 64) if ON_GPU else ("small", 2)
    torch.manual_seed(0)
    model = build_model(_model_config(preset, VARIANTS[variant], multi_label=3)).to(DEVICE).train()
    cfg = OmegaConf.create({"weight_decay": 0.05, "skip_decay_embeddings": False,
                            "optimizer": {"name": "adamw", "eps": 1e-8, "betas": [0.9, 0.999]}})
    optimizer = build_optimizer(model, cfg, lr=1e-4)
    text = torch.randint(1, 49000, (batch, 4, 77), device=DEVICE)
    text[..., 20] = 49407
    data = [{"image": torch.randn(batch, 3, 224, 224, device=DEVICE), "text": text}]

    def step():
        out = train_step(model, data, optimizer, device=DEVICE, autocast_dtype=torch.bfloat16 if ON_GPU else None)
        if ON_GPU:
            torch.cuda.synchronize()
        return out

    out = benchmark.pedantic(step, rounds=3, warmup_rounds=1) if not benchmark.disabled else step()
    benchmark.extra_info.update(variant=variant, preset=preset, batch=batch)
    assert math.isfinite(float(out["total_loss"])) and math.isfinite(float(out["grad_norm"]))


def test_loader_throughput(benchmark, tmp_path):
    pytest.importorskip("webdataset")
    pytest.importorskip("timm")
    from groupvit_fast.train.benchmark import measure_loader

    kwargs = {"batches": 2, "batch": 8, "samples": 64}
    folder = str(tmp_path / "shards")
    if benchmark.disabled:
        result = measure_loader(folder, **kwargs)
    else:
        result = benchmark.pedantic(measure_loader, args=(folder,), kwargs=kwargs, rounds=1)
    benchmark.extra_info.update(result)
    assert result["images_per_s"] > 0
