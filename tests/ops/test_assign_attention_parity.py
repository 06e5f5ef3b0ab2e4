"""Every backend of assign_attention equals the float64 oracle, forward and backward.

The oracle is ``assign_attention_reference`` (NVlabs-faithful, autograd) evaluated in float64 on
the same (rounded) inputs and the same noise. One parametrisation (tests/helpers/assign_cases.py) serves
every row:

* ``cpu``, ``triton`` (interpreter on CPU, native on GPU), ``cuda``: the fused kernels;
* ``reference-op``: the custom op on the reference backend, i.e. the hand-derived forward/backward
  formulas (``assign_attention_forward_math`` / ``_backward_math``) against autograd of the NVlabs
  code: an independent check of the adapter every fused backend is held to;
* ``reference-fp32-vs-fp64``: the public ``backend="reference"`` (the NVlabs code itself under
  autograd) in fp32 against the same code in float64: a round-off check of the baseline, not an
  independent oracle, named for what it is.

Low-precision results are also held to the FlashAttention rule: the backend's error against the
float64 oracle is at most ``LOWP_RATIO`` times the error of the NVlabs reference run in the same
dtype, plus one rounding of the stored dtype (our kernels round once at the store; if the reference
happens to be exact, that single rounding is still allowed).
"""

from __future__ import annotations

import pytest
import torch

from assign_cases import (
    FORWARD_TOL,
    GRAD_TOL,
    MODES,
    SHAPES,
    default_device,
    fused_backend_params,
    make_inputs,
    relative_error,
    through_op,
)
from groupvit_fast.ops import assign_attention
from groupvit_fast.reference import assign_attention_reference

DEVICE = default_device()


def _rows() -> list:
    rows = []
    for param in fused_backend_params(DEVICE):
        (name,) = param.values
        if name == "reference":
            rows.append(pytest.param(name, marks=param.marks, id="reference-fp32-vs-fp64"))
            rows.append(pytest.param("reference-op", marks=param.marks, id="reference-op"))
        else:
            rows.append(param)
    return rows


BACKENDS = _rows()

#: FlashAttention-style bound for low precision: ours <= LOWP_RATIO * (reference in that dtype) + one
#: rounding of the stored dtype (relative to max |ref|).
LOWP_RATIO = 2.0
STORE_ROUNDING = {torch.bfloat16: 2.0**-8, torch.float16: 2.0**-11}


def assign(*args, backend: str, **kwargs):
    """``assign_attention`` for a row: ``reference-op`` goes through the custom op itself."""
    if backend == "reference-op":
        return through_op(*args, backend="reference", **kwargs)
    return assign_attention(*args, backend=backend, **kwargs)


def reference64(q, k, v, noise, heads, mode, **extra):
    leaves = [t.detach().double().requires_grad_(True) for t in (q, k, v)]
    out, hard, soft = assign_attention_reference(
        *leaves, num_heads=heads, noise=None if noise is None else noise.double(), **mode.kwargs(), **extra
    )
    return leaves, out, hard, soft


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("mode", MODES, ids=lambda m: m.name)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_forward_and_gradients_match_float64_reference_fp32(backend, mode, shape):
    q, k, v, noise = make_inputs(shape, torch.float32, mode=mode, device=DEVICE)
    leaves = [t.clone().requires_grad_(True) for t in (q, k, v)]
    out = assign(*leaves, num_heads=shape.heads, noise=noise, backend=backend, **mode.kwargs())
    ref_leaves, ref_out, _, _ = reference64(q, k, v, noise, shape.heads, mode)

    assert out.dtype == torch.float32 and out.shape == (shape.batch, shape.groups, shape.channels)
    assert relative_error(out, ref_out) <= FORWARD_TOL[torch.float32]

    grad_out = torch.randn_like(out)
    out.backward(grad_out)
    ref_out.backward(grad_out.double())
    for name, ours, ref in zip("qkv", leaves, ref_leaves, strict=True):
        err = relative_error(ours.grad, ref.grad)
        assert err <= GRAD_TOL[torch.float32], f"d{name}: relative error {err:.2e}"


