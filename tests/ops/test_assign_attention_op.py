"""The assign_attention contract: math vs hand-derived oracles, errors, randomness, compile, memory.

Oracles: a naive float64 loop written from docs/assign_op.md (independent of the vectorised
reference), float64 gradcheck of the hand-derived backward, and autograd of the NVlabs-faithful
reference. Backend-specific numerics live in test_assign_attention_parity.py.
"""

from __future__ import annotations

import math

import pytest
import torch
from scipy import stats

from assign_cases import MODES, SHAPES, default_device, fused_backend_params, make_inputs
from groupvit_fast.ops import assign_attention, backend_usage, gumbel_noise
from groupvit_fast.ops.assign_attention import _assign_attention_op, _seed_tensor
from groupvit_fast.reference import (
    assign_attention_backward_math,
    assign_attention_forward_math,
    assign_attention_reference,
    philox_gumbel_noise,
)
from groupvit_fast.reference.assign_attention import sample_gumbel
from requirements import requires

DEVICE = default_device()
BACKENDS = fused_backend_params(DEVICE)


def naive_assign_attention(
    q, k, v, *, num_heads=1, scale=None, hard=True, tau=1.0, sum_assign=False, eps=1.0, noise=None
):
    """docs/assign_op.md "Math", one scalar at a time (float64, tiny shapes only)."""
    b_size, g_size, c = q.shape
    n_size = k.shape[1]
    d = c // num_heads
    scale = d**-0.5 if scale is None else scale
    out = torch.zeros(b_size, g_size, c, dtype=torch.float64)
    for b in range(b_size):
        for h in range(num_heads):
            sl = slice(h * d, (h + 1) * d)
            e = (lambda g, n: 0.0) if noise is None else (lambda g, n: float(noise[b, h, g, n]))  # noqa: B023
            y = [
                [(scale * float(q[b, g, sl] @ k[b, n, sl]) + e(g, n)) / tau for n in range(n_size)]
                for g in range(g_size)
            ]
            a = [[0.0] * n_size for _ in range(g_size)]
            for n in range(n_size):
                column = [y[g][n] for g in range(g_size)]
                top = max(column)
                exps = [math.exp(val - top) for val in column]
                total = sum(exps)
                if hard:
                    a[column.index(top)][n] = 1.0  # first maximum: ties go to the lowest g
                else:
                    for g in range(g_size):
                        a[g][n] = exps[g] / total
            for g in range(g_size):
                r = sum(a[g])
                denom = 1.0 if sum_assign else r + eps
                for n in range(n_size):
                    out[b, g, sl] += a[g][n] / denom * v[b, n, sl].double()
    return out


@pytest.mark.parametrize("mode", MODES, ids=lambda m: m.name)
@pytest.mark.parametrize("shape", SHAPES[:4], ids=str)
def test_reference_equals_naive_formula(shape, mode):
    q, k, v, noise = make_inputs(shape, torch.float64, mode=mode)
    kwargs = dict(num_heads=shape.heads, hard=mode.hard, tau=mode.tau, sum_assign=mode.sum_assign, eps=mode.eps)
    expected = naive_assign_attention(q, k, v, noise=noise, **kwargs)
    out, _, _ = assign_attention_reference(
        q, k, v, gumbel=mode.gumbel, noise=None if noise is None else noise.double(), **kwargs
    )
    torch.testing.assert_close(out, expected, rtol=1e-10, atol=1e-12)


class _MathFunction(torch.autograd.Function):
    """The hand-derived forward/backward as an autograd.Function, for gradcheck."""

    @staticmethod
    def forward(ctx, q, k, v, kwargs):
        out, r = assign_attention_forward_math(q, k, v, **kwargs)
        ctx.save_for_backward(q, k, v, out, r)
        ctx.kwargs = kwargs
        return out

    @staticmethod
    def backward(ctx, grad_out):
        return (*assign_attention_backward_math(grad_out, *ctx.saved_tensors, **ctx.kwargs), None)


