"""Training configs: the shipped recipes, NVlabs files as they are, overrides, and one-line refusals."""

from __future__ import annotations

import os

import pytest

pytest.importorskip("omegaconf")

from groupvit_fast.train.config import CONFIG_DIR, load_config  # noqa: E402


@pytest.mark.parametrize(
    "recipe, datasets, multi_label",
    [
        ("group_vit_gcc_yfcc_30e", ["gcc3m", "gcc12m", "yfcc14m"], 3),
        ("group_vit_gcc_redcap_30e", ["gcc3m", "gcc12m", "redcap12m"], 0),
    ],
)
def test_recipes_hold_nvlabs_facts(recipe, datasets, multi_label):
    cfg = load_config(recipe)
    assert list(cfg.data.dataset.train) == datasets
    assert cfg.model.multi_label == multi_label  # ${data.text_aug.multi_label}, resolved
    assert (cfg.train.base_lr, cfg.train.warmup_lr, cfg.train.min_lr) == (1.6e-3, 4e-6, 4e-5)
    assert (cfg.train.epochs, cfg.train.warmup_epochs, cfg.train.clip_grad) == (30, 2, 5.0)
    assert cfg.model.img_encoder.depths == [6, 3, 3] and cfg.model.text_encoder.layers == 12
    assert cfg.data.dataset.meta.yfcc14m.length == 14615499
    assert cfg.model_name == f"{recipe}_bs256x1" and cfg.output == os.path.join("output", f"{recipe}_bs256x1")


def test_an_original_config_file_loads_from_anywhere(tmp_path):
    # an NVlabs recipe copied without its default.yml next to it: _base_ falls back to ours
    with open(os.path.join(CONFIG_DIR, "group_vit_gcc_yfcc_30e.yml")) as f:
        (tmp_path / "mine.yml").write_text(f.read())
    cfg = load_config(str(tmp_path / "mine.yml"), ["data.batch_size=128", "train.epochs=10"], world_size=8, tag="try1")
    assert cfg.data.batch_size == 128 and cfg.train.epochs == 10
    assert cfg.output == os.path.join("output", "mine_bs128x8", "try1")


def test_base_chain_and_override_order(tmp_path):
    (tmp_path / "a.yml").write_text("_base_: tiny.yml\ntrain:\n  epochs: 3\n")
    (tmp_path / "tiny.yml").write_text("_base_: group_vit_gcc_yfcc_30e.yml\ntrain:\n  epochs: 2\n  seed: 7\n")
    cfg = load_config(str(tmp_path / "a.yml"), ["train.seed=9"], output=str(tmp_path / "out"))
    assert (cfg.train.epochs, cfg.train.seed, cfg.data.seed) == (3, 9, 9)
    assert cfg.output == str(tmp_path / "out")


@pytest.mark.parametrize(
    "text, opts, message",
    [
        ("train:\n  lr: 0.1\n", [], "unknown config key 'train.lr'"),
        ("train:\n  base_lr: fast\n", [], "config key 'train.base_lr' in"),
        ("data:\n  batch_size: 1.5\n", [], "'data.batch_size' in"),
        (
            "",
            ["train.epochz=3"],
            "unknown config key 'train.epochz' in --opts train.epochz=3 (did you mean 'train.epochs'?)",
        ),
        ("", ["data.num_workers=many"], "'data.num_workers' in --opts"),
        ("", ["train.epochs"], "--opts expects key=value"),
        (
            "data:\n  dataset:\n    meta:\n      x: {type: tarballs, path: a, prefix: b, length: 1}\n",
            [],
            "'data.dataset.meta.x.type'",
        ),
        (
            "data:\n  dataset:\n    meta:\n      x: {type: img_txt_pair, path: a, length: 1, size: 3}\n",
            [],
            "unknown config key 'data.dataset.meta.x.size'",
        ),
        ("train: [1, 2\n", [], "not a valid YAML config"),
        (
            "data:\n  dataset:\n    meta:\n      x: {type: img_txt_pair, path: a}\n",
            [],
            "config key 'data.dataset.meta.x.length' in",
        ),
        ("data:\n  seed: ${train.nothing}\n", [], "config key 'data.seed' in"),
    ],
)
def test_bad_configs_are_refused_in_one_line(tmp_path, text, opts, message):
    path = tmp_path / "bad.yml"
    path.write_text("_base_: tiny.yml\n" + text)
    with pytest.raises(ValueError) as err:
        load_config(str(path), opts)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_the_loaded_config_refuses_a_key_it_lacks(tmp_path):
    from omegaconf.errors import ConfigAttributeError

    cfg = load_config("tiny", output=str(tmp_path))
    cfg.train.epochs = 3  # a key of the schema: fine
    with pytest.raises(ConfigAttributeError):
        cfg.train.epochz = 3


def test_a_config_without_model_is_refused(tmp_path):
    (tmp_path / "nomodel.yml").write_text("train:\n  epochs: 1\n")
    with pytest.raises(ValueError, match="no 'model' section"):
        load_config(str(tmp_path / "nomodel.yml"))


def test_missing_config_file_names_the_recipes():
    with pytest.raises(ValueError, match="no such config file .*tiny"):
        load_config("no/such.yml")
