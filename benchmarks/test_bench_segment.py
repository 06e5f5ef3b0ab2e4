"""Zero-shot segmentation throughput: the step-by-step reference path (reference model, one crop
at a time, the encoder twice per crop) against GroupViTSegmenter with our model, same weights."""

from __future__ import annotations

import pytest

from groupvit_fast.bench import cases


@pytest.fixture(scope="session")
def segment_banks(model_banks):
    banks = {}

    def get(case):
        if case.id not in banks:
            banks[case.id] = cases.SegmentBank(case, model_banks(case.config))
        return banks[case.id]

    return get


def test_segment(segment_item, device, segment_banks, require_impl, run_benchmark):
    case, impl = segment_item
    require_impl(impl)
    bank = segment_banks(case)
    runner = cases.build_segment_runner(case, impl, bank)
    labels = run_benchmark(runner.fn, case.id, impl=impl, assign_backend=runner.backend, images=case.images,
                           task=case.task, dtype=case.dtype)
    assert [tuple(lab.shape) for lab in labels] == [case.size] * case.images
    assert all(int(lab.max()) < len(case.classes) and int(lab.min()) >= 0 for lab in labels)
    if runner.error is not None:
        # same weights, same math: the labels must match the reference pipeline's almost everywhere
        assert runner.error() < 0.01