@pytest.mark.parametrize("mode", [m for m in MODES if not m.hard], ids=lambda m: m.name)
@pytest.mark.parametrize("heads", [1, 2])
def test_hand_derived_backward_passes_float64_gradcheck(mode, heads):
    gen = torch.Generator().manual_seed(1)
    q, k, v = (torch.randn(2, s, 8, generator=gen, dtype=torch.float64, requires_grad=True) for s in (3, 5, 5))
    noise = torch.randn(2, heads, 3, 5, generator=gen, dtype=torch.float64) if mode.gumbel else None
    kwargs = dict(
        num_heads=heads,
        hard=False,
        gumbel=mode.gumbel,
        tau=mode.tau,
        sum_assign=mode.sum_assign,
        eps=mode.eps,
        noise=noise,
    )
    assert torch.autograd.gradcheck(lambda a, b, c: _MathFunction.apply(a, b, c, kwargs), (q, k, v))


@pytest.mark.parametrize("mode", MODES, ids=lambda m: m.name)
@pytest.mark.parametrize("shape", SHAPES[:5], ids=str)
def test_hand_derived_backward_equals_autograd_of_nvlabs_reference(shape, mode):
    # hard mode: the straight-through gradient (not the zero gradient of the one-hot) is the spec
    q, k, v, noise = make_inputs(shape, torch.float64, mode=mode)
    noise = None if noise is None else noise.double()
    leaves = [t.clone().requires_grad_(True) for t in (q, k, v)]
    kwargs = dict(num_heads=shape.heads, **mode.kwargs())
    out_ref, _, _ = assign_attention_reference(*leaves, noise=noise, **kwargs)
    grad_out = torch.randn_like(out_ref)
    out_ref.backward(grad_out)
    out, r = assign_attention_forward_math(q, k, v, noise=noise, **kwargs)
    grads = assign_attention_backward_math(grad_out, q, k, v, out, r, noise=noise, **kwargs)
    torch.testing.assert_close(out, out_ref.detach(), rtol=1e-10, atol=1e-12)
    for ours, leaf in zip(grads, leaves, strict=True):
        torch.testing.assert_close(ours, leaf.grad, rtol=1e-9, atol=1e-11)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("return_attn", [False, True])
@pytest.mark.parametrize("gumbel", [False, True])
def test_custom_op_passes_opcheck(backend, return_attn, gumbel):
    dtype = torch.float64 if backend == "reference" else torch.float32
    gen = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, s, 8, generator=gen, dtype=dtype).to(DEVICE).requires_grad_(True) for s in (3, 5, 5))
    args = (q, k, v, None, _seed_tensor(7, gumbel), 2, 0.5, True, gumbel, 1.0, False, 1.0, return_attn, backend)
    torch.library.opcheck(_assign_attention_op, args)


# ---- errors ---------------------------------------------------------------------------------


def _qkv(b=2, g=3, n=5, c=8):
    return torch.randn(b, g, c), torch.randn(b, n, c), torch.randn(b, n, c)


