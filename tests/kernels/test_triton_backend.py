"""The Triton backend (kernels/assign_attention.py) against the pure-PyTorch oracles.

Runs on a GPU, or on CPU in Triton's interpreter: ``TRITON_INTERPRET=1 pytest tests/kernels/test_triton_backend.py``
(the variable must be set before triton is imported). The interpreter is slow, so shapes are tiny but
odd (G, N, D not powers of two, several token blocks, several heads).

Tolerances (vs the float64 oracle ``assign_attention_forward_math`` / ``_backward_math`` fed the same
noise), relative to the largest reference magnitude:

* fp32: 2e-5. Every reduction is at most max(D, N, G) = 48 terms long here; fp32 rounding (6e-8 per
  operation) accumulated over it stays far below.
* fp16 / bf16: 2e-2. The inputs are exact in half precision, the kernels accumulate in fp32, but they
  store out/dq/dk/dv in half (rel. rounding 2**-11 / 2**-8) and feed the soft assignment and dz to the
  second dot in half (FlashAttention does the same), so bf16 carries about three roundings of 4e-3.
"""

from __future__ import annotations

import os

import pytest
import torch

from groupvit_fast import assign_attention
from groupvit_fast.ops import AssignInputs, gumbel_noise
from groupvit_fast.ops.dispatch import get_backend
from groupvit_fast.reference import (
    assign_attention_backward_math,
    assign_attention_forward_math,
    philox_gumbel_noise,
)
from groupvit_fast.reference.philox import U_MAX, U_MIN, philox_uniform
from requirements import backend_requirement, requires

BACKEND = get_backend("triton")
_INTERPRET = os.environ.get("TRITON_INTERPRET", "0").lower() in ("1", "true", "yes", "on", "y")
DEVICE = "cpu" if _INTERPRET else "cuda"
pytestmark = requires(backend_requirement("triton", DEVICE))

TOL = {torch.float32: 2e-5, torch.float16: 2e-2, torch.bfloat16: 2e-2}


def _kernels():
    from groupvit_fast.kernels import assign_attention as kernels

    return kernels


def _inputs(b, g, n, c, dtype=torch.float32, seed=0):
    gen = torch.Generator().manual_seed(seed)
    q, k, v = (torch.randn(b, length, c, generator=gen) for length in (g, n, n))
    return q.to(DEVICE, dtype), k.to(DEVICE, dtype), v.to(DEVICE, dtype)


def _grad_out(out):
    gen = torch.Generator().manual_seed(123)
    return torch.randn(out.shape, generator=gen).to(out.device, out.dtype)


def _run(q, k, v, backend, **kw):
    """Forward + backward through the public op; returns (out, dq, dk, dv)."""
    q, k, v = (t.detach().clone().requires_grad_() for t in (q, k, v))
    out = assign_attention(q, k, v, backend=backend, **kw)
    out.backward(_grad_out(out))
    return out.detach(), q.grad, k.grad, v.grad


def _oracle(q, k, v, noise, **kw):
    """float64 forward and backward (the formulas of docs/assign_op.md) on the same inputs and noise."""
    q64, k64, v64 = (t.detach().double().cpu() for t in (q, k, v))
    noise64 = None if noise is None else noise.double().cpu()
    out, r = assign_attention_forward_math(q64, k64, v64, noise=noise64, **kw)
    grads = assign_attention_backward_math(_grad_out(out).double(), q64, k64, v64, out, r, noise=noise64, **kw)
    return (out, *grads), r


def _assert_close(actual, expected, rel, what):
    expected = expected.double().cpu()
    err = (actual.double().cpu() - expected).abs().max().item()
    bound = rel * max(1.0, expected.abs().max().item())
    assert err <= bound, f"{what}: max error {err:.3e} > {bound:.3e}"


# --------------------------------------------------------------------------------------------
# Noise: the Philox convention of reference/philox.py
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed,offset", [(0, 0), (12345, 7), (2**40 + 3, 2**32 - 50)])
def test_noise_is_the_philox_convention(seed, offset):
    shape = (2, 2, 3, 17)  # 204 counters; the last case crosses the 32-bit boundary of the counter
    u = _kernels().gumbel_noise(shape, seed, offset, device=DEVICE, uniform=True).cpu()
    counters = torch.arange(int(torch.Size(shape).numel()), dtype=torch.int64) + offset
    expected_u = philox_uniform(counters, seed).clamp(U_MIN, U_MAX).reshape(shape)
    assert torch.equal(u, expected_u), "uniforms differ from the Philox oracle"

    e = gumbel_noise(shape, seed=seed, offset=offset, backend="triton", device=DEVICE).cpu()
    torch.testing.assert_close(e, philox_gumbel_noise(shape, seed, offset), rtol=0, atol=1e-6)


