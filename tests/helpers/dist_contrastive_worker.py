"""One rank of the 2-process gloo check in tests/models/test_multi_label_contrastive.py (run as a script).

Usage: ``python dist_contrastive_worker.py RANK WORLD INIT_FILE OUT_FILE`` (the test itself runs
rank 0 through ``run``). Builds the same data as the test (seeded), takes this rank's slice of the
batch, and returns / saves its losses and gradients.
"""

from __future__ import annotations

import sys

import torch
import torch.distributed as dist


def run(rank: int, world: int, init_file: str) -> dict:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        from dist_contrastive_case import build_case, feature_losses, model_losses

        case = build_case()
        b = case["images"].shape[0] // world
        sl = slice(rank * b, (rank + 1) * b)

        # 1. the losses on features (training mode): gradients w.r.t. this rank's features
        feats = {k: case[k][sl].clone().requires_grad_(True) for k in ("image_x", "text_x", "prompt_x")}
        model = case["model"]
        losses = feature_losses(model, feats)
        sum(losses.values()).backward()
        result = {
            "feature_losses": {k: v.detach() for k, v in losses.items()},
            "feature_grads": {k: v.grad for k, v in feats.items()},
            "scale_grads": {
                n: p.grad.clone() for n, p in model.named_parameters() if "logit_scale" in n and p.grad is not None
            },
        }
        model.zero_grad(set_to_none=True)

        # 2. the whole model on its slice of images and texts; DDP-style averaged parameter gradients
        losses = model_losses(model, case["images"][sl], case["texts"][sl])
        sum(losses.values()).backward()
        grads = {}
        for name, p in model.named_parameters():
            g = p.grad if p.grad is not None else torch.zeros_like(p)
            dist.all_reduce(g)
            grads[name] = g / world
        result["model_losses"] = {k: v.detach() for k, v in losses.items()}
        result["model_grads"] = grads
        return result
    finally:
        dist.destroy_process_group()


if __name__ == "__main__":
    torch.save(run(int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]), sys.argv[4])
