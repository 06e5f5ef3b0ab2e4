"""TextTransformer (NVlabs keys, SDPA causal attention) and the CLIP tokenizer.

Oracles: Hugging Face ``GroupViTTextModel`` (same network, other names) for the encoder; HF's
``CLIPTokenizer`` (the Rust BPE of ``tokenizers``) built from the same vocabulary file for the
tokenizer; hand-derived counts for the released configuration.
"""

from __future__ import annotations

import gzip
import importlib.util
import os

import pytest
import torch
import torch.nn.functional as F

from groupvit_fast import TextTransformer
from groupvit_fast.convert import hf_text_to_nvlabs, nvlabs_text_to_hf
from groupvit_fast.models.text_transformer import QuickGELU
from groupvit_small import hf_small_config, random_text
from tolerances import assert_close_to_scale


def _hf_text_model():
    from transformers import GroupViTTextModel

    torch.manual_seed(0)
    return GroupViTTextModel(hf_small_config().text_config).eval()


def _ours_from_hf(hf, **kwargs):
    ours = TextTransformer(context_length=16, width=64, layers=2, vocab_size=100, **kwargs).eval()
    ours.load_state_dict(hf_text_to_nvlabs(hf.state_dict()), strict=True)
    return ours


# ---- structure -------------------------------------------------------------------------------


def test_released_config_keys_shapes_and_count():
    model = TextTransformer(context_length=77, width=256, layers=12, vocab_size=49408)
    sd = model.state_dict()
    per_block = [
        "attn.in_proj_weight",
        "attn.in_proj_bias",
        "attn.out_proj.weight",
        "attn.out_proj.bias",
        "ln_1.weight",
        "ln_1.bias",
        "mlp.c_fc.weight",
        "mlp.c_fc.bias",
        "mlp.c_proj.weight",
        "mlp.c_proj.bias",
        "ln_2.weight",
        "ln_2.bias",
    ]
    expected = {"positional_embedding", "token_embedding.weight", "ln_final.weight", "ln_final.bias"}
    expected |= {f"transformer.resblocks.{i}.{k}" for i in range(12) for k in per_block}
    assert set(sd) == expected
    assert sd["transformer.resblocks.0.attn.in_proj_weight"].shape == (768, 256)
    assert sd["positional_embedding"].shape == (77, 256)
    # hand count: embeddings + 12 x (qkv + out + 2 LN + 4x MLP) + final LN
    w = 256
    block = (3 * w * w + 3 * w) + (w * w + w) + 2 * (2 * w) + (w * 4 * w + 4 * w) + (4 * w * w + w)
    assert sum(p.numel() for p in model.parameters()) == 49408 * w + 77 * w + 12 * block + 2 * w
    assert model.transformer.resblocks[0].attn.num_heads == 4  # heads = width // 64


def test_nvlabs_initialisation_statistics():
    torch.manual_seed(0)
    model = TextTransformer(context_length=77, width=256, layers=12, vocab_size=49408)
    blk = model.transformer.resblocks[0]
    assert abs(model.token_embedding.weight.std().item() - 0.02) < 1e-3
    assert abs(model.positional_embedding.std().item() - 0.01) < 1e-3
    assert abs(blk.attn.in_proj_weight.std().item() - 256**-0.5) < 2e-3
    assert abs(blk.attn.out_proj.weight.std().item() - 256**-0.5 * 24**-0.5) < 1e-3
    assert abs(blk.mlp.c_fc.weight.std().item() - 512**-0.5) < 2e-3
    assert torch.count_nonzero(blk.attn.in_proj_bias) == 0


def test_quick_gelu():
    x = torch.linspace(-4, 4, 101)
    torch.testing.assert_close(QuickGELU()(x), x * torch.sigmoid(1.702 * x))


# ---- parity with Hugging Face ----------------------------------------------------------------


@pytest.mark.parametrize("attn_backend", ["sdpa", "explicit"])
def test_matches_hf_groupvit_text_model(attn_backend):
    hf = _hf_text_model()
    ours = _ours_from_hf(hf, attn_backend=attn_backend)
    text = random_text(5)
    with torch.no_grad():
        ref = hf(input_ids=text).pooler_output
        out = ours(text)
    torch.testing.assert_close(out, ref, atol=2e-5, rtol=1e-5)
    assert torch.equal(ours(text, as_dict=True)["x"], out)


def test_gradients_match_hf():
    hf = _hf_text_model()
    ours = _ours_from_hf(hf)
    text = random_text(4)
    target = torch.randn(4, 64, generator=torch.Generator().manual_seed(1))
    F.mse_loss(hf(input_ids=text).pooler_output, target).backward()
    F.mse_loss(ours(text), target).backward()
    hf_grads = nvlabs_text_to_hf({k: p.grad for k, p in ours.named_parameters()})
    # relative to the model's largest gradient: some are zero in exact arithmetic (the key bias: softmax
    # ignores a per-query constant) and hold only round-off of that size
    largest = max(p.grad.abs().max().item() for p in hf.parameters())
    for name, p in hf.named_parameters():
        assert_close_to_scale(hf_grads[name], p.grad, rel=1e-5, msg=name, scale=largest)


def test_causal_and_length_independent():
    torch.manual_seed(0)
    model = TextTransformer(context_length=16, width=64, layers=2, vocab_size=100).eval()
    text = random_text(3)
    base = model(text)
    # tokens after the end-of-text token never reach its feature
    noisy = text.clone()
    for i in range(3):
        eot = int(text[i].argmax())
        noisy[i, eot + 1 :] = torch.randint(3, 90, (16 - eot - 1,))
    assert_close_to_scale(model(noisy), base)
    # so padding may be cut: rows shorter than context_length give the same features
    cut = int(text.argmax(dim=1).max()) + 1
    assert_close_to_scale(model(text[:, :cut]), base)


