"""The ONNX form of ``groupvit_fast::assign_attention`` (docs/export.md, "The grouping op in ONNX").

An onnxscript function registered for ``torch.ops.groupvit_fast.assign_attention.default`` through
``torch.onnx.export(..., custom_translation_table=...)``: the exporter replaces each call of the op by
the ops below, with the op's own arguments (``num_heads``, ``scale``, ``hard``, ``tau``, ``sum_assign``,
``eps``, ``return_attn``) as constants of the graph. It is the op's contract (docs/assign_op.md, "Math")
at inference time, for one head or many:

    z    = (q_h @ k_h^T) * scale / tau                  [B, h, G, N]
    s    = softmax_G(z)
    A    = onehot_G(argmax_G s) if hard else s          (ties to the lowest group, as every backend)
    r    = sum_N A                                      [B, h, G]
    out  = (A / (r + eps)) @ v_h                        (A @ v_h with sum_assign) -> [B, G, C]
    soft = softmax_G(q_h @ k_h^T * scale)               (the maps, with return_attn)

Gumbel noise is a training-time draw: a graph for deployment never samples it, so ``gumbel=True`` (or a
caller-given ``noise``) is refused at export time rather than silently dropped.
"""

from __future__ import annotations

from typing import Any

__all__ = ["assign_attention_onnx", "custom_translation_table", "OPSET"]

#: the opset the translation is written in (Softmax/ArgMax over any axis, ReduceSum with axes as input)
OPSET = 18


def _heads(op: Any, x: Any, num_heads: int) -> Any:
    """``[B, L, C] -> [B, h, L, C/h]``."""
    split = op.Reshape(x, op.Constant(value_ints=[0, 0, num_heads, -1]))
    return op.Transpose(split, perm=[0, 2, 1, 3])


def assign_attention_onnx(
    q: Any,
    k: Any,
    v: Any,
    noise: Any,
    seed: Any,
    num_heads: int,
    scale: float,
    hard: bool,
    gumbel: bool,
    tau: float,
    sum_assign: bool,
    eps: float,
    return_attn: bool,
    backend: str,
) -> tuple[Any, Any, Any, Any]:
    """``(out [B, G, C], r [B, h, G] float32, hard [B, h, G, N], soft [B, h, G, N])`` in ONNX ops; the maps
    are empty ``[0]`` tensors without ``return_attn``, as the op returns them. Traced by onnxscript: the
    scalars are Python values here, fixed in the graph."""
    from onnxscript import opset18 as op

    del seed, backend  # the seed only feeds the noise; the backend is a choice of kernels, not of math
    if gumbel or noise is not None:
        raise ValueError(
            "assign_attention with gumbel=True (training-time noise) has no ONNX form: export the model in eval mode"
        )
    qh, kh, vh = _heads(op, q, num_heads), _heads(op, k, num_heads), _heads(op, v, num_heads)
    raw = op.MatMul(qh, op.Transpose(kh, perm=[0, 1, 3, 2]))  # [B, h, G, N]
    raw = op.Mul(raw, op.CastLike(op.Constant(value_float=float(scale)), raw))
    z = raw if tau == 1.0 else op.Div(raw, op.CastLike(op.Constant(value_float=float(tau)), raw))
    s = op.Softmax(z, axis=2)
    if hard:
        # one-hot of the first maximum over groups: ArgMax keeps the first index of a tie
        index = op.ArgMax(s, axis=2, keepdims=1)  # [B, h, 1, N] int64
        groups = op.Range(op.Constant(value_int=0), op.Squeeze(op.Shape(q, start=1, end=2)), op.Constant(value_int=1))
        groups = op.Reshape(groups, op.Constant(value_ints=[1, 1, -1, 1]))
        attn = op.CastLike(op.Equal(groups, index), s)
    else:
        attn = s
    r = op.ReduceSum(attn, op.Constant(value_ints=[-1]), keepdims=0)  # [B, h, G]
    if sum_assign:
        weights = attn
    else:
        denom = op.Add(op.Unsqueeze(r, op.Constant(value_ints=[-1])), op.CastLike(op.Constant(value_float=eps), r))
        weights = op.Div(attn, denom)
    out = op.Transpose(op.MatMul(weights, vh), perm=[0, 2, 1, 3])  # [B, G, h, D]
    out = op.Reshape(out, op.Constant(value_ints=[0, 0, -1]))
    r = op.Cast(r, to=1)  # float32, as the op's contract says
    if return_attn:
        hard_map, soft_map = attn, (s if tau == 1.0 else op.Softmax(raw, axis=2))
    else:
        empty = op.CastLike(op.ConstantOfShape(op.Constant(value_ints=[0])), q)
        hard_map, soft_map = empty, empty
    return out, r, hard_map, soft_map


def custom_translation_table() -> dict:
    """``{torch.ops.groupvit_fast.assign_attention.default: assign_attention_onnx}`` for ``torch.onnx.export``."""
    import torch

    from ..ops import assign_attention as _registers_the_op  # noqa: F401  (the op must exist to be named)

    return {torch.ops.groupvit_fast.assign_attention.default: assign_attention_onnx}
