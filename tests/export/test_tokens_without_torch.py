"""The exported tokenizer (tokenizer.json, read by the torch-free ClipTokenizer) gives the ids of
``groupvit_fast.tokenize`` (docs/export.md, "Tokens without torch")."""

from __future__ import annotations

import numpy as np
import pytest

from groupvit_fast.export import clip_tokenizer
from groupvit_fast.segmentation.classes import PRESETS, TEMPLATES

pytest.importorskip("tokenizers")
tokenize = pytest.importorskip("groupvit_fast.tokenizer").tokenize


@pytest.fixture(scope="module")
def tokenizer_json(tmp_path_factory):
    path = tmp_path_factory.mktemp("tok") / "tokenizer.json"
    clip_tokenizer.write_tokenizer_json(str(path))
    return str(path)


def test_every_preset_prompt_gets_the_same_ids(tokenizer_json):
    texts = [t.format(n) for preset in PRESETS.values() for n in preset.names for ts in TEMPLATES.values() for t in ts]
    texts += ["Hello,  World!\tit's 2 cats and 3.5 dogs", "café naïve 東京", "traffic light", "x" * 300]
    ours = clip_tokenizer.ClipTokenizer(tokenizer_json, 77)(texts)
    np.testing.assert_array_equal(ours, tokenize(texts, context_length=77).numpy())
    short = clip_tokenizer.ClipTokenizer(tokenizer_json, 5)(["a photo of a traffic light."])
    np.testing.assert_array_equal(short, tokenize(["a photo of a traffic light."], context_length=5).numpy())


def test_special_ids_are_the_tokenizer_module_s():
    from groupvit_fast import tokenizer

    assert (clip_tokenizer.SOT_TOKEN, clip_tokenizer.EOT_TOKEN) == (tokenizer.SOT_TOKEN, tokenizer.EOT_TOKEN)
