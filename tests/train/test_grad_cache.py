"""Gradient caching (``train.grad_cache.chunk_size``, docs/training.md "Gradient caching"): one step of
``k`` chunks gives the full-batch step's losses and gradients.

What "the full-batch step" is, per noise setting:

* **no noise** (soft assignment, no dropout, no drop path): the plain ``train_step`` itself, for
  every ``k``: the step's math does not depend on how the encoders were chunked;
* **noise on** (Gumbel noise of the hard assignment, dropout, drop path, each alone and all
  together): a plain step draws its masks and noise for the whole batch at once, a step of ``k``
  chunks per chunk, so for ``k > 1`` the draws differ. The reference is then the full-batch loss
  with one autograd graph over the *same* draws: the encoders run chunk by chunk with a graph,
  from the same generator state and in the same order as the grad cache's first pass, and their
  outputs go through the model's own ``forward_train`` (projectors, BatchNorm over the whole
  batch, losses). For ``k = 1`` the draws are the plain step's and the reference is ``train_step``.

Tolerance, in fp32 and in float64 alike: every gradient entry within ``ROUNDINGS = 1000`` unit
round-offs of the dtype (``u`` = 2^-24, 2^-53) times the model's largest gradient; losses within
``ROUNDINGS * u`` relative. Both sides compute the same per-sample terms; the grad cache sums a
parameter's gradient as ``k`` chunk backwards accumulated in ``.grad`` instead of one backward over
the batch, and reaches the encoder outputs' gradients through ``autograd.grad``: a change of
summation order in sums of ~10^3..10^4 terms (8 pairs x 16 image tokens x 32-64 channels). Measured
(2-core AMD EPYC, torch 2.14.1): 0 u for most settings (bit-equal), at most 56 u here and 470 u
on 2 gloo processes with 4 chunks of one pair (test_grad_cache_distributed.py), the same count in
fp32 and float64, which is what round-off does and a difference in the math would not. It is judged
against the largest gradient because some entries are zero in exact arithmetic and pure round-off
(``mlp_inter.fc2.bias``: a per-token constant the next LayerNorm removes; test_distributed.py).
A replay with fresh noise, without its generator state, or with per-chunk BatchNorm is off by
1e-4..1 of the largest gradient: 10^12 float64 round-offs (the mutations of tests/README.md).
fp32 runs the fused CPU op (its Gumbel ``(seed, offset)`` drawn from torch's CPU generator),
float64 the reference backend (its noise drawn from the generator itself).
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from groupvit_fast import build_model
from groupvit_fast.train.grad_cache import check_chunk_size, grad_cache_refusal, grad_cached_backward
from groupvit_fast.train.step import total_loss, train_step
from tolerances import round_offs

BATCH, MULTI_LABEL = 8, 2
ROUNDINGS = 1000
DTYPES = {"fp32": torch.float32, "fp64": torch.float64}


def bound(dtype: torch.dtype) -> float:
    """``ROUNDINGS`` unit round-offs of ``dtype`` (module docstring)."""
    return round_offs(ROUNDINGS, dtype)


#: noise setting -> GroupViT arguments (hard assignment = Gumbel noise in training)
NOISE = {
    "none": {"hard_assignment": False, "drop_rate": 0.0, "drop_path_rate": 0.0},
    "gumbel": {"hard_assignment": True, "drop_rate": 0.0, "drop_path_rate": 0.0},
    "dropout": {"hard_assignment": False, "drop_rate": 0.2, "drop_path_rate": 0.0},
    "drop_path": {"hard_assignment": False, "drop_rate": 0.0, "drop_path_rate": 0.3},
    "all": {"hard_assignment": True, "drop_rate": 0.2, "drop_path_rate": 0.3},
}


def model_config(noise: str, *, use_checkpoint: bool = False, multi_label: int = MULTI_LABEL) -> dict:
    """The training tests' small model (tests/train/conftest.py), two blocks per stage, with BatchNorm projectors."""
    return {
        "type": "MultiLabelContrastive",
        "img_encoder": {
            "type": "GroupViT",
            "img_size": 32,
            "patch_size": 8,
            "embed_dim": 32,
            "num_heads": [1, 1, 1],
            "depths": [2, 1, 1],
            "num_group_tokens": [8, 4, 0],
            "num_output_groups": [8, 4],
            "use_checkpoint": use_checkpoint,
            **NOISE[noise],
        },
        "text_encoder": {
            "type": "TextTransformer",
            "context_length": 8,
            "width": 64,
            "layers": 1,
            "vocab_size": 100,
            "use_checkpoint": use_checkpoint,
        },
        "contrast_temperature": 0.07,
        "output_dim": 32,
        "proj_num_layers": 2,
        "proj_inner_dim": 64,
        "multi_label": multi_label,
        "sync_bn": False,
    }


