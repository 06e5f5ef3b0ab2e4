"""Captions -> token ids, with GroupViT's multi-label noun prompts (docs/training.md, "Data").

With ``multi_label = k > 0`` a caption becomes ``k + 1`` texts: the caption itself, then up to
``k`` distinct words of it tagged NN, NNS, NNP or VB* by NLTK (``word_tokenize`` + ``pos_tag``, as
NVlabs), each put into a randomly chosen one of CLIP's 80 ImageNet prompt templates; when the
caption has fewer than ``k`` such words the caption itself fills the remaining places. When the
sample carries its nouns (generated scenes do, docs/training.md "Scenes: segmentation from
captions"), those are the words and no tagger is used.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from typing import Any

import torch

__all__ = ["CLIP_TEMPLATES", "PROMPT_TAGS", "TextTransform", "load_default_tagger", "TAGGER_DOWNLOAD"]

#: The 80 prompt templates CLIP used for ImageNet zero-shot classification.
CLIP_TEMPLATES: tuple[str, ...] = (
    "a bad photo of a {}.",
    "a photo of many {}.",
    "a sculpture of a {}.",
    "a photo of the hard to see {}.",
    "a low resolution photo of the {}.",
    "a rendering of a {}.",
    "graffiti of a {}.",
    "a bad photo of the {}.",
    "a cropped photo of the {}.",
    "a tattoo of a {}.",
    "the embroidered {}.",
    "a photo of a hard to see {}.",
    "a bright photo of a {}.",
    "a photo of a clean {}.",
    "a photo of a dirty {}.",
    "a dark photo of the {}.",
    "a drawing of a {}.",
    "a photo of my {}.",
    "the plastic {}.",
    "a photo of the cool {}.",
    "a close-up photo of a {}.",
    "a black and white photo of the {}.",
    "a painting of the {}.",
    "a painting of a {}.",
    "a pixelated photo of the {}.",
    "a sculpture of the {}.",
    "a bright photo of the {}.",
    "a cropped photo of a {}.",
    "a plastic {}.",
    "a photo of the dirty {}.",
    "a jpeg corrupted photo of a {}.",
    "a blurry photo of the {}.",
    "a photo of the {}.",
    "a good photo of the {}.",
    "a rendering of the {}.",
    "a {} in a video game.",
    "a photo of one {}.",
    "a doodle of a {}.",
    "a close-up photo of the {}.",
    "a photo of a {}.",
    "the origami {}.",
    "the {} in a video game.",
    "a sketch of a {}.",
    "a doodle of the {}.",
    "a origami {}.",
    "a low resolution photo of a {}.",
    "the toy {}.",
    "a rendition of the {}.",
    "a photo of the clean {}.",
    "a photo of a large {}.",
    "a rendition of a {}.",
    "a photo of a nice {}.",
    "a photo of a weird {}.",
    "a blurry photo of a {}.",
    "a cartoon {}.",
    "art of a {}.",
    "a sketch of the {}.",
    "a embroidered {}.",
    "a pixelated photo of a {}.",
    "itap of the {}.",
    "a jpeg corrupted photo of the {}.",
    "a good photo of a {}.",
    "a plushie {}.",
    "a photo of the nice {}.",
    "a photo of the small {}.",
    "a photo of the weird {}.",
    "the cartoon {}.",
    "art of the {}.",
    "a drawing of the {}.",
    "a photo of the large {}.",
    "a black and white photo of a {}.",
    "the plushie {}.",
    "a dark photo of a {}.",
    "itap of a {}.",
    "graffiti of the {}.",
    "a toy {}.",
    "itap of my {}.",
    "a photo of a cool {}.",
    "a photo of a small {}.",
    "a tattoo of the {}.",
)

#: Penn Treebank tags whose words become prompts (NVlabs' ``word_type='noun'`` list, verbs included).
PROMPT_TAGS = frozenset({"NN", "NNS", "NNP", "VB", "VBD", "VBG", "VBN", "VBP", "VBZ"})

TAGGER_DOWNLOAD = "python -c \"import nltk; nltk.download('averaged_perceptron_tagger_eng')\""


def load_default_tagger() -> Any:
    """NLTK's pretrained averaged-perceptron tagger; ``RuntimeError`` naming the download when absent."""
    try:
        from nltk.tag import PerceptronTagger
    except ImportError:
        raise RuntimeError("multi-label prompts need nltk (pip install nltk)") from None
    try:
        return PerceptronTagger()
    except LookupError:
        raise RuntimeError(
            f"multi-label prompts need NLTK's tagger data, which is not installed: run {TAGGER_DOWNLOAD}"
        ) from None


class TextTransform:
    """``caption -> LongTensor [1 + multi_label, context_length]`` (``[1, context_length]`` without prompts).

    ``tagger``: anything with NLTK's ``tag(tokens) -> [(token, tag)]``; default: NLTK's pretrained
    tagger (loaded on first use, so a process that never builds prompts does not need its data).
    ``rng`` draws the nouns and templates; the loader passes one seeded per sample.
    """

    def __init__(
        self,
        context_length: int = 77,
        multi_label: int = 0,
        tagger: Any | None = None,
        tokenizer: Callable[[Sequence[str], int], torch.Tensor] | None = None,
    ):
        if multi_label < 0:
            raise ValueError(f"data.text_aug.multi_label must be >= 0, got {multi_label}")
        self.context_length = context_length
        self.multi_label = multi_label
        self._tagger = tagger
        if tokenizer is None:
            from ..tokenizer import tokenize as tokenizer
        self._tokenize = tokenizer

    @property
    def tagger(self):
        if self._tagger is None:
            self._tagger = load_default_tagger()
        return self._tagger

    def prompt_words(self, caption: str) -> list[str]:
        """The caption's words tagged as in ``PROMPT_TAGS``, in order, without repeats."""
        from nltk import word_tokenize

        tokens = word_tokenize(caption, preserve_line=True)  # one line: no sentence splitter (punkt) needed
        words = [word for word, tag in self.tagger.tag(tokens) if tag in PROMPT_TAGS]
        return list(dict.fromkeys(words))

    def texts(self, caption: str, rng: random.Random, nouns: Sequence[str] | None = None) -> list[str]:
        """The ``1 + multi_label`` strings for one caption; ``nouns``: the caption's nouns when known
        (then the tagger is not used)."""
        if self.multi_label == 0:
            return [caption]
        words = list(dict.fromkeys(nouns)) if nouns is not None else self.prompt_words(caption)
        chosen = rng.sample(words, min(self.multi_label, len(words)))
        prompts = [rng.choice(CLIP_TEMPLATES).format(word) for word in chosen]
        return [caption, *prompts, *[caption] * (self.multi_label - len(prompts))]

    def __call__(self, caption: str, rng: random.Random, nouns: Sequence[str] | None = None) -> torch.Tensor:
        return self._tokenize(self.texts(caption, rng, nouns), self.context_length)
