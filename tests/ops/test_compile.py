"""torch.compile(fullgraph=True) traces a GroupViT grouping block through the custom op: no graph break."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from assign_cases import default_device, fused_backend_params
from groupvit_fast.models import GroupingBlock

DEVICE = default_device()


@pytest.mark.parametrize("backend", fused_backend_params(DEVICE))
@pytest.mark.parametrize("training", [False, True], ids=["eval", "train"])
def test_grouping_block_compiles_fullgraph_forward_and_backward(backend, training):
    torch.manual_seed(0)
    block = (
        GroupingBlock(
            dim=32,
            out_dim=32,
            num_heads=2,
            num_group_token=8,
            num_output_group=4,
            norm_layer=nn.LayerNorm,
            assign_backend=backend,
        )
        .to(DEVICE)
        .train(training)
    )
    x = torch.randn(2, 20, 32, device=DEVICE, requires_grad=True)
    groups = torch.randn(2, 8, 32, device=DEVICE)

    def step(x, groups):
        out, _ = block(x, groups)
        return out

    torch._dynamo.reset()
    compiled = torch.compile(step, fullgraph=True, backend="aot_eager")
    torch.manual_seed(1)
    out = compiled(x, groups)
    out.sum().backward()
    grad_compiled = x.grad.clone()
    x.grad = None
    torch.manual_seed(1)
    expected = step(x, groups)
    expected.sum().backward()
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(grad_compiled, x.grad, rtol=1e-5, atol=1e-5)
