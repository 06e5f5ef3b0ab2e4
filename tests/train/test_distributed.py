"""Two gloo processes == one process on the joined batch (DDP, the multi-label loss's all-gather, the optimisers).

What is compared, and to what tolerance (measured on the 2-core CPU box, torch 2.14.1, in brackets):

* Losses of all 3 steps, AdamW and SGD, within 1e-5 [5e-7]: the same terms summed in another
  order (the all-gather, DDP's mean) is fp32 round-off; steps 2 and 3 depend on the updates.
* Gradient norms before clipping, all 3 steps, within a relative 1e-4 plus 1e-6 of the first
  step's norm [step 1: equal; steps 2 and 3: 3e-6 and 8e-6 relative; torch 2.11: 1.4e-4 relative,
  4.7e-7 absolute at step 3]: after the first update the runs hold parameters that differ by
  round-off and the gradients are 200-700x smaller than the first step's (norm 186) while their
  terms are of the first step's size, so their round-off is relative to the first norm (1e-6 of it
  is about 8 fp32 units in the last place at that scale). They matter because that first norm is
  clipped to 5.0, which would hide a wrong gradient scale in the clipped gradients below (a scale
  error shows as a relative 1.0).
* Gradients of the first step (after DDP's all-reduce and the clipping), every entry within
  ``1e-5 * max|g| + 1e-4 * |g|`` [max difference 6e-7 * max|g|]: before any update both runs hold
  the same parameters, so only the summation order differs. The absolute part is scaled by the
  largest gradient because some parameters' gradients are zero in exact arithmetic and pure
  round-off here (e.g. ``mlp_inter.fc2.bias``: a per-token constant that the following LayerNorm
  removes; max|g| 3e-7 against a largest gradient of 1.6), so no relative tolerance fits them.
* Parameters after 3 SGD + momentum steps, every entry within ``1e-5 * max|displacement| + 1e-4 *
  |displacement|`` of the single process's [2.4e-7 = 1.1e-6 * the largest displacement 0.21]: SGD's
  update is linear in the gradient, so gradient round-off stays round-off in the parameters.
* AdamW's parameters are *not* compared entry by entry: its update ``m / (sqrt(v) + eps)`` is
  about ``lr * sign(g)`` for any ``|g| >> eps`` (1e-8), so a round-off gradient such as the one
  above (1e-7, sign set by summation order) moves its entry by a full lr per step in a random
  direction: the two runs differ by up to 3.9e-3 (lr 1e-3, 3 steps) exactly on those entries,
  which the loss does not depend on (the AdamW losses still agree to 5e-7). A wrong gradient
  *scale* would be invisible to AdamW for the same reason, which is what the SGD run catches.
* The ranks' parameters are bit-identical: each applies the same all-reduced gradient.

Mutation checks (done once by hand): without DDP (each rank keeps its own half's gradient) every
test fails; without the sum over ranks in the all-gather's backward the losses, gradients and SGD
parameters fail; the per-rank loss multiplied by the world size (a sum over ranks instead of
DDP's mean) leaves the AdamW losses equal, as argued above, and fails the gradient norms, the SGD
losses and the SGD parameters.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

pytest.importorskip("omegaconf")

WORKER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "dist_train_worker.py")


def _run_ranks(world: int, tmp_path) -> list[dict]:
    init = str(tmp_path / f"init{world}")
    outs = [str(tmp_path / f"rank{r}of{world}.pt") for r in range(world)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    procs = [
        subprocess.Popen(
            [sys.executable, WORKER, str(r), str(world), init, outs[r]], env=env, stderr=subprocess.PIPE, text=True
        )
        for r in range(world)
    ]
    for proc in procs:
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err[-2000:]
    return [torch.load(o, weights_only=True) for o in outs]


def _assert_close_scaled(actual: dict, expected: dict, scale: float, what: str) -> None:
    """Every entry within ``1e-5 * scale + 1e-4 * |expected|`` (module docstring)."""
    assert actual.keys() == expected.keys(), what
    for name, value in expected.items():
        torch.testing.assert_close(
            actual[name], value, rtol=1e-4, atol=1e-5 * scale, msg=lambda m, name=name: f"{what} {name}: {m}"
        )


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("dist")
    (single,) = _run_ranks(1, tmp_path)
    return single, _run_ranks(2, tmp_path)


@pytest.mark.parametrize("optimizer", ["adamw", "sgd"])
def test_losses_and_first_gradients_equal_one_process(runs, optimizer):
    single, ranks = runs
    ref = single[optimizer]
    assert (ref["losses"][0] != ref["losses"][-1]).all()  # the run moved
    largest = max(g.abs().max().item() for g in ref["grads"].values())
    for result in (r[optimizer] for r in ranks):
        torch.testing.assert_close(result["losses"], ref["losses"], rtol=1e-5, atol=1e-5)
        # steps 2-3: gradients hundreds of times smaller than the first step's, made of terms of the first
        # step's size: their round-off is relative to that norm (module docstring)
        torch.testing.assert_close(
            result["grad_norms"], ref["grad_norms"], rtol=1e-4, atol=1e-6 * ref["grad_norms"][0].item()
        )
        _assert_close_scaled(result["grads"], ref["grads"], largest, f"{optimizer} first-step gradient")


def test_sgd_parameters_equal_one_process(runs):
    single, ranks = runs
    ref = single["sgd"]
    moved = {n: p - ref["initial"][n] for n, p in ref["params"].items()}
    largest = max(d.abs().max().item() for d in moved.values())
    assert largest > 1e-2  # far above the tolerance (1e-5 * largest): the comparison is not of two initialisations
    for result in (r["sgd"] for r in ranks):
        torch.testing.assert_close(result["initial"], ref["initial"], rtol=0, atol=0)  # same seed, same init
        _assert_close_scaled(
            {n: p - result["initial"][n] for n, p in result["params"].items()},
            moved,
            largest,
            "sgd displacement after 3 steps",
        )


@pytest.mark.parametrize("optimizer", ["adamw", "sgd"])
def test_ranks_hold_identical_parameters(runs, optimizer):
    first, second = (r[optimizer]["params"] for r in runs[1])
    for name, value in first.items():
        assert torch.equal(value, second[name]), name
