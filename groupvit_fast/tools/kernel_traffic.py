"""Static memory-traffic estimate of the Triton assignment kernels, per launch, against the floor.

The floor is what a launch must read and write at least: each input once, each output once
(docs/assign_op.md, "Triton kernels"). What a launch moves in addition comes from its tiling: the
logits are recomputed once per head-dim tile (k, and in the backward v, read again per tile), q (and
dO) are re-read for every token block of a program's loop, the backward re-reads the tiles it writes
gradients from, and a launch split over token ranges adds fp32 atomics, the workspace's zeroing and a
finalize pass. The re-reads are issued by programs that run side by side (the head-dim tile is the
fastest grid axis) and are small enough (q is G x C) to be served by L2, so the number to hold a GPU
run against is the floor; the extra bytes are what the L2 must serve in addition.
"""

from __future__ import annotations

from dataclasses import dataclass, field

#: HBM bandwidth of an H100 SXM (NVIDIA's data sheet), for the floor's time.
H100_BYTES_PER_S = 3.35e12


@dataclass
class Traffic:
    """Bytes of one launch at batch ``batch``."""

    launch: str
    floor: int
    extra: list[tuple[int, str]] = field(default_factory=list)

    @property
    def total(self) -> int:
        return self.floor + sum(b for b, _ in self.extra)

    @property
    def ratio(self) -> float:
        return self.total / self.floor if self.floor else 1.0

    def why(self) -> str:
        return "; ".join(f"{why} +{b / 1e6:.1f} MB" for b, why in self.extra if b) or "-"


def estimate(
    kernel: str,
    *,
    batch: int,
    groups: int,
    tokens: int,
    head_dim: int,
    heads: int,
    elem: int,
    block_n: int,
    block_dv: int,
    splits: int = 1,
    noise_tensor: bool = False,
    return_attn: bool = False,
) -> Traffic:
    """The floor and the extra bytes of launch ``kernel`` ("fwd", "bwd_preprocess", "bwd") at one shape.

    elem: bytes per element of q, k, v, out and the gradients; block_n, block_dv: the launcher's tiles;
    splits: token ranges per (b, h) (1 when the grid has a program per SM without splitting).
    """
    g, n, d, h, b = groups, tokens, head_dim, heads, batch
    c = d * h
    q = b * g * c * elem  # q, out, dO, dq: [B, G, C]
    kv = b * n * c * elem  # k, v, dk, dv: [B, N, C]
    rows = b * h * g * 4  # r, delta: [B, h, G] fp32
    maps = b * h * g * n
    d_tiles = -(-d // block_dv)
    n_blocks = -(-n // block_n)
    ranges = -(-n_blocks // splits)  # token blocks per program's loop
    noise = maps * 4 if noise_tensor else 0
    if kernel == "fwd":
        t = Traffic("fwd", q + 2 * kv + q + rows + noise + (2 * maps * elem if return_attn else 0))
        t.extra.append(((d_tiles - 1) * kv, f"k re-read for each of {d_tiles} head-dim tiles (logits recomputed)"))
        t.extra.append(
            ((ranges * d_tiles * splits - 1) * q, f"q re-read for each of {n_blocks} token blocks x {d_tiles} tiles")
        )
        if d_tiles > 1 and noise_tensor:
            t.extra.append(((d_tiles - 1) * noise, "noise re-read per head-dim tile"))
        if splits > 1:
            ws = b * g * c * 4
            t.extra.append(
                (ws + 2 * splits * ws + 2 * ws + rows * splits, "fp32 workspace: zeroing, atomics, finalize")
            )
        return t
    if kernel == "bwd_preprocess":
        return Traffic("bwd_preprocess", 2 * q + rows)  # reads dO and out, writes delta
    if kernel == "bwd":
        t = Traffic("bwd", q + 2 * kv + q + 2 * rows + noise + q + 2 * kv)  # q k v dO r delta -> dq dk dv
        t.extra.append((2 * (d_tiles - 1) * kv, f"k and v re-read for each of {d_tiles} head-dim tiles (z, dR)"))
        t.extra.append((2 * (ranges * d_tiles * splits - 1) * q, "q and dO re-read per token block x tile (z, dR)"))
        t.extra.append((2 * ranges * splits * q + kv, "q, dO tiles and k tile re-read for dv, dk, dq"))
        if d_tiles > 1 and noise_tensor:
            t.extra.append(((d_tiles - 1) * noise, "noise re-read per head-dim tile"))
        if splits > 1:
            ws = b * g * c * 4
            t.extra.append((ws + 2 * splits * ws + ws + q, "fp32 dq workspace: zeroing, atomics, conversion"))
        return t
    raise ValueError(f"no traffic model for kernel {kernel!r}")
