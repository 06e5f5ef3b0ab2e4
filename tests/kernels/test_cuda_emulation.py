"""The CUDA kernels' logic without a GPU: csrc/cuda/assign_attention_kernels.cu compiled for the host
with emulated threads and blocks (csrc/cuda/emulation/), exposed as ``torch.ops.groupvit_fast_cuda_emulation``.

These tests need a host C++ compiler and ninja (``requires("cuda-emulation")``), not the built extension:
a stale or missing ``groupvit_fast._C`` does not hide them, and under ``GROUPVIT_FAST_REQUIRE`` a
compile error of the ``.cu`` is a failure, not a skip.
"""

from __future__ import annotations

import pytest
import torch

from assign_cases import FORWARD_TOL, GRAD_TOL, MODES, Shape, dense64, make_inputs, relative_error, small_inputs
from groupvit_fast.reference import assign_attention_reference, philox_gumbel_noise
from requirements import requires

pytestmark = requires("cuda-emulation")


@pytest.fixture(scope="module")
def emulation_ops():
    from cuda_emulation import build

    ops, status = build()
    assert status.usable, status.describe()  # requires() already skipped or failed otherwise
    return ops


@pytest.fixture(params=["forward", "reverse"])
def emulated_cuda(emulation_ops, request):
    """The emulated kernels with the block's threads taking turns in thread order, then reversed:
    every emulated test runs in both, so a shared-memory read that is missing its __syncthreads
    (new value in one order, stale in the other) fails one of them."""
    emulation_ops.set_schedule(request.param)
    yield emulation_ops
    emulation_ops.set_schedule("forward")


@pytest.mark.parametrize("sync", [True, False])
def test_the_reversed_schedule_exposes_a_missing_syncthreads(emulation_ops, sync):
    x = torch.arange(1.0, 65.0)
    want = torch.roll(x, -1)  # y[t] = x[t + 1]
    results = {}
    for order in ("forward", "reverse"):
        emulation_ops.set_schedule(order)
        results[order] = emulation_ops.neighbour_shift(x, sync)
    emulation_ops.set_schedule("forward")
    if sync:
        assert torch.equal(results["forward"], want) and torch.equal(results["reverse"], want)
    else:  # a thread reads its neighbour's slot before it is written: all but the last thread in
        # thread order, only the last one (which reads slot 0) in reverse order
        assert (results["forward"][:-1] == 0).all() and torch.equal(results["reverse"][:-1], want[:-1])
        assert results["reverse"][-1] == 0 and not torch.equal(results["forward"], results["reverse"])


