"""Triton kernels for GroupViT assignment attention: forward, backward and in-kernel Gumbel noise.

Math (docs/assign_op.md, "Math"), per batch element ``b`` and head ``h``, ``g`` a group, ``n`` a token::

    z[g,n] = scale * <q_g, k_n>                    y = (z + e) / tau      (e = Gumbel noise or 0)
    S[:,n] = softmax_g(y[:,n])                     A = onehot(argmax_g y[:,n]) if hard else S
    r[g]   = sum_n A[g,n]                          out[g] = sum_n A[g,n] v_n / (r[g] + eps)

Design (FlashAttention-like, nothing of size [G, N] ever reaches memory unless ``return_attn``;
docs/assign_op.md, "Triton kernels"):

* One program per ``(b, h, token range, head-dim tile of BLOCK_DV)``; the head-dim tile is the fastest
  grid axis. The program loops over its tokens BLOCK_N at a time: the logits tile ``[G_PAD, BLOCK_N]``
  of *all* groups (``tl.dot`` of q and k over the whole head dim in BLOCK_DK chunks, fp32), so the
  softmax over groups and the argmax are register reductions along axis 0, then ``acc += A @ v[:, tile]``.
  Its only accumulator is ``acc [G_PAD, BLOCK_DV]``: register use does not grow with N, and the tiles
  are sized so that no config spills (ptxas, sm_80 and sm_90; ``groupvit_fast/tools/compile_check.py``
  fails on any spill). Splitting the head dim recomputes the logits once per tile (k is read again,
  from L2: the tiles of one token range run side by side).
* While the grid has a program per SM, each program owns all N tokens of its ``(b, h)`` and writes
  ``out`` and ``r`` directly (deterministic, no workspace). Small grids split the tokens over programs:
  partial sums go to an fp32 workspace with atomics and a small kernel divides by ``r + eps``.
* The backward has the same grid and loop: per token block it recomputes z, the noise (same Philox
  counters), S, the argmax and ``dR = dO v^T`` over the whole head dim, writes ``dv``/``dk`` of its tile
  and accumulates ``dq [G_PAD, BLOCK_DV]`` (fp32 atomics only when the tokens are split);
  ``delta[g] = <dO[g], out[g]>`` is a preprocess.
* Noise: counter ``i = offset + ((b*H + h)*G + g)*N + n`` (int64), ``u = tl.rand(seed, i)`` (Philox4x32-10,
  the convention of ``groupvit_fast/reference/philox.py``), clamped to ``[2**-32, 1 - 2**-24]``,
  ``e = -log(-log(u))``.
* fp32 inputs use ``input_precision="ieee"`` dots (TF32 would miss the 1e-5 fp32 tolerance); fp16/bf16
  inputs feed the dots in their own dtype with fp32 accumulation (as FlashAttention does).

Launchers: :func:`assign_attention_forward`, :func:`assign_attention_backward`, :func:`gumbel_noise`.
On GPU the forward and backward are autotuned over two ``(BLOCK_DK, num_warps, num_stages)`` configs
per input kind, keyed on ``(G, N, D, H, n_splits, ...)``; the launcher fixes ``BLOCK_N`` and
``BLOCK_DV`` (``_tiles``). Under ``TRITON_INTERPRET=1`` one fixed small config is used.
"""

from __future__ import annotations

import contextlib
import inspect
import os

import torch
import triton
import triton.language as tl

from groupvit_fast.kernels.triton_compat import install_interpreter_fixes

__all__ = ["INTERPRET", "MAX_GROUPS", "assign_attention_backward", "assign_attention_forward", "gumbel_noise"]


def _interpreting() -> bool:
    try:
        return bool(triton.knobs.runtime.interpret)
    except AttributeError:  # triton without knobs: parse the variable as triton does
        return os.environ.get("TRITON_INTERPRET", "0").lower() in ("1", "true", "yes", "on", "y")


#: Whether these kernels were decorated in Triton's interpreter (``TRITON_INTERPRET=1`` at import):
#: then they run on CPU tensors, with one fixed config and no autotuning.
INTERPRET: bool = _interpreting()

# Fixes for Triton releases whose interpreter mis-runs these kernels (triton 3.6 with numpy >= 2.4): see
# triton_compat, which says which releases need each and when it can go.
INTERPRETER_FIXES: tuple[str, ...] = install_interpreter_fixes(INTERPRET)

#: Largest G: the [G_PAD, BLOCK_N] logits tile of all groups must stay on chip (BLOCK_N >= 16).
MAX_GROUPS = 256

# Noise clamp of the convention (reference/philox.py): u in [2**-32, 1 - 2**-24], both exact in fp32.
_U_MIN = tl.constexpr(2.0**-32)
_U_MAX = tl.constexpr(1.0 - 2.0**-24)

