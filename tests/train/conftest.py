"""Fixtures of the training tests: synthetic shards, a tiny model config, a word tokenizer, an NLTK tagger.

The test model is a GroupViT of 32x32 images (16 patches of 8 px, 32 channels, 8 -> 4 groups) with a
one-layer 64-wide text encoder over a 100-word vocabulary: ``word_tokenize`` (below) maps the
synthetic captions' words to fixed ids, so the tests need neither the CLIP BPE vocabulary (a
49408 x 64 embedding would dominate the step time) nor the network.
"""

from __future__ import annotations

import zlib

import pytest
import torch

VOCAB = ("a", "photo", "of", "the", "red", "green", "blue", "yellow", "square", "circle", "triangle")
EOT = 99


def word_tokenize(texts, context_length: int) -> torch.Tensor:
    """``[T, context_length]`` ids: 1 = start, known words 3.., others hashed into 20..90, 99 = end."""
    out = torch.zeros(len(texts), context_length, dtype=torch.long)
    for row, text in enumerate(texts):
        words = text.lower().replace(".", " ").split()
        ids = [1] + [VOCAB.index(w) + 3 if w in VOCAB else 20 + zlib.crc32(w.encode()) % 70 for w in words]
        ids = ids[: context_length - 1] + [EOT]
        out[row, : len(ids)] = torch.tensor(ids)
    return out


MODEL = {
    "type": "MultiLabelContrastive",
    "img_encoder": {
        "type": "GroupViT",
        "img_size": 32,
        "patch_size": 8,
        "embed_dim": 32,
        "num_heads": [1, 1, 1],
        "depths": [1, 1, 1],
        "num_group_tokens": [8, 4, 0],
        "num_output_groups": [8, 4],
        "drop_rate": 0.0,
        "drop_path_rate": 0.0,
    },
    "text_encoder": {"type": "TextTransformer", "context_length": 8, "width": 64, "layers": 1, "vocab_size": 100},
    "contrast_temperature": 0.07,
    "output_dim": 32,
    "proj_num_layers": 2,
    "proj_inner_dim": 64,
    "multi_label": 0,
}


def _opts(shards_dir: str, *, num_shards: int = 4, length: int = 256, **extra) -> list[str]:
    """``--opts`` that turn the shipped tiny recipe into the test run (shards already written)."""
    opts = {
        "data.dataset.meta.synthetic.path": shards_dir,
        "data.dataset.meta.synthetic.prefix": f"synthetic-{{000000..{num_shards - 1:06d}}}.tar",
        "data.dataset.meta.synthetic.length": length,
        "data.batch_size": 16,
        "data.num_workers": 0,
        "data.shuffle_buffer": 64,
        "data.img_aug.img_size": 32,
        "data.text_aug.max_seq_len": 8,
        "train.epochs": 2,
        "print_freq": 1,
        # 2.5e-4 / 2.5e-5 after the linear scaling by 16 / 4096 (4e-3 collapses this model to uniform logits)
        "train.base_lr": 0.064,
        "train.warmup_lr": 0.0064,
        "train.min_lr": 0.0064,
        "train.warmup_epochs": 0,
    }
    opts.update(extra)
    return [f"{k}={v}" for k, v in opts.items()]


def _make_config(output: str, shards_dir: str, model: dict | None = None, **extra):
    from omegaconf import OmegaConf

    from groupvit_fast.train import load_config

    cfg = load_config("tiny", _opts(shards_dir, **extra), output=output)
    cfg.model = OmegaConf.create(model or MODEL)
    return cfg


@pytest.fixture
def make_config(tmp_path):
    """``make_config(shards, model=None, output=None, **opts)``: the test run's config (a DictConfig)."""
    pytest.importorskip("omegaconf")

    def make(shards_dir: str, model: dict | None = None, output: str | None = None, **extra):
        return _make_config(output or str(tmp_path / "run"), shards_dir, model, **extra)

    return make


@pytest.fixture(scope="session")
def shards(tmp_path_factory) -> str:
    """4 shards x 64 coloured-shape samples at 32 px."""
    pytest.importorskip("webdataset")
    from groupvit_fast.train.data import write_synthetic_shards

    folder = tmp_path_factory.mktemp("shards")
    write_synthetic_shards(str(folder), 4, 256, image_size=32, seed=0)
    return str(folder)


@pytest.fixture
def text_transform():
    from groupvit_fast.train.prompts import TextTransform

    return TextTransform(context_length=8, multi_label=0, tokenizer=word_tokenize)


@pytest.fixture(scope="session")
def tagger():
    """NLTK's averaged perceptron trained here on a handful of hand-tagged captions (no download)."""
    nltk_tag = pytest.importorskip("nltk.tag")
    sentences = [
        [("a", "DT"), ("photo", "NN"), ("of", "IN"), ("a", "DT"), ("red", "JJ"), ("square", "NN")],
        [("two", "CD"), ("dogs", "NNS"), ("running", "VBG"), ("on", "IN"), ("the", "DT"), ("beach", "NN")],
        [("a", "DT"), ("man", "NN"), ("rides", "VBZ"), ("a", "DT"), ("bike", "NN"), ("in", "IN"), ("Paris", "NNP")],
        [("the", "DT"), ("blue", "JJ"), ("circle", "NN"), ("is", "VBZ"), ("small", "JJ")],
        [("cats", "NNS"), ("sleep", "VBP"), ("under", "IN"), ("a", "DT"), ("green", "JJ"), ("tree", "NN")],
    ]
    tagger = nltk_tag.PerceptronTagger(load=False)
    tagger.train(sentences * 4, nr_iter=5)
    return tagger


@pytest.fixture
def model_config():
    """``model_config()``: a fresh copy of the test model's config dict."""
    import copy

    return lambda: copy.deepcopy(MODEL)


@pytest.fixture(autouse=True)
def one_thread():
    """One intra-op thread: these tiny ops gain nothing from two, and a shared CI box punishes spinning."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
