"""CLIP's byte-level BPE tokeniser, as GroupViT's text encoder expects it (docs/groupvit.md).

The BPE itself and its vocabulary (``bpe_simple_vocab_16e6.txt.gz``, the file NVlabs ships) come
from the maintained ``open_clip_torch`` package (the ``text`` extra: ``pip install 'groupvit_fast[text]'``);
it is imported on first use, so the rest of ``groupvit_fast`` works without it.

``tokenize`` reproduces NVlabs' ``datasets/builder.py::Tokenize`` (ids identical for ordinary text):
``[49406 (start), *BPE(lower(clean(text))), 49407 (end)]``, zero-padded to ``context_length``; a
row longer than that is cut to ``context_length`` tokens and its last one replaced by 49407.
Known, deliberate difference from NVlabs' copy of the tokenizer: the literal strings
``<|startoftext|>`` / ``<|endoftext|>`` inside a caption are BPE-encoded as text rather than
mapped to the special ids.
"""

from __future__ import annotations

import importlib.util
import os
import sys
import threading
from collections.abc import Iterable, Sequence
from typing import Any

import torch

__all__ = ["tokenize", "get_tokenizer", "SOT_TOKEN", "EOT_TOKEN", "VOCAB_SIZE", "DEFAULT_CONTEXT_LENGTH"]

SOT_TOKEN = 49406
EOT_TOKEN = 49407
VOCAB_SIZE = 49408
DEFAULT_CONTEXT_LENGTH = 77

_INSTALL_HINT = "pip install 'groupvit_fast[text]'"
_lock = threading.Lock()
_tokenizer = None


def _load_open_clip_tokenizer_module():
    """``open_clip.tokenizer`` without running ``open_clip/__init__.py``.

    Why not the public API (``open_clip.tokenizer.SimpleTokenizer`` or ``open_clip.get_tokenizer``):
    any import of the package runs its ``__init__``, which imports torchvision, timm and every model
    (about 7 s on a small CPU, for every ``groupvit-fast segment`` call), while the tokenizer module
    itself needs only ftfy, regex, numpy and torch. So we load that one file by path from the
    installed package (open_clip_torch 2.x and 3.x: ``open_clip/tokenizer.py``, standard-library and
    third-party imports only) and fall back to the normal, slow import if the layout ever changes;
    tests/models/test_tokenizer_loading.py fails on a release where the fast path no longer applies.
    """
    spec = importlib.util.find_spec("open_clip")  # a top-level find_spec imports nothing
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(f"groupvit_fast.tokenize needs the 'open_clip_torch' package ({_INSTALL_HINT})")
    path = os.path.join(list(spec.submodule_search_locations)[0], "tokenizer.py")
    name = "groupvit_fast._open_clip_tokenizer"
    if name in sys.modules:
        return sys.modules[name]
    try:
        file_spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(file_spec)
        file_spec.loader.exec_module(module)
        module.SimpleTokenizer  # noqa: B018  (the attribute we rely on)
    except Exception:  # unexpected package layout: the regular (slow) import
        import open_clip.tokenizer as module
    sys.modules[name] = module
    return module


def get_tokenizer() -> Any:
    """The shared ``open_clip`` ``SimpleTokenizer`` (built once; its BPE cache is reused).

    Typed ``Any``: the class comes from open_clip's tokenizer module, loaded by path at the first call."""
    global _tokenizer
    with _lock:
        if _tokenizer is None:
            module = _load_open_clip_tokenizer_module()
            tok = module.SimpleTokenizer()
            sot, eot = tok.encoder.get("<start_of_text>"), tok.encoder.get("<end_of_text>")
            if (sot, eot) != (SOT_TOKEN, EOT_TOKEN) or len(tok.encoder) != VOCAB_SIZE:
                raise RuntimeError(
                    f"open_clip's CLIP tokenizer has start/end ids {sot}/{eot} and "
                    f"{len(tok.encoder)} tokens; GroupViT needs {SOT_TOKEN}/{EOT_TOKEN} and "
                    f"{VOCAB_SIZE}"
                )
            _tokenizer = tok
        return _tokenizer


def tokenize(texts: str | Sequence[str], context_length: int = DEFAULT_CONTEXT_LENGTH) -> torch.Tensor:
    """Token ids for GroupViT's text encoder.

    ``texts``: one string or a sequence of ``T`` strings. Returns ``LongTensor [T, context_length]``
    (``[context_length]`` for a single string, as NVlabs' ``Tokenize``). Over-long texts are
    truncated, keeping the end-of-text token as the last one.
    """
    single = isinstance(texts, str)
    if single:
        texts = [texts]
    elif not isinstance(texts, Iterable) or isinstance(texts, (bytes, torch.Tensor)):
        raise TypeError(f"texts must be a str or a sequence of str, got {type(texts).__name__}")
    texts = list(texts)
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise TypeError(f"texts[{i}] is {type(text).__name__}, not str")
    if context_length < 2:
        raise ValueError(f"context_length must be >= 2 (start and end tokens), got {context_length}")
    tok = get_tokenizer()
    result = torch.zeros(len(texts), context_length, dtype=torch.long)
    for i, text in enumerate(texts):
        ids = [SOT_TOKEN, *tok.encode(text), EOT_TOKEN]
        if len(ids) > context_length:
            ids = ids[:context_length]
            ids[-1] = EOT_TOKEN
        result[i, : len(ids)] = torch.tensor(ids, dtype=torch.long)
    return result[0] if single else result