def test_input_validation():
    model = TextTransformer(context_length=8, width=64, layers=1, vocab_size=10)
    with pytest.raises(ValueError, match="context_length"):
        model(torch.zeros(2, 9, dtype=torch.long))
    with pytest.raises(ValueError, match="integer"):
        model(torch.zeros(2, 8))
    with pytest.raises(ValueError, match=r"\[B, L\]"):
        model(torch.zeros(8, dtype=torch.long))
    with pytest.raises(ValueError, match=r"token ids in \[0, 10\], outside the vocabulary \[0, 10\)"):
        model(torch.tensor([[0, 10]]))  # vocab_size=10: ids 0..9
    with pytest.raises(ValueError, match="outside the vocabulary"):
        model(torch.tensor([[-1, 3]]))
    with pytest.raises(ValueError, match="width"):
        TextTransformer(context_length=8, width=32, layers=1, vocab_size=10)


def test_checkpointing_gives_same_gradients():
    torch.manual_seed(0)
    plain = TextTransformer(context_length=16, width=64, layers=2, vocab_size=100)
    ckpt = TextTransformer(context_length=16, width=64, layers=2, vocab_size=100, use_checkpoint=True)
    ckpt.load_state_dict(plain.state_dict())
    text = random_text(2)
    plain(text).square().sum().backward()
    ckpt(text).square().sum().backward()
    for (name, a), b in zip(plain.named_parameters(), ckpt.parameters(), strict=True):
        torch.testing.assert_close(a.grad, b.grad, msg=name)


# ---- tokenizer -------------------------------------------------------------------------------

_HAS_OPEN_CLIP = importlib.util.find_spec("open_clip") is not None
needs_open_clip = pytest.mark.skipif(not _HAS_OPEN_CLIP, reason="open_clip_torch not installed")


def _hf_clip_tokenizer():
    """HF's CLIPTokenizer over the same BPE file (CLIP's vocabulary: bytes, bytes+</w>, merges, specials)."""
    from transformers import CLIPTokenizer

    folder = list(importlib.util.find_spec("open_clip").submodule_search_locations)[0]
    merges = gzip.open(os.path.join(folder, "bpe_simple_vocab_16e6.txt.gz")).read().decode("utf-8")
    merges = merges.split("\n")[1 : 49152 - 256 - 2 + 1]
    printable = (
        list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    )
    codes, extra = printable[:], 0
    for b in range(256):
        if b not in printable:
            codes.append(256 + extra)
            extra += 1
    chars = [chr(c) for c in codes]
    vocab = chars + [c + "</w>" for c in chars] + ["".join(m.split()) for m in merges]
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    return CLIPTokenizer(vocab={t: i for i, t in enumerate(vocab)}, merges=[tuple(m.split()) for m in merges])


@needs_open_clip
def test_tokenize_matches_hf_clip_tokenizer():
    from groupvit_fast import tokenize

    texts = [
        "a photo of a dog.",
        "A Photo Of THE   cat",
        "it's a man's world, isn't it?",
        "numbers 1234 and 3.14",
        "Hyphen-ated under_score slash/sep",
        "aeroplane",
        "pottedplant",
        "a photo of a traffic light.",
    ]
    ours = tokenize(texts)
    assert ours.shape == (len(texts), 77) and ours.dtype == torch.long
    ref = _hf_clip_tokenizer()(texts)["input_ids"]
    for row, ids in zip(ours, ref, strict=True):
        n = len(ids)
        assert row[:n].tolist() == ids  # HF pads with end-of-text, NVlabs (and we) with 0
        assert torch.count_nonzero(row[n:]) == 0


@needs_open_clip
def test_tokenize_specials_truncation_and_single():
    from groupvit_fast import tokenize
    from groupvit_fast.tokenizer import EOT_TOKEN, SOT_TOKEN

    single = tokenize("a photo of a dog.")
    assert single.shape == (77,)
    assert single[0] == SOT_TOKEN == 49406 and single.max() == EOT_TOKEN == 49407
    long = tokenize(["word " * 200], context_length=16)
    assert long.shape == (1, 16)
    assert long[0, 0] == SOT_TOKEN and long[0, -1] == EOT_TOKEN
    assert torch.all(long[0, 1:-1] == long[0, 1])  # the repeated word, cut to fit
    empty = tokenize([""])[0]
    assert empty[:2].tolist() == [SOT_TOKEN, EOT_TOKEN] and torch.count_nonzero(empty[2:]) == 0
    with pytest.raises(TypeError, match=r"texts\[1\]"):
        tokenize(["ok", 3])
    with pytest.raises(TypeError, match="texts must be a str"):
        tokenize(3)


@needs_open_clip
def test_tokenized_text_through_encoder_matches_hf_with_real_vocab():
    from transformers import GroupViTTextConfig, GroupViTTextModel

    from groupvit_fast import tokenize

    torch.manual_seed(0)
    cfg = GroupViTTextConfig(hidden_size=64, intermediate_size=256, num_hidden_layers=1, num_attention_heads=1)
    hf = GroupViTTextModel(cfg).eval()  # eos_token_id 49407: HF pools at the first end-of-text
    ours = TextTransformer(context_length=77, width=64, layers=1, vocab_size=49408).eval()
    ours.load_state_dict(hf_text_to_nvlabs(hf.state_dict()))
    text = tokenize(["a photo of a cat.", "a photo of a traffic light."])
    with torch.no_grad():
        torch.testing.assert_close(ours(text), hf(input_ids=text).pooler_output, atol=2e-5, rtol=1e-5)
