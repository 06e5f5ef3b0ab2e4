"""The evaluation pipelines (the ``eval`` family of ``groupvit_fast.bench.cases``): ``eval seg`` at the
VOC protocol (ours against the step-by-step reference) and ``eval cls``.

Tiny model and small images in the smoke tier (seconds, also with ``--benchmark-disable``);
``groupvit-fast bench --only eval`` measures GroupViT-S at VOC sizes for the reports.
"""

from __future__ import annotations


def test_eval(eval_item, require_impl, build, run_benchmark):
    case, impl = eval_item
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
    if case.task == "seg":
        assert [tuple(lab.shape) for lab in result] == [case.size] * case.images
        assert all(0 <= int(lab.min()) and int(lab.max()) < len(case.classes) for lab in result)
    else:  # top-5 class indices per image
        assert tuple(result.shape) == (case.batch, 5) and 0 <= int(result.min()) and int(result.max()) < case.classes
    if runner.error is not None:
        # same weights, same math: seg labels agree almost everywhere, cls logits to fp32 round-off
        assert runner.error() < (0.01 if case.task == "seg" else 1e-4)
