"""Zero-shot segmentation throughput: the step-by-step reference path (reference model, one crop
at a time, the encoder twice per crop) against GroupViTSegmenter with our model, same weights: the
``segment`` family of ``groupvit_fast.bench.cases``."""

from __future__ import annotations


def test_segment(segment_item, require_impl, build, run_benchmark):
    case, impl = segment_item
    require_impl(impl)
    runner = build(case, impl)
    labels = run_benchmark(
        runner.fn,
        case.id,
        impl=impl,
        assign_backend=runner.backend,
        images=case.images,
        task=case.task,
        dtype=case.dtype,
    )
    assert [tuple(lab.shape) for lab in labels] == [case.size] * case.images
    assert all(int(lab.max()) < len(case.classes) and int(lab.min()) >= 0 for lab in labels)
    if runner.error is not None:
        # same weights, same math: the labels must match the reference pipeline's almost everywhere
        assert runner.error() < 0.01
