"""Gradient caching under DDP on 2 gloo processes equals 2 processes without it (docs/training.md, "Gradient caching").

Each process holds 4 of 8 pairs; the loss's all-gather makes the contrastive batch all 8 in both
runs. Compared, per setting of grad_cache_worker.SETTINGS, against the plain 2-process step:

* with Gumbel noise, dropout and drop path on, one chunk of the local batch (the plain step's
  draws, test_grad_cache.py says why more chunks draw differently);
* without noise, 2 and 4 chunks per process.

In fp32 and float64: losses (averaged over ranks) and every all-reduced gradient entry within
``ROUNDINGS`` round-offs of the dtype relative to the loss and to the largest gradient (argued in
test_grad_cache.py; measured here: 0, 37 and 340-470 round-offs for the three settings, the same
count in both dtypes), on both ranks.
And DDP reduces each gradient bucket once per step, as many times as in the plain step: the chunks
before the last run under ``no_sync``.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from tolerances import round_offs

ROUNDINGS = 1000  # as test_grad_cache.py

WORKER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "grad_cache_worker.py")


@pytest.fixture(scope="module")
def ranks(tmp_path_factory) -> list[dict]:
    tmp = tmp_path_factory.mktemp("grad_cache_dist")
    outs = [str(tmp / f"rank{r}.pt") for r in range(2)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    procs = [
        subprocess.Popen(
            [sys.executable, WORKER, str(r), "2", str(tmp / "init"), outs[r]],
            env=env,
            stderr=subprocess.PIPE,
            text=True,
        )
        for r in range(2)
    ]
    for proc in procs:
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err[-2000:]
    return [torch.load(o, weights_only=True) for o in outs]


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("noise, chunk_size", [("all", 4), ("none", 2), ("none", 1)])
def test_two_processes_with_chunks_equal_two_processes_without(ranks, noise, chunk_size, dtype):
    rel = round_offs(ROUNDINGS, getattr(torch, dtype))
    for result in ranks:
        got, want = result[f"{dtype}/{noise}/{chunk_size}"], result[f"{dtype}/{noise}/None"]
        torch.testing.assert_close(got["losses"], want["losses"], rtol=rel, atol=0)
        largest = max(g.abs().max().item() for g in want["grads"].values())
        assert largest > 1e-3
        for name, grad in want["grads"].items():
            err = (got["grads"][name] - grad).abs().max().item()
            assert err <= rel * largest, f"{name}: max error {err:.3e} > {rel:.1e} x {largest:.3e}"
        assert got["buckets_reduced"] == want["buckets_reduced"] > 0  # one reduction per bucket per step
    # the ranks hold the same all-reduced gradient
    first, second = (r[f"{dtype}/{noise}/{chunk_size}"]["grads"] for r in ranks)
    assert all(torch.equal(first[n], g) for n, g in second.items())
