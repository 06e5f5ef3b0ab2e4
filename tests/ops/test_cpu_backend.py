"""What is specific to the ``cpu`` backend (csrc/cpu/): the raw native ops, their errors, the noise,
determinism, instruction-set copies, non-finite inputs and strided layouts.

Shared numerics (every shape x mode x dtype vs the float64 oracle) run for every backend in
test_assign_attention_parity.py and test_assign_attention_op.py; the CUDA kernels' own tests are
test_cuda_backend.py (GPU) and tests/kernels/test_cuda_emulation.py (host emulation).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from assign_cases import (
    FORWARD_TOL,
    GRAD_TOL,
    MODES,
    SHAPES,
    Shape,
    dense64,
    make_inputs,
    relative_error,
    small_inputs,
)
from groupvit_fast.ops import AssignInputs, assign_attention, gumbel_noise, select_backend
from groupvit_fast.reference import assign_attention_forward_math, assign_attention_reference, philox_gumbel_noise
from requirements import requires

pytestmark = requires("cpu")


def ops():
    from groupvit_fast.ops.backends.native import native_ops

    return native_ops()


def forward_args(
    q,
    k,
    v,
    *,
    noise=None,
    seed=0,
    offset=0,
    num_heads=1,
    scale=None,
    hard=True,
    gumbel=False,
    tau=1.0,
    sum_assign=False,
    eps=1.0,
    return_attn=False,
):
    scale = (q.shape[-1] // num_heads) ** -0.5 if scale is None else scale
    return (q, k, v, noise, seed, offset, num_heads, scale, hard, gumbel, tau, sum_assign, eps, return_attn)


# --------------------------------------------------------------------------------------------
# Errors raised in C++ surface as ValueError / TypeError naming the argument
# --------------------------------------------------------------------------------------------

BAD_FORWARD = [
    ("q rank", lambda q, k, v: forward_args(q[0], k, v), ValueError, r"q must have rank 3"),
    ("k rank", lambda q, k, v: forward_args(q, k[..., None], v), ValueError, r"k must have rank 3"),
    ("int q", lambda q, k, v: forward_args(q.long(), k, v), TypeError, r"q must be float32, float16 or bfloat16"),
    ("float64 v", lambda q, k, v: forward_args(q, k, v.double()), TypeError, r"v must be float32"),
    ("k dtype", lambda q, k, v: forward_args(q, k.half(), v.half()), TypeError, r"k must have q's dtype"),
    ("v shape", lambda q, k, v: forward_args(q, k, v[:, :4]), ValueError, r"v must have k's shape"),
    ("batch", lambda q, k, v: forward_args(q[:1], k, v), ValueError, r"k must have q's batch size"),
    ("channels", lambda q, k, v: forward_args(q[..., :4], k, v), ValueError, r"k must have q's channel count"),
    ("heads", lambda q, k, v: forward_args(q, k, v, num_heads=3), ValueError, r"num_heads = 3 must divide"),
    (
        "heads zero",
        lambda q, k, v: forward_args(q, k, v, num_heads=0, scale=1.0),
        ValueError,
        r"num_heads must be >= 1",
    ),
    ("tau", lambda q, k, v: forward_args(q, k, v, tau=0.0), ValueError, r"tau must be a finite number > 0"),
    ("tau nan", lambda q, k, v: forward_args(q, k, v, tau=float("nan")), ValueError, r"tau must be"),
    ("eps", lambda q, k, v: forward_args(q, k, v, eps=-1.0), ValueError, r"eps must be >= 0 when sum_assign"),
    ("scale", lambda q, k, v: forward_args(q, k, v, scale=float("inf")), ValueError, r"scale must be finite"),
    ("no tokens", lambda q, k, v: forward_args(q, k[:, :0], v[:, :0]), ValueError, r"k must hold at least one token"),
    (
        "noise shape",
        lambda q, k, v: forward_args(q, k, v, gumbel=True, noise=torch.zeros(2, 1, 3, 4)),
        ValueError,
        r"noise must have shape \[B, h, G, N\] = \[2, 1, 3, 5\]",
    ),
    (
        "noise dtype",
        lambda q, k, v: forward_args(q, k, v, gumbel=True, noise=torch.zeros(2, 1, 3, 5).double()),
        TypeError,
        r"noise must be float32",
    ),
    (
        "noise without gumbel",
        lambda q, k, v: forward_args(q, k, v, noise=torch.zeros(2, 1, 3, 5)),
        ValueError,
        r"noise is only used with gumbel=True",
    ),
]


@pytest.mark.parametrize("make_args,error,match", [c[1:] for c in BAD_FORWARD], ids=[c[0] for c in BAD_FORWARD])
def test_forward_native_bad_input_raises_naming_the_argument(make_args, error, match):
    q, k, v = small_inputs()
    with pytest.raises(error, match=match):
        ops().assign_attention_forward_native(*make_args(q, k, v))


def test_sum_assign_allows_negative_eps_in_the_native_op():
    q, k, v = small_inputs()
    out, _, _, _ = ops().assign_attention_forward_native(*forward_args(q, k, v, sum_assign=True, eps=-1.0))
    expected, _ = assign_attention_forward_math(q.double(), k.double(), v.double(), sum_assign=True, eps=-1.0)
    torch.testing.assert_close(out.double(), expected, rtol=1e-5, atol=1e-6)


def test_backward_native_bad_input_raises_naming_the_argument():
    q, k, v = small_inputs()
    out, r, _, _ = ops().assign_attention_forward_native(*forward_args(q, k, v))
    grad = torch.ones_like(out)
    base = forward_args(q, k, v)[3:13]  # noise .. eps

    def call(grad_out=grad, out_=out, r_=r):
        return ops().assign_attention_backward_native(grad_out, q, k, v, out_, r_, *base)

    call()  # the valid call works
    with pytest.raises(ValueError, match=r"grad_out must have q's shape"):
        call(grad_out=grad[:, :2])
    with pytest.raises(TypeError, match=r"grad_out must have q's dtype"):
        call(grad_out=grad.half())
    with pytest.raises(ValueError, match=r"out must have rank 3"):
        call(out_=out[0])
    with pytest.raises(TypeError, match=r"r must be float32"):
        call(r_=r.double())
    with pytest.raises(ValueError, match=r"r must have shape \[B, h, G\] = \[2, 1, 3\]"):
        call(r_=r[:, :, :2])


def test_gumbel_noise_native_rejects_negative_sizes():
    with pytest.raises(ValueError, match="shape must hold sizes >= 0"):
        ops().gumbel_noise_native(torch.empty(0), [2, -1], 0, 0)


# --------------------------------------------------------------------------------------------
# The raw ops: schema, fake tensors, outputs
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("return_attn", [False, True])
def test_native_ops_pass_opcheck(return_attn):
    q, k, v = small_inputs(c=8)
    args = forward_args(q, k, v, seed=7, num_heads=2, gumbel=True, return_attn=return_attn)
    # No Autograd-key kernel on purpose: the raw ops run below groupvit_fast::assign_attention's
    # registered autograd formula (test_assign_attention_op.py opchecks that op with gradients).
    tests = ("test_schema", "test_faketensor", "test_aot_dispatch_dynamic")
    torch.library.opcheck(ops().assign_attention_forward_native.default, args, test_utils=tests)
    out, r, _, _ = ops().assign_attention_forward_native(*args)
    backward_args = (torch.randn_like(out), q, k, v, out, r) + args[3:13]
    torch.library.opcheck(ops().assign_attention_backward_native.default, backward_args, test_utils=tests)
    torch.library.opcheck(ops().gumbel_noise_native.default, (q, [2, 3, 4], 5, 1), test_utils=tests)


def test_outputs_are_fresh_tensors_and_empty_maps_are_distinct():
    q, k, v = small_inputs()
    out, r, hard, soft = ops().assign_attention_forward_native(*forward_args(q, k, v))
    assert hard.numel() == 0 and soft.numel() == 0 and hard is not soft
    assert out.is_contiguous() and r.dtype == torch.float32 and r.shape == (2, 1, 3)
    for t in (q, k, v):
        assert out.data_ptr() != t.data_ptr()
    out, r, hard, soft = ops().assign_attention_forward_native(*forward_args(q, k, v, return_attn=True))
    assert hard.shape == soft.shape == (2, 1, 3, 5) and hard.data_ptr() != soft.data_ptr()


def test_auto_picks_the_cpu_backend_for_cpu_tensors(monkeypatch):
    monkeypatch.delenv("GROUPVIT_FAST_BACKEND", raising=False)
    inputs = AssignInputs("cpu", torch.float32, 2, 64, 196, 384, 1, False)
    assert select_backend(inputs) == "cpu"
    assert select_backend(AssignInputs("cpu", torch.float64, 2, 64, 196, 384, 1, False)) == "reference"


# --------------------------------------------------------------------------------------------
# Noise: the Philox convention, bit-exact in the uniform draw
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "shape,seed,offset",
    [
        ((2, 3, 4, 37), 0, 0),
        ((1, 1, 64, 196), 1234, 0),
        ((3, 2, 5, 11), 2**62 - 17, 99),  # both key words set
        ((1, 1, 4, 50), 42, 2**32 - 100),  # counters cross the 2**32 boundary (high word)
    ],
)
def test_cpu_noise_equals_the_philox_oracle(shape, seed, offset):
    ours = gumbel_noise(shape, seed=seed, offset=offset, backend="cpu")
    expected = philox_gumbel_noise(shape, seed, offset)
    assert ours.dtype == torch.float32 and ours.shape == expected.shape
    # the uniform draw is bit-exact; -log(-log(u)) differs from NumPy's log by an ulp or two
    torch.testing.assert_close(ours, expected, rtol=0, atol=1e-5)


def test_in_kernel_noise_of_the_forward_equals_the_noise_tensor():
    shape = SHAPES[4]
    mode = MODES[1]
    q, k, v, _ = make_inputs(shape, torch.float32, mode=mode)
    noise = gumbel_noise((shape.batch, shape.heads, shape.groups, shape.tokens), seed=321, backend="cpu")
    drawn = assign_attention(q, k, v, num_heads=shape.heads, gumbel=True, seed=321, backend="cpu")
    given = assign_attention(q, k, v, num_heads=shape.heads, gumbel=True, noise=noise, backend="cpu")
    torch.testing.assert_close(drawn, given, rtol=0, atol=0)


# --------------------------------------------------------------------------------------------
# Determinism and the instruction-set copies
# --------------------------------------------------------------------------------------------


def _forward_backward(shape: Shape, mode, dtype=torch.float32, seed=5):
    q, k, v, _ = make_inputs(shape, dtype, mode=mode)
    leaves = [t.clone().requires_grad_(True) for t in (q, k, v)]
    out, maps = assign_attention(
        *leaves, num_heads=shape.heads, seed=seed, return_attn=True, backend="cpu", **mode.kwargs()
    )
    out.backward(torch.linspace(-1, 1, out.numel()).reshape(out.shape).to(dtype))
    return [out, maps["hard"], maps["soft"]] + [t.grad for t in leaves]


# B * h * chunks: one chunk per (b, h) (finalized in place) and several chunks (reduced in order)
DETERMINISM_SHAPES = [Shape(16, 64, 49, 40, 1), Shape(1, 8, 300, 16, 2), Shape(1, 5, 1100, 8, 1)]


@pytest.mark.parametrize("shape", DETERMINISM_SHAPES, ids=str)
@pytest.mark.parametrize("mode", [MODES[1], MODES[3]], ids=lambda m: m.name)
def test_results_do_not_depend_on_the_thread_count(shape, mode):
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = _forward_backward(shape, mode)
        torch.set_num_threads(2)
        two = _forward_backward(shape, mode)
    finally:
        torch.set_num_threads(before)
    for a, b in zip(one, two, strict=True):
        assert torch.equal(a, b)


@pytest.mark.parametrize("shape", DETERMINISM_SHAPES[1:], ids=str)
@pytest.mark.parametrize("mode", [MODES[1], MODES[2]], ids=lambda m: m.name)
def test_chunked_tokens_match_the_float64_reference(shape, mode):
    q, k, v, noise = make_inputs(shape, torch.float32, mode=mode)
    leaves = [t.clone().requires_grad_(True) for t in (q, k, v)]
    out = assign_attention(*leaves, num_heads=shape.heads, noise=noise, backend="cpu", **mode.kwargs())
    ref_leaves = [t.detach().double().requires_grad_(True) for t in (q, k, v)]
    ref, _, _ = assign_attention_reference(
        *ref_leaves, num_heads=shape.heads, noise=None if noise is None else noise.double(), **mode.kwargs()
    )
    assert relative_error(out, ref) <= FORWARD_TOL[torch.float32]
    grad = torch.randn_like(out)
    out.backward(grad)
    ref.backward(grad.double())
    for ours, expected in zip(leaves, ref_leaves, strict=True):
        assert relative_error(ours.grad, expected.grad) <= GRAD_TOL[torch.float32]


_ISA_SCRIPT = """
import json, sys, torch
from groupvit_fast.ops.backends.native import native_ops
from groupvit_fast.ops import assign_attention
torch.manual_seed(0)
q, k, v = torch.randn(2, 8, 40), torch.randn(2, 67, 40), torch.randn(2, 67, 40)
results = {"isa": native_ops().build_info()}
for dtype in (torch.float32, torch.bfloat16):
    for hard in (True, False):
        leaves = [t.detach().to(dtype).clone().requires_grad_(True) for t in (q, k, v)]
        out = assign_attention(*leaves, num_heads=2, hard=hard, gumbel=True, seed=3, backend="cpu")
        out.backward(torch.ones_like(out))
        results[f"{dtype}-{hard}"] = [t.float().flatten().tolist() for t in [out] + [x.grad for x in leaves]]