def make_batch(batch: int = BATCH, multi_label: int = MULTI_LABEL, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    text = torch.randint(3, 90, (batch, 1 + multi_label, 8), generator=g)
    text[:, :, 5] = 99
    return torch.randn(batch, 3, 32, 32, generator=g), text


def build(noise: str, dtype: torch.dtype = torch.float32, **kwargs) -> nn.Module:
    torch.manual_seed(0)
    return build_model(model_config(noise, **kwargs)).to(dtype).train()


def grads_of(model: nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}


class _Fixed(nn.Module):
    """An encoder stand-in returning precomputed outputs (with their graph)."""

    def __init__(self, out: torch.Tensor, as_dict: bool):
        super().__init__()
        self.out, self.as_dict = out, as_dict

    def forward(self, *args, **kwargs):
        return {"x": self.out} if self.as_dict else self.out


def reference_step(model: nn.Module, image: torch.Tensor, text: torch.Tensor, chunks: int) -> dict[str, torch.Tensor]:
    """The full-batch loss over the grad cache's draws, one graph, then its backward (module docstring)."""
    size = image.shape[0] // chunks
    image_parts, text_parts = [], []
    for start in range(0, image.shape[0], size):  # the grad cache's order: image then text, chunk by chunk
        image_parts.append(model.img_encoder(image[start : start + size], as_dict=True)["x"])
        text_parts.append(model.text_encoder(text[start : start + size].flatten(0, 1)))
    encoders = model.img_encoder, model.text_encoder
    model.img_encoder, model.text_encoder = _Fixed(torch.cat(image_parts), True), _Fixed(torch.cat(text_parts), False)
    try:
        losses = model.forward_train(image, text)  # the model's own projectors and losses on the whole batch
    finally:
        model.img_encoder, model.text_encoder = encoders
    loss = total_loss(losses)
    loss.backward()
    return {**{k: v.detach() for k, v in losses.items()}, "total_loss": loss.detach()}


def plain_step(model: nn.Module, image: torch.Tensor, text: torch.Tensor) -> dict[str, torch.Tensor]:
    losses = model(image, text)
    loss = total_loss(losses)
    loss.backward()
    return {**{k: v.detach() for k, v in losses.items()}, "total_loss": loss.detach()}


def assert_same_step(got_losses, got_grads, want_losses, want_grads) -> None:
    """Losses and every gradient entry within ``bound(dtype)`` (module docstring)."""
    rel = bound(next(iter(want_grads.values())).dtype)
    assert got_losses.keys() == want_losses.keys()
    for key, want in want_losses.items():
        torch.testing.assert_close(got_losses[key], want, rtol=rel, atol=0, msg=lambda m, k=key: f"{k}: {m}")
    assert got_grads.keys() == want_grads.keys()
    largest = max(g.abs().max().item() for g in want_grads.values())
    assert largest > 1e-3  # gradients far above the bound: the comparison is not of zeros
    for name, want in want_grads.items():
        err = (got_grads[name] - want).abs().max().item()
        assert err <= rel * largest, f"{name}: max error {err:.3e} > {rel:.1e} x largest gradient {largest:.3e}"


def run_cached(
    noise: str, chunks: int, seed: int = 5, dtype: torch.dtype = torch.float32, **kwargs
) -> tuple[dict, dict, torch.Tensor]:
    model = build(noise, dtype, **kwargs)
    image, text = make_batch()
    image = image.to(dtype)
    torch.manual_seed(seed)
    losses = grad_cached_backward(model, image, text, BATCH // chunks, device=torch.device("cpu"))
    return losses, grads_of(model), torch.get_rng_state()


def run_reference(
    noise: str, chunks: int, seed: int = 5, dtype: torch.dtype = torch.float32, *, plain: bool = False, **kwargs
) -> tuple[dict, dict, torch.Tensor]:
    model = build(noise, dtype, **kwargs)
    image, text = make_batch()
    image = image.to(dtype)
    torch.manual_seed(seed)
    losses = plain_step(model, image, text) if plain else reference_step(model, image, text, chunks)
    return losses, grads_of(model), torch.get_rng_state()


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("chunks", [1, 2, 4])
@pytest.mark.parametrize("noise", ["all", "gumbel", "dropout", "drop_path"])
def test_a_step_of_k_chunks_equals_the_full_batch_step_on_its_draws(noise, chunks, dtype):
    got_losses, got_grads, got_rng = run_cached(noise, chunks, dtype=DTYPES[dtype])
    want_losses, want_grads, want_rng = run_reference(noise, chunks, dtype=DTYPES[dtype])
    assert_same_step(got_losses, got_grads, want_losses, want_grads)
    assert torch.equal(got_rng, want_rng)  # the next step draws what it would have drawn


@pytest.mark.parametrize("noise", ["all", "gumbel"])
def test_one_chunk_is_the_plain_step(noise):
    assert_same_step(*run_cached(noise, 1)[:2], *run_reference(noise, 1, plain=True)[:2])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("chunks", [1, 2, 4])
def test_without_noise_every_k_is_the_plain_step(chunks, dtype):
    assert_same_step(
        *run_cached("none", chunks, dtype=DTYPES[dtype])[:2],
        *run_reference("none", chunks, dtype=DTYPES[dtype], plain=True)[:2],
    )


@pytest.mark.parametrize("noise", ["gumbel", "dropout", "drop_path"])
def test_the_noise_is_on(noise):
    """Guard: another seed changes the loss, so the exactness tests above do compare random draws."""
    assert not torch.equal(
        run_reference(noise, 1, seed=5)[0]["total_loss"], run_reference(noise, 1, seed=6)[0]["total_loss"]
    )
    assert not torch.equal(run_reference(noise, 2)[0]["total_loss"], run_reference(noise, 1)[0]["total_loss"])


def test_activation_checkpointing_inside_the_chunks():
    got_losses, got_grads, _ = run_cached("all", 2, use_checkpoint=True)
    want_losses, want_grads, _ = run_reference("all", 2)  # same draws: checkpoint restores them in its recompute
    assert_same_step(got_losses, got_grads, want_losses, want_grads)


def test_one_caption_per_image():
    model, reference = build("all", multi_label=0), build("all", multi_label=0)
    image, text = make_batch(multi_label=0)
    torch.manual_seed(5)
    got = grad_cached_backward(model, image, text[:, 0], 2, device=torch.device("cpu"))
    torch.manual_seed(5)
    want = reference_step(reference, image, text, 4)
    assert "multi_label_loss" not in got
    assert_same_step(got, grads_of(model), want, grads_of(reference))


def test_bf16_autocast():
    """bf16 on both sides, the same chunked draws: bf16's unit round-off (2^-8 = 3.9e-3) in the
    encoder outputs and their gradients, bounded at 5e-2 of the largest gradient (about 10 roundings)."""
    model, reference = build("all"), build("all")
    image, text = make_batch()
    torch.manual_seed(5)
    got = grad_cached_backward(model, image, text, 4, device=torch.device("cpu"), autocast_dtype=torch.bfloat16)
    torch.manual_seed(5)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        want = reference_step(reference, image, text, 2)
    torch.testing.assert_close(got["total_loss"].float(), want["total_loss"].float(), rtol=2e-2, atol=0)
    want_grads = grads_of(reference)
    largest = max(g.abs().max().item() for g in want_grads.values())
    for name, grad in grads_of(model).items():
        assert grad.dtype == torch.float32
        assert (grad - want_grads[name]).abs().max().item() <= 5e-2 * largest, name


@pytest.mark.parametrize("scaled", [False, True], ids=["unscaled", "grad-scaler"])
def test_train_step_with_chunks_and_accumulation(scaled):
    """Through ``train_step``: two micro-batches, each its own contrastive batch, the same update with
    and without chunks (no noise, so the plain step is the reference); with a GradScaler (a power of
    two: scaling and unscaling are exact) the cached gradients carry its scale."""
    image, text = make_batch(16)
    batches = [{"image": image[:8], "text": text[:8]}, {"image": image[8:], "text": text[8:]}]
    params = []
    for chunk_size in (None, 2):
        model = build("none")
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
        scaler = torch.amp.GradScaler("cpu", init_scale=2.0**10) if scaled else None
        out = train_step(
            model, batches, optimizer, device=torch.device("cpu"), clip_grad=0.0, chunk_size=chunk_size, scaler=scaler
        )
        params.append(({n: p.detach().clone() for n, p in model.named_parameters()}, out))
    (plain, plain_out), (cached, cached_out) = params
    torch.testing.assert_close(cached_out["total_loss"], plain_out["total_loss"], rtol=bound(torch.float32), atol=0)
    torch.testing.assert_close(cached_out["grad_norm"], plain_out["grad_norm"], rtol=1e-4, atol=0)
    initial = build("none").state_dict()
    moved = max((plain[n] - initial[n]).abs().max().item() for n in plain)
    for name, value in cached.items():
        assert (value - plain[name]).abs().max().item() <= bound(torch.float32) * moved, name


@pytest.mark.parametrize(
    "chunk_size, batch, why",
    [
        (0, 8, "must be positive"),
        (-2, 8, "must be positive"),
        (3, 8, "must divide"),
        (16, 8, "must divide"),
        ("4", 8, "positive int"),
        (True, 8, "positive int"),
        (2.0, 8, "positive int"),
    ],
)
def test_bad_chunk_sizes_are_one_line_errors(chunk_size, batch, why):
    with pytest.raises(ValueError, match=why) as info:
        check_chunk_size(chunk_size, batch)
    assert "\n" not in str(info.value) and "chunk_size" in str(info.value)


def test_a_bad_chunk_size_is_refused_before_any_work():
    model = build("all")
    image, text = make_batch()
    with pytest.raises(ValueError, match="must divide"):
        grad_cached_backward(model, image, text, 3, device=torch.device("cpu"))
    assert not grads_of(model)


@pytest.mark.parametrize(
    "opts, why",
    [
        ({"train.grad_cache.chunk_size": 0}, "must be positive"),
        ({"train.grad_cache.chunk_size": -4}, "must be positive"),
        ({"train.grad_cache.chunk_size": 5}, "must divide"),
        ({"train.grad_cache.chunk_size": 4, "train.compile": True}, "train.compile"),
    ],
)
def test_the_trainer_refuses_bad_settings_before_reading_data(make_config, tmp_path, opts, why):
    from groupvit_fast.train import Trainer

    cfg = make_config(str(tmp_path / "no_shards_here"), **opts)  # the data does not exist: our error comes first
    with pytest.raises(ValueError, match=why) as info:
        Trainer(cfg, device="cpu", quiet=True)
    assert "\n" not in str(info.value)


def test_the_config_key_is_off_by_default_and_set_by_opts(make_config, tmp_path):
    assert make_config(str(tmp_path)).train.grad_cache.chunk_size is None
    assert make_config(str(tmp_path), **{"train.grad_cache.chunk_size": 8}).train.grad_cache.chunk_size == 8


@pytest.mark.parametrize(
    "opts, lr_factor, logged",
    [
        ({"train.accumulation_steps": 2}, 16 / 4096, "each of the 2 micro-batches is its own contrastive batch of 16"),
        ({"train.grad_cache.chunk_size": 4}, 16 / 4096, "the encoders run 4 pairs at a time"),
    ],
)
def test_the_learning_rate_counts_the_contrastive_batch(make_config, shards, text_transform, opts, lr_factor, logged):
    """docs/training.md, "Batch sizes and the learning rate": batch x world, whatever the accumulation; said once."""
    import os

    from groupvit_fast.train import Trainer

    cfg = make_config(shards, model=model_config("all", multi_label=0), **{"train.max_steps": 1, **opts})
    trainer = Trainer(cfg, device="cpu", quiet=True, text_transform=text_transform)
    assert trainer.scheduler.base_lr == pytest.approx(float(cfg.train.base_lr) * lr_factor)
    trainer.run()
    log = open(os.path.join(cfg.output, "log.txt")).read()
    assert log.count(logged) == 1, log
    assert "global batch 16 (the contrastive batch)" in log


@pytest.mark.parametrize(
    "settings, culprit",
    [
        ({"strategy": "fsdp", "world": 2, "compile_model": False, "model_type": "MultiLabelContrastive"}, "fsdp"),
        (
            {"strategy": "ddp", "world": 2, "compile_model": True, "model_type": "MultiLabelContrastive"},
            "train.compile",
        ),
        ({"strategy": "ddp", "world": 1, "compile_model": False, "model_type": "GroupViT"}, "model.type"),
    ],
)
def test_combinations_that_cannot_work_are_refused_in_one_line(settings, culprit):
    why = grad_cache_refusal(**settings)
    assert why and culprit in why and "\n" not in why


@pytest.mark.parametrize("strategy, world", [("ddp", 1), ("ddp", 2), ("fsdp", 1)])
def test_what_works_is_not_refused(strategy, world):
    assert (
        grad_cache_refusal(strategy=strategy, world=world, compile_model=False, model_type="MultiLabelContrastive")
        is None
    )