# Register budget of one program (docs/assign_op.md, "Triton kernels"): the logits tile [G_PAD, BLOCK_N]
# (fp32, several copies live: z, S, A; in the backward also dR, dA, dz) and the accumulator
# [G_PAD, BLOCK_DV] (out or dq) must fit the 255 registers a thread has at 4 warps, with no spill
# (ptxas, triton 3.8, sm_80 and sm_90; groupvit_fast/tools/compile_check.py checks every config).
# fp32 inputs take smaller tiles: their exact ("ieee") dots run on FMA units, whose operands and
# products stay in registers. {(kernel, fp32): (logits-tile elements, BLOCK_DV)}.
_TILES = {
    ("fwd", False): (4096, 128),  # G=64: 64 tokens per block
    ("bwd", False): (2048, 64),  # G=64: 32 tokens per block
    ("fwd", True): (2048, 32),
    ("bwd", True): (1024, 32),
}
_MAX_BLOCK_N = 128

# Arguments that change from launch to launch (the batch's split, the noise stream's seed and offset):
# not specialized (Triton would otherwise compile a kernel for the value 1 and another for multiples of
# 16), so one compiled kernel covers the direct and the split paths.
_RUNTIME_INTS = ["n_splits", "tokens_per_split", "seed", "offset"]

# Triton's interpreter multiplies the raw uint16 bits of bfloat16 dot operands (triton 3.8): there the
# operands are widened to fp32 first, which is exact and gives what the GPU's bf16 dot with fp32
# accumulation gives, up to the summation order. So the interpreter tests never run the GPU's
# half-precision `tl.dot` branch: only the ahead-of-time compile (groupvit_fast/tools/compile_check.py,
# every dtype) and a GPU run see it (docs/assign_op.md, "Interpreter vs GPU").
_WIDEN_DOT = tl.constexpr(INTERPRET)


# --------------------------------------------------------------------------------------------
# Device helpers
# --------------------------------------------------------------------------------------------


@triton.jit
def _gumbel(seed, counter):
    """e = -log(-log(clamp(u))) with u = tl.rand(seed, counter): the Philox convention (reference/philox.py)."""
    u = tl.rand(seed, counter)
    u = tl.minimum(tl.maximum(u, _U_MIN), _U_MAX)
    return -tl.log(-tl.log(u))


@triton.jit
def _dot(a, b, FP32: tl.constexpr):
    """a @ b with fp32 accumulation; exact fp32 products for fp32 inputs (no TF32)."""
    if FP32:
        return tl.dot(a, b, input_precision="ieee")
    elif _WIDEN_DOT:
        return tl.dot(a.to(tl.float32), b.to(tl.float32))
    else:
        return tl.dot(a, b)


@triton.jit
def _assignment(
    z,
    noise_ptr,
    seed,
    offset,
    bh,
    offs_g,
    offs_n,
    row_mask,
    col_mask,
    G,
    N,
    tau,
    HARD: tl.constexpr,
    GUMBEL: tl.constexpr,
    HAS_NOISE: tl.constexpr,
):
    """From the scaled logits tile z [G_PAD, BLOCK_N]: (S, A), both zero outside the valid [G, N] box.

    y = (z + e) / tau; S = softmax over groups (axis 0); A = onehot(argmax_g y) (ties -> lowest g) or S.
    The argmax is taken on y (argmax y == argmax S, exp is monotone), so it does not depend on exp rounding.
    """
    valid = row_mask[:, None] & col_mask[None, :]
    y = z
    if GUMBEL:
        # int64 counter ((b*H + h)*G + g)*N + n + offset: the index of (b, h, g, n) in [B, H, G, N]
        lin = (bh * G + offs_g[:, None]).to(tl.int64) * N + offs_n[None, :]
        if HAS_NOISE:
            e = tl.load(noise_ptr + lin, mask=valid, other=0.0)
        else:
            e = _gumbel(seed, lin + offset)
        y = y + e
    y = y / tau
    # padded groups get -inf: they can neither win the argmax nor take softmax mass
    y = tl.where(row_mask[:, None], y, float("-inf"))
    m = tl.max(y, axis=0)
    p = tl.exp(y - m[None, :])
    s = p / tl.sum(p, axis=0)[None, :]
    if HARD:
        idx = tl.argmax(y, axis=0, tie_break_left=True)
        a = tl.where(offs_g[:, None] == idx[None, :], 1.0, 0.0)
        # A NaN column (non-finite input) stays NaN, as NVlabs' `onehot - S.detach() + S` does.
        a = tl.where(s == s, a, s)  # noqa: PLR0124 (s == s is False exactly for NaN)
    else:
        a = s
    s = tl.where(valid, s, 0.0)
    a = tl.where(valid, a, 0.0)
    return s, a


# --------------------------------------------------------------------------------------------
# Logits
# --------------------------------------------------------------------------------------------


