"""The shared case grid and input builders of the assignment-attention tests.

Every backend's parity test draws its shapes and modes from here (one parametrisation, no copies).
Inputs are built so that no token has a near-tie between its two best groups: a hard argmax is
only defined up to ties, and fp32 logits may legitimately flip a tie that float64 breaks the other
way (docs/assign_op.md, "Numerics").
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch

from groupvit_fast.ops import BACKENDS, AssignShape
from groupvit_fast.reference import assign_attention_forward_math
from requirements import backend_requirement, requires

#: The op's one shape type (``str(shape)``, e.g. ``B2-G1-N7-C8-h1``, is the test id); the tests call it ``Shape``.
Shape = AssignShape


# Odd sizes on purpose (G in {1,3,8,64}, N in {1,7,65,197}, C in {8,40,384}, heads in {1,2}),
# each value at least once, GroupViT's stage-0 shape (G=64, N=197~196, C=384) included.
SHAPES = [
    Shape(2, 1, 7, 8, 1),
    Shape(2, 3, 1, 40, 2),
    Shape(1, 8, 65, 40, 1),
    Shape(2, 3, 197, 8, 2),
    Shape(2, 8, 7, 384, 2),
    Shape(1, 64, 65, 8, 1),
    Shape(1, 64, 197, 384, 1),
]


@dataclass(frozen=True)
class Mode:
    name: str
    hard: bool = True
    gumbel: bool = False
    tau: float = 1.0
    sum_assign: bool = False
    eps: float = 1.0

    def kwargs(self) -> dict:
        return dict(hard=self.hard, gumbel=self.gumbel, tau=self.tau, sum_assign=self.sum_assign, eps=self.eps)


MODES = [
    Mode("eval-hard"),
    Mode("train-hard-gumbel", gumbel=True),
    Mode("soft", hard=False),
    Mode("soft-gumbel-tau0.5", hard=False, gumbel=True, tau=0.5),
    Mode("hard-tau2-sum_assign", tau=2.0, sum_assign=True),
    Mode("hard-eps0.1", eps=0.1),
]

# Max |ours - ref64| / max |ref64|. fp32: the longest accumulations (C=384 dot products, N=197
# token sums) in fp32 give errors ~ sqrt(L) * 6e-8 ~ 1e-6; 2e-5 leaves room for exp/log.
# bf16/fp16: the output is stored in the input dtype (bf16: 8-bit mantissa, 2**-8 = 3.9e-3
# relative rounding per element) after fp32 compute; 1e-2 covers that plus the input rounding of
# the softmax weights. Gradients go through one more reduction and a subtraction (dR - delta):
# twice the forward tolerance.
FORWARD_TOL = {torch.float32: 2e-5, torch.float16: 5e-3, torch.bfloat16: 1e-2, torch.float64: 1e-12}
GRAD_TOL = {dtype: 2 * tol for dtype, tol in FORWARD_TOL.items()}


def fused_backend_params(device: str = "cpu") -> list:
    """pytest params for every backend that goes through the custom op, each marked with what it
    requires (helpers/requirements.py: skipped when absent, failed under GROUPVIT_FAST_REQUIRE)."""
    params = []
    for name, backend in BACKENDS.items():
        supported_devices = backend.devices or ("cpu", "cuda")
        requirement = backend_requirement(name, device)
        if name != "triton" and device not in supported_devices:
            marks = [pytest.mark.skip(reason=f"{name}: does not run on {device} tensors")]
        else:
            marks = [requires(requirement)] if requirement else []
        params.append(pytest.param(name, marks=marks, id=name))
    return params


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def _heads(x: torch.Tensor, heads: int) -> torch.Tensor:
    b, n, c = x.shape
    return x.reshape(b, n, heads, c // heads).transpose(1, 2)


def noisy_logits64(q, k, noise, heads, scale, tau):
    z = (_heads(q.double(), heads) @ _heads(k.double(), heads).transpose(-2, -1)) * scale
    if noise is not None:
        z = z + noise.double()
    return z / tau


def make_inputs(
    shape: Shape,
    dtype: torch.dtype,
    *,
    mode: Mode,
    device: str = "cpu",
    seed: int = 0,
    min_gap: float = 1e-3,
    logit_std: float = 1.5,
):
    """``q [B,G,C]``, ``k, v [B,N,C]`` in ``dtype`` and the noise (float32, or None) with every token's
    top-2 gap in the (noisy, tempered) logits at least ``min_gap`` once rounded to ``dtype``."""
    gen = torch.Generator().manual_seed(seed)
    b, g, n, c, h = shape.batch, shape.groups, shape.tokens, shape.channels, shape.heads
    d = c // h
    scale = d**-0.5
    q = torch.randn(b, g, c, generator=gen, dtype=torch.float64) * logit_std**0.5
    k = torch.randn(b, n, c, generator=gen, dtype=torch.float64) * logit_std**0.5
    v = torch.randn(b, n, c, generator=gen, dtype=torch.float64)
    noise = None
    if mode.gumbel:
        u = torch.rand(b, h, g, n, generator=gen, dtype=torch.float64).clamp(1e-12, 1 - 1e-12)
        noise = (-torch.log(-torch.log(u))).float()
    if mode.hard and g > 1:
        for _ in range(50):
            q_r, k_r = q.to(dtype), k.to(dtype)
            y = noisy_logits64(q_r, k_r, noise, h, scale, mode.tau)  # [B,h,G,N]
            top2 = y.topk(2, dim=2)
            gap = top2.values[:, :, 0] - top2.values[:, :, 1]  # [B,h,N]
            close = gap < min_gap * y.abs().amax().clamp(min=1.0)
            if not close.any():
                break
            # push each near-tie token's key towards its winning group's query (per head)
            winner = top2.indices[:, :, 0]  # [B,h,N]
            qh = _heads(q, h)  # [B,h,G,d]
            push = torch.gather(qh, 2, winner.unsqueeze(-1).expand(-1, -1, -1, d))  # [B,h,N,d]
            push = push / push.norm(dim=-1, keepdim=True).clamp(min=1e-6)
            delta = (push * close.unsqueeze(-1) * 0.05).transpose(1, 2).reshape(b, n, c)
            k = k + delta
        else:
            raise AssertionError("could not separate near-ties in the test inputs")
    return q.to(device, dtype), k.to(device, dtype), v.to(device, dtype), (None if noise is None else noise.to(device))


def relative_error(actual: torch.Tensor, expected: torch.Tensor) -> float:
    expected = expected.double()
    scale = expected.abs().max().clamp(min=1e-6)
    return ((actual.double() - expected).abs().max() / scale).item()


def small_inputs(
    b: int = 2, g: int = 3, n: int = 5, c: int = 8, dtype: torch.dtype = torch.float32, device: str = "cpu"
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Plain random ``q [b,g,c]``, ``k, v [b,n,c]`` (no tie separation: for error and edge-case tests)."""
    gen = torch.Generator().manual_seed(0)
    return tuple(torch.randn(b, size, c, generator=gen).to(device, dtype) for size in (g, n, n))


