"""pytest-benchmark harness for groupvit_fast: the cases of ``groupvit_fast.bench.cases``, run per tier.

    pytest benchmarks/                                   # GPU tier on a GPU, else the tiny CPU smoke tier
    pytest benchmarks/ --bench-tier cpu                  # the scaled-down CPU cases (the README's CPU tables)
    pytest benchmarks/ --bench-tier gpu-quick -k stage0  # a subset on a GPU
    pytest benchmarks/ --benchmark-disable               # each case once (CI)

Tiers and cases are those of ``groupvit-fast bench`` (one definition, installed with the package in
``groupvit_fast/bench/cases/``): a test that takes ``<family>_item`` (``op_item``, ``train_item``,
...) runs once per (case, implementation) of that family in the tier, and builds its runner with
the family's own ``build`` and the pytest session's ``context``, as the harness does.
Results are grouped per case, so pytest-benchmark's table compares the implementations of one
case side by side; the harness's report adds speed-ups, bandwidth, memory and the plot.
"""

from __future__ import annotations

import pytest
import torch

from groupvit_fast.bench import cases


def pytest_addoption(parser):
    group = parser.getgroup("groupvit_fast benchmarks")
    group.addoption(
        "--bench-tier",
        choices=sorted(cases.TIERS),
        default=None,
        help="case tier (default: gpu with a CUDA device, else smoke)",
    )


def bench_tier(config):
    name = config.getoption("--bench-tier") or ("gpu" if torch.cuda.is_available() else "smoke")
    return cases.TIERS[name]


def pytest_generate_tests(metafunc):
    tier = bench_tier(metafunc.config)
    for name in cases.families():
        if f"{name}_item" in metafunc.fixturenames:
            items = list(tier.items(only=(name,)))
            metafunc.parametrize(f"{name}_item", items, ids=[f"{case.id}/{impl}" for case, impl in items])


@pytest.fixture(scope="session")
def tier(request):
    return bench_tier(request.config)


@pytest.fixture(scope="session")
def device(tier):
    if tier.device == "cuda" and not torch.cuda.is_available():
        pytest.skip(f"tier {tier.name!r} needs a CUDA device")
    return tier.device


@pytest.fixture(scope="session")
def context(device):
    """The harness's build context: what the runners share (a ModelBank per configuration...), built on first use."""
    return cases.BuildContext(device)


@pytest.fixture
def build(context):
    """``build(case, impl)``: the runner of one item, made by its family as the harness makes it."""
    return lambda case, impl: cases.family_of(case).build(case, impl, context)


@pytest.fixture
def require_impl(device):
    """``require_impl(impl)`` skips the test, with the reason, when ``impl`` cannot run here."""

    def check(impl: str) -> None:
        why = cases.impl_unavailable(impl, device)
        if why is not None:
            pytest.skip(why)

    return check


@pytest.fixture
def run_benchmark(benchmark, device):
    """``run_benchmark(fn, group, **extra_info)``: pytest-benchmark of ``fn``."""
    return lambda fn, group, **extra_info: _run_benchmark(benchmark, fn, device, group, **extra_info)


def _run_benchmark(benchmark, fn, device: str, group: str, **extra_info):
    """Times ``fn`` with pytest-benchmark: one warm-up call first (compiles and autotunes), and the
    device synchronised inside each timed call so the host timer sees the whole GPU work."""
    benchmark.group = group
    benchmark.extra_info.update(extra_info)
    if device == "cuda":

        def target():
            result = fn()
            torch.cuda.synchronize()
            return result
    else:
        target = fn
    if not benchmark.disabled:
        target()
    return benchmark(target)