json.dump(results, sys.stdout)
"""


def _run_isa(isa: str) -> dict:
    env = dict(os.environ, GROUPVIT_FAST_CPU_ISA=isa)
    proc = subprocess.run(
        [sys.executable, "-c", _ISA_SCRIPT],
        check=False,
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        cwd=os.path.dirname(__file__),
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def test_baseline_and_avx2_copies_agree():
    base = _run_isa("baseline")
    assert "cpu_isa=baseline" in base.pop("isa")
    best = _run_isa("auto")
    isa = best.pop("isa")
    if "cpu_isa=avx2" not in isa:
        pytest.skip(f"this CPU runs the baseline copy only ({isa})")
    for key, tensors in base.items():
        tol = 1e-5 if "float32" in key else 2e-2  # bf16: the stores round; fp32 compute differs in order only
        for a, b in zip(tensors, best[key], strict=True):
            a, b = torch.tensor(a), torch.tensor(b)
            assert relative_error(a, b) <= tol, key


# --------------------------------------------------------------------------------------------
# Non-finite inputs follow the dense formula R @ v
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("hard", [True, False])
def test_non_finite_v_reaches_every_group_like_the_dense_formula(hard):
    q, k, v = small_inputs(b=2, g=4, n=9, c=8)
    v = v.clone()
    v[0, 3, 2] = float("inf")
    v[0, 5, 6] = float("nan")
    out = assign_attention(q, k, v, hard=hard, backend="cpu")
    expected, _ = dense64(q, k, v, hard=hard)
    assert torch.equal(torch.isnan(out), torch.isnan(expected))
    assert torch.equal(torch.isposinf(out), torch.isposinf(expected))
    finite = torch.isfinite(expected)
    torch.testing.assert_close(out[finite].double(), expected[finite], rtol=1e-5, atol=1e-6)
    assert torch.isfinite(out[1]).all()  # the other batch element is untouched


@pytest.mark.parametrize("where", ["k", "q"])
def test_nan_logit_column_poisons_its_batch_element_in_hard_mode(where):
    q, k, v = small_inputs(b=2, g=4, n=9, c=8)
    q, k = q.clone(), k.clone()
    if where == "k":
        k[1, 4, 0] = float("nan")  # one token's logits are all NaN
    else:
        q[1, 2, 0] = float("inf")  # a +inf logit: its softmax column is NaN
    out, maps = assign_attention(q, k, v, hard=True, return_attn=True, backend="cpu")
    ref_out, ref_hard, _ = assign_attention_reference(q.double(), k.double(), v.double(), hard=True)
    assert torch.isnan(out[1]).all() and torch.isfinite(out[0]).all()
    assert torch.equal(torch.isnan(out), torch.isnan(ref_out))
    assert torch.equal(torch.isnan(maps["hard"]), torch.isnan(ref_hard))
    r = ops().assign_attention_forward_native(*forward_args(q, k, v))[1]
    assert torch.isnan(r[1]).all() and torch.isfinite(r[0]).all()


def test_non_finite_inputs_do_not_break_the_backward():
    q, k, v = small_inputs(b=1, g=3, n=6, c=8)
    k = k.clone()
    k[0, 2, 1] = float("nan")
    leaves = [t.clone().requires_grad_(True) for t in (q, k, v)]
    out = assign_attention(*leaves, hard=True, gumbel=True, seed=1, backend="cpu")
    out.sum().backward()
    assert all(t.grad is not None and t.grad.shape == t.shape for t in leaves)
    assert torch.isnan(leaves[0].grad).any()


# --------------------------------------------------------------------------------------------
# Layouts the kernels read without a copy, and some with one
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=str)
def test_expanded_and_transposed_inputs(dtype):
    gen = torch.Generator().manual_seed(1)
    q = torch.randn(3, 5, 16, generator=gen).to(dtype)
    k_row = torch.randn(1, 1, 16, generator=gen).to(dtype)
    k = (k_row + 0.1 * torch.randn(1, 7, 16, generator=gen).to(dtype)).expand(3, 7, 16)  # batch stride 0
    v = torch.randn(3, 16, 7, generator=gen).to(dtype).transpose(1, 2)  # channel stride != 1
    for hard in (True, False):
        out = assign_attention(q, k, v, num_heads=2, hard=hard, backend="cpu")
        expected = assign_attention(
            q.contiguous(), k.contiguous(), v.contiguous(), num_heads=2, hard=hard, backend="cpu"
        )
        torch.testing.assert_close(out, expected, rtol=0, atol=0)
        ref, _ = dense64(q, k, v, num_heads=2, hard=hard)
        assert relative_error(out, ref) <= FORWARD_TOL[dtype]
