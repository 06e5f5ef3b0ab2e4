"""CLIP's tokenizer without torch (docs/export.md, "Tokens without torch").

``groupvit_fast.tokenize`` runs open_clip's BPE, whose module imports torch. The export writes the same
vocabulary and merges (read from that tokenizer) as a Hugging Face ``tokenizers`` file, ``tokenizer.json``,
with CLIP's normalisation (NFC, whitespace collapsed, lower case) and pre-tokenisation (CLIP's word pattern,
then byte-level symbols, ``</w>`` ending each word); ``ClipTokenizer`` reads it with the ``tokenizers``
package (Rust, torch-free) and frames the ids as ``tokenize`` does: ``[49406, *BPE, 49407]``, zero-padded to
the context length, an over-long row cut and ended by 49407. Known difference: ``tokenize`` also runs ftfy's
``fix_text`` and HTML unescaping, which change only mis-encoded or HTML-escaped text; class prompts are
plain text (tests compare the ids of every preset's prompts).
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np

__all__ = ["ClipTokenizer", "write_tokenizer_json", "SOT_TOKEN", "EOT_TOKEN"]

# the ids of groupvit_fast.tokenizer, restated here because that module imports torch (a test checks both)
SOT_TOKEN = 49406
EOT_TOKEN = 49407
#: CLIP's word pattern (open_clip's SimpleTokenizer, without its two special tokens)
_WORDS = r"""'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+"""


def build_tokenizer_json() -> str:
    """The JSON text of a ``tokenizers`` tokenizer with open_clip's CLIP vocabulary and merges (needs the
    ``text`` extra, for open_clip's vocabulary file, and ``tokenizers``)."""
    from tokenizers import Regex, Tokenizer, models, normalizers, pre_tokenizers

    from ..tokenizer import get_tokenizer

    clip = get_tokenizer()
    merges = sorted(clip.bpe_ranks, key=clip.bpe_ranks.__getitem__)
    bpe = models.BPE(vocab=dict(clip.encoder), merges=list(merges), end_of_word_suffix="</w>", fuse_unk=False)
    tok = Tokenizer(bpe)
    tok.normalizer = normalizers.Sequence(
        [normalizers.NFC(), normalizers.Replace(Regex(r"\s+"), " "), normalizers.Lowercase()]
    )
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(_WORDS), behavior="removed", invert=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    return tok.to_str()


def write_tokenizer_json(path: str) -> None:
    """``build_tokenizer_json()`` at ``path`` (written as it is: the caller writes it atomically)."""
    with open(path, "w", encoding="utf-8") as f:
        f.write(build_tokenizer_json())


class ClipTokenizer:
    """Token ids for GroupViT's text encoder from an exported ``tokenizer.json``, without torch.

    ``tokenizer(texts: list[str]) -> int64 [T, context_length]``, equal to ``groupvit_fast.tokenize``.
    """

    def __init__(self, path: str, context_length: int):
        try:
            from tokenizers import Tokenizer
        except ImportError as err:
            raise ImportError("open-vocabulary classes need the 'tokenizers' package (pip install tokenizers)") from err
        if not os.path.isfile(path):
            raise ValueError(f"{path}: no such tokenizer file")
        if context_length < 2:
            raise ValueError(f"context_length must be >= 2 (start and end tokens), got {context_length}")
        self._tok = Tokenizer.from_file(path)
        self.context_length = int(context_length)

    def __call__(self, texts: Sequence[str]) -> np.ndarray:
        texts = list(texts)
        out = np.zeros((len(texts), self.context_length), dtype=np.int64)
        for i, enc in enumerate(self._tok.encode_batch(texts, add_special_tokens=False)):
            ids = [SOT_TOKEN, *enc.ids, EOT_TOKEN]
            if len(ids) > self.context_length:
                ids = ids[: self.context_length]
                ids[-1] = EOT_TOKEN
            out[i, : len(ids)] = ids
        return out