BAD_CALLS = [
    ("rank", lambda q, k, v: assign_attention(q[0], k, v), ValueError, "q must have rank 3"),
    ("k rank", lambda q, k, v: assign_attention(q, k.unsqueeze(0), v), ValueError, "k must have rank 3"),
    ("batch", lambda q, k, v: assign_attention(q[:1], k, v), ValueError, "batch size"),
    ("channels", lambda q, k, v: assign_attention(q[..., :4], k, v), ValueError, "channel count"),
    ("k/v shape", lambda q, k, v: assign_attention(q, k, v[:, :2]), ValueError, "k and v"),
    ("heads", lambda q, k, v: assign_attention(q, k, v, num_heads=3), ValueError, "num_heads"),
    ("heads zero", lambda q, k, v: assign_attention(q, k, v, num_heads=0), ValueError, "num_heads"),
    ("tau", lambda q, k, v: assign_attention(q, k, v, tau=0.0), ValueError, "tau"),
    ("tau negative", lambda q, k, v: assign_attention(q, k, v, tau=-1.0), ValueError, "tau"),
    ("eps", lambda q, k, v: assign_attention(q, k, v, eps=-0.5), ValueError, "eps"),
    (
        "noise shape",
        lambda q, k, v: assign_attention(q, k, v, gumbel=True, noise=torch.zeros(2, 1, 3, 4)),
        ValueError,
        "noise must have shape",
    ),
    (
        "noise without gumbel",
        lambda q, k, v: assign_attention(q, k, v, noise=torch.zeros(2, 1, 3, 5)),
        ValueError,
        "noise",
    ),
    (
        "integer dtype",
        lambda q, k, v: assign_attention(q.long(), k.long(), v.long()),
        TypeError,
        "q must be a floating",
    ),
    ("mixed dtypes", lambda q, k, v: assign_attention(q, k.double(), v), TypeError, "dtype"),
    ("not a tensor", lambda q, k, v: assign_attention(q.tolist(), k, v), TypeError, "q must be a torch.Tensor"),
    ("empty groups", lambda q, k, v: assign_attention(q[:, :0], k, v), ValueError, "G >= 1"),
    ("empty tokens", lambda q, k, v: assign_attention(q, k[:, :0], v[:, :0]), ValueError, "N >= 1"),
    ("unknown backend", lambda q, k, v: assign_attention(q, k, v, backend="fastest"), ValueError, "backend"),
    ("backend cannot run", lambda q, k, v: assign_attention(q, k, v, backend="cuda"), ValueError, "backend"),
    ("float seed", lambda q, k, v: assign_attention(q, k, v, gumbel=True, seed=1.5), TypeError, "seed must be an int"),
    ("tensor seed", lambda q, k, v: assign_attention(q, k, v, gumbel=True, seed=torch.tensor(3)), TypeError, "seed"),
    ("noise without seed", lambda q, k, v: gumbel_noise((1, 1, 2, 2), seed=None), TypeError, "seed"),
]


@pytest.mark.parametrize("call,error,match", [c[1:] for c in BAD_CALLS], ids=[c[0] for c in BAD_CALLS])
def test_bad_input_raises_naming_the_argument(call, error, match):
    with pytest.raises(error, match=match):
        call(*_qkv())


def test_sum_assign_allows_negative_eps():
    q, k, v = _qkv()
    out = assign_attention(q, k, v, sum_assign=True, eps=-1.0, backend="reference")
    assert torch.isfinite(out).all()


@requires("cuda-device")
def test_devices_that_differ_raise():
    q, k, v = _qkv()
    with pytest.raises(ValueError, match="one device"):
        assign_attention(q.cuda(), k, v)


# ---- randomness -----------------------------------------------------------------------------

ALL_BACKENDS = [pytest.param("reference-direct", id="reference-direct")] + BACKENDS


def _run(backend, *args, **kwargs):
    return assign_attention(*args, backend="reference" if backend == "reference-direct" else backend, **kwargs)


@pytest.mark.parametrize("backend", ALL_BACKENDS)
def test_same_seed_same_result_and_torch_manual_seed_reproduces(backend):
    q, k, v, _ = make_inputs(SHAPES[2], torch.float32, mode=MODES[1], device=DEVICE)
    a = _run(backend, q, k, v, gumbel=True, seed=123, return_attn=True)[1]["hard"]
    b = _run(backend, q, k, v, gumbel=True, seed=123, return_attn=True)[1]["hard"]
    c = _run(backend, q, k, v, gumbel=True, seed=124, return_attn=True)[1]["hard"]
    assert torch.equal(a, b) and not torch.equal(a, c)
    torch.manual_seed(5)
    d = _run(backend, q, k, v, gumbel=True, return_attn=True)[1]["hard"]
    torch.manual_seed(5)
    e = _run(backend, q, k, v, gumbel=True, return_attn=True)[1]["hard"]
    assert torch.equal(d, e)


