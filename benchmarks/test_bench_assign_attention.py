"""Op benchmarks: shape x mode (eval, train, soft) x dtype x implementation (reference, compiled
reference, our backends), the ``op`` family of ``groupvit_fast.bench.cases``."""

from __future__ import annotations

from groupvit_fast.bench import cases


def test_assign_attention(op_item, require_impl, build, run_benchmark):
    case, impl = op_item
    require_impl(impl)
    runner = build(case, impl)
    s = case.shape
    result = run_benchmark(
        runner.fn,
        case.id,
        impl=impl,
        backend=runner.backend,
        shape=s.dims(),
        scaled_from=case.scaled_from,
        mode=case.mode.what,
        min_bytes=cases.min_bytes(s, case.mode, case.torch_dtype),
        flops=cases.flops(s, case.mode),
    )
    # the timed call computed the op: check what it returned (train: the three input gradients)
    if case.mode.backward:
        assert [tuple(g.shape) for g in result] == [
            (s.batch, s.groups, s.channels),
            (s.batch, s.tokens, s.channels),
            (s.batch, s.tokens, s.channels),
        ]
    else:
        assert tuple(result.shape) == (s.batch, s.groups, s.channels) and result.dtype == case.torch_dtype
