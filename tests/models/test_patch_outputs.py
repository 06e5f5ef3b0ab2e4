"""Patched modules return every output the original returns, with the original's gradients.

Specification (docs/groupvit.md, "Patching Hugging Face and NVlabs code"; docs/assign_op.md,
"Differentiability of the maps"):

* a patched Hugging Face ``GroupViTModel`` (instance or class patching) returns the same outputs as
  the unpatched one (same fields, the same ``None`` where HF gives ``None``), with and without
  ``output_attentions``, in eval mode and, with the same Gumbel noise, in training mode; every
  returned tensor that HF makes differentiable is differentiable, and gradients through all of them
  equal HF's;
* attention weights asked for (argument or config) are HF's own; not asked for, the fast path runs;
* NVlabs-style ``AssignAttention`` (and groupvit_fast's own) returns ``hard`` and ``soft`` maps that
  are differentiable as NVlabs' are (``hard`` straight-through), and without maps nothing
  ``[B, h, G, N]``-sized is saved for backward.

Oracles: the unpatched Hugging Face model; NVlabs-style modules written here from NVlabs' formulas;
groupvit_fast's reference backend (NVlabs' math under plain autograd). Tolerances: fp32 round-off
relative to each result's size (tests/helpers/tolerances.py); gradients against the model's
largest gradient, as a parameter whose exact gradient is zero holds only round-off.
"""

from __future__ import annotations

import copy
from contextlib import contextmanager

import pytest
import torch
from torch import nn

import groupvit_fast
import groupvit_fast.models.grouping as grouping
from groupvit_fast import GroupViT, apply_groupvit_fast
from groupvit_fast.ops import backend_usage
from groupvit_fast.ops.attention import attention_backend_usage
from groupvit_small import hf_small_config, random_text
from tolerances import assert_close_to_float64_oracle, assert_close_to_scale

transformers = pytest.importorskip("transformers")
hf_groupvit = pytest.importorskip("transformers.models.groupvit.modeling_groupvit")

MODES = ("instance", "classes")


# ---- helpers -----------------------------------------------------------------------------------


@contextmanager
def patched(model: nn.Module, mode: str):
    """Patch ``model`` by instance or by class for the block; always restored."""
    if mode == "instance":
        apply_groupvit_fast(model)
        try:
            yield
        finally:
            groupvit_fast.revert_groupvit_fast(model)
    else:
        groupvit_fast.apply_groupvit_fast_to_classes("transformers")
        try:
            yield
        finally:
            groupvit_fast.revert_groupvit_fast_classes("transformers")


def flatten(output, prefix: str = "") -> dict[str, torch.Tensor | None]:
    """Every field of a (nested) HF ModelOutput or tuple, by path; ``None`` fields kept."""
    if isinstance(output, transformers.utils.ModelOutput):
        items = [(k, getattr(output, k)) for k in output.__dataclass_fields__]
    elif isinstance(output, dict):
        items = list(output.items())
    elif isinstance(output, (tuple, list)):
        items = [(str(i), v) for i, v in enumerate(output)]
    else:
        return {prefix: output}
    flat = {}
    for key, value in items:
        flat.update(flatten(value, f"{prefix}.{key}" if prefix else key))
    return flat


def shared_noise(shape: tuple[int, int, int, int]) -> torch.Tensor:
    """``[B, h, G, N]`` Gumbel noise that depends on the shape only: both sides draw the same per block."""
    g = torch.Generator().manual_seed(hash(shape) % 2**31)
    finfo = torch.finfo(torch.float32)
    u = torch.rand(shape, generator=g).clamp(min=finfo.tiny, max=1 - finfo.eps)
    return -torch.log(-torch.log(u))


