"""fp32 comparisons relative to the size of the result, never to one machine's last bits.

fp32's unit round-off is 6e-8; a model forward or backward accumulates over O(10^2..10^4) terms per
output (widths of 64..384, a few layers), so honest fp32 results differ by ~1e-7..1e-6 *relative to the
output's magnitude*, and by different amounts on AVX2 and AVX-512 machines (different FMA and
summation orders). An absolute bound such as ``atol=1e-6`` on outputs of size ~1 is therefore tuned to
one machine; :func:`assert_close_to_scale` bounds ``max |actual - expected|`` by ``rel * max |expected|``
instead (the measure ``relative_error`` of assign_cases uses too).

Where a float64 run of the original is at hand, :func:`assert_close_to_float64_oracle` is the sharper
rule (FlashAttention's): our fp32 result may be at most twice as far from the float64 oracle as the
original's own fp32 result is, plus a floor of a few fp32 roundings of the result's size. The bound
then follows each machine's own round-off (AVX2 or AVX-512) instead of a constant fitted to one.
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


#: The floor of the float64-oracle rule, in fp32 unit round-offs of the result's size: what remains
#: when the original's fp32 result happens to be (nearly) exact for one tensor.
ORACLE_FLOOR_ROUND_OFFS = 16


def assert_close_to_float64_oracle(
    actual: torch.Tensor,
    original: torch.Tensor,
    oracle: torch.Tensor,
    msg: str | None = None,
    *,
    scale: float | None = None,
) -> float:
    """``max |actual - oracle| <= 2 * max |original - oracle| + 16 fp32 round-offs x scale``.

    ``original``: the reference implementation in fp32 (the same inputs); ``oracle``: the same
    implementation in float64. ``scale`` defaults to ``max |oracle|`` (see ``assert_close_to_scale``
    for when another yardstick is right). Returns the ratio of our error to the original's (for reports).
    """
    assert actual.shape == original.shape == oracle.shape, f"{msg or ''}: shapes differ"
    a, o, ref = (t.detach().double().cpu() for t in (actual, original, oracle))
    if scale is None:
        scale = ref.abs().max().item() if ref.numel() else 0.0
    ours = (a - ref).abs().max().item() if ref.numel() else 0.0
    theirs = (o - ref).abs().max().item() if ref.numel() else 0.0
    bound = 2 * theirs + round_offs(ORACLE_FLOOR_ROUND_OFFS, torch.float32) * max(scale, 1e-30)
    assert ours <= bound, (
        f"{msg + ': ' if msg else ''}max error vs float64 {ours:.3e} > 2 x the original's fp32 error "
        f"{theirs:.3e} + {ORACLE_FLOOR_ROUND_OFFS} round-offs of {scale:.3e}"
    )
    return ours / max(theirs, 1e-300)
