"""One rank of test_grad_cache_distributed.py: ``python grad_cache_worker.py RANK WORLD INIT_FILE OUT_FILE``.

For each setting of ``SETTINGS`` (noise, chunk size or ``None`` for the plain step) it builds the
grad cache tests' model from one seed, wraps it in DDP (``wrap_model``), seeds this rank's stream
(``100 + rank``) and runs one, in float32 and in float64, ``train_step`` on its 4 of the 8 pairs with SGD at lr 0 and no
clipping, so that ``.grad`` holds the all-reduced gradient. It saves the rank-averaged losses, the
gradients and how many buckets DDP's comm hook reduced during the step.
"""

from __future__ import annotations

import os
import sys

import torch
import torch.distributed as dist

#: (noise, chunk_size): the plain step (None) and grad-cached steps of 1, 2 and 4 chunks of the local batch of 4.
SETTINGS = (("all", None), ("all", 4), ("none", None), ("none", 2), ("none", 1))
GLOBAL = 8


def one_step(rank: int, world: int, noise: str, chunk_size: int | None, dtype: torch.dtype) -> dict:
    from test_grad_cache import build, make_batch

    from groupvit_fast.train.distributed import DistInfo, all_reduce_mean, wrap_model
    from groupvit_fast.train.step import train_step

    model = build(noise).to(dtype)
    info = DistInfo(rank=rank, world=world, local_rank=rank, device=torch.device("cpu"))
    wrapped = wrap_model(model, info, "ddp")
    reduced = []
    if world > 1:

        def count(state, bucket):  # DDP's default all-reduce, counted
            reduced.append(bucket.index())
            tensor = bucket.buffer().div_(world)
            return dist.all_reduce(tensor, async_op=True).get_future().then(lambda fut: fut.value()[0])

        wrapped.register_comm_hook(None, count)
    image, text = make_batch(GLOBAL)
    image = image.to(dtype)
    rows = slice(rank * GLOBAL // world, (rank + 1) * GLOBAL // world)
    optimizer = torch.optim.SGD(wrapped.parameters(), lr=0.0)
    torch.manual_seed(100 + rank)
    out = train_step(
        wrapped,
        [{"image": image[rows], "text": text[rows]}],
        optimizer,
        device=info.device,
        clip_grad=0.0,
        chunk_size=chunk_size,
    )
    losses = all_reduce_mean(torch.stack([out["loss"], out["multi_label_loss"], out["total_loss"]]))
    return {
        "losses": losses,
        "grads": {n: p.grad.clone() for n, p in model.named_parameters()},
        "buckets_reduced": len(reduced),
    }


def run(rank: int, world: int, init_file: str) -> dict:
    torch.set_num_threads(1)
    if world > 1:
        dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        return {
            f"{dtype}/{noise}/{chunk}": one_step(rank, world, noise, chunk, getattr(torch, dtype))
            for dtype in ("float32", "float64")
            for noise, chunk in SETTINGS
        }
    finally:
        if world > 1:
            dist.destroy_process_group()


if __name__ == "__main__":
    rank, world, init_file, out_file = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
    here = os.path.dirname(os.path.abspath(__file__))
    sys.path[:0] = [here, os.path.join(here, "..", "helpers")]
    torch.save(run(rank, world, init_file), out_file)