@pytest.mark.parametrize("backend", ALL_BACKENDS)
def test_each_call_without_a_seed_draws_fresh_noise(backend):
    """Training calls the op without a seed, once per step: every call must draw new noise. With all
    logits tied (q = k = 0) the noise alone picks each token's group, so two calls agreeing on all
    2 x 64 tokens among 8 groups would have probability 8**-128 with fresh noise."""
    torch.manual_seed(0)
    q = torch.zeros(2, 8, 16, device=DEVICE)
    k = torch.zeros(2, 64, 16, device=DEVICE)
    first, second = (_run(backend, q, k, k, gumbel=True, return_attn=True)[1]["hard"] for _ in range(2))
    assert not torch.equal(first, second)


@pytest.mark.parametrize("backend", [p for p in BACKENDS if p.values[0] != "reference"])  # in-kernel noise
def test_without_a_seed_the_generator_gives_both_seed_and_offset(backend):
    """seed=None: the call's noise is gumbel_noise(seed, offset) for the pair torch's generator draws next
    (seed below 2^62, then offset below 2^32), so torch.manual_seed reproduces it and the offset is used."""
    q = torch.zeros(2, 8, 16, device=DEVICE)  # tied logits: the noise alone picks each token's group
    k = torch.zeros(2, 64, 16, device=DEVICE)
    torch.manual_seed(3)
    seed, offset = torch.randint(0, 2**62, (1,)).item(), torch.randint(0, 2**32, (1,)).item()
    assert offset != 0
    torch.manual_seed(3)
    chosen = _run(backend, q, k, k, gumbel=True, return_attn=True)[1]["hard"].argmax(2)
    noise = gumbel_noise((2, 1, 8, 64), seed=seed, offset=offset, backend=backend, device=DEVICE)
    assert torch.equal(chosen.cpu(), noise.argmax(2).cpu())
    assert not torch.equal(chosen.cpu(), gumbel_noise((2, 1, 8, 64), seed=seed, backend=backend).argmax(2).cpu())


@pytest.mark.parametrize("backend", BACKENDS)
def test_in_kernel_noise_follows_the_philox_convention(backend):
    shape = (2, 2, 3, 37)
    noise = gumbel_noise(shape, seed=2024, offset=5, backend=backend, device=DEVICE)
    expected = philox_gumbel_noise(shape, 2024, 5)
    torch.testing.assert_close(noise.cpu(), expected, rtol=0, atol=1e-5)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("hard", [True, False])
def test_forward_and_backward_see_the_same_noise(backend, hard):
    """With seed s, forward and gradients equal the run given noise=gumbel_noise(s) explicitly."""
    shape = SHAPES[3]
    q, k, v, _ = make_inputs(shape, torch.float32, mode=MODES[0], device=DEVICE)
    noise = gumbel_noise(
        (shape.batch, shape.heads, shape.groups, shape.tokens), seed=99, backend=backend, device=DEVICE
    )
    results = []
    for kwargs in (dict(seed=99), dict(noise=noise)):
        leaves = [t.clone().requires_grad_(True) for t in (q, k, v)]
        out = assign_attention(
            *leaves, num_heads=shape.heads, hard=hard, gumbel=True, tau=0.7, backend=backend, **kwargs
        )
        out.backward(torch.ones_like(out))
        results.append([out.detach()] + [t.grad for t in leaves])
    for seeded, given in zip(*results, strict=True):
        torch.testing.assert_close(seeded, given, rtol=1e-6, atol=1e-6)


def _pick_frequencies(backend, logits_q, k, draws, noise=None):
    """Per token, how often each group wins over ``draws`` independent Gumbel draws (one call:
    the draws are batch rows, whose noise counters differ)."""
    q = logits_q.expand(draws, -1, -1).contiguous()
    kk = k.expand(draws, -1, -1).contiguous()
    if noise is None:
        _, maps = _run(backend, q, kk, kk, gumbel=True, seed=31337, return_attn=True)
    else:
        _, maps = _run(backend, q, kk, kk, gumbel=True, noise=noise, return_attn=True)
    return maps["hard"][:, 0].sum(dim=0).double().cpu()  # [G, N] counts


