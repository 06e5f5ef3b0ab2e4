"""Checkpoints: atomic under a kill, keep-last-K, and readable by load_checkpoint / groupvit-fast convert."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest
import torch

from groupvit_fast.common.files import TEMP_PREFIX
from groupvit_fast.train.checkpointing import atomic_save, find_latest, load_training_checkpoint, prune_epoch_files


def test_kill_during_save_leaves_the_previous_checkpoint(tmp_path):
    path = str(tmp_path / "checkpoint.pth")
    atomic_save({"model": {"w": torch.ones(3)}, "optimizer": {}, "lr_scheduler": {}, "step": 1}, path)
    # a child saving ~400 MB through atomic_save, killed while it writes
    script = textwrap.dedent(f"""
        import torch
        from groupvit_fast.train.checkpointing import atomic_save
        print("start", flush=True)
        atomic_save({{"model": {{"w": torch.zeros(100_000_000)}}, "optimizer": {{}}, "lr_scheduler": {{}},
                     "step": 2}}, {path!r})
    """)
    child = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert child.stdout.readline().strip() == "start"
    deadline = time.time() + 60
    while not any(name.startswith(TEMP_PREFIX) for name in os.listdir(tmp_path)) and time.time() < deadline:
        time.sleep(0.01)
    child.send_signal(signal.SIGKILL)
    child.wait()
    state = load_training_checkpoint(path)
    assert state["step"] == 1 and torch.equal(state["model"]["w"], torch.ones(3))
    assert find_latest(str(tmp_path)) == path


@pytest.mark.parametrize("max_kept, left", [(-1, [0, 1, 2, 3]), (2, [2, 3]), (0, [])])
def test_keep_last_k(tmp_path, max_kept, left):
    for epoch in range(4):
        (tmp_path / f"ckpt_epoch_{epoch}.pth").write_bytes(b"x")
    prune_epoch_files(str(tmp_path), max_kept)
    assert sorted(os.listdir(tmp_path)) == [f"ckpt_epoch_{e}.pth" for e in left]


def test_foreign_or_broken_files_are_refused(tmp_path):
    (tmp_path / "broken.pth").write_bytes(b"PK\x03\x04garbage")
    with pytest.raises(ValueError, match="not a readable training checkpoint"):
        load_training_checkpoint(str(tmp_path / "broken.pth"))
    torch.save({"model": {"w": torch.ones(1)}}, tmp_path / "weights.pth")
    with pytest.raises(ValueError, match="use --init"):
        load_training_checkpoint(str(tmp_path / "weights.pth"))


def test_training_checkpoint_loads_and_converts(shards, make_config, text_transform, tmp_path):
    pytest.importorskip("webdataset")
    from groupvit_fast import load_checkpoint
    from groupvit_fast.cli import main
    from groupvit_fast.train import Trainer

    cfg = make_config(shards, **{"train.max_steps": 2})
    trainer = Trainer(cfg, quiet=True, text_transform=text_transform, device="cpu")
    trainer.run()
    path = os.path.join(cfg.output, "checkpoint.pth")
    ckpt = load_checkpoint(path)  # builds the model from the stored config
    for key, value in trainer.model.state_dict().items():
        torch.testing.assert_close(ckpt.model.state_dict()[key], value, rtol=0, atol=0)
    assert ckpt.meta["step"] == 2
    out = str(tmp_path / "weights.safetensors")
    assert main(["convert", path, out]) == 0
    assert load_checkpoint(out).kind == "full"
