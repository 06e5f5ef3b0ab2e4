"""Where the ``cpu`` backend's training call spends its time, against the GEMMs it cannot avoid.

    python benchmarks/cpu_op_profile.py        # -> benchmarks/results/cpu-isa/cpu-op-profile-<date>.md

The op at the stage-0 shape (B=16, G=64, N=196, C=384, fp32) in training (hard + Gumbel, forward +
backward) is timed in one process, every entry taking turns call by call (``measure_interleaved``), as
pieces that isolate one cost each (docs/cpu_backend.md, "Speed"):

* the eager reference (NVlabs' formulation) and the ``cpu`` backend on every kernel copy this CPU runs;
* the same call without the Gumbel noise (the noise is drawn in the forward and drawn again in the
  backward, which recomputes it instead of saving a ``[B, G, N]`` tensor: docs/assign_op.md, "Memory
  contract");
* the forward alone (so the backward is the difference);
* the GEMM floor: ``torch.bmm`` (ATen's BLAS, all threads) of exactly the products the fused op must
  compute, one in the forward (``Q K^T``) and four in the backward (``Q K^T`` again, ``dO V^T``,
  ``dz K``, ``dz^T Q``), and of the six the reference computes (``Q K^T``, ``A V``; ``dO V^T``,
  ``A^T dO``, ``dz K``, ``dz^T Q``).

A copy at the GEMM floor plus its element-wise work cannot beat the reference by more than the
reference's time over that sum; the report states that bound beside the measured ratio.
"""

from __future__ import annotations

import argparse
import functools
import os
import sys
from pathlib import Path

import torch

from groupvit_fast.bench.environment import environment
from groupvit_fast.bench.timing import measure_interleaved
from groupvit_fast.common.files import atomic_write
from groupvit_fast.ops import assign_attention
from groupvit_fast.ops.backends.native import cpu_isas, set_cpu_isa

ROOT = Path(__file__).resolve().parents[1]
B, G, N, C = 16, 64, 196, 384


def _op(q, k, v, grad_out, *, backend: str, isa: str | None, gumbel: bool, backward: bool):
    if isa is not None:
        set_cpu_isa(isa)  # before every call: the copies take turns
    if backward:
        out = assign_attention(q, k, v, hard=True, gumbel=gumbel, backend=backend)
        return torch.autograd.grad(out, (q, k, v), grad_out)
    with torch.no_grad():
        return assign_attention(q, k, v, hard=True, gumbel=gumbel, backend=backend)


def _gemms(products: list[tuple[torch.Tensor, torch.Tensor]]):
    for a, b in products:
        torch.bmm(a, b)


def partial_gemms(products: list[tuple[torch.Tensor, torch.Tensor]]):
    return functools.partial(_gemms, products)


def entries() -> dict[str, tuple[str, object]]:
    """``{name: (what it is, the function to time)}``."""
    gen = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(B, n, C, generator=gen, requires_grad=True) for n in (G, N, N))
    grad_out = torch.randn(B, G, C, generator=gen)
    qd, kd, vd = q.detach(), k.detach(), v.detach()
    dz = torch.randn(B, G, N, generator=gen)
    kt, vt = kd.transpose(1, 2), vd.transpose(1, 2)
    fused = [(qd, kt), (qd, kt), (grad_out, vt), (dz, kd), (dz.transpose(1, 2), qd)]
    reference = [(qd, kt), (dz, vd), (grad_out, vt), (dz.transpose(1, 2), grad_out), (dz, kd), (dz.transpose(1, 2), qd)]
    op = functools.partial(_op, q, k, v, grad_out)

    def call(backend: str, isa: str | None, gumbel: bool = True, backward: bool = True):
        return functools.partial(op, backend=backend, isa=isa, gumbel=gumbel, backward=backward)

    out: dict[str, tuple[str, object]] = {"reference": ("eager reference, fwd + bwd", call("reference", None))}
    for isa in cpu_isas():
        out[f"cpu-{isa}"] = (f"`cpu`, {isa} copy, fwd + bwd", call("cpu", isa))
        out[f"cpu-{isa} no noise"] = ("the same without Gumbel noise", call("cpu", isa, gumbel=False))
        out[f"cpu-{isa} fwd"] = ("its forward alone", call("cpu", isa, backward=False))
    out["GEMMs of the fused op"] = (f"torch.bmm of the {len(fused)} products of the fused op", partial_gemms(fused))
    out["GEMMs of the reference"] = (
        f"torch.bmm of the {len(reference)} products of the reference",
        partial_gemms(reference),
    )
    return out


def _loads(loads) -> str:
    return ", ".join(f"{x:.2f}" for x in loads)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "cpu-isa")
    parser.add_argument("--budget", type=float, default=6.0, help="seconds of timed calls per entry")
    args = parser.parse_args(argv)
    meta = environment("cpu")
    table = entries()
    fns = {name: fn for name, (_, fn) in table.items()}
    stats = measure_interleaved(fns, "cpu", budget_s=args.budget, max_reps=600)
    bad = {name: s for name, s in stats.items() if isinstance(s, Exception)}
    if bad:
        raise SystemExit(f"cpu_op_profile: {', '.join(f'{n}: {e}' for n, e in bad.items())}")
    med = {name: s["median_ms"] for name, s in stats.items()}
    ref = med["reference"]
    v = meta["versions"]
    lines = [
        f"# The `cpu` backend's training call against its GEMM floor ({meta['cpu']})",
        "",
        f"- Device: **{meta['cpu']}**, {meta['cpu_threads']} torch threads of {meta['os_cpus']} CPUs",
        f"- Versions: torch {v['torch']}, Python {v['python']}, groupvit_fast {v['groupvit_fast']}",
        f"- Date: {meta['date']}; git commit: `{meta['git_commit']}`; load average at start "
        f"{_loads(meta['loadavg_start'])}, at end {_loads(os.getloadavg())}",
        f"- Op: B={B}, G={G}, N={N}, C={C}, fp32, hard + Gumbel; one process, entries interleaved call by call.",
        "",
        "| entry | what | median ms | IQR ms | reps | reference / entry |",
        "| --- | --- | ---: | ---: | ---: | ---: |",
    ]
    for name, (what, _) in table.items():
        s = stats[name]
        ratio = ref / s["median_ms"]
        lines.append(f"| {name} | {what} | {s['median_ms']:.2f} | {s['iqr_ms']:.2f} | {s['reps']} | {ratio:.2f}x |")
    floor = med["GEMMs of the fused op"]
    lines += ["", "What each copy's time is made of (medians; differences of interleaved entries):", ""]
    for isa in cpu_isas():
        total, quiet, fwd = med[f"cpu-{isa}"], med[f"cpu-{isa} no noise"], med[f"cpu-{isa} fwd"]
        lines.append(
            f"- `{isa}`: {total:.2f} ms = forward {fwd:.2f} + backward {total - fwd:.2f}; the noise (drawn twice) "
            f"{total - quiet:.2f} ms; the GEMM floor {floor:.2f} ms ({100 * floor / total:.0f} % of the call); "
            f"everything else {total - floor - (total - quiet):.2f} ms. Measured {ref / total:.2f}x the reference; "
            f"at the GEMM floor with its noise and nothing else it would be {ref / (floor + total - quiet):.2f}x."
        )
    lines.append("")
    args.out.mkdir(parents=True, exist_ok=True)
    stamp = meta["date"][:10]
    path = args.out / f"cpu-op-profile-{stamp}.md"
    atomic_write(str(path), lambda tmp: Path(tmp).write_text("\n".join(lines)))
    print("\n".join(lines))
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