@pytest.fixture
def same_noise(monkeypatch):
    """Hugging Face's ``gumbel_softmax`` and groupvit_fast's assignment draw ``shared_noise``."""

    def hf_gumbel_softmax(logits, tau=1, hard=False, dim=-1):
        b, g, n = logits.shape
        y_soft = ((logits + shared_noise((b, 1, g, n))[:, 0].to(logits.dtype)) / tau).softmax(dim)
        if not hard:
            return y_soft
        index = y_soft.max(dim, keepdim=True)[1]
        return torch.zeros_like(logits).scatter_(dim, index, 1.0) - y_soft.detach() + y_soft

    op = grouping.assign_attention

    def op_with_noise(q, k, v, **kwargs):
        if kwargs.get("gumbel") and kwargs.get("noise") is None:
            kwargs["noise"] = shared_noise((q.shape[0], kwargs["num_heads"], q.shape[1], k.shape[1]))
        return op(q, k, v, **kwargs)

    def sample(shape, *, device, seed=None):
        return shared_noise(tuple(shape)).to(device)

    monkeypatch.setattr(hf_groupvit, "gumbel_softmax", hf_gumbel_softmax)
    monkeypatch.setattr(grouping, "assign_attention", op_with_noise)
    monkeypatch.setattr(grouping, "sample_gumbel", sample)


def run_hf(model, images, text, *, output_attentions: bool):
    """Everything the model returns for one call, and the gradients of a scalar that reads all of it."""
    model.zero_grad(set_to_none=True)
    images = images.clone().requires_grad_(True)
    outputs = {
        "model": model(
            input_ids=text,
            pixel_values=images,
            return_loss=True,
            output_hidden_states=True,
            output_attentions=output_attentions,
            output_segmentation=output_attentions,
            return_dict=True,
        ),
        # GroupViTModel does not pass output_attentions to its text model: ask the text model directly
        "text": model.text_model(input_ids=text, output_attentions=output_attentions, output_hidden_states=True),
        "image_features": model.get_image_features(pixel_values=images),
    }
    flat = flatten(outputs)
    # a fixed random read-out of every returned tensor: its gradient reaches every output's graph
    g = torch.Generator().manual_seed(1)
    scalar = sum(
        (t * torch.randn(t.shape, generator=g)).sum()
        for t in flat.values()
        if isinstance(t, torch.Tensor) and t.requires_grad
    )
    scalar.backward()
    grads = {name: p.grad for name, p in model.named_parameters() if p.grad is not None}
    grads["pixel_values"] = images.grad
    return flat, grads


def assert_same_outputs(out: dict, ref: dict, ref64: dict | None = None) -> None:
    """Same fields as the original; each tensor within fp32 round-off: against the original's float64
    run when given (FlashAttention's rule), else relative to its size."""
    assert out.keys() == ref.keys()
    for key in ref:
        if ref[key] is None or not isinstance(ref[key], torch.Tensor):
            assert out[key] is None if ref[key] is None else out[key] == ref[key], key
            continue
        assert out[key] is not None, f"{key}: the original returns a tensor, the patched model None"
        assert out[key].requires_grad == ref[key].requires_grad, f"{key}: requires_grad differs"
        if ref64 is None or not ref[key].is_floating_point():
            assert_close_to_scale(out[key], ref[key], msg=key)
        else:
            assert_close_to_float64_oracle(out[key], ref[key], ref64[key], msg=key)


def assert_same_gradients(grads: dict, ref: dict, ref64: dict | None = None) -> None:
    """Gradients as ``assert_same_outputs``, parameters against the model's largest gradient (a parameter
    whose exact gradient is zero holds only round-off)."""
    assert grads.keys() == ref.keys()
    largest = max(g.abs().max().item() for name, g in ref.items() if name != "pixel_values")
    for name in ref:
        scale = ref[name].abs().max().item() if name == "pixel_values" else largest
        if ref64 is None:
            assert_close_to_scale(grads[name], ref[name], msg=name, scale=scale)
        else:
            assert_close_to_float64_oracle(grads[name], ref[name], ref64[name], msg=name, scale=scale)


# ---- Hugging Face ------------------------------------------------------------------------------


def test_top_level_exports_name_the_patch_functions():
    from groupvit_fast import patch

    for name in (
        "apply_groupvit_fast",
        "revert_groupvit_fast",
        "apply_groupvit_fast_to_classes",
        "revert_groupvit_fast_classes",
    ):
        assert getattr(groupvit_fast, name) is getattr(patch, name)
        assert name in groupvit_fast.__all__


