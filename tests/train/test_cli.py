"""``groupvit-fast train``: the tiny recipe end to end, one-line errors, and the evaluation hook."""

from __future__ import annotations

import json
import os

import pytest

pytest.importorskip("webdataset")
pytest.importorskip("timm")


@pytest.mark.parametrize(
    "args, message",
    [
        (["--config", "no_such.yml"], "no such config file"),
        (["--config", "tiny", "--opts", "train.lrr=1"], "unknown config key 'train.lrr'"),
        (["--config", "tiny", "--opts", "data.batch_size=abc"], "'data.batch_size'"),
        (["--config", "tiny", "--opts", "data.dataset.meta.synthetic.type=img_txt_pair"], "no such folder"),
        (["--config", "tiny", "--resume", "/no/such.pth"], "--resume /no/such.pth: no such file"),
    ],
)
def test_bad_input_is_one_line_exit_1(tmp_path, capsys, args, message):
    from groupvit_fast.cli import main

    assert main(["train", *args, "--output", str(tmp_path / "run"), "--quiet"]) == 1
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1, err


def test_tiny_recipe_from_the_command_line(tmp_path, capsys):
    from groupvit_fast.cli import main

    out = str(tmp_path / "run")
    opts = [
        "train.max_steps=3",
        "data.dataset.meta.synthetic.length=256",
        "data.num_workers=1",
        "data.dataset.meta.synthetic.prefix=synthetic-{000000..000001}.tar",
    ]
    assert main(["train", "--config", "tiny", "--output", out, "--quiet", "--opts", *opts]) == 0
    with open(os.path.join(out, "metrics.jsonl")) as f:
        records = [json.loads(line) for line in f]
    assert [r["step"] for r in records] == [3]  # print_freq 5: only the last step
    assert {"loss", "lr", "grad_norm", "images_per_s", "peak_memory_mb"} <= set(records[0])
    assert "global batch 32" in open(os.path.join(out, "log.txt")).read()


def test_evaluation_hook_uses_the_evaluation_api(monkeypatch, shards, make_config, text_transform, tmp_path):
    from groupvit_fast.train import Trainer, hooks

    calls = []

    def fake_seg(model, *, dataset, data_root, **kwargs):
        calls.append((dataset, data_root, model.training))
        return {"mIoU": 12.5, "aAcc": 50.0, "mAcc": 20.0, "per_class": {}, "num_images": 3}

    monkeypatch.setattr(hooks, "_evaluation_api", lambda: (None, fake_seg))
    (tmp_path / "voc").mkdir()
    cfg = make_config(
        shards,
        **{
            "train.epochs": 2,
            "train.max_steps": 0,
            "evaluate.task": "[seg]",
            "evaluate.seg.dataset": "voc",
            "evaluate.seg.data_root": str(tmp_path / "voc"),
            "data.dataset.meta.synthetic.length": 32,
        },
    )
    trainer = Trainer(cfg, quiet=True, text_transform=text_transform, device="cpu")
    trainer.run()
    assert calls == [("voc", str(tmp_path / "voc"), False)] * 2  # every epoch, in eval mode
    evals = [json.loads(line) for line in open(os.path.join(cfg.output, "metrics.jsonl")) if '"eval"' in line]
    assert [e["eval"] for e in evals] == [{"seg/voc/mIoU": 12.5, "seg/voc/aAcc": 50.0, "seg/voc/mAcc": 20.0}] * 2


def test_evaluation_hook_folder_fallback(monkeypatch, shards, make_config, text_transform, tmp_path, model_config):
    import numpy as np
    from PIL import Image

    from groupvit_fast.train import Trainer, hooks

    monkeypatch.setattr(hooks, "_evaluation_api", lambda: None)
    (tmp_path / "img").mkdir()
    (tmp_path / "gt").mkdir()
    Image.new("RGB", (64, 48), (200, 20, 20)).save(tmp_path / "img" / "a.jpg")
    Image.fromarray(np.ones((48, 64), np.uint8)).save(tmp_path / "gt" / "a.png")
    model = model_config()
    model["text_encoder"]["vocab_size"] = 49408  # the segmenter's class prompts use the CLIP tokenizer
    cfg = make_config(
        shards,
        model=model,
        **{
            "train.epochs": 1,
            "evaluate.task": "[seg]",
            "evaluate.seg.images": str(tmp_path / "img"),
            "evaluate.seg.gt": str(tmp_path / "gt"),
            "evaluate.seg.classes": "'red,blue'",
            "data.dataset.meta.synthetic.length": 32,
        },
    )
    trainer = Trainer(cfg, quiet=True, text_transform=text_transform, device="cpu")
    trainer.run()
    result = trainer.metrics
    assert 0 <= result["seg/folder/mIoU"] <= 100 and 0 <= result["seg/folder/aAcc"] <= 100


def test_evaluation_hook_runs_the_real_evaluation(shards, make_config, tmp_path):
    """The hook with groupvit_fast.evaluation itself (no fake) on a tiny VOC layout: its metrics are
    exactly those of calling evaluate_segmentation directly, and the model comes back in train mode."""
    from eval_data import EVAL_CONFIG, make_layout
    from groupvit_fast import build_model
    from groupvit_fast.evaluation import evaluate_segmentation
    from groupvit_fast.train.hooks import EvaluationHook

    make_layout(str(tmp_path / "voc"), "voc")
    cfg = make_config(
        shards,
        **{"evaluate.task": "[seg]", "evaluate.seg.dataset": "voc", "evaluate.seg.data_root": str(tmp_path / "voc")},
    )
    hook = EvaluationHook(cfg, is_main=True, log=lambda line: None)
    model = build_model(EVAL_CONFIG).train()
    results = hook(model)
    assert model.training
    direct = evaluate_segmentation(
        model.eval(), dataset="voc", data_root=str(tmp_path / "voc"), progress=False, num_workers=0
    )
    assert results == {f"seg/voc/{key}": float(direct[key]) for key in ("mIoU", "aAcc", "mAcc")}