@triton.jit
def _rows_dot_cols(
    a_base,
    stride_ar,
    stride_ac,
    b_base,
    stride_br,
    stride_bc,
    offs_g,
    offs_n,
    row_mask,
    col_mask,
    D,
    G_PAD: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_DK: tl.constexpr,
    FP32: tl.constexpr,
):
    """[G_PAD, BLOCK_N] = sum_d a[g, d] b[n, d] over the whole head dim, BLOCK_DK columns at a time
    (z = q k^T in both passes, dR = dO v^T in the backward). Zero outside the valid box."""
    offs_d = tl.arange(0, BLOCK_DK)
    acc = tl.zeros((G_PAD, BLOCK_N), dtype=tl.float32)
    for d0 in range(0, D, BLOCK_DK):
        d = d0 + offs_d
        dm = d < D
        at = tl.load(
            a_base + offs_g[:, None] * stride_ar + d[None, :] * stride_ac,
            mask=row_mask[:, None] & dm[None, :],
            other=0.0,
        )
        bt = tl.load(
            b_base + offs_n[:, None] * stride_br + d[None, :] * stride_bc,
            mask=col_mask[:, None] & dm[None, :],
            other=0.0,
        )
        acc += _dot(at, tl.trans(bt), FP32)
    return acc


@triton.jit
def _program_tile(D, N, n_splits, tokens_per_split, BLOCK_DV: tl.constexpr):
    """(bh, first token, end token, head-dim tile) of this program. The head-dim tile is the fastest
    grid axis, so the programs that recompute one token range's logits run side by side and their
    second reads of q and k hit L2 (docs/assign_op.md, "Triton kernels")."""
    pid = tl.program_id(0)
    d_tiles = tl.cdiv(D, BLOCK_DV)
    dt = pid % d_tiles
    rest = pid // d_tiles
    split = rest % n_splits
    bh = (rest // n_splits).to(tl.int64)
    n_start = split * tokens_per_split
    n_end = tl.minimum(n_start + tokens_per_split, N)
    return bh, n_start, n_end, dt


# --------------------------------------------------------------------------------------------
# Forward
# --------------------------------------------------------------------------------------------


@triton.jit(do_not_specialize=_RUNTIME_INTS)
def _assign_fwd_kernel(
    q_ptr,
    k_ptr,
    v_ptr,
    noise_ptr,
    out_ptr,
    ws_ptr,
    r_ptr,
    hard_ptr,
    soft_ptr,
    stride_qb,
    stride_qg,
    stride_qc,
    stride_kb,
    stride_kn,
    stride_kc,
    stride_vb,
    stride_vn,
    stride_vc,
    G,
    N,
    D,
    H,
    n_splits,
    tokens_per_split,
    seed,
    offset,
    scale,
    tau,
    eps,
    G_PAD: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_DV: tl.constexpr,
    BLOCK_DK: tl.constexpr,
    HARD: tl.constexpr,
    GUMBEL: tl.constexpr,
    HAS_NOISE: tl.constexpr,
    SUM_ASSIGN: tl.constexpr,
    RETURN_ATTN: tl.constexpr,
    FP32: tl.constexpr,
):
    """One (b, h, token range, head-dim tile of BLOCK_DV): for each BLOCK_N tokens of the range, the
    logits tile of all groups, softmax/argmax over groups, r[g] += sum_n A and acc[g] += A @ v[:, tile].

    The only accumulator is acc [G_PAD, BLOCK_DV] (plus r): the logits tile is per token block, so
    register use does not grow with N (docs/assign_op.md, "Triton kernels"). One token range
    (n_splits == 1): writes out = acc / (r + eps) and r directly. Several: atomically adds acc into
    the fp32 workspace ws [B, G, C] and sum_n A into r [B, H, G]; the finalize kernel divides.
    """
    bh, n_start, n_end, dt = _program_tile(D, N, n_splits, tokens_per_split, BLOCK_DV)
    b = bh // H
    h = bh % H
    C = H * D

    offs_g = tl.arange(0, G_PAD)
    offs_dv = dt * BLOCK_DV + tl.arange(0, BLOCK_DV)
    row_mask = offs_g < G
    dv_mask = offs_dv < D

    q_base = q_ptr + b * stride_qb + (h * D) * stride_qc
    k_base = k_ptr + b * stride_kb + (h * D) * stride_kc
    v_base = v_ptr + b * stride_vb + (h * D) * stride_vc

    acc = tl.zeros((G_PAD, BLOCK_DV), dtype=tl.float32)
    r_acc = tl.zeros((G_PAD,), dtype=tl.float32)
    for n0 in range(n_start, n_end, BLOCK_N):
        offs_n = n0 + tl.arange(0, BLOCK_N)
        col_mask = offs_n < n_end
        z = _rows_dot_cols(
            q_base, stride_qg, stride_qc, k_base, stride_kn, stride_kc,
            offs_g, offs_n, row_mask, col_mask, D, G_PAD, BLOCK_N, BLOCK_DK, FP32,
        )  # fmt: skip
        z = z * scale
        _s, a = _assignment(
            z, noise_ptr, seed, offset, bh, offs_g, offs_n, row_mask, col_mask, G, N, tau, HARD, GUMBEL, HAS_NOISE
        )
        r_acc += tl.sum(a, axis=1)
        if FP32:
            a_dot = a
        else:
            a_dot = a.to(v_ptr.dtype.element_ty)  # exact for the one-hot; FlashAttention-style for S
        vt = tl.load(
            v_base + offs_n[:, None] * stride_vn + offs_dv[None, :] * stride_vc,
            mask=col_mask[:, None] & dv_mask[None, :],
            other=0.0,
        )
        acc += _dot(a_dot, vt, FP32)  # [G_PAD, BLOCK_DV] += sum_n A[g, n] v[n, d]
        if RETURN_ATTN:
            if dt == 0:  # one head-dim tile writes the maps
                valid = row_mask[:, None] & col_mask[None, :]
                lin = (bh * G + offs_g[:, None]).to(tl.int64) * N + offs_n[None, :]
                tl.store(hard_ptr + lin, a.to(hard_ptr.dtype.element_ty), mask=valid)
                # soft = softmax_g(z): no noise, no tau (docs/assign_op.md, "Math")
                zz = tl.where(row_mask[:, None], z, float("-inf"))
                pz = tl.exp(zz - tl.max(zz, axis=0)[None, :])
                sz = pz / tl.sum(pz, axis=0)[None, :]
                tl.store(soft_ptr + lin, sz.to(soft_ptr.dtype.element_ty), mask=valid)

    r_ptrs = r_ptr + bh * G + offs_g
    out_rows = (b * G + offs_g) * C + h * D  # out and ws are contiguous [B, G, C]
    o_ptrs = out_rows[:, None] + offs_dv[None, :]
    o_mask = row_mask[:, None] & dv_mask[None, :]
    if n_splits == 1:
        if dt == 0:
            tl.store(r_ptrs, r_acc, mask=row_mask)
        if not SUM_ASSIGN:
            acc = acc / (r_acc + eps)[:, None]  # R = A / (r + eps), applied after the sum (exact one-hot in the dot)
        tl.store(out_ptr + o_ptrs, acc.to(out_ptr.dtype.element_ty), mask=o_mask)
    else:
        if dt == 0:
            tl.atomic_add(r_ptrs, r_acc, mask=row_mask, sem="relaxed")
        tl.atomic_add(ws_ptr + o_ptrs, acc, mask=o_mask, sem="relaxed")


@triton.jit
def _assign_fwd_finalize_kernel(
    ws_ptr, r_ptr, out_ptr, G, C, D, H, eps, SUM_ASSIGN: tl.constexpr, BLOCK_C: tl.constexpr
):
    """out[b, g, c] = ws[b, g, c] / (r[b, c // D, g] + eps) in the output dtype (forward split over tokens)."""
    row = tl.program_id(0).to(tl.int64)  # b * G + g
    b = row // G
    g = row % G
    c = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    cm = c < C
    acc = tl.load(ws_ptr + row * C + c, mask=cm, other=0.0)
    if not SUM_ASSIGN:
        r = tl.load(r_ptr + (b * H + c // D) * G + g, mask=cm, other=0.0)
        acc = acc / (r + eps)
    tl.store(out_ptr + row * C + c, acc.to(out_ptr.dtype.element_ty), mask=cm)


# --------------------------------------------------------------------------------------------
# Backward
# --------------------------------------------------------------------------------------------


@triton.jit
def _assign_bwd_preprocess_kernel(
    do_ptr,
    out_ptr,
    delta_ptr,
    stride_db,
    stride_dg,
    stride_dc,
    stride_ob,
    stride_og,
    stride_oc,
    G,
    D,
    H,
    G_PAD: tl.constexpr,
    BLOCK_D: tl.constexpr,
):
    """delta[b, h, g] = <dO[b, g, h-th head], out[b, g, h-th head]> (= sum_n dR[g, n] R[g, n])."""
    bh = tl.program_id(0).to(tl.int64)
    b = bh // H
    h = bh % H
    offs_g = tl.arange(0, G_PAD)
    offs_d = tl.arange(0, BLOCK_D)
    row_mask = offs_g < G
    acc = tl.zeros((G_PAD,), dtype=tl.float32)
    for d0 in range(0, D, BLOCK_D):
        d = h * D + d0 + offs_d
        m = row_mask[:, None] & ((d0 + offs_d) < D)[None, :]
        do = tl.load(
            do_ptr + b * stride_db + offs_g[:, None] * stride_dg + d[None, :] * stride_dc, mask=m, other=0.0
        ).to(tl.float32)
        o = tl.load(
            out_ptr + b * stride_ob + offs_g[:, None] * stride_og + d[None, :] * stride_oc, mask=m, other=0.0
        ).to(tl.float32)
        acc += tl.sum(do * o, axis=1)
    tl.store(delta_ptr + bh * G + offs_g, acc, mask=row_mask)


@triton.jit(do_not_specialize=_RUNTIME_INTS)
def _assign_bwd_kernel(
    q_ptr,
    k_ptr,
    v_ptr,
    do_ptr,
    r_ptr,
    delta_ptr,
    noise_ptr,
    dq_ptr,
    dq_ws_ptr,
    dk_ptr,
    dv_ptr,
    stride_qb,
    stride_qg,
    stride_qc,
    stride_kb,
    stride_kn,
    stride_kc,
    stride_vb,
    stride_vn,
    stride_vc,
    stride_db,
    stride_dg,
    stride_dc,
    G,
    N,
    D,
    H,
    n_splits,
    tokens_per_split,
    seed,
    offset,
    scale,
    tau,
    eps,
    G_PAD: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_DV: tl.constexpr,
    BLOCK_DK: tl.constexpr,
    HARD: tl.constexpr,
    GUMBEL: tl.constexpr,
    HAS_NOISE: tl.constexpr,
    SUM_ASSIGN: tl.constexpr,
    FP32: tl.constexpr,
):
    """One (b, h, token range, head-dim tile) of the backward (docs/assign_op.md, "Backward"),
    recomputing z, e, S and A per BLOCK_N tokens over the whole head dim:

    dR[g,n] = <dO[g], v_n>        dA = (dR - delta[g]) / (r[g] + eps)   (dA = dR if sum_assign)
    dz      = S * (dA - sum_g S dA) / tau                               (dS = dA: straight-through)
    dv[n]   = sum_g R[g,n] dO[g]  dk[n] = scale sum_g dz[g,n] q_g       dq[g] += scale sum_n dz[g,n] k_n

    dv and dk of the tile are owned by the program; dq [G_PAD, BLOCK_DV] accumulates over the token
    range and is written directly (one range) or added atomically into the fp32 workspace (several).
    """
    bh, n_start, n_end, dt = _program_tile(D, N, n_splits, tokens_per_split, BLOCK_DV)
    b = bh // H
    h = bh % H
    C = H * D

    offs_g = tl.arange(0, G_PAD)
    offs_dv = dt * BLOCK_DV + tl.arange(0, BLOCK_DV)
    row_mask = offs_g < G
    dv_mask = offs_dv < D
    gm = row_mask[:, None] & dv_mask[None, :]

    q_base = q_ptr + b * stride_qb + (h * D) * stride_qc
    k_base = k_ptr + b * stride_kb + (h * D) * stride_kc
    v_base = v_ptr + b * stride_vb + (h * D) * stride_vc
    do_base = do_ptr + b * stride_db + (h * D) * stride_dc

    if not SUM_ASSIGN:
        r = tl.load(r_ptr + bh * G + offs_g, mask=row_mask, other=0.0)
        delta = tl.load(delta_ptr + bh * G + offs_g, mask=row_mask, other=0.0)
        denom = r + eps

    dq_rows = (b * G + offs_g) * C + h * D  # dq, dq_ws contiguous [B, G, C]
    acc = tl.zeros((G_PAD, BLOCK_DV), dtype=tl.float32)
    for n0 in range(n_start, n_end, BLOCK_N):
        offs_n = n0 + tl.arange(0, BLOCK_N)
        col_mask = offs_n < n_end
        valid = row_mask[:, None] & col_mask[None, :]
        z = _rows_dot_cols(
            q_base, stride_qg, stride_qc, k_base, stride_kn, stride_kc,
            offs_g, offs_n, row_mask, col_mask, D, G_PAD, BLOCK_N, BLOCK_DK, FP32,
        )  # fmt: skip
        z = z * scale
        s, a = _assignment(
            z, noise_ptr, seed, offset, bh, offs_g, offs_n, row_mask, col_mask, G, N, tau, HARD, GUMBEL, HAS_NOISE
        )
        dr = _rows_dot_cols(
            do_base, stride_dg, stride_dc, v_base, stride_vn, stride_vc,
            offs_g, offs_n, row_mask, col_mask, D, G_PAD, BLOCK_N, BLOCK_DK, FP32,
        )  # fmt: skip
        if SUM_ASSIGN:
            w = a  # R = A
            da = dr  # dA = dR
        else:
            w = a / denom[:, None]
            da = (dr - delta[:, None]) / denom[:, None]
        # padded rows/columns: zero (their r + eps may be 0 when eps = 0)
        w = tl.where(valid, w, 0.0)
        da = tl.where(valid, da, 0.0)
        dz = s * (da - tl.sum(s * da, axis=0)[None, :]) / tau
        if FP32:
            w_dot = w
            dz_dot = dz
        else:
            w_dot = w.to(v_ptr.dtype.element_ty)
            dz_dot = dz.to(q_ptr.dtype.element_ty)

        nm = col_mask[:, None] & dv_mask[None, :]
        dkv_ptrs = (b * N + offs_n)[:, None] * C + h * D + offs_dv[None, :]  # dk, dv contiguous [B, N, C]
        dot_ = tl.load(do_base + offs_g[:, None] * stride_dg + offs_dv[None, :] * stride_dc, mask=gm, other=0.0)
        dv = _dot(tl.trans(w_dot), dot_, FP32)
        tl.store(dv_ptr + dkv_ptrs, dv.to(dv_ptr.dtype.element_ty), mask=nm)
        qt = tl.load(q_base + offs_g[:, None] * stride_qg + offs_dv[None, :] * stride_qc, mask=gm, other=0.0)
        dk = _dot(tl.trans(dz_dot), qt, FP32) * scale
        tl.store(dk_ptr + dkv_ptrs, dk.to(dk_ptr.dtype.element_ty), mask=nm)
        kt = tl.load(k_base + offs_n[:, None] * stride_kn + offs_dv[None, :] * stride_kc, mask=nm, other=0.0)
        acc += _dot(dz_dot, kt, FP32)

    acc = acc * scale
    dq_ptrs = dq_rows[:, None] + offs_dv[None, :]
    if n_splits == 1:
        tl.store(dq_ptr + dq_ptrs, acc.to(dq_ptr.dtype.element_ty), mask=gm)
    else:
        tl.atomic_add(dq_ws_ptr + dq_ptrs, acc, mask=gm, sem="relaxed")


# --------------------------------------------------------------------------------------------
# Noise
# --------------------------------------------------------------------------------------------


@triton.jit
def _gumbel_noise_kernel(out_ptr, total, seed, offset, UNIFORM: tl.constexpr, BLOCK: tl.constexpr):
    """out[i] = e(offset + i) (or the clamped uniform u when UNIFORM) for the flat [B, H, G, N] index i."""
    i = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = i < total
    if UNIFORM:
        u = tl.rand(seed, i + offset)
        val = tl.minimum(tl.maximum(u, _U_MIN), _U_MAX)
    else:
        val = _gumbel(seed, i + offset)
    tl.store(out_ptr + i, val, mask=mask)


# --------------------------------------------------------------------------------------------
# Autotuning (GPU only)
# --------------------------------------------------------------------------------------------

# (BLOCK_DK, num_warps, num_stages). BLOCK_DK chunks the head dim of the logits dots; the token block
# BLOCK_N and the head-dim tile BLOCK_DV (the accumulator's width) are fixed by the launcher (_tiles).
# Every config must compile without a register spill at every shape and mode of
# groupvit_fast/tools/compile_check.py, which fails otherwise (docs/assign_op.md, "Triton kernels").
_CONFIGS = [
    (16, 4, 2),
    (32, 4, 2),
    (64, 4, 2),
]
# BLOCK_DK of each input kind: half precision takes the wide chunks (fewer, larger MMAs), fp32 the
# narrow ones (its FMA dot holds a BLOCK_DK slice of both operands in registers).
_DK = {False: (32, 64), True: (16, 32)}


def _prune(configs, named_args, **kwargs):
    """The configs of the input kind whose BLOCK_DK fits the head dim (no chunk wider than the next
    power of two of D; the narrowest of the kind when none does)."""
    args = {**named_args, **kwargs}
    width = max(16, triton.next_power_of_2(args["D"]))
    kind = [c for c in configs if c.kwargs["BLOCK_DK"] in _DK[bool(args["FP32"])]]
    return [c for c in kind if c.kwargs["BLOCK_DK"] <= width] or kind[:1]


def _autotuned(kernel, key, reset_to_zero):
    if INTERPRET:
        return kernel
    configs = [triton.Config({"BLOCK_DK": bd}, num_warps=w, num_stages=s) for bd, w, s in _CONFIGS]
    extra = {}
    if "cache_results" in inspect.signature(triton.autotune).parameters:
        extra["cache_results"] = True  # keep the timings on disk: tuning costs seconds per key
    return triton.autotune(
        configs=configs, key=key, prune_configs_by={"early_config_prune": _prune}, reset_to_zero=reset_to_zero, **extra
    )(kernel)


# Keyed on the sizes and the constexpr flags that change the work; the autotuner adds the dtypes.
_assign_fwd = _autotuned(
    _assign_fwd_kernel, ["G", "N", "D", "H", "n_splits", "GUMBEL", "RETURN_ATTN"], ["ws_ptr", "r_ptr"]
)
_assign_bwd = _autotuned(_assign_bwd_kernel, ["G", "N", "D", "H", "n_splits", "GUMBEL"], ["dq_ws_ptr"])


def _fixed_config(d: int) -> dict:
    """The one config used in the interpreter (no timing there)."""
    return {"BLOCK_DK": min(64, max(16, triton.next_power_of_2(d))), "num_warps": 4} if INTERPRET else {}


# --------------------------------------------------------------------------------------------
# Launchers
# --------------------------------------------------------------------------------------------

_sm_counts: dict[int, int] = {}


def _sm_count(device: torch.device) -> int:
    if device.type != "cuda":
        return 1
    index = device.index if device.index is not None else torch.cuda.current_device()
    if index not in _sm_counts:
        _sm_counts[index] = torch.cuda.get_device_properties(index).multi_processor_count
    return _sm_counts[index]


def _tiles(
    kernel: str, groups_pad: int, tokens: int, head_dim: int, fp32: bool, extra_tile: bool = False
) -> tuple[int, int]:
    """(BLOCK_N, BLOCK_DV) of ``kernel`` ("fwd" or "bwd"): tokens per step of a program's token loop (as
    many as the logits-tile budget allows) and the head-dim tile of its accumulator (the whole head
    when it fits). ``extra_tile``: the program also holds a loaded noise tile (a given noise tensor) or
    the maps it writes (return_attn), so it takes half the tokens per step."""
    tile, block_dv = _TILES[(kernel, fp32)]
    tile = tile // 2 if extra_tile else tile
    block_n = max(16, min(triton.next_power_of_2(tokens), _MAX_BLOCK_N, tile // groups_pad))
    return block_n, max(16, min(block_dv, triton.next_power_of_2(head_dim)))


def _splits(programs: int, tokens: int, block_n: int, device: torch.device, splits: int | None) -> tuple[int, int]:
    """(n_splits, tokens_per_split): one token range per program while the grid has at least one program
    per SM (then nothing is reduced across programs: no atomics, no finalize pass); otherwise the tokens
    are split until it has (one (b, h) with N = 16384 tokens must still fill the GPU)."""
    n_blocks = triton.cdiv(tokens, block_n)
    wanted = splits if splits is not None else triton.cdiv(_sm_count(device), programs)
    per_split = triton.cdiv(n_blocks, max(1, min(n_blocks, wanted)))
    return triton.cdiv(n_blocks, per_split), per_split * block_n


def _check(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, num_heads: int) -> tuple[int, int, int, int, int]:
    if q.dim() != 3 or k.dim() != 3 or v.dim() != 3:
        raise ValueError("q, k, v must be [B, G, C], [B, N, C], [B, N, C]")
    b, g, c = q.shape
    n = k.shape[1]
    if k.shape != v.shape or k.shape[0] != b or k.shape[2] != c or c % num_heads:
        raise ValueError(f"bad shapes q {tuple(q.shape)}, k {tuple(k.shape)}, v {tuple(v.shape)}, h={num_heads}")
    if g > MAX_GROUPS:
        raise ValueError(f"G={g} > {MAX_GROUPS} groups is not supported by the Triton kernels")
    return b, g, n, c, c // num_heads


def _device_guard(t: torch.Tensor):
    """Triton launches on the current CUDA device: make it t's."""
    return torch.cuda.device(t.device) if t.is_cuda else contextlib.nullcontext()


def _noise_arg(noise: torch.Tensor | None, like: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    if noise is None:
        return like.new_empty(1, dtype=torch.float32)  # never read (HAS_NOISE=False)
    if tuple(noise.shape) != shape:
        raise ValueError(f"noise must be [B, h, G, N] = {list(shape)}, got {list(noise.shape)}")
    return noise.to(device=like.device, dtype=torch.float32).contiguous()


def assign_attention_forward(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
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
    offset: int = 0,
    block_n: int | None = None,
    splits: int | None = None,
):
    """Fused forward. q: [B, G, C]; k, v: [B, N, C] (any strides); noise: optional [B, h, G, N].

    Returns ``(out [B, G, C] in q's dtype, r [B, h, G] float32, hard [B, h, G, N], soft [B, h, G, N])``;
    ``hard``/``soft`` (in q's dtype) are empty tensors unless ``return_attn``. ``block_n`` forces the
    token-block size of the programs' token loop (a power of two >= 16) and ``splits`` the number of
    token ranges reduced across programs (tests use them to reach both paths).

    Equivalent PyTorch (one head, no noise)::

        z = (q @ k.transpose(1, 2)) * scale / tau; s = z.softmax(1)
        a = one_hot(s.argmax(1)) if hard else s; r = a.sum(-1)
        out = (a / (r[..., None] + eps)) @ v
    """
    b, g, n, c, d = _check(q, k, v, num_heads)
    h = num_heads
    scale = d**-0.5 if scale is None else float(scale)
    g_pad = max(16, triton.next_power_of_2(g))
    block, block_dv = _tiles(
        "fwd", g_pad, n, d, q.dtype == torch.float32, extra_tile=return_attn or (noise is not None and gumbel)
    )
    block = block_n or block
    d_tiles = triton.cdiv(d, block_dv)
    n_splits, per_split = _splits(b * h * d_tiles, n, block, q.device, splits)
    single = n_splits == 1

    out = torch.empty((b, g, c), dtype=q.dtype, device=q.device)
    r = (torch.empty if single else torch.zeros)((b, h, g), dtype=torch.float32, device=q.device)
    ws = q.new_empty(1, dtype=torch.float32) if single else torch.zeros((b, g, c), dtype=torch.float32, device=q.device)
    if return_attn:
        hard_map = torch.empty((b, h, g, n), dtype=q.dtype, device=q.device)
        soft_map = torch.empty((b, h, g, n), dtype=q.dtype, device=q.device)
    else:
        hard_map, soft_map = q.new_empty(0), q.new_empty(0)
    noise_t = _noise_arg(noise if gumbel else None, q, (b, h, g, n))

    with _device_guard(q):
        _assign_fwd[(b * h * n_splits * d_tiles,)](
            q,
            k,
            v,
            noise_t,
            out,
            ws,
            r,
            hard_map,
            soft_map,
            q.stride(0),
            q.stride(1),
            q.stride(2),
            k.stride(0),
            k.stride(1),
            k.stride(2),
            v.stride(0),
            v.stride(1),
            v.stride(2),
            g,
            n,
            d,
            h,
            n_splits,
            per_split,
            int(seed),
            int(offset),
            scale,
            float(tau),
            float(eps),
            G_PAD=g_pad,
            BLOCK_N=block,
            BLOCK_DV=block_dv,
            HARD=bool(hard),
            GUMBEL=bool(gumbel),
            HAS_NOISE=noise is not None and gumbel,
            SUM_ASSIGN=bool(sum_assign),
            RETURN_ATTN=bool(return_attn),
            FP32=q.dtype == torch.float32,
            **_fixed_config(d),
        )
        if not single:
            block_c = min(1024, triton.next_power_of_2(c))
            _assign_fwd_finalize_kernel[(b * g, triton.cdiv(c, block_c))](
                ws, r, out, g, c, d, h, float(eps), SUM_ASSIGN=bool(sum_assign), BLOCK_C=block_c
            )
    return out, r, hard_map, soft_map


def assign_attention_backward(
    grad_out: torch.Tensor,
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    out: torch.Tensor,
    r: torch.Tensor,
    *,
    num_heads: int = 1,
    scale: float | None = None,
    hard: bool = True,
    gumbel: bool = False,
    tau: float = 1.0,
    sum_assign: bool = False,
    eps: float = 1.0,
    noise: torch.Tensor | None = None,
    seed: int = 0,
    offset: int = 0,
    block_n: int | None = None,
    splits: int | None = None,
):
    """Fused backward from what the forward saved: grad_out, out [B, G, C], r [B, h, G] (float32).

    Recomputes z, the noise (same counters as the forward), S and the argmax; nothing [B, h, G, N] is
    read or written. Returns ``(dq, dk, dv)`` in the input dtype (docs/assign_op.md, "Backward").
    """
    b, g, n, c, d = _check(q, k, v, num_heads)
    h = num_heads
    scale = d**-0.5 if scale is None else float(scale)
    g_pad = max(16, triton.next_power_of_2(g))
    block, block_dv = _tiles("bwd", g_pad, n, d, q.dtype == torch.float32, extra_tile=noise is not None and gumbel)
    block = block_n or block
    d_tiles = triton.cdiv(d, block_dv)
    n_splits, per_split = _splits(b * h * d_tiles, n, block, q.device, splits)
    single = n_splits == 1

    r = r.to(torch.float32).contiguous()
    dk = torch.empty((b, n, c), dtype=k.dtype, device=k.device)
    dv = torch.empty((b, n, c), dtype=v.dtype, device=v.device)
    if single:
        dq = torch.empty((b, g, c), dtype=q.dtype, device=q.device)
        dq_ws = q.new_empty(1, dtype=torch.float32)
    else:
        dq_ws = torch.zeros((b, g, c), dtype=torch.float32, device=q.device)
        dq = dq_ws  # converted below
    noise_t = _noise_arg(noise if gumbel else None, q, (b, h, g, n))

    with _device_guard(q):
        if sum_assign:
            delta = r  # unused (SUM_ASSIGN: dA = dR)
        else:
            delta = torch.empty((b, h, g), dtype=torch.float32, device=q.device)
            _assign_bwd_preprocess_kernel[(b * h,)](
                grad_out,
                out,
                delta,
                grad_out.stride(0),
                grad_out.stride(1),
                grad_out.stride(2),
                out.stride(0),
                out.stride(1),
                out.stride(2),
                g,
                d,
                h,
                G_PAD=g_pad,
                BLOCK_D=min(64, max(16, triton.next_power_of_2(d))),
            )
        _assign_bwd[(b * h * n_splits * d_tiles,)](
            q,
            k,
            v,
            grad_out,
            r,
            delta,
            noise_t,
            dq,
            dq_ws,
            dk,
            dv,
            q.stride(0),
            q.stride(1),
            q.stride(2),
            k.stride(0),
            k.stride(1),
            k.stride(2),
            v.stride(0),
            v.stride(1),
            v.stride(2),
            grad_out.stride(0),
            grad_out.stride(1),
            grad_out.stride(2),
            g,
            n,
            d,
            h,
            n_splits,
            per_split,
            int(seed),
            int(offset),
            scale,
            float(tau),
            float(eps),
            G_PAD=g_pad,
            BLOCK_N=block,
            BLOCK_DV=block_dv,
            HARD=bool(hard),
            GUMBEL=bool(gumbel),
            HAS_NOISE=noise is not None and gumbel,
            SUM_ASSIGN=bool(sum_assign),
            FP32=q.dtype == torch.float32,
            **_fixed_config(d),
        )
    if not single:
        dq = dq_ws.to(q.dtype)  # no copy for fp32
    return dq, dk, dv


def gumbel_noise(
    shape: tuple[int, int, int, int], seed: int, offset: int = 0, device=None, uniform: bool = False
) -> torch.Tensor:
    """The float32 [B, H, G, N] Gumbel noise the kernels draw for (seed, offset); with ``uniform=True``
    the clamped uniforms u instead (for bit-exact tests of the Philox stream)."""
    device = torch.device("cuda" if device is None else device)
    out = torch.empty(tuple(int(s) for s in shape), dtype=torch.float32, device=device)
    total = out.numel()
    if total == 0:
        return out
    block = 1024
    with _device_guard(out):
        _gumbel_noise_kernel[(triton.cdiv(total, block),)](
            out, total, int(seed), int(offset), UNIFORM=bool(uniform), BLOCK=block
        )
    return out