@pytest.mark.parametrize("output_attentions", [False, True], ids=["no_attentions", "attentions"])
@pytest.mark.parametrize("training", [False, True], ids=["eval", "train"])
@pytest.mark.parametrize("mode", MODES)
def test_hf_outputs_and_gradients_equal_the_original(mode, training, output_attentions, same_noise):
    torch.manual_seed(0)
    model = transformers.GroupViTModel(hf_small_config()).train(training)
    images, text = torch.randn(2, 3, 64, 64), random_text(2)
    ref, ref_grads = run_hf(model, images, text, output_attentions=output_attentions)
    # the oracle: the original in float64 (the same weights, inputs and noise); the tolerance is the
    # original's own fp32 error against it, so it holds on AVX2 and AVX-512 machines alike
    ref64, ref64_grads = run_hf(
        copy.deepcopy(model).double(), images.double(), text, output_attentions=output_attentions
    )
    with patched(model, mode):
        assign_before, attn_before = sum(backend_usage().values()), sum(attention_backend_usage().values())
        out, grads = run_hf(model, images, text, output_attentions=output_attentions)
        assert sum(backend_usage().values()) > assign_before  # the grouping blocks ran groupvit_fast's op
        assert sum(attention_backend_usage().values()) > attn_before
    assert_same_outputs(out, ref, ref64)
    assert_same_gradients(grads, ref_grads, ref64_grads)
    text_attentions = ref["text.attentions"] if not output_attentions else ref["text.attentions.0"]
    assert (text_attentions is None) == (not output_attentions)


@pytest.mark.parametrize("how", ["argument", "config"])
@pytest.mark.parametrize("mode", MODES)
def test_hf_text_attention_weights_are_returned_when_asked_for(mode, how):
    torch.manual_seed(0)
    model = transformers.GroupViTModel(hf_small_config()).eval()
    text = random_text(3)
    kwargs = {"output_attentions": True} if how == "argument" else {}
    if how == "config":
        model.text_model.config.output_attentions = True
    with torch.no_grad():
        ref = model.text_model(input_ids=text, **kwargs).attentions
        with patched(model, mode):
            out = model.text_model(input_ids=text, **kwargs).attentions
            model.text_model.config.output_attentions = False
            before = attention_backend_usage()
            none = model.text_model(input_ids=text).attentions
            fast_calls = sum(attention_backend_usage().values()) - sum(before.values())
    assert len(out) == len(ref) == 2
    for a, b in zip(out, ref, strict=True):
        assert a.shape == (3, 1, 16, 16)
        torch.testing.assert_close(a, b, rtol=0, atol=0)  # HF's own eager math computed them
    assert none is None
    assert fast_calls == 2  # without weights asked for, both layers took multi_head_attention


@pytest.mark.parametrize("mode", MODES)
def test_hf_grouping_maps_take_gradients_like_the_original(mode):
    """What Hugging Face's test_retain_grad_hidden_states_attentions needs, and the gradient itself."""
    torch.manual_seed(0)
    model = transformers.GroupViTVisionModel(hf_small_config().vision_config).eval()
    images = torch.randn(2, 3, 64, 64)
    ref = model(pixel_values=images, output_attentions=True).attentions
    weight = model.vision_model.embeddings.patch_embeddings.projection.weight
    ref_grads = [torch.autograd.grad(m.square().sum(), weight, retain_graph=True)[0] for m in ref]
    with patched(model, mode):
        out = model(pixel_values=images, output_attentions=True).attentions
        for m in out:
            m.retain_grad()  # HF's test: raises unless the map is part of the graph
        grads = [torch.autograd.grad(m.square().sum(), weight, retain_graph=True)[0] for m in out]
        with torch.no_grad():
            read_out = model(pixel_values=images, output_attentions=True).attentions
    for a, b, ga, gb in zip(out, ref, grads, ref_grads, strict=True):
        assert a.requires_grad and b.requires_grad
        assert_close_to_scale(a, b)
        assert_close_to_scale(ga, gb)
    for a, b in zip(read_out, ref, strict=True):  # under no_grad the op's own maps: values equal
        assert not a.requires_grad
        assert_close_to_scale(a, b)


