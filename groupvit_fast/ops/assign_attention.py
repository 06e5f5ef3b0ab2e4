"""``assign_attention``: GroupViT's fused assignment attention as an autograd-aware custom op.

Declared once here (schema, fake implementation, autograd formula, dispatch); each backend only
adds kernels (see ``backend.py``). Contract and math: docs/assign_op.md.

Two custom ops in the ``groupvit_fast`` namespace:

* ``groupvit_fast::assign_attention(q, k, v, noise?, seed, num_heads, scale, hard, gumbel, tau,
  sum_assign, eps, return_attn, backend) -> (out, r, hard, soft)``
* ``groupvit_fast::assign_attention_backward(grad_out, q, k, v, out, r, noise?, seed, ...) -> (dq, dk, dv)``

Autograd saves only ``q, k, v, out, r`` and the ``(seed, offset)`` pair (plus a caller-given
``noise``): the backward recomputes logits, noise and assignment. Both ops have fake
implementations, so ``torch.compile(fullgraph=True)`` traces through them, and no autocast rule,
so autocast hands them its bf16/fp16 tensors unchanged.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from typing import Optional

import torch
from torch import Tensor

from .backend import AssignInputs, AssignParams, backward_outputs_like, forward_outputs_like
from .dispatch import ASSIGN, get_backend, select_backend

__all__ = ["assign_attention", "gumbel_noise", "backend_usage"]

_FLOAT_DTYPES = (torch.float32, torch.float16, torch.bfloat16, torch.float64)
_SEED_BOUND = 2**62
_OFFSET_BOUND = 2**32


def backend_usage() -> dict[str, int]:
    """Calls served per backend since import, e.g. ``{'cpu': 12}``: which backend ran is always
    knowable, also for code that calls the op indirectly (models, pipelines). A snapshot copy."""
    return ASSIGN.usage()


def _params(num_heads, scale, hard, gumbel, tau, sum_assign, eps, return_attn) -> AssignParams:
    return AssignParams(
        int(num_heads),
        float(scale),
        bool(hard),
        bool(gumbel),
        float(tau),
        bool(sum_assign),
        float(eps),
        bool(return_attn),
    )


# --------------------------------------------------------------------------------------------
# The custom ops
# --------------------------------------------------------------------------------------------


@torch.library.custom_op("groupvit_fast::assign_attention", mutates_args=())
def _assign_attention_op(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    noise: Optional[Tensor],  # noqa: UP045 (custom_op schema)
    seed: Tensor,
    num_heads: int,
    scale: float,
    hard: bool,
    gumbel: bool,
    tau: float,
    sum_assign: bool,
    eps: float,
    return_attn: bool,
    backend: str,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    params = _params(num_heads, scale, hard, gumbel, tau, sum_assign, eps, return_attn)
    if q.shape[0] == 0:  # empty batch: nothing to launch
        return forward_outputs_like(q, k, num_heads, return_attn, zeros=True)
    seed_value, offset = (int(x) for x in seed.tolist())
    out, r, hard_attn, soft_attn = get_backend(backend).forward(q, k, v, noise, seed_value, offset, params)
    return out, r, hard_attn, soft_attn


@_assign_attention_op.register_fake
def _(q, k, v, noise, seed, num_heads, scale, hard, gumbel, tau, sum_assign, eps, return_attn, backend):
    return forward_outputs_like(q, k, num_heads, return_attn)


@torch.library.custom_op("groupvit_fast::assign_attention_backward", mutates_args=())
def _assign_attention_backward_op(
    grad_out: Tensor,
    q: Tensor,
    k: Tensor,
    v: Tensor,
    out: Tensor,
    r: Tensor,
    noise: Optional[Tensor],  # noqa: UP045 (custom_op schema)
    seed: Tensor,
    num_heads: int,
    scale: float,
    hard: bool,
    gumbel: bool,
    tau: float,
    sum_assign: bool,
    eps: float,
    backend: str,
) -> tuple[Tensor, Tensor, Tensor]:
    if q.shape[0] == 0:
        return backward_outputs_like(q, k, v, zeros=True)
    params = _params(num_heads, scale, hard, gumbel, tau, sum_assign, eps, False)
    seed_value, offset = (int(x) for x in seed.tolist())
    dq, dk, dv = get_backend(backend).backward(
        grad_out.contiguous(), q, k, v, out, r, noise, seed_value, offset, params
    )
    return dq, dk, dv


@_assign_attention_backward_op.register_fake
def _(grad_out, q, k, v, out, r, noise, seed, num_heads, scale, hard, gumbel, tau, sum_assign, eps, backend):
    return backward_outputs_like(q, k, v)


def _setup_context(ctx, inputs, output):
    q, k, v, noise, seed, num_heads, scale, hard, gumbel, tau, sum_assign, eps, _return_attn, backend = inputs
    out, r, hard_attn, soft_attn = output
    ctx.save_for_backward(q, k, v, out, r, noise, seed)
    ctx.args = (num_heads, scale, hard, gumbel, tau, sum_assign, eps, backend)
    # r and the attention maps are read-outs (visualisation, segmentation), not differentiable.
    ctx.mark_non_differentiable(r, hard_attn, soft_attn)


#: The op's argument count, read from its registered schema: the autograd formula returns one gradient
#: (or None) per argument, and only q, k, v (the first three) get one.
_NUM_ARGS = len(torch.ops.groupvit_fast.assign_attention.default._schema.arguments)
_NO_GRADS = (None,) * (_NUM_ARGS - 3)


def _backward(ctx, grad_out, _grad_r, _grad_hard, _grad_soft):
    q, k, v, out, r, noise, seed = ctx.saved_tensors
    num_heads, scale, hard, gumbel, tau, sum_assign, eps, backend = ctx.args
    if grad_out is None:
        return (None, None, None, *_NO_GRADS)
    dq, dk, dv = _assign_attention_backward_op(
        grad_out, q, k, v, out, r, noise, seed, num_heads, scale, hard, gumbel, tau, sum_assign, eps, backend
    )
    return (dq, dk, dv, *_NO_GRADS)


_assign_attention_op.register_autograd(_backward, setup_context=_setup_context)


# --------------------------------------------------------------------------------------------
# The public function
# --------------------------------------------------------------------------------------------


def _check_inputs(q, k, v, num_heads, tau, eps, sum_assign, gumbel, noise, backend) -> None:
    """Every argument of ``assign_attention``, in this order: the first wrong one raises, by name."""
    _check_tensors(q, k, v)
    _check_shapes(q, k, v)
    _check_scalars(q.shape[2], num_heads, tau, eps, sum_assign, backend)
    if noise is not None:
        _check_noise(noise, gumbel, q, k, num_heads)


def _check_tensors(q, k, v) -> None:
    for name, t in (("q", q), ("k", k), ("v", v)):
        if not isinstance(t, Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
        if t.dim() != 3:
            raise ValueError(f"{name} must have rank 3 ([B, L, C]), got shape {tuple(t.shape)}")
        if t.dtype not in _FLOAT_DTYPES:
            raise TypeError(f"{name} must be a floating tensor (float32, float16, bfloat16, float64), got {t.dtype}")
    if not (q.dtype == k.dtype == v.dtype):
        raise TypeError(f"q, k and v must share one dtype, got {q.dtype}, {k.dtype}, {v.dtype}")
    if not (q.device == k.device == v.device):
        raise ValueError(f"q, k and v must be on one device, got {q.device}, {k.device}, {v.device}")


def _check_shapes(q, k, v) -> None:
    if k.shape != v.shape:
        raise ValueError(f"k and v must have the same shape, got {tuple(k.shape)} and {tuple(v.shape)}")
    if q.shape[0] != k.shape[0]:
        raise ValueError(f"q and k must have the same batch size, got {q.shape[0]} and {k.shape[0]}")
    if q.shape[2] != k.shape[2]:
        raise ValueError(f"q and k must have the same channel count C, got {q.shape[2]} and {k.shape[2]}")
    if q.shape[1] == 0:
        raise ValueError("q must hold at least one group (G >= 1), got G = 0")
    if k.shape[1] == 0:
        raise ValueError("k must hold at least one token (N >= 1), got N = 0")
    if q.shape[2] == 0:
        raise ValueError("q, k, v must have at least one channel (C >= 1), got C = 0")


def _check_scalars(channels, num_heads, tau, eps, sum_assign, backend) -> None:
    if isinstance(num_heads, bool) or not isinstance(num_heads, int) or num_heads < 1:
        raise ValueError(f"num_heads must be a positive int, got {num_heads!r}")
    if channels % num_heads:
        raise ValueError(f"num_heads={num_heads} must divide the channel count C={channels}")
    if not (isinstance(tau, (int, float)) and math.isfinite(tau) and tau > 0):
        raise ValueError(f"tau must be a finite number > 0, got {tau!r}")
    if not (isinstance(eps, (int, float)) and math.isfinite(eps)):
        raise ValueError(f"eps must be a finite number, got {eps!r}")
    if not sum_assign and eps < 0:
        raise ValueError(f"eps must be >= 0 when sum_assign=False (it keeps r + eps > 0), got {eps!r}")
    if not isinstance(backend, str):
        raise TypeError(f"backend must be a string, got {type(backend).__name__}")


def _check_noise(noise, gumbel, q, k, num_heads) -> None:
    if not gumbel:
        raise ValueError("noise is only used with gumbel=True; pass gumbel=True or drop noise")
    if not isinstance(noise, Tensor):
        raise TypeError(f"noise must be a torch.Tensor, got {type(noise).__name__}")
    expected = (q.shape[0], num_heads, q.shape[1], k.shape[1])
    if tuple(noise.shape) != expected:
        raise ValueError(f"noise must have shape [B, h, G, N] = {list(expected)}, got {list(noise.shape)}")
    if not noise.is_floating_point():
        raise TypeError(f"noise must be a floating tensor, got {noise.dtype}")
    if noise.device != q.device:
        raise ValueError(f"noise must be on q's device {q.device}, got {noise.device}")


def _check_seed(seed) -> None:
    # int() would silently truncate 1.5 or accept a tensor's item: only integers are seeds.
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, numbers.Integral)):
        raise TypeError(f"seed must be an int or None, got {type(seed).__name__}")


def _seed_tensor(seed: int | None, needs_noise: bool) -> Tensor:
    """``[seed, offset]`` as an int64 CPU tensor (a tensor, so a new seed is no recompile)."""
    if not needs_noise:
        return torch.zeros(2, dtype=torch.int64)
    if seed is None:
        # Both halves of the Philox key/counter pair come from torch's default generator, as
        # FlashAttention takes (seed, offset) from the generator: torch.manual_seed(...) makes runs
        # reproducible, and the CPU generator serves every device, so drawing never synchronises a GPU
        # stream. The offset stays below 2^32 so offset + B*h*G*N cannot reach the int64 counter's end
        # (docs/assign_op.md, "Noise: what is guaranteed").
        seed_value = torch.randint(0, _SEED_BOUND, (1,), dtype=torch.int64)
        return torch.cat([seed_value, torch.randint(0, _OFFSET_BOUND, (1,), dtype=torch.int64)])
    return torch.tensor([int(seed) % _SEED_BOUND, 0], dtype=torch.int64)


def assign_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    *,
    num_heads: int = 1,
    scale: float | None = None,
    hard: bool = True,
    gumbel: bool = False,
    tau: float = 1.0,
    sum_assign: bool = False,
    eps: float = 1.0,
    return_attn: bool = False,
    seed: int | None = None,
    noise: Tensor | None = None,
    backend: str = "auto",
) -> Tensor | tuple[Tensor, dict[str, Tensor]]:
    """GroupViT assignment attention: softmax over groups, (hard) assignment, segment merging.

    Args:
        q: ``[B, G, C]`` projected group tokens (queries).
        k: ``[B, N, C]`` projected image tokens (keys). v: ``[B, N, C]`` (values).
        num_heads: ``h``; ``C % h == 0`` and the head dim is ``D = C // h``.
        scale: logit scale, default ``D ** -0.5``.
        hard: one-hot assignment (ties to the lowest group) with a straight-through gradient.
        gumbel: add Gumbel(0, 1) noise to the logits (GroupViT does in training).
        tau: temperature dividing the (noisy) logits.
        sum_assign: use ``R = A`` instead of ``R = A / (sum_n A + eps)``.
        return_attn: also return ``{"hard": A, "soft": softmax_g(z)}``, each ``[B, h, G, N]``.
        seed: seed of the in-kernel Philox generator; ``None`` draws one from torch's default
            generator (so ``torch.manual_seed`` makes runs reproducible).
        noise: ``[B, h, G, N]`` Gumbel noise to use instead of the generator (tests).
        backend: ``"auto"``, ``"reference"``, ``"triton"``, ``"cuda"`` or ``"cpu"``.

    Returns:
        ``out`` ``[B, G, C]`` in the input dtype, or ``(out, {"hard": ..., "soft": ...})``.

    Equivalent PyTorch (one head, no noise)::

        z = (q @ k.transpose(1, 2)) * scale / tau          # [B, G, N]
        s = z.softmax(dim=1)                               # over groups
        a = one_hot(s.argmax(dim=1)) - s.detach() + s if hard else s
        out = (a / (a.sum(-1, keepdim=True) + eps)) @ v    # [B, G, C]
    """
    _check_inputs(q, k, v, num_heads, tau, eps, sum_assign, gumbel, noise, backend)
    _check_seed(seed)
    c = q.shape[2]
    scale = (c // num_heads) ** -0.5 if scale is None else float(scale)
    inputs = AssignInputs(q.device.type, q.dtype, q.shape[0], q.shape[1], k.shape[1], c, num_heads, noise is not None)
    name = select_backend(inputs, backend)
    ASSIGN.count(name)
    params = _params(num_heads, scale, hard, gumbel, tau, sum_assign, eps, return_attn)
    chosen = get_backend(name)

    if chosen.runs_eagerly:
        # a backend that is plain PyTorch under autograd (the NVlabs-faithful reference: what
        # torch.compile(reference) baselines compile) runs as it is, not behind the custom op. Without
        # a seed it draws its noise from torch's generator itself (NVlabs' stream): no seed is drawn here.
        seed_tensor = _seed_tensor(seed, True) if seed is not None else None
        out, hard_attn, soft_attn = chosen.eager(q, k, v, noise, seed_tensor, params)
    else:
        seed_tensor = _seed_tensor(seed, gumbel and noise is None)
        if noise is not None:
            noise = noise.to(torch.float32).contiguous()
        out, _r, hard_attn, soft_attn = _assign_attention_op(
            q,
            k,
            v,
            noise,
            seed_tensor,
            num_heads,
            scale,
            hard,
            gumbel,
            float(tau),
            sum_assign,
            float(eps),
            return_attn,
            name,
        )
    return (out, {"hard": hard_attn, "soft": soft_attn}) if return_attn else out


def gumbel_noise(
    shape: Sequence[int],
    *,
    seed: int,
    offset: int = 0,
    backend: str = "reference",
    device: str | torch.device | None = None,
) -> Tensor:
    """The float32 ``[B, h, G, N]`` Gumbel noise backend ``backend`` draws in-kernel for ``seed``.

    ``assign_attention(..., gumbel=True, seed=s, backend=b)`` equals
    ``assign_attention(..., gumbel=True, noise=gumbel_noise(shape, seed=s, backend=b), backend=b)``:
    the hook that lets tests see the noise a kernel used in its forward and backward.
    """
    if len(shape) != 4:
        raise ValueError(f"shape must be [B, h, G, N], got {list(shape)}")
    device = torch.device("cpu") if device is None else torch.device(device)
    if seed is None:
        raise TypeError("seed must be an int, got None")
    _check_seed(seed)
    b, h, g, n = (int(s) for s in shape)
    return get_backend(backend).gumbel_noise((b, h, g, n), int(seed) % _SEED_BOUND, int(offset), device)
