"""One rank of tests/train/test_distributed.py: ``python dist_train_worker.py RANK WORLD INIT_FILE OUT_FILE``.

Trains the test model for 3 steps through ``groupvit_fast.train`` (DDP + ``train_step``) on this
rank's slice of fixed batches, twice: with the recipe's AdamW (``build_optimizer``: NVlabs' decay
groups, eps 1e-8) and with SGD + momentum over the same decay groups (an update linear in the
gradient; test_distributed.py says why both). For each it saves the rank-averaged losses of the 3
steps, the gradient norms before clipping, the first step's gradients (after DDP's all-reduce and
the clipping) and the final parameters. With ``WORLD == 1`` it is the single-process reference on the joined batches.
"""

from __future__ import annotations

import os
import sys

import torch
import torch.distributed as dist

MODEL = {
    "type": "MultiLabelContrastive",
    # soft assignment (no Gumbel noise: each rank would draw its own) and a linear projector
    # (no BatchNorm: SyncBatchNorm refuses CPU tensors, so statistics would be per rank)
    "img_encoder": {
        "type": "GroupViT",
        "img_size": 32,
        "patch_size": 8,
        "embed_dim": 32,
        "num_heads": [1, 1, 1],
        "depths": [1, 1, 1],
        "num_group_tokens": [8, 4, 0],
        "num_output_groups": [8, 4],
        "drop_path_rate": 0.0,
        "hard_assignment": False,
    },
    "text_encoder": {"type": "TextTransformer", "context_length": 8, "width": 64, "layers": 1, "vocab_size": 100},
    "output_dim": 32,
    "proj_num_layers": 1,
    "multi_label": 1,
}
STEPS, BATCH = 3, 8


def batches(steps: int = STEPS, size: int = BATCH):
    g = torch.Generator().manual_seed(1)
    out = []
    for _ in range(steps):
        text = torch.randint(3, 90, (size, 2, 8), generator=g)
        text[:, :, 5] = 99
        out.append({"image": torch.randn(size, 3, 32, 32, generator=g), "text": text})
    return out


def _optimizer(name: str, model: torch.nn.Module) -> torch.optim.Optimizer:
    from omegaconf import OmegaConf

    from groupvit_fast.train.optim import build_optimizer, param_groups

    if name == "adamw":
        cfg = OmegaConf.create(
            {
                "weight_decay": 0.05,
                "skip_decay_embeddings": False,
                "optimizer": {"name": "adamw", "eps": 1e-8, "betas": [0.9, 0.999]},
            }
        )
        return build_optimizer(model, cfg, lr=1e-3)
    # lr 0.05: the parameters move by ~1e-2..1e-1 in 3 steps, far above the test's tolerance
    return torch.optim.SGD(param_groups(model.named_parameters(), 0.05), lr=0.05, momentum=0.9)


def train(rank: int, world: int, optimizer_name: str) -> dict:
    from groupvit_fast import build_model
    from groupvit_fast.train.distributed import DistInfo, all_reduce_mean, wrap_model
    from groupvit_fast.train.step import train_step

    torch.manual_seed(0)
    model = build_model(MODEL)
    initial = {n: p.detach().clone() for n, p in model.named_parameters()}
    info = DistInfo(rank=rank, world=world, local_rank=rank, device=torch.device("cpu"))
    wrapped = wrap_model(model, info, "ddp")
    optimizer = _optimizer(optimizer_name, wrapped)
    losses, norms, grads = [], [], None
    for batch in batches():
        rows = slice(rank * BATCH // world, (rank + 1) * BATCH // world)
        out = train_step(
            wrapped, [{k: v[rows] for k, v in batch.items()}], optimizer, device=info.device, clip_grad=5.0
        )
        losses.append(all_reduce_mean(torch.stack([out["loss"], out["multi_label_loss"]])))
        norms.append(out["grad_norm"])  # before clipping: the clipped gradients hide a wrong scale
        if grads is None:  # the first step's gradients: identical parameters in both runs, nothing compounded yet
            grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    return {
        "losses": torch.stack(losses),
        "grad_norms": torch.stack(norms),
        "grads": grads,
        "initial": initial,
        "params": {n: p.detach().clone() for n, p in model.named_parameters()},
    }


def run(rank: int, world: int, init_file: str) -> dict:
    torch.set_num_threads(1)
    if world > 1:
        dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    result = {name: train(rank, world, name) for name in ("adamw", "sgd")}
    if world > 1:
        dist.destroy_process_group()
    return result


if __name__ == "__main__":
    rank, world, init_file, out_file = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    torch.save(run(rank, world, init_file), out_file)