def _chi_square_pvalue(counts, probs):
    expected = probs * counts.sum(dim=0, keepdim=True)
    statistic = ((counts - expected) ** 2 / expected).sum().item()
    dof = (counts.shape[0] - 1) * counts.shape[1]
    return stats.chi2.sf(statistic, dof)


SIGNIFICANCE = 1e-3  # fixed seeds make the test deterministic; 1e-3 keeps the false-alarm rate low


@pytest.mark.parametrize("tau", [1.0, 0.5])
@pytest.mark.parametrize("backend", ALL_BACKENDS)
def test_gumbel_max_picks_group_g_with_probability_softmax_z(backend, tau):
    """Gumbel-max: P(token n picks g) = softmax_g(z)[g, n], whatever tau (tau > 0 keeps the argmax)."""
    gen = torch.Generator().manual_seed(3)
    q = torch.randn(1, 4, 8, generator=gen) * 0.7
    k = torch.randn(1, 6, 8, generator=gen) * 0.7
    draws = 4000
    probs = ((q @ k.transpose(1, 2)) * 8**-0.5).softmax(dim=1)[0].double()  # [G, N]
    counts = _pick_frequencies(backend, q.to(DEVICE), k.to(DEVICE), draws) if tau == 1.0 else None
    if counts is None:
        qq, kk = q.expand(draws, -1, -1).contiguous().to(DEVICE), k.expand(draws, -1, -1).contiguous().to(DEVICE)
        _, maps = _run(backend, qq, kk, kk, gumbel=True, tau=tau, seed=31337, return_attn=True)
        counts = maps["hard"][:, 0].sum(dim=0).double().cpu()
    assert counts.sum().item() == draws * 6
    assert _chi_square_pvalue(counts, probs) > SIGNIFICANCE


@pytest.mark.parametrize("seeded", [True, False], ids=["seed", "torch-generator"])
def test_reference_sample_gumbel_passes_the_same_chi_square(seeded):
    """``sample_gumbel`` (the noise of reference training and of the benchmark baseline, drawn when the
    reference gets no seed) obeys Gumbel-max too: through the public op with ``seed=None`` (torch's
    generator) and handed over explicitly."""
    gen = torch.Generator().manual_seed(3)
    q = torch.randn(1, 4, 8, generator=gen) * 0.7
    k = torch.randn(1, 6, 8, generator=gen) * 0.7
    draws = 4000
    probs = ((q @ k.transpose(1, 2)) * 8**-0.5).softmax(dim=1)[0].double()
    if seeded:
        counts = _pick_frequencies(
            "reference-direct", q, k, draws, noise=sample_gumbel((draws, 1, 4, 6), device=q.device, seed=17)
        )
    else:
        torch.manual_seed(17)
        qq, kk = q.expand(draws, -1, -1).contiguous(), k.expand(draws, -1, -1).contiguous()
        _, maps = _run("reference-direct", qq, kk, kk, gumbel=True, return_attn=True)
        counts = maps["hard"][:, 0].sum(dim=0).double().round()
    assert counts.sum().item() == draws * 6
    assert _chi_square_pvalue(counts, probs) > SIGNIFICANCE


@pytest.mark.parametrize("wrong", ["uniform", "exponential", "negated-gumbel"])
def test_chi_square_test_rejects_a_biased_generator(wrong):
    """The same statistic must fail for noise from the wrong distribution (the test has teeth)."""
    gen = torch.Generator().manual_seed(3)
    q = torch.randn(1, 4, 8, generator=gen) * 0.7
    k = torch.randn(1, 6, 8, generator=gen) * 0.7
    draws = 4000
    probs = ((q @ k.transpose(1, 2)) * 8**-0.5).softmax(dim=1)[0].double()
    u = torch.rand(draws, 1, 4, 6, generator=torch.Generator().manual_seed(11)).clamp(1e-7, 1 - 1e-7)
    noise = {"uniform": u, "exponential": -torch.log(u), "negated-gumbel": torch.log(-torch.log(u))}[wrong]
    counts = _pick_frequencies("reference-direct", q, k, draws, noise=noise)
    assert _chi_square_pvalue(counts, probs) < SIGNIFICANCE


