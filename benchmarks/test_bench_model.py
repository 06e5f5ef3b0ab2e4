"""Model benchmarks: GroupViT eval forward and training step (forward + backward + AdamW), ours
against the reference model, their torch.compile versions and (eval) Hugging Face's model."""

from __future__ import annotations

import math

from groupvit_fast.bench import cases


def test_model(model_item, device, model_banks, require_impl, run_benchmark):
    case, impl = model_item
    require_impl(impl)
    runner = cases.build_model_runner(case, impl, model_banks(case.config))
    result = run_benchmark(runner.fn, case.id, impl=impl, assign_backend=runner.backend, images=case.batch,
                           task=case.task, dtype=case.dtype)
    if case.task == "train":
        assert result.dim() == 0 and math.isfinite(result.item())  # the loss
    else:
        assert result.shape[0] == case.batch and bool(result.isfinite().all())
