"""The in-kernel Gumbel noise convention, written out in NumPy as an oracle.

Every fused backend (Triton, CUDA C++, CPU C++) generates its Gumbel noise from this
counter-based recipe, so that the forward and the backward of one call see identical noise and
so that the same ``(seed, offset)`` gives the same noise on every backend (up to the last bit of
``log``, whose implementation differs between libm, CUDA and Triton):

1. element ``(b, h, g, n)`` of the ``[B, H, G, N]`` noise tensor has the 64-bit counter
   ``i = offset + ((b * H + h) * G + g) * N + n``;
2. ``x`` = first 32-bit word of Philox4x32-10 with key ``(seed & 0xffffffff, seed >> 32)`` and
   counter ``(i & 0xffffffff, i >> 32, 0, 0)``: exactly Triton's ``tl.randint(seed, i)``;
3. ``u = float32(x') * 4.6566127342e-10`` with ``x'`` = ``x`` read as int32 and mapped to
   ``~x`` when negative: Triton's ``tl.rand``, uniform in [0, 1);
4. ``u`` is clamped to ``[2**-32, 1 - 2**-24]`` (away from 0 and 1) and the noise is
   ``e = -log(-log(u))`` in float32.
"""

from __future__ import annotations

import torch

__all__ = ["philox4x32_10", "philox_uniform", "philox_gumbel_noise", "U_MIN", "U_MAX", "UNIFORM_SCALE"]

_KEY_A, _KEY_B = 0x9E3779B9, 0xBB67AE85
_ROUND_A, _ROUND_B = 0xD2511F53, 0xCD9E8D57
_MASK32, _MASK16 = 0xFFFFFFFF, 0xFFFF

UNIFORM_SCALE = 4.6566127342e-10  # largest scale with (2**31 - 1) * scale < 1 in float32 (Triton's)
U_MIN = 2.0**-32
U_MAX = 1.0 - 2.0**-24


def _mul_hi_lo(a: torch.Tensor, b: int) -> tuple[torch.Tensor, torch.Tensor]:
    """High and low 32-bit words of the 64-bit product of 32-bit ``a`` (int64 tensor) and ``b``,
    from 16-bit limbs so that no partial product overflows int64 (works on any device, traceable)."""
    a_lo, a_hi = a & _MASK16, a >> 16
    b_lo, b_hi = b & _MASK16, b >> 16
    ll, lh, hl, hh = a_lo * b_lo, a_lo * b_hi, a_hi * b_lo, a_hi * b_hi
    mid = (ll >> 16) + (lh & _MASK16) + (hl & _MASK16)
    lo = ((mid & _MASK16) << 16) | (ll & _MASK16)
    hi = hh + (lh >> 16) + (hl >> 16) + (mid >> 16)
    return hi, lo


def philox4x32_10(
    c0: torch.Tensor | int,
    c1: torch.Tensor | int,
    c2: torch.Tensor | int,
    c3: torch.Tensor | int,
    k0: torch.Tensor | int,
    k1: torch.Tensor | int,
    rounds: int = 10,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Philox4x32 on int64 tensors (or ints) holding 32-bit values; returns the four output words."""
    c0, c1, c2, c3, k0, k1 = (torch.as_tensor(x, dtype=torch.int64) for x in (c0, c1, c2, c3, k0, k1))
    for _ in range(rounds):
        hi_b, lo_b = _mul_hi_lo(c2, _ROUND_B)
        hi_a, lo_a = _mul_hi_lo(c0, _ROUND_A)
        c0, c1, c2, c3 = hi_b ^ c1 ^ k0, lo_b, hi_a ^ c3 ^ k1, lo_a
        k0 = (k0 + _KEY_A) & _MASK32
        k1 = (k1 + _KEY_B) & _MASK32
    return c0, c1, c2, c3


def philox_uniform(counters: torch.Tensor, seed: int) -> torch.Tensor:
    """Uniform [0, 1) float32 for int64 ``counters`` (steps 2 and 3 of the module docstring)."""
    seed = int(seed) & 0xFFFFFFFFFFFFFFFF
    counters = counters.to(torch.int64)
    zeros = torch.zeros_like(counters)
    x, _, _, _ = philox4x32_10(
        counters & _MASK32,
        (counters >> 32) & _MASK32,
        zeros,
        zeros,
        torch.full_like(counters, seed & _MASK32),
        torch.full_like(counters, seed >> 32),
    )
    x = torch.where(x >= 2**31, x - 2**32, x)  # read as int32
    x = torch.where(x < 0, -x - 1, x)  # ~x for negative x, as Triton
    return x.to(torch.float32) * torch.tensor(UNIFORM_SCALE, dtype=torch.float32)


def philox_gumbel_noise(
    shape: tuple[int, int, int, int], seed: int, offset: int = 0, device: torch.device | str | None = None
) -> torch.Tensor:
    """The ``[B, H, G, N]`` float32 Gumbel noise a fused backend draws for ``(seed, offset)``."""
    counters = torch.arange(int(torch.Size(shape).numel()), dtype=torch.int64, device=device) + int(offset)
    u = philox_uniform(counters, seed).clamp(U_MIN, U_MAX)
    return (-torch.log(-torch.log(u))).reshape(shape)
