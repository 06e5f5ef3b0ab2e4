"""Model benchmarks: GroupViT eval forward and training step (forward + backward + AdamW), ours
against the reference model, their torch.compile versions and (eval) Hugging Face's model: the
``model`` family of ``groupvit_fast.bench.cases``."""

from __future__ import annotations

import math


def test_model(model_item, require_impl, build, run_benchmark):
    case, impl = model_item
    require_impl(impl)
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
    if case.task == "train":
        assert result.dim() == 0 and math.isfinite(result.item())  # the loss
    else:
        assert result.shape[0] == case.batch and bool(result.isfinite().all())