LOW_PRECISION_CASES = [(SHAPES[2], MODES[0]), (SHAPES[4], MODES[1]), (SHAPES[6], MODES[2]), (SHAPES[6], MODES[1])]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=str)
@pytest.mark.parametrize("shape,mode", LOW_PRECISION_CASES, ids=[f"{s}-{m.name}" for s, m in LOW_PRECISION_CASES])
def test_low_precision_computes_in_fp32_and_stores_in_input_dtype(backend, dtype, shape, mode):
    if backend == "reference":
        pytest.skip("the reference computes in the input dtype (NVlabs): it is this test's low-precision baseline")
    q, k, v, noise = make_inputs(shape, dtype, mode=mode, device=DEVICE)
    leaves = [t.clone().requires_grad_(True) for t in (q, k, v)]
    out = assign(*leaves, num_heads=shape.heads, noise=noise, backend=backend, **mode.kwargs())
    ref_leaves, ref_out, _, _ = reference64(q, k, v, noise, shape.heads, mode)
    # the NVlabs code in the same dtype: the error a user of the original gets (FlashAttention's rule)
    lowp_leaves = [t.clone().requires_grad_(True) for t in (q, k, v)]
    lowp_out, _, _ = assign_attention_reference(*lowp_leaves, num_heads=shape.heads, noise=noise, **mode.kwargs())
    assert out.dtype == dtype
    err, lowp_err = relative_error(out, ref_out), relative_error(lowp_out, ref_out)
    assert err <= FORWARD_TOL[dtype]
    assert err <= LOWP_RATIO * lowp_err + STORE_ROUNDING[dtype], f"out: {err:.2e} vs reference's {lowp_err:.2e}"
    grad_out = torch.randn_like(out)
    out.backward(grad_out)
    ref_out.backward(grad_out.double())
    lowp_out.backward(grad_out)
    for name, ours, ref, lowp in zip("qkv", leaves, ref_leaves, lowp_leaves, strict=True):
        assert ours.grad.dtype == dtype
        err, lowp_err = relative_error(ours.grad, ref.grad), relative_error(lowp.grad, ref.grad)
        assert err <= GRAD_TOL[dtype], f"d{name}: relative error {err:.2e}"
        assert err <= LOWP_RATIO * lowp_err + STORE_ROUNDING[dtype], f"d{name}: {err:.2e} vs reference's {lowp_err:.2e}"


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("mode", [MODES[0], MODES[1], MODES[2]], ids=lambda m: m.name)
def test_return_attn_maps_match_reference(backend, mode):
    shape = SHAPES[3]
    q, k, v, noise = make_inputs(shape, torch.float32, mode=mode, device=DEVICE)
    out, maps = assign(q, k, v, num_heads=shape.heads, noise=noise, return_attn=True, backend=backend, **mode.kwargs())
    _, ref_out, ref_hard, ref_soft = reference64(q, k, v, noise, shape.heads, mode)
    expected_shape = (shape.batch, shape.heads, shape.groups, shape.tokens)
    assert maps["hard"].shape == expected_shape and maps["soft"].shape == expected_shape
    # hard: the exact one-hot (the reference's 1 - s + s differs from it by float64 round-off only)
    torch.testing.assert_close(maps["hard"].double(), ref_hard.detach(), rtol=0, atol=1e-5)
    torch.testing.assert_close(maps["soft"].double(), ref_soft.detach(), rtol=0, atol=1e-5)
    if mode.hard:
        assert set(maps["hard"].unique().tolist()) <= {0.0, 1.0}
        assert torch.all(maps["hard"].sum(dim=2) == 1)  # each token picks exactly one group
    assert relative_error(out, ref_out) <= FORWARD_TOL[torch.float32]