# ---- compile, autocast, memory, dispatch -----------------------------------------------------


@pytest.mark.parametrize("backend", ["reference", "auto"])
def test_torch_compile_fullgraph_has_no_graph_break(backend):
    q, k, v, _ = make_inputs(SHAPES[2], torch.float32, mode=MODES[0])

    def fn(q, k, v):
        return assign_attention(q, k, v, gumbel=True, seed=1, backend=backend)

    torch._dynamo.reset()
    compiled = torch.compile(fn, fullgraph=True, backend="eager" if backend == "auto" else "inductor")
    torch.testing.assert_close(compiled(q, k, v), fn(q, k, v), rtol=1e-5, atol=1e-5)


def test_autocast_passes_low_precision_inputs_unchanged():
    q, k, v = (t.bfloat16() for t in _qkv())
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = assign_attention(q, k, v)
    assert out.dtype == torch.bfloat16


def _saved_tensor_shapes(fn):
    shapes = []

    def pack(t):
        shapes.append(tuple(t.shape))
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn()
    return shapes


@pytest.mark.parametrize("backend", BACKENDS)
def test_backward_saves_no_group_by_token_tensor(backend):
    """Memory contract: only q, k, v, out, r and the seed are saved; no [B, h, G, N] tensor."""
    if backend == "reference":
        pytest.skip("backend='reference' is the NVlabs-faithful autograd path; it saves the maps (asserted below)")
    b, g, n, c = 2, 16, 33, 8
    q, k, v = (torch.randn(b, s, c, device=DEVICE, requires_grad=True) for s in (g, n, n))
    shapes = _saved_tensor_shapes(lambda: assign_attention(q, k, v, gumbel=True, seed=0, backend=backend))
    assert (b, 1, g, n) not in shapes
    assert all(math.prod(s) <= b * max(g, n) * c for s in shapes), shapes
    reference_shapes = _saved_tensor_shapes(lambda: assign_attention(q, k, v, gumbel=True, backend="reference"))
    assert (b, 1, g, n) in reference_shapes  # the reference path keeps the [B,h,G,N] maps: that is the point


def test_backend_usage_records_which_backend_ran():
    q, k, v = _qkv()
    before = backend_usage().get("reference", 0)
    assign_attention(q.double(), k.double(), v.double())  # float64: only the reference can run it
    assert backend_usage()["reference"] == before + 1


def test_env_override_forces_a_backend(monkeypatch):
    q, k, v = _qkv()
    monkeypatch.setenv("GROUPVIT_FAST_BACKEND", "reference")
    before = backend_usage().get("reference", 0)
    assign_attention(q, k, v)
    assert backend_usage()["reference"] == before + 1
    monkeypatch.setenv("GROUPVIT_FAST_BACKEND", "no-such-backend")
    with pytest.raises(ValueError, match="unknown backend"):
        assign_attention(q, k, v)


def test_philox_oracle_matches_known_answer_vector():
    """Philox4x32-10 known-answer vectors published with Random123 (kat_vectors): an independent
    check that the oracle (and so every kernel matched against it) is the real Philox."""
    from groupvit_fast.reference.philox import philox4x32_10

    out = philox4x32_10(0, 0, 0, 0, 0, 0)
    assert [int(x) for x in out] == [0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8]
    out = philox4x32_10(*(0xFFFFFFFF,) * 4, 0xFFFFFFFF, 0xFFFFFFFF)
    assert [int(x) for x in out] == [0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD]
    assert torch.isfinite(philox_gumbel_noise((1, 1, 2, 3), 0)).all()