def _emulated(ops_, q, k, v, mode, heads, noise=None, seed=0, return_attn=False, grad=None):
    scale = (q.shape[-1] // heads) ** -0.5
    out, r, hard, soft = ops_.assign_attention_forward_native(
        q, k, v, noise, seed, 0, heads, scale, mode.hard, mode.gumbel, mode.tau, mode.sum_assign, mode.eps, return_attn
    )
    grads = None
    if grad is not None:
        grads = ops_.assign_attention_backward_native(
            grad,
            q,
            k,
            v,
            out,
            r,
            noise,
            seed,
            0,
            heads,
            scale,
            mode.hard,
            mode.gumbel,
            mode.tau,
            mode.sum_assign,
            mode.eps,
        )
    return out, r, hard, soft, grads


# Head dims <= 32 run tile_dot's 32-channel slice loop and the 64-channel merge chunks once; D = 384
# (GroupViT's single assignment head) runs them 12 and 6 times, D = 71 (64 + odd) ends each on a
# partial slice/chunk: a kernel that ignores its slice offset or its tail mask fails those two.
EMULATED_SHAPES = [
    Shape(2, 3, 37, 40, 2),
    Shape(1, 40, 33, 8, 1),
    Shape(1, 1, 7, 8, 1),
    Shape(2, 8, 65, 20, 1),
    Shape(1, 6, 40, 384, 1),
    Shape(2, 4, 35, 71, 1),
]


@pytest.mark.slow
@pytest.mark.parametrize("mode", MODES, ids=lambda m: m.name)
@pytest.mark.parametrize("shape", EMULATED_SHAPES, ids=str)
def test_emulated_cuda_kernels_match_the_float64_reference(emulated_cuda, shape, mode):
    q, k, v, noise = make_inputs(shape, torch.float32, mode=mode)
    grad = torch.randn(q.shape, generator=torch.Generator().manual_seed(3))
    out, r, _, _, (dq, dk, dv) = _emulated(emulated_cuda, q, k, v, mode, shape.heads, noise=noise, grad=grad)
    leaves = [t.detach().double().requires_grad_(True) for t in (q, k, v)]
    ref, hard, _ = assign_attention_reference(
        *leaves, num_heads=shape.heads, noise=None if noise is None else noise.double(), **mode.kwargs()
    )
    assert relative_error(out, ref) <= FORWARD_TOL[torch.float32]
    expected_r = hard.detach().sum(dim=-1)
    assert relative_error(r, expected_r) <= FORWARD_TOL[torch.float32]
    ref.backward(grad.double())
    for name, ours, expected in zip("qkv", (dq, dk, dv), leaves, strict=True):
        assert relative_error(ours, expected.grad) <= GRAD_TOL[torch.float32], f"d{name}"


@pytest.mark.slow
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("mode", [MODES[1], MODES[2]], ids=lambda m: m.name)
def test_emulated_cuda_kernels_low_precision(emulated_cuda, dtype, mode):
    shape = EMULATED_SHAPES[0]
    q, k, v, noise = make_inputs(shape, dtype, mode=mode)
    grad = torch.randn(q.shape, generator=torch.Generator().manual_seed(3)).to(dtype)
    out, _, _, _, grads = _emulated(emulated_cuda, q, k, v, mode, shape.heads, noise=noise, grad=grad)
    leaves = [t.detach().double().requires_grad_(True) for t in (q, k, v)]
    ref, _, _ = assign_attention_reference(
        *leaves, num_heads=shape.heads, noise=None if noise is None else noise.double(), **mode.kwargs()
    )
    assert out.dtype == dtype and relative_error(out, ref) <= FORWARD_TOL[dtype]
    ref.backward(grad.double())
    for ours, expected in zip(grads, leaves, strict=True):
        assert ours.dtype == dtype and relative_error(ours, expected.grad) <= GRAD_TOL[dtype]


@requires("cpu")
@pytest.mark.parametrize("seed,offset", [(1, 0), (2**40 + 5, 2**32 - 1000), (2**62 - 17, 99)])
def test_cpu_baseline_noise_is_the_per_element_definition_bit_for_bit(emulation_ops, seed, offset):
    # The CPU's baseline copy restates philox::gumbel_at for the vectoriser (csrc/cpu/gumbel_noise_cpu.h:
    # 32 lanes per stage, the first two and the last Philox round specialised, masks for the selects);
    # the emulation draws every element with philox::gumbel_at itself. Neither is compiled with FMA on
    # x86-64, so the noise must be the same bits (docs/assign_op.md, "Noise: what is guaranteed"); the
    # oracle tests allow 1e-5 and would pass a reordered log. 6321 values: whole and partial 256-value
    # blocks and 32-lane tails; the second case's counters cross 2**32 inside a block.
    from groupvit_fast.ops import gumbel_noise
    from groupvit_fast.ops.backends.native import use_cpu_isa

    shape = (1, 3, 7, 301)
    expected = emulation_ops.gumbel_noise_native(torch.empty(0), list(shape), seed, offset)
    with use_cpu_isa("baseline"):
        ours = gumbel_noise(shape, seed=seed, offset=offset, backend="cpu")
    assert torch.equal(ours.view(torch.int32), expected.view(torch.int32))


@pytest.mark.slow
def test_emulated_cuda_in_kernel_noise_maps_and_layouts(emulated_cuda):
    # the noise kernel and the in-kernel draw follow the Philox convention (counters crossing 2**32)
    noise = emulated_cuda.gumbel_noise_native(torch.empty(0), [1, 2, 3, 70], 2**40 + 5, 2**32 - 50)
    torch.testing.assert_close(noise, philox_gumbel_noise((1, 2, 3, 70), 2**40 + 5, 2**32 - 50), rtol=0, atol=1e-5)
    shape, mode = EMULATED_SHAPES[3], MODES[1]
    q, k, v, _ = make_inputs(shape, torch.float32, mode=mode)
    drawn = _emulated(emulated_cuda, q, k, v, mode, 1, seed=11, return_attn=True)
    given = _emulated(emulated_cuda, q, k, v, mode, 1, noise=philox_gumbel_noise((2, 1, 8, 65), 11), return_attn=True)
    torch.testing.assert_close(drawn[0], given[0], rtol=1e-6, atol=1e-6)
    assert torch.equal(drawn[2], given[2])
    # maps: the exact one-hot of the noisy logits and the plain softmax (float64 oracle, same noise;
    # the oracle's straight-through one-hot differs from the exact one by float64 round-off only)
    ref_out, ref_hard, ref_soft = assign_attention_reference(
        q.double(), k.double(), v.double(), gumbel=True, noise=philox_gumbel_noise((2, 1, 8, 65), 11).double()
    )
    assert set(drawn[2].unique().tolist()) <= {0.0, 1.0}
    torch.testing.assert_close(drawn[2].double(), ref_hard, rtol=0, atol=1e-9)
    torch.testing.assert_close(drawn[3].double(), ref_soft, rtol=1e-5, atol=1e-6)
    assert relative_error(drawn[0], ref_out) <= FORWARD_TOL[torch.float32]
    # strided views (channel stride != 1, batch stride 0) read in place
    k_view = k[:1].transpose(1, 2).contiguous().transpose(1, 2).expand(2, -1, -1)
    v_view = torch.cat([v, v], dim=-1)[..., ::2]
    out = _emulated(emulated_cuda, q, k_view, v_view, MODES[2], 1)[0]
    expected, _ = dense64(q, k_view, v_view, hard=False)
    assert relative_error(out, expected) <= FORWARD_TOL[torch.float32]


@pytest.mark.slow
def test_emulated_cuda_non_finite_inputs_follow_the_dense_formula(emulated_cuda):
    q, k, v = small_inputs(b=2, g=4, n=9, c=8)
    v = v.clone()
    v[0, 3, 2] = float("inf")
    v[0, 5, 6] = float("nan")
    for mode in (MODES[0], MODES[2]):
        out = _emulated(emulated_cuda, q, k, v, mode, 1)[0]
        expected, _ = dense64(q, k, v, hard=mode.hard)
        assert torch.equal(torch.isnan(out), torch.isnan(expected))
        assert torch.equal(torch.isposinf(out), torch.isposinf(expected))
    k = k.clone()
    k[1, 4, 0] = float("nan")
    out, r, hard, _, grads = _emulated(
        emulated_cuda, q, k, v.nan_to_num(), MODES[0], 1, return_attn=True, grad=torch.ones(q.shape)
    )
    assert torch.isnan(out[1]).all() and torch.isfinite(out[0]).all()
    assert torch.isnan(r[1]).all() and torch.isnan(hard[1, :, :, 4]).all()
    assert all(g.shape == t.shape for g, t in zip(grads, (q, k, v), strict=True))