@pytest.mark.parametrize("backend", BACKENDS)
def test_strided_views_are_accepted(backend):
    shape, mode = SHAPES[2], MODES[0]
    q, k, v, _ = make_inputs(shape, torch.float32, mode=mode, device=DEVICE)
    # views into larger buffers: q every other group row, k/v sliced out of a fused [B, N, 2C] tensor
    q_big = torch.zeros(shape.batch, 2 * shape.groups, shape.channels, device=DEVICE)
    q_big[:, ::2] = q
    kv = torch.cat([k, v], dim=-1)
    q_view, k_view, v_view = q_big[:, ::2], kv[..., : shape.channels], kv[..., shape.channels :]
    assert not q_view.is_contiguous() and not k_view.is_contiguous()
    out = assign(q_view, k_view, v_view, num_heads=shape.heads, backend=backend)
    expected = assign(q, k, v, num_heads=shape.heads, backend=backend)
    torch.testing.assert_close(out, expected, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("backend", BACKENDS)
def test_empty_batch(backend):
    q = torch.zeros(0, 4, 8, device=DEVICE, requires_grad=True)
    k = torch.zeros(0, 5, 8, device=DEVICE, requires_grad=True)
    out, maps = assign(q, k, k, return_attn=True, backend=backend)
    assert out.shape == (0, 4, 8) and maps["hard"].shape == (0, 1, 4, 5)
    out.sum().backward()
    assert q.grad.shape == q.shape and k.grad.shape == k.shape


@pytest.mark.parametrize("backend", BACKENDS)
def test_group_that_receives_no_token_outputs_zero(backend):
    # group 2's query points away from every key: it never wins, r = 0 and eps keeps out finite (= 0).
    k = torch.randn(1, 9, 8, device=DEVICE).abs()
    q = torch.stack([torch.ones(8), 0.5 * torch.ones(8), -torch.ones(8)]).unsqueeze(0).to(DEVICE)
    v = torch.randn(1, 9, 8, device=DEVICE)
    out, maps = assign(q, k, v, return_attn=True, backend=backend)
    assert maps["hard"][0, 0, 2].sum() == 0
    assert torch.all(out[0, 2] == 0)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("hard", [True, False])
def test_very_large_logits_stay_finite(backend, hard):
    shape = SHAPES[2]
    q, k, v, _ = make_inputs(shape, torch.float32, mode=MODES[0], device=DEVICE)
    out = assign(q * 1e3, k * 1e3, v, hard=hard, backend=backend)  # logits ~ 1e6
    assert torch.isfinite(out).all()
    ref = assign_attention_reference((q * 1e3).double(), (k * 1e3).double(), v.double(), hard=hard)[0]
    assert relative_error(out, ref) <= 1e-4


@pytest.mark.parametrize("backend", BACKENDS)
def test_nan_input_propagates_and_does_not_hang(backend):
    q = torch.randn(1, 3, 8, device=DEVICE)
    k = torch.randn(1, 5, 8, device=DEVICE)
    v = torch.randn(1, 5, 8, device=DEVICE)
    q[0, 1, 3] = float("nan")  # every token's logit for group 1 is NaN
    out = assign(q, k, v, hard=False, backend=backend)
    assert torch.isnan(out).any()


@pytest.mark.parametrize("backend", BACKENDS)
def test_single_group_takes_every_token(backend):
    # softmax over one group is 1: out = sum_n v_n / (N + eps)
    k = torch.randn(2, 6, 8, device=DEVICE)
    v = torch.randn(2, 6, 8, device=DEVICE)
    q = torch.randn(2, 1, 8, device=DEVICE)
    out = assign(q, k, v, eps=1.0, backend=backend)
    torch.testing.assert_close(out, v.sum(dim=1, keepdim=True) / 7.0, rtol=1e-5, atol=1e-6)