def test_same_seed_same_result_and_seed_changes_noise():
    q, k, v = _inputs(2, 6, 21, 16, seed=1)
    kw = dict(gumbel=True, hard=True, num_heads=2, backend="triton")
    first = assign_attention(q, k, v, seed=77, **kw)
    again = assign_attention(q, k, v, seed=77, **kw)
    assert torch.equal(first, again)
    shape = (2, 2, 6, 21)
    assert not torch.equal(
        gumbel_noise(shape, seed=77, backend="triton", device=DEVICE),
        gumbel_noise(shape, seed=78, backend="triton", device=DEVICE),
    )
    # the op with seed=s draws exactly gumbel_noise(seed=s): same output as passing that noise
    noise = gumbel_noise(shape, seed=77, backend="triton", device=DEVICE)
    assert torch.equal(first, assign_attention(q, k, v, noise=noise, **kw))


# --------------------------------------------------------------------------------------------
# Forward and backward against the reference backend and the float64 oracle
# --------------------------------------------------------------------------------------------

CASES = [
    # (B, G, N, C, heads, dtype, options)
    (2, 5, 37, 24, 2, torch.float32, dict(gumbel=True, seed=5, tau=0.5)),
    (3, 17, 20, 48, 3, torch.float32, dict(hard=False, sum_assign=True)),
    (1, 1, 1, 8, 1, torch.float32, dict(gumbel=True, seed=9)),
    (2, 7, 33, 40, 1, torch.float32, dict(hard=False, gumbel=True, seed=11, tau=2.0, eps=0.5, scale=0.2)),
    (2, 5, 37, 24, 2, torch.bfloat16, dict(gumbel=True, seed=5)),
    (2, 6, 19, 32, 2, torch.float16, dict(hard=False)),
]


