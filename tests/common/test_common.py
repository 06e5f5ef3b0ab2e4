"""The shared facts (groupvit_fast.common): autocast names, atomic writes, rank and process group."""

from __future__ import annotations

import os

import pytest
import torch

from groupvit_fast.common.distributed import join_process_group, launched_world_size, rank_and_world
from groupvit_fast.common.files import TEMP_PREFIX, atomic_write
from groupvit_fast.common.precision import autocast_context, autocast_dtype

CPU, CUDA = torch.device("cpu"), torch.device("cuda")


@pytest.mark.parametrize(
    "choice, device, expected",
    [
        (None, CPU, None),
        (False, CPU, None),
        ("fp32", CPU, None),
        ("none", CPU, None),
        (torch.float32, CPU, None),
        ("bf16", CPU, torch.bfloat16),
        ("BFloat16", CPU, torch.bfloat16),
        (torch.bfloat16, CPU, torch.bfloat16),
        ("fp16", CPU, torch.float16),
        ("float16", CUDA, torch.float16),
        (torch.float16, CUDA, torch.float16),
        ("auto", CPU, None),
        ("auto", CUDA, torch.bfloat16),
    ],
)
def test_autocast_names(choice, device, expected):
    assert autocast_dtype(choice, device) == expected


@pytest.mark.parametrize("choice", ["fp8", "half-ish", 16, torch.int8])
def test_unknown_autocast_names_are_refused_naming_the_key(choice):
    with pytest.raises(ValueError, match=r"^train\.amp_dtype must be auto, bf16, fp16 or fp32, got"):
        autocast_dtype(choice, CPU, key="train.amp_dtype")


def test_fp16_off_cuda_is_refused_where_asked():
    assert autocast_dtype("fp16", CPU) == torch.float16
    with pytest.raises(ValueError, match="autocast='fp16' needs a CUDA device"):
        autocast_dtype("fp16", CPU, fp16_needs_cuda=True)


@pytest.mark.parametrize("disable_outer, inner_enabled", [(False, True), (True, False)])
def test_autocast_context_for_fp32_keeps_or_stops_an_enclosing_autocast(disable_outer, inner_enabled):
    with torch.autocast("cpu", dtype=torch.bfloat16):
        with autocast_context("cpu", None, disable_outer=disable_outer):
            assert torch.is_autocast_enabled("cpu") is inner_enabled
        with autocast_context("cpu", torch.bfloat16):
            assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.bfloat16


def test_atomic_write_replaces_whole_files_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "out.txt"
    path.write_text("old")
    atomic_write(str(path), lambda tmp: open(tmp, "w").write("new"), durable=True)
    assert path.read_text() == "new"
    mask = os.umask(0)
    os.umask(mask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~mask  # what open(path, "w") gives, not mkstemp's 0o600

    def fail(tmp: str) -> None:
        with open(tmp, "w") as f:
            f.write("half")
        raise RuntimeError("killed mid-write")

    with pytest.raises(RuntimeError):
        atomic_write(str(path), fail)
    assert path.read_text() == "new"
    assert [p.name for p in tmp_path.iterdir()] == ["out.txt"]
    assert TEMP_PREFIX.startswith(".")  # hidden: globs for results skip a temporary left by a kill


def test_one_process_without_torchrun(monkeypatch):
    for name in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    assert rank_and_world() == (0, 1) and launched_world_size() == 1
    info = join_process_group("cpu")
    assert (info.rank, info.world, info.device, info.is_main) == (0, 1, CPU, True)
    assert not torch.distributed.is_initialized()


def test_cuda_without_a_device_is_one_line(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError, match=r"^--device cuda:1: no CUDA device is available$"):
        join_process_group("cuda:1")
