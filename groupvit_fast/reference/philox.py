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

import numpy as np
import torch

__all__ = ["philox4x32_10", "philox_uniform", "philox_gumbel_noise", "U_MIN", "U_MAX", "UNIFORM_SCALE"]

_KEY_A, _KEY_B = np.uint64(0x9E3779B9), np.uint64(0xBB67AE85)
_ROUND_A, _ROUND_B = np.uint64(0xD2511F53), np.uint64(0xCD9E8D57)
_MASK32 = np.uint64(0xFFFFFFFF)

UNIFORM_SCALE = 4.6566127342e-10  # largest scale with (2**31 - 1) * scale < 1 in float32 (Triton's)
U_MIN = 2.0**-32
U_MAX = 1.0 - 2.0**-24


def philox4x32_10(c0, c1, c2, c3, k0, k1, rounds: int = 10):
    """Philox4x32 on uint64 arrays holding 32-bit values; returns the four output words."""
    c0, c1, c2, c3 = (np.asarray(c, dtype=np.uint64) for c in (c0, c1, c2, c3))
    k0, k1 = np.asarray(k0, dtype=np.uint64), np.asarray(k1, dtype=np.uint64)
    shift = np.uint64(32)
    for _ in range(rounds):
        prod_b = _ROUND_B * c2  # < 2**64: exact in uint64
        prod_a = _ROUND_A * c0
        c0, c1, c2, c3 = (
            (prod_b >> shift) ^ c1 ^ k0,
            prod_b & _MASK32,
            (prod_a >> shift) ^ c3 ^ k1,
            prod_a & _MASK32,
        )
        k0 = (k0 + _KEY_A) & _MASK32
        k1 = (k1 + _KEY_B) & _MASK32
    return c0, c1, c2, c3


def philox_uniform(counters: np.ndarray, seed: int) -> np.ndarray:
    """Uniform [0, 1) float32 for int64 ``counters`` (step 2 and 3 of the module docstring)."""
    counters = np.asarray(counters, dtype=np.int64).astype(np.uint64)
    seed = np.uint64(int(seed) & 0xFFFFFFFFFFFFFFFF)
    zeros = np.zeros_like(counters)
    x, _, _, _ = philox4x32_10(counters & _MASK32, counters >> np.uint64(32), zeros, zeros,
                               seed & _MASK32, seed >> np.uint64(32))
    x = x.astype(np.uint32).view(np.int32)
    x = np.where(x < 0, ~x, x)
    return x.astype(np.float32) * np.float32(UNIFORM_SCALE)


def philox_gumbel_noise(shape: tuple[int, int, int, int], seed: int, offset: int = 0) -> torch.Tensor:
    """The ``[B, H, G, N]`` float32 Gumbel noise a fused backend draws for ``(seed, offset)``."""
    count = int(np.prod(shape))
    counters = np.arange(count, dtype=np.int64) + np.int64(offset)
    u = np.clip(philox_uniform(counters, seed), np.float32(U_MIN), np.float32(U_MAX))
    noise = -np.log(-np.log(u))
    return torch.from_numpy(noise.astype(np.float32).reshape(shape))
