"""Multi-label noun prompts: NLTK tags (a tagger trained in the test), CLIP's 80 templates, the shortfall rule."""

from __future__ import annotations

import random

import pytest

pytest.importorskip("nltk")

from groupvit_fast.train.prompts import CLIP_TEMPLATES, TextTransform  # noqa: E402


def test_eighty_distinct_templates():
    assert len(CLIP_TEMPLATES) == 80 and len(set(CLIP_TEMPLATES)) == 80
    assert all(t.count("{}") == 1 for t in CLIP_TEMPLATES)


@pytest.mark.parametrize(
    "caption, multi_label, words",
    [
        ("a photo of a red square", 3, {"photo", "square"}),  # 2 nouns: the caption fills the third place
        ("a man rides a bike in Paris", 2, {"man", "rides", "bike", "Paris"}),
        ("two dogs running on the beach", 1, {"dogs", "running", "beach"}),
    ],
)
def test_prompts_are_tagged_words_in_templates(tagger, caption, multi_label, words):
    transform = TextTransform(
        context_length=16, multi_label=multi_label, tagger=tagger, tokenizer=lambda texts, n: texts
    )
    assert set(transform.prompt_words(caption)) == words
    texts = transform.texts(caption, random.Random(0))
    assert len(texts) == 1 + multi_label and texts[0] == caption
    prompts = texts[1 : 1 + min(multi_label, len(words))]
    used = set()
    for prompt in prompts:
        matches = [(t, w) for t in CLIP_TEMPLATES for w in words if t.format(w) == prompt]
        assert matches, prompt
        used.add(matches[0][1])
    assert len(used) == len(prompts)  # distinct words
    assert texts[1 + len(prompts) :] == [caption] * (multi_label - len(prompts))


def test_tokens_shape(tagger):
    transform = TextTransform(context_length=77, multi_label=3, tagger=tagger)
    assert tuple(transform("a photo of a red square", random.Random(1)).shape) == (4, 77)


def test_missing_tagger_data_names_the_download(monkeypatch):
    import nltk.tag

    def absent(*args, **kwargs):
        raise LookupError("Resource averaged_perceptron_tagger_eng not found.")

    monkeypatch.setattr(nltk.tag, "PerceptronTagger", absent)
    transform = TextTransform(multi_label=3)
    with pytest.raises(RuntimeError, match=r"nltk\.download\('averaged_perceptron_tagger_eng'\)"):
        transform.texts("a photo of a cat", random.Random(0))