@pytest.mark.parametrize("b,g,n,c,h,dtype,opts", CASES, ids=[f"case{i}" for i in range(len(CASES))])
def test_matches_reference(b, g, n, c, h, dtype, opts):
    q, k, v = _inputs(b, g, n, c, dtype)
    opts = dict(opts, num_heads=h)
    seed = opts.pop("seed", None)
    noise = None
    if opts.get("gumbel"):
        # the noise the kernels draw in-kernel for `seed`, handed to the reference backend
        noise = gumbel_noise((b, h, g, n), seed=seed, backend="triton", device=DEVICE)
    ours = _run(q, k, v, "triton", seed=seed, **opts)
    for t, like in zip(ours, (q, q, k, v), strict=True):
        assert t.dtype == like.dtype and t.shape == like.shape

    math_kw = {key: val for key, val in opts.items() if key != "scale"}
    math_kw["scale"] = opts.get("scale", (c // h) ** -0.5)
    expected, _ = _oracle(q, k, v, noise, **math_kw)
    for name, actual, exp in zip(("out", "dq", "dk", "dv"), ours, expected, strict=True):
        _assert_close(actual, exp, TOL[dtype], f"{name} vs float64 oracle")

    if dtype == torch.float32:
        reference = _run(q, k, v, "reference", noise=noise, **opts)
        for name, actual, exp in zip(("out", "dq", "dk", "dv"), ours, reference, strict=True):
            _assert_close(actual, exp, TOL[dtype], f"{name} vs reference backend")


@pytest.mark.parametrize("splits", [1, 2], ids=["one-range", "split"])
@pytest.mark.parametrize("sum_assign,gumbel", [(False, True), (True, False)])
def test_token_loop_and_split_equal_one_block(sum_assign, gumbel, splits):
    """block_n=16 makes each program loop over 3 token blocks of N=37 (one-range), and splits=2 also
    splits them over two programs per (b, h), reduced with fp32 atomics and the finalize kernel (split):
    both must give the one-block result."""
    kernels = _kernels()
    q, k, v = _inputs(2, 5, 37, 24, seed=3)
    kw = dict(num_heads=2, scale=0.3, hard=True, gumbel=gumbel, tau=0.7, sum_assign=sum_assign, eps=1.0, seed=21)
    single = kernels.assign_attention_forward(q, k, v, return_attn=True, **kw)
    multi = kernels.assign_attention_forward(q, k, v, return_attn=True, block_n=16, splits=splits, **kw)
    for a, b in zip(single, multi, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6)
    grad = _grad_out(single[0])
    g_single = kernels.assign_attention_backward(grad, q, k, v, single[0], single[1], **kw)
    g_multi = kernels.assign_attention_backward(grad, q, k, v, single[0], single[1], block_n=16, splits=splits, **kw)
    for a, b in zip(g_single, g_multi, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6)
    noise = gumbel_noise((2, 2, 5, 37), seed=21, backend="triton", device=DEVICE) if gumbel else None
    expected, r = _oracle(q, k, v, noise, **{key: val for key, val in kw.items() if key != "seed"})
    _assert_close(multi[0], expected[0], TOL[torch.float32], "multi-block out")
    _assert_close(multi[1], r, TOL[torch.float32], "multi-block r")
    for name, actual, exp in zip(("dq", "dk", "dv"), g_multi, expected[1:], strict=True):
        _assert_close(actual, exp, TOL[torch.float32], f"multi-block {name}")


def test_head_dim_tiles_and_splits_cover_every_channel():
    """D = 72 > BLOCK_DV (fp32: 32): three head-dim tiles per program, each recomputing the logits;
    with splits=3 the tiles' partial sums meet in the workspace. A tile that skipped or doubled
    channels, or an r written by more than one tile, shows against the oracle."""
    kernels = _kernels()
    b, g, n, c, h = 1, 6, 40, 72, 1
    assert c // h > kernels._TILES[("fwd", True)][1] and c // h > kernels._TILES[("bwd", True)][1]
    q, k, v = _inputs(b, g, n, c, seed=14)
    kw = dict(num_heads=h, hard=False, eps=0.4, scale=0.2)
    expected, r_exp = _oracle(q, k, v, None, **kw)
    for splits in (1, 3):
        out, r, _, _ = kernels.assign_attention_forward(q, k, v, block_n=16, splits=splits, **kw)
        _assert_close(out, expected[0], TOL[torch.float32], f"out, splits={splits}")
        _assert_close(r, r_exp, TOL[torch.float32], f"r, splits={splits}")
        grads = kernels.assign_attention_backward(_grad_out(out), q, k, v, out, r, block_n=16, splits=splits, **kw)
        for name, actual, exp in zip(("dq", "dk", "dv"), grads, expected[1:], strict=True):
            _assert_close(actual, exp, TOL[torch.float32], f"{name}, splits={splits}")


@pytest.mark.parametrize("hard", [True, False], ids=["hard", "soft"])
def test_multi_block_forward_at_segmentation_sizes(hard):
    """N > 128 tokens (segmentation at 448 px and above) take several steps of the programs' token loop
    at the launcher's own tiles: with eps != 1 and two heads, an ignored eps or a wrong head index for r
    shows."""
    b, g, n, c, h = 1, 8, 300, 32, 2
    assert n > _kernels()._MAX_BLOCK_N  # no token block covers N
    q, k, v = _inputs(b, g, n, c, seed=12)
    q = q * torch.linspace(0.5, 2.0, c, device=DEVICE)  # heads of different logit scales: r differs per head
    kw = dict(num_heads=h, hard=hard, eps=0.3)
    ours = _run(q, k, v, "triton", **kw)
    expected, _ = _oracle(q, k, v, None, scale=(c // h) ** -0.5, **kw)
    for name, actual, exp in zip(("out", "dq", "dk", "dv"), ours, expected, strict=True):
        _assert_close(actual, exp, TOL[torch.float32], f"{name} vs float64 oracle")


def test_non_contiguous_views():
    """q a slice, k and v channel slices of a fused [B, N, 3C] tensor (unit channel stride), and a
    transposed q (channel stride != 1): all read through their strides, same result as contiguous copies."""
    b, g, n, c = 2, 6, 11, 20
    gen = torch.Generator().manual_seed(4)
    fused = torch.randn(b, n, 3 * c, generator=gen).to(DEVICE)
    q_big = torch.randn(b, g + 2, c, generator=gen).to(DEVICE)
    q_t = torch.randn(b, c, g, generator=gen).to(DEVICE).transpose(1, 2)
    k, v = fused[..., c : 2 * c], fused[..., 2 * c :]
    assert not k.is_contiguous() and k.stride(-1) == 1 and q_t.stride(-1) != 1
    for q in (q_big[:, 1:-1], q_t):
        kw = dict(num_heads=2, gumbel=True, seed=3)
        views = _run(q, k, v, "triton", **kw)
        copies = _run(q.contiguous(), k.contiguous(), v.contiguous(), "triton", **kw)
        for a, b_ in zip(views, copies, strict=True):
            torch.testing.assert_close(a, b_, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("hard", [True, False])
def test_return_attn_maps(hard):
    b, g, n, c, h = 2, 5, 23, 16, 2
    q, k, v = _inputs(b, g, n, c, seed=6)
    noise = gumbel_noise((b, h, g, n), seed=8, backend="triton", device=DEVICE)
    out, maps = assign_attention(
        q, k, v, num_heads=h, hard=hard, gumbel=True, tau=0.8, seed=8, return_attn=True, backend="triton"
    )
    ref_out, ref_maps = assign_attention(
        q, k, v, num_heads=h, hard=hard, gumbel=True, tau=0.8, noise=noise, return_attn=True, backend="reference"
    )
    assert maps["hard"].shape == maps["soft"].shape == (b, h, g, n)
    assert maps["hard"].data_ptr() != maps["soft"].data_ptr()
    if hard:
        assert set(maps["hard"].unique().tolist()) <= {0.0, 1.0}  # the exact one-hot
        assert torch.equal(maps["hard"].sum(dim=2), torch.ones(b, h, n, device=DEVICE))
        assert torch.equal(maps["hard"].argmax(dim=2), ref_maps["hard"].argmax(dim=2))
    else:
        torch.testing.assert_close(maps["hard"], ref_maps["hard"], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(maps["soft"], ref_maps["soft"], rtol=1e-5, atol=1e-6)  # softmax_g(z), no noise
    torch.testing.assert_close(out, ref_out, rtol=1e-5, atol=1e-6)


@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")  # the interpreter's numpy 0/0
def test_non_finite_inputs_and_empty_groups_like_reference():
    q, k, v = _inputs(2, 4, 9, 16, seed=2)
    q[0, 1, 3] = float("nan")
    for eps in (1.0, 0.0):  # eps=0: a group without tokens divides 0 by 0, as in the reference
        ours = _run(q, k, v, "triton", eps=eps)
        ref = _run(q, k, v, "reference", eps=eps)
        for a, b in zip(ours, ref, strict=True):
            assert torch.equal(a.isnan(), b.isnan())
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5, equal_nan=True)


# --------------------------------------------------------------------------------------------
# Backend declaration and torch.compile
# --------------------------------------------------------------------------------------------


def test_declared_support():
    assert BACKEND.name == "triton" and "cuda" in BACKEND.devices
    assert ("cpu" in BACKEND.devices) == _INTERPRET
    too_many = BACKEND.not_supported_reasons(AssignInputs(DEVICE, torch.float32, 1, 257, 4, 16, 1, False))
    assert any("G=257" in reason for reason in too_many)
    assert BACKEND.not_supported_reasons(AssignInputs(DEVICE, torch.bfloat16, 8, 256, 16384, 1024, 8, True)) == []
    assert any(
        "float64" in r
        for r in BACKEND.not_supported_reasons(AssignInputs(DEVICE, torch.float64, 1, 4, 4, 16, 1, False))
    )
    q, k, v = _inputs(1, 4, 5, 8)
    with pytest.raises(ValueError, match="triton"):
        assign_attention(q.double(), k.double(), v.double(), backend="triton")


def test_torch_compile_fullgraph():
    """The custom op is opaque to dynamo: a compiled function calling it has no graph break."""
    q, k, v = _inputs(1, 3, 10, 8, seed=5)

    def loss(q, k, v):
        return assign_attention(q, k, v, num_heads=2, gumbel=True, seed=3, backend="triton").square().sum()

    compiled = torch.compile(loss, fullgraph=True)
    grads = []
    for fn in (loss, compiled):
        qg = q.detach().clone().requires_grad_()
        value = fn(qg, k, v)
        value.backward()
        grads.append((value.detach(), qg.grad))
    torch.testing.assert_close(grads[1][0], grads[0][0], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(grads[1][1], grads[0][1], rtol=1e-5, atol=1e-6)
