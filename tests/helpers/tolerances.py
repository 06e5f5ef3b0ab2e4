"""fp32 comparisons relative to the size of the result, never to one machine's last bits.

fp32's unit round-off is 6e-8; a model forward or backward accumulates over O(10^2..10^4) terms per
output (widths of 64..384, a few layers), so honest fp32 results differ by ~1e-7..1e-6 *relative to the
output's magnitude*, and by different amounts on AVX2 and AVX-512 machines (different FMA and
summation orders). An absolute bound such as ``atol=1e-6`` on outputs of size ~1 is therefore tuned to
one machine; :func:`assert_close_to_scale` bounds ``max |actual - expected|`` by ``rel * max |expected|``
instead (the measure ``relative_error`` of assign_cases uses too).
"""

from __future__ import annotations

import torch

#: Relative bound for fp32 model outputs against an fp32/fp64 oracle: 10x the ~1e-6 round-off above.
FP32_REL = 1e-5


def assert_close_to_scale(
    actual: torch.Tensor,
    expected: torch.Tensor,
    rel: float = FP32_REL,
    msg: str | None = None,
    *,
    scale: float | None = None,
) -> None:
    """``max |actual - expected| <= rel * max |expected|`` (shapes must match, NaNs fail).

    ``scale`` replaces ``max |expected|`` where a tensor's own size is not the right yardstick: e.g. a
    parameter whose gradient is zero in exact arithmetic (a key bias under softmax) holds only
    round-off, to be judged against the largest gradient of the model."""
    assert actual.shape == expected.shape, f"{msg or ''} shape {tuple(actual.shape)} != {tuple(expected.shape)}"
    a, e = actual.detach().double().cpu(), expected.detach().double().cpu()
    if scale is None:
        scale = e.abs().max().item() if e.numel() else 0.0
    err = (a - e).abs().max().item() if e.numel() else 0.0
    bound = rel * max(scale, 1e-30)
    assert err <= bound, f"{msg + ': ' if msg else ''}max error {err:.3e} > {rel:g} x max |expected| ({scale:.3e})"


def round_offs(count: float, dtype: torch.dtype) -> float:
    """``count`` unit round-offs of ``dtype`` (2^-24 for fp32, 2^-53 for float64): a relative bound stated as
    a number of roundings holds for every dtype alike, where a difference in the math does not."""
    return count * torch.finfo(dtype).eps / 2
