"""Memory: peak memory of one call and bytes saved for backward (unique storages seen by
``torch.autograd.graph.saved_tensors_hooks``), per op and model case of the tier.

The numbers are attached to each test (``record_property``: junit XML, ``-rA`` output) and also
checked where the op contract makes a promise: a fused backend's backward recomputes the
``[B, h, G, N]`` maps (docs/assign_op.md), so besides its inputs it may keep only ``out``,
``r`` and the seed; the reference keeps at least one such map, which the count must see.
"""

from __future__ import annotations

import pytest
import torch

from groupvit_fast.bench import peak_memory, saved_bytes
from groupvit_fast.ops import BACKENDS


def _nbytes(shape, dtype) -> int:
    return int(torch.Size(shape).numel()) * torch.empty((), dtype=dtype).element_size()


def test_op_memory(op_item, device, require_impl, build, record_property):
    case, impl = op_item
    require_impl(impl)
    s = case.shape
    runner = build(case, impl)
    runner.fn()  # warm-up (compiles where needed)
    peak = peak_memory(runner.fn, device)
    record_property("peak_mem_bytes", peak)
    out_bytes = _nbytes((s.batch, s.groups, s.channels), case.torch_dtype)
    if peak is not None:  # None: this torch's profiler exposes no CPU allocation events
        assert peak >= out_bytes, "the call allocates its output at least: the peak measurement is broken"
    if not case.mode.backward:
        return
    total, extra = saved_bytes(runner.forward_for_saved, runner.owned_storages)
    record_property("saved_bytes", total)
    record_property("saved_extra_bytes", extra)
    attn_map = _nbytes((s.batch, s.heads, s.groups, s.tokens), case.torch_dtype)
    if impl in BACKENDS and impl != "reference":
        # out [B,G,C] in the input dtype, r [B,h,G] float32, the int64 [seed, offset] pair
        allowed = out_bytes + _nbytes((s.batch, s.heads, s.groups), torch.float32) + 16
        assert extra <= allowed, (
            f"{impl} keeps {extra} bytes besides its inputs for backward, more than "
            f"out + r + seed = {allowed}: a [B,h,G,N] map ({attn_map} bytes) is saved"
        )
    elif impl == "reference":
        assert extra >= attn_map, "the reference saves its softmax over groups: the count misses it"


def _check_training_memory(case, impl, device, build, record_property):
    """A training step's peak memory and saved bytes: a training forward saves activations."""
    runner = build(case, impl)
    runner.fn()  # warm-up: optimizer state, compilation
    record_property("peak_mem_bytes", peak_memory(runner.fn, device))
    total, extra = saved_bytes(runner.forward_for_saved, runner.owned_storages)
    record_property("saved_bytes", total)
    record_property("saved_extra_bytes", extra)
    assert extra > 0, "a training forward saves activations: the count misses them"


def test_model_memory(model_item, device, build, require_impl, record_property):
    case, impl = model_item
    require_impl(impl)
    if case.task != "train":
        pytest.skip("eval runs without grad: nothing is saved for backward; peak memory is in the report")
    _check_training_memory(case, impl, device, build, record_property)


def test_train_step_memory(train_item, device, build, require_impl, record_property):
    case, impl = train_item
    require_impl(impl)
    if case.task != "step":
        pytest.skip("the loader runs no model: nothing is saved for backward")
    _check_training_memory(case, impl, device, build, record_property)