def dense64(q, k, v, **kwargs) -> tuple[torch.Tensor, torch.Tensor]:
    """``(out, r)`` of the dense formula in float64 (``assign_attention_forward_math``)."""
    return assign_attention_forward_math(q.double(), k.double(), v.double(), **kwargs)


def through_op(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    backend: str,
    num_heads: int = 1,
    scale: float | None = None,
    hard: bool = True,
    gumbel: bool = False,
    tau: float = 1.0,
    sum_assign: bool = False,
    eps: float = 1.0,
    return_attn: bool = False,
    noise: torch.Tensor | None = None,
    seed: int = 0,
):
    """The custom op ``groupvit_fast::assign_attention`` itself on ``backend`` (its registered autograd
    formula, fake and backward op), bypassing the public function's eager paths: how the tests reach the
    reference backend's adapter (forward/backward math behind the op)."""
    scale = (q.shape[-1] // num_heads) ** -0.5 if scale is None else scale
    seed_tensor = torch.tensor([seed, 0], dtype=torch.int64)
    noise = None if noise is None else noise.to(torch.float32).contiguous()
    out, _r, hard_map, soft_map = torch.ops.groupvit_fast.assign_attention(
        q,
        k,
        v,
        noise,
        seed_tensor,
        num_heads,
        float(scale),
        hard,
        gumbel,
        float(tau),
        sum_assign,
        float(eps),
        return_attn,
        backend,
    )
    return (out, {"hard": hard_map, "soft": soft_map}) if return_attn else out
