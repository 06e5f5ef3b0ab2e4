"""What is specific to the ``cuda`` backend (csrc/cuda/) on a GPU: the noise, agreement with the
``cpu`` backend, and its declared limits.

GPU tests here carry ``requires("cuda")`` (hence the ``gpu`` marker). Each cross-device comparison is
also parametrised with its devices swapped to the CPU (``cpu`` backend vs ``reference``), so the test's
own logic (leaf tensors, gradients, device moves) runs in every CPU CI run and cannot hide a bug until
the first GPU run. The kernels' logic without a GPU: tests/kernels/test_cuda_emulation.py.
"""

from __future__ import annotations

import re

import pytest
import torch

from assign_cases import FORWARD_TOL, GRAD_TOL, MODES, SHAPES, Shape, make_inputs, relative_error
from groupvit_fast.ops import BACKENDS, AssignInputs, assign_attention, gumbel_noise
from groupvit_fast.reference import philox_gumbel_noise
from paths import CSRC
from requirements import requires

# (backend under test, its device): the real GPU case, and the same logic with the device swapped
TARGETS = [
    pytest.param(("cuda", "cuda"), marks=requires("cuda"), id="cuda"),
    pytest.param(("reference", "cpu"), marks=requires("cpu"), id="logic-on-cpu"),
]


def _leaves(tensors, device):
    """Fresh leaf tensors on ``device`` (``.to`` of a leaf that requires grad is not a leaf)."""
    return [t.detach().to(device).clone().requires_grad_(True) for t in tensors]


def _forward_backward(backend, device, q, k, v, noise, shape, mode):
    leaves = _leaves((q, k, v), device)
    out, maps = assign_attention(
        *leaves,
        num_heads=shape.heads,
        noise=None if noise is None else noise.to(device),
        return_attn=True,
        backend=backend,
        **mode.kwargs(),
    )
    # a random upstream gradient: with ones, dq and dk are pure cancellation (sum_g S dA = 0 up to
    # round-off) and their relative error means nothing (the swapped-device run showed it)
    grad = torch.randn(out.shape, generator=torch.Generator().manual_seed(7)).to(device, out.dtype)
    out.backward(grad)
    for leaf in leaves:
        assert leaf.grad is not None and leaf.grad.device.type == device
    return [t.detach().cpu() for t in [out, maps["hard"], maps["soft"]] + [leaf.grad for leaf in leaves]]


@pytest.mark.parametrize("target", TARGETS)
def test_in_kernel_noise_equals_the_philox_oracle(target):
    backend, device = target
    shape = (2, 3, 64, 197)
    ours = gumbel_noise(shape, seed=2**40 + 3, offset=2**32 - 1000, backend=backend, device=device)
    assert ours.device.type == device
    expected = philox_gumbel_noise(shape, 2**40 + 3, 2**32 - 1000)
    torch.testing.assert_close(ours.cpu(), expected, rtol=0, atol=1e-5)


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("mode", MODES, ids=lambda m: m.name)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_agrees_with_the_cpu_backend(target, mode, dtype):
    backend, device = target
    if backend == "reference" and dtype != torch.float32:
        pytest.skip("the reference computes in bf16 (NVlabs); the swapped-device logic check runs in fp32")
    shape = Shape(3, 64, 197, 384, 2)
    q, k, v, noise = make_inputs(shape, dtype, mode=mode)
    on_cpu = _forward_backward("cpu", "cpu", q, k, v, noise, shape, mode)
    ours = _forward_backward(backend, device, q, k, v, noise, shape, mode)
    names = ("out", "hard", "soft", "dq", "dk", "dv")
    for name, a, b in zip(names, on_cpu, ours, strict=True):
        assert relative_error(b, a) <= 2 * GRAD_TOL[dtype], name


@pytest.mark.parametrize("target", TARGETS)
def test_in_kernel_noise_matches_its_noise_tensor_and_the_cpu_backend(target):
    backend, device = target
    shape, mode = SHAPES[6], MODES[1]
    q, k, v, _ = make_inputs(shape, torch.float32, mode=mode, device=device)
    drawn = assign_attention(q, k, v, gumbel=True, seed=77, backend=backend)
    noise = gumbel_noise((1, 1, shape.groups, shape.tokens), seed=77, backend=backend, device=device)
    given = assign_attention(q, k, v, gumbel=True, noise=noise, backend=backend)
    torch.testing.assert_close(drawn, given, rtol=1e-6, atol=1e-6)
    on_cpu = assign_attention(q.cpu(), k.cpu(), v.cpu(), gumbel=True, seed=77, backend="cpu")
    assert relative_error(drawn.cpu(), on_cpu) <= FORWARD_TOL[torch.float32]


@requires("cpu")
def test_declares_the_group_limit_of_its_kernels():
    limit = BACKENDS["cuda"].max_groups  # read from the extension's build_info()
    if limit is None:
        pytest.skip("groupvit_fast._C was built without CUDA kernels (CPU-only torch at build time)")
    declared = re.search(r"kMaxGroups = (\d+);", (CSRC / "cuda" / "assign_attention_kernels.h").read_text())
    assert declared and limit == int(declared.group(1))
    inputs = AssignInputs("cuda", torch.float32, 1, limit + 1, 10, 8, 1, False)
    reasons = BACKENDS["cuda"].not_supported_reasons(inputs)
    assert any(f"G = {limit + 1}" in reason for reason in reasons)
    inputs = AssignInputs("cuda", torch.float64, 1, 8, 10, 8, 1, False)
    assert any("dtype" in reason for reason in BACKENDS["cuda"].not_supported_reasons(inputs))