# ---- NVlabs-style modules and groupvit_fast's own --------------------------------------------------


class AssignAttention(nn.Module):
    """NVlabs' ``AssignAttention`` (class name and attributes as in NVlabs' models/group_vit.py), with
    its Gumbel noise drawn by ``grouping.sample_gumbel`` so the test can hand both sides the same."""

    def __init__(self, dim, num_heads=1, hard=True, gumbel=True, gumbel_tau=1.0):
        super().__init__()
        self.num_heads, self.scale = num_heads, (dim // num_heads) ** -0.5
        self.q_proj, self.k_proj, self.v_proj = nn.Linear(dim, dim), nn.Linear(dim, dim), nn.Linear(dim, dim)
        self.attn_drop, self.proj, self.proj_drop = nn.Dropout(0.0), nn.Linear(dim, dim), nn.Dropout(0.0)
        self.hard, self.gumbel, self.gumbel_tau, self.sum_assign, self.assign_eps = hard, gumbel, gumbel_tau, False, 1.0

    def get_attn(self, attn, gumbel=True, hard=None):
        hard = self.hard if hard is None else hard
        if gumbel and self.gumbel and self.training:
            attn = attn + grouping.sample_gumbel(tuple(attn.shape), device=attn.device)
            y = (attn / self.gumbel_tau).softmax(dim=-2)
        else:
            y = attn.softmax(dim=-2)
        if not hard:
            return y
        one_hot = torch.zeros_like(y).scatter_(-2, y.argmax(-2, keepdim=True), 1.0)
        return one_hot - y.detach() + y

    def forward(self, query, key=None, *, value=None, return_attn=False):
        b, g, c = query.shape
        key = query if key is None else key
        value = key if value is None else value
        h = self.num_heads
        q = self.q_proj(query).view(b, g, h, c // h).transpose(1, 2)
        k = self.k_proj(key).view(b, -1, h, c // h).transpose(1, 2)
        v = self.v_proj(value).view(b, -1, h, c // h).transpose(1, 2)
        raw = q @ k.transpose(-2, -1) * self.scale
        attn = self.get_attn(raw)
        attn_dict = None
        if return_attn:
            attn_dict = {"hard": attn.clone(), "soft": self.get_attn(raw, gumbel=False, hard=False)}
        attn = attn / (attn.sum(dim=-1, keepdim=True) + self.assign_eps)
        out = (attn @ v).transpose(1, 2).reshape(b, g, c)
        return self.proj_drop(self.proj(out)), attn_dict


def _nvlabs_run(module, query, key, return_attn):
    module.zero_grad(set_to_none=True)
    query, key = query.clone().requires_grad_(True), key.clone().requires_grad_(True)
    out, maps = module(query, key, return_attn=return_attn)
    g = torch.Generator().manual_seed(2)
    tensors = [out] + ([maps["hard"], maps["soft"]] if return_attn else [])
    sum((t * torch.randn(t.shape, generator=g)).sum() for t in tensors).backward()
    grads = {"query": query.grad, "key": key.grad, **{n: p.grad for n, p in module.named_parameters()}}
    return tensors, grads


@pytest.mark.parametrize("num_heads", [1, 2])
@pytest.mark.parametrize("hard", [True, False], ids=["hard", "soft_assign"])
@pytest.mark.parametrize("training", [False, True], ids=["eval", "train"])
@pytest.mark.parametrize("return_attn", [False, True], ids=["no_maps", "maps"])
def test_nvlabs_style_maps_and_gradients_equal_the_original(return_attn, training, hard, num_heads, same_noise):
    torch.manual_seed(0)
    module = AssignAttention(32, num_heads=num_heads, hard=hard, gumbel_tau=0.7).train(training)
    query, key = torch.randn(2, 5, 32), torch.randn(2, 37, 32)
    ref, ref_grads = _nvlabs_run(module, query, key, return_attn)
    assert apply_groupvit_fast(module) == {"nvlabs.AssignAttention": 1}
    before = sum(backend_usage().values())
    out, grads = _nvlabs_run(module, query, key, return_attn)
    assert sum(backend_usage().values()) == before + 1
    for a, b in zip(out, ref, strict=True):
        assert a.requires_grad
        assert_close_to_scale(a, b)
    largest = max(g.abs().max().item() for g in ref_grads.values())
    for name in ref_grads:
        assert_close_to_scale(grads[name], ref_grads[name], msg=name, scale=largest)


@pytest.mark.parametrize("training", [False, True], ids=["eval", "train"])
def test_groupvit_fast_maps_equal_the_reference_backend_with_gradients(training):
    """Our GroupViT's maps under autograd are the reference path's, gradients included; in training the
    maps path draws its noise where and as the reference backend does (torch's generator)."""
    kwargs = dict(
        img_size=64,
        embed_dim=64,
        num_heads=[2, 2, 2],
        depths=[1, 1, 1],
        num_group_tokens=[8, 4, 0],
        num_output_groups=[8, 4],
    )
    torch.manual_seed(0)
    fast = GroupViT(**kwargs).train(training)
    original = GroupViT(**kwargs, attn_backend="explicit", assign_backend="reference").train(training)
    original.load_state_dict(fast.state_dict())
    images = torch.randn(2, 3, 64, 64)
    results = []
    for model in (original, fast):
        torch.manual_seed(3)
        x, dicts = model(images, return_attn=True)
        maps = [d[name] for d in dicts if d is not None for name in ("hard", "soft")]
        assert len(maps) == 4 and all(m.requires_grad for m in maps)
        g = torch.Generator().manual_seed(4)
        grads = torch.autograd.grad(
            sum((t * torch.randn(t.shape, generator=g)).sum() for t in [x, *maps]),
            list(model.parameters()),
            allow_unused=True,
        )
        results.append(([x, *maps], grads))
    (ref, ref_grads), (out, grads) = results
    for a, b in zip(out, ref, strict=True):
        assert_close_to_scale(a, b)
    largest = max(g.abs().max().item() for g in ref_grads if g is not None)
    for a, b in zip(grads, ref_grads, strict=True):
        assert (a is None) == (b is None)
        if b is not None:
            assert_close_to_scale(a, b, scale=largest)


def _saved_shapes(fn) -> list[tuple[int, ...]]:
    shapes = []

    def pack(t):
        shapes.append(tuple(t.shape))
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn()
    return shapes


@pytest.mark.parametrize("training", [False, True], ids=["eval", "train"])
@pytest.mark.parametrize("kind", ["nvlabs", "transformers"])
def test_without_maps_nothing_group_by_token_is_saved(kind, training):
    """Memory contract (docs/assign_op.md): maps not asked for, the assignment saves no [B, (1,) G, N]
    tensor for backward; asked for under autograd, the maps' graph keeps them (that is their price)."""
    torch.manual_seed(0)
    if kind == "nvlabs":
        b, g, n, c = 2, 9, 41, 16
        query, key = torch.randn(b, g, c), torch.randn(b, n, c)
        module = AssignAttention(c).train(training)
        apply_groupvit_fast(module)

        def call(maps):
            return module(query, key, return_attn=maps)
    else:  # HF's first stage: 16 image tokens, 8 output groups, one-head assignment
        b, g, n = 2, 8, 16
        model = transformers.GroupViTVisionModel(hf_small_config().vision_config).train(training)
        apply_groupvit_fast(model)
        stage = model.vision_model.encoder.stages[0]
        tokens = torch.randn(b, n, 64)

        def call(maps):
            return stage(tokens, None, output_attentions=maps)

    group_by_token = {(b, g, n), (b, 1, g, n)}
    assert not group_by_token & set(_saved_shapes(lambda: call(False)))
    assert group_by_token & set(_saved_shapes(lambda: call(True)))
