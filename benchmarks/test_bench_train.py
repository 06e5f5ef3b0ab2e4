"""The training pipeline (the ``train`` family of ``groupvit_fast.bench.cases``): the full image-text
step (vision + text + multi-label loss + backward + clipping + AdamW, ``groupvit_fast.train.step``),
ours against NVlabs' formulation, and the data loader's images/s.

    pytest benchmarks/test_bench_train.py                      # timed (pytest-benchmark)
    pytest benchmarks/test_bench_train.py --benchmark-disable  # each case once: a smoke test

The report with peak memory, torch.compile and the 30-epoch projection is
``groupvit-fast bench --only train`` (docs/training.md, "Benchmark").
"""

from __future__ import annotations

import math

import pytest


def test_train(train_item, require_impl, build, run_benchmark):
    case, impl = train_item
    require_impl(impl)
    if case.task == "step":
        pytest.importorskip("omegaconf")
    runner = build(case, impl)
    result = run_benchmark(
        runner.fn,
        case.id,
        impl=impl,
        assign_backend=runner.backend,
        images=case.batch,
        task=case.task,
        dtype=case.dtype,
    )
    if case.task == "step":
        assert result.dim() == 0 and math.isfinite(result.item())  # the total loss
    else:  # one batch of the loader: augmented images and tokenised text
        assert tuple(result["image"].shape) == (case.batch, 3, 224, 224)
        assert result["text"].shape[0] == case.batch and result["text"].shape[-1] == 77
