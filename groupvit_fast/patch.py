"""Make NVlabs-style or Hugging Face GroupViT code run on groupvit_fast's kernels (Liger-Kernel style).

Two ways, both reversible:

* ``apply_groupvit_fast(model)`` patches an already-built model **instance by instance** (rebinds each
  recognised module's ``forward``);
* ``apply_groupvit_fast_to_classes(target)`` patches the **classes** (``target="transformers"`` for
  Hugging Face's GroupViT, or the Python module that defines NVlabs' ``AssignAttention`` and
  ``Attention``), so models built afterwards run the fast path too.

What is recognised (by class name and attributes; no NVlabs code is imported):

* NVlabs-style ``AssignAttention`` and ``Attention`` (``models/group_vit.py``): they run groupvit_fast's
  own ``forward`` functions (``models.grouping.assign_forward``, ``models.attention.attention_forward``),
  the very code of our modules: assignment through ``groupvit_fast.ops.assign_attention``, multi-head
  attention through ``groupvit_fast.ops.multi_head_attention``;
* Hugging Face ``GroupViTAssignAttention``, ``GroupViTAttention``, ``GroupViTStage``: small adapters to
  HF's call signatures around the same two ops. When attention weights are asked for
  (``output_attentions``, as an argument or in the config), the patched ``GroupViTAttention`` runs HF's
  own forward, which returns them (HF's GroupViT is eager-only); otherwise it runs the fast path and
  returns ``None`` weights, as HF does when they are not asked for. The grouping maps
  (``output_attentions`` of the vision model) are computed only when asked for and, under autograd,
  carry HF's gradients (docs/assign_op.md, "Differentiability of the maps");
* groupvit_fast's own modules: their ``attn_backend`` / ``assign_backend`` are set.

Every output the original returns is returned, with the original's gradients
(docs/groupvit.md, "Patching Hugging Face and NVlabs code"). Eval-mode outputs are unchanged up to
float rounding. In training mode the Gumbel noise comes from groupvit_fast's counter-based generator
(docs/assign_op.md), so samples differ from ``torch.distributions.Gumbel`` draws while following the
same distribution; with the same noise the outputs are the original's up to float rounding.
"""

from __future__ import annotations

import importlib
import types
from collections import Counter

from torch import nn

from .models.attention import attention_forward
from .models.grouping import assign_core, assign_forward, check_assign_backend
from .ops.attention import check_attention_backend, multi_head_attention

__all__ = [
    "apply_groupvit_fast",
    "revert_groupvit_fast",
    "apply_groupvit_fast_to_classes",
    "revert_groupvit_fast_classes",
]

_ORIG = "_groupvit_fast_original_forward"
_ASSIGN_BACKEND = "assign_backend"
_ATTN_BACKEND = "attn_backend"
_RETURN_ATTN = "_groupvit_fast_return_attn"
_SET_BY_PATCH = "_groupvit_fast_set_attrs"


# ---- NVlabs-style modules --------------------------------------------------------------------


def _is_nvlabs_assign(m: nn.Module) -> bool:
    return type(m).__name__ == "AssignAttention" and all(
        hasattr(m, a)
        for a in (
            "q_proj",
            "k_proj",
            "v_proj",
            "proj",
            "hard",
            "gumbel",
            "gumbel_tau",
            "sum_assign",
            "assign_eps",
            "num_heads",
            "scale",
            "attn_drop",
            "proj_drop",
        )
    )


def _is_nvlabs_attention(m: nn.Module) -> bool:
    return type(m).__name__ == "Attention" and all(
        hasattr(m, a) for a in ("qkv_fuse", "num_heads", "scale", "proj", "attn_drop", "proj_drop")
    )


# ---- Hugging Face transformers modules -------------------------------------------------------


def _hf_assign_forward(self, query, key):
    """HF ``GroupViTAssignAttention.forward``: ``(out [B, G, C], soft [B, G, N] or None)``."""
    q, k, v = self.q_proj(query), self.k_proj(key), self.v_proj(key)
    need = getattr(self, _RETURN_ATTN, True)
    # HF: gumbel (training) / hard argmax (eval) assignment, tau 1, normalised with assign_eps; HF's
    # returned map is the noise-free softmax over groups, differentiable like HF's under autograd
    out, maps = assign_core(
        q,
        k,
        v,
        num_heads=1,
        scale=self.scale,
        hard=True,
        gumbel=self.training,
        tau=1.0,
        sum_assign=False,
        eps=self.assign_eps,
        return_attn=need,
        backend=getattr(self, _ASSIGN_BACKEND, "auto"),
        names=("soft",),
    )
    return self.proj(out), (maps["soft"][:, 0] if need else None)


def _hf_attention_weights_wanted(kwargs: dict) -> bool:
    """Whether the caller asked HF's ``GroupViTAttention`` for its weights: ``output_attentions=True``
    passed down, or HF's output recorder collecting ``attentions`` (``capture_outputs``, which reads
    ``output_attentions`` from the call or the config and does not pass it to the layers)."""
    if kwargs.get("output_attentions"):
        return True
    try:
        from transformers.utils.output_capturing import _active_collector
    except ImportError:  # a transformers without the recorder passes output_attentions down instead
        return False
    collected = _active_collector.get()
    return collected is not None and "attentions" in collected


def _hf_attention_forward(self, hidden_states, attention_mask=None, encoder_hidden_states=None, **kwargs):
    """HF ``GroupViTAttention.forward``: ``(out [B, L, C], None)`` on the fast path, or HF's own
    ``(out, weights [B, h, L, S])`` when the weights are asked for (they exist only in its eager math)."""
    if _hf_attention_weights_wanted(kwargs):
        return _original(self, "GroupViTAttention")(
            hidden_states, attention_mask=attention_mask, encoder_hidden_states=encoder_hidden_states, **kwargs
        )
    b, n, c = hidden_states.shape
    kv = hidden_states if encoder_hidden_states is None else encoder_hidden_states
    h, d = self.num_heads, self.head_dim
    q = self.q_proj(hidden_states).view(b, n, h, d).transpose(1, 2)
    k = self.k_proj(kv).view(b, kv.shape[1], h, d).transpose(1, 2)
    v = self.v_proj(kv).view(b, kv.shape[1], h, d).transpose(1, 2)
    # HF passes an additive (float) or boolean [B, 1, L, S] mask, or None: the op takes both
    out = multi_head_attention(
        q,
        k,
        v,
        scale=self.scale,
        mask=attention_mask,
        dropout_p=self.dropout if self.training else 0.0,
        backend=getattr(self, _ATTN_BACKEND, "auto"),
    )
    return self.out_proj(out.transpose(1, 2).reshape(b, n, c)), None


def _hf_stage_forward(self, hidden_states, prev_group_token=None, output_attentions=False):
    """HF ``GroupViTStage.forward``: tells the assignment whether its maps are wanted."""
    assign = self.downsample.assign if self.downsample is not None else None
    if assign is not None:
        setattr(assign, _RETURN_ATTN, bool(output_attentions))
    try:
        return _original(self, "GroupViTStage")(hidden_states, prev_group_token, output_attentions)
    finally:
        if assign is not None:
            setattr(assign, _RETURN_ATTN, True)


def _is_hf(m: nn.Module, name: str) -> bool:
    return type(m).__name__ == name and type(m).__module__.startswith("transformers.")


# ---- instance patching -----------------------------------------------------------------------


#: (recognise(module), forward function, which backend attribute, patched name) per foreign module kind
def _kinds():
    return [
        (_is_nvlabs_assign, assign_forward, _ASSIGN_BACKEND, "nvlabs.AssignAttention"),
        (_is_nvlabs_attention, attention_forward, _ATTN_BACKEND, "nvlabs.Attention"),
        (
            lambda m: _is_hf(m, "GroupViTAssignAttention"),
            _hf_assign_forward,
            _ASSIGN_BACKEND,
            "transformers.GroupViTAssignAttention",
        ),
        (
            lambda m: _is_hf(m, "GroupViTAttention"),
            _hf_attention_forward,
            _ATTN_BACKEND,
            "transformers.GroupViTAttention",
        ),
        (
            lambda m: _is_hf(m, "GroupViTStage") and m.downsample is not None,
            _hf_stage_forward,
            None,
            "transformers.GroupViTStage",
        ),
    ]


_CLASS_ORIGINALS: dict[type, object] = {}


def _original(module: nn.Module, what: str):
    """The forward the patch replaced: the instance's saved one, else the class's saved one."""
    if _ORIG in module.__dict__:
        return module.__dict__[_ORIG]
    for cls in type(module).__mro__:
        if cls in _CLASS_ORIGINALS:
            return types.MethodType(_CLASS_ORIGINALS[cls], module)
    raise RuntimeError(f"{what}: no original forward recorded")


def _set(module: nn.Module, attr: str, value) -> None:
    if attr not in module.__dict__:
        module.__dict__.setdefault(_SET_BY_PATCH, []).append(attr)
    setattr(module, attr, value)


def _bind(module: nn.Module, fn) -> None:
    if _ORIG not in module.__dict__:
        module.__dict__[_ORIG] = module.forward
    module.forward = types.MethodType(fn, module)


def _check_backends(attn_backend: str, assign_backend: str) -> None:
    check_attention_backend(attn_backend)
    if not isinstance(assign_backend, str):
        raise TypeError(f"assign_backend must be a string, got {type(assign_backend).__name__}")
    check_assign_backend(assign_backend)


def apply_groupvit_fast(
    model: nn.Module, *, attn_backend: str = "auto", assign_backend: str = "auto"
) -> dict[str, int]:
    """Patch ``model`` (NVlabs-style, Hugging Face or groupvit_fast GroupViT) in place; returns what was patched.

    ``attn_backend``: as ``groupvit_fast.ops.multi_head_attention(backend=...)`` (``"auto"``, ``"sdpa"``,
    ``"xformers"``, ``"explicit"``); ``assign_backend``: as ``groupvit_fast.assign_attention(backend=...)``.
    Applying again only changes the backends. Raises ``ValueError`` when ``model`` holds no GroupViT module.
    """
    from .models.attention import Attention as FastAttention
    from .models.grouping import AssignAttention as FastAssign
    from .models.text_transformer import CausalSelfAttention

    _check_backends(attn_backend, assign_backend)
    patched: Counter = Counter()
    kinds = _kinds()
    for module in model.modules():
        if isinstance(module, FastAssign):
            module.assign_backend = assign_backend
            patched["groupvit_fast.AssignAttention"] += 1
            continue
        if isinstance(module, (FastAttention, CausalSelfAttention)):
            module.attn_backend = attn_backend
            patched[f"groupvit_fast.{type(module).__name__}"] += 1
            continue
        for recognise, forward, backend_attr, label in kinds:
            if recognise(module):
                if backend_attr is not None:
                    _set(module, backend_attr, assign_backend if backend_attr == _ASSIGN_BACKEND else attn_backend)
                _bind(module, forward)
                patched[label] += 1
                break
    if not patched:
        raise ValueError(f"{type(model).__name__} holds no GroupViT attention or assignment module to patch")
    return dict(patched)


def revert_groupvit_fast(model: nn.Module) -> int:
    """Undo ``apply_groupvit_fast`` on NVlabs-style and HF modules; returns how many were restored."""
    restored = 0
    for module in model.modules():
        if _ORIG in module.__dict__:
            del module.forward  # the instance attribute; the class's forward shows through again
            del module.__dict__[_ORIG]
            for attr in module.__dict__.pop(_SET_BY_PATCH, []) + [_RETURN_ATTN]:
                module.__dict__.pop(attr, None)
            restored += 1
    return restored


# ---- class patching ----------------------------------------------------------------------------

_HF_MODULE = "transformers.models.groupvit.modeling_groupvit"
_CLASS_FORWARDS = {
    "AssignAttention": (assign_forward, _ASSIGN_BACKEND),
    "Attention": (attention_forward, _ATTN_BACKEND),
    "GroupViTAssignAttention": (_hf_assign_forward, _ASSIGN_BACKEND),
    "GroupViTAttention": (_hf_attention_forward, _ATTN_BACKEND),
    "GroupViTStage": (_hf_stage_forward, None),
}


def _target_classes(target) -> list[type]:
    module = importlib.import_module(_HF_MODULE) if target == "transformers" else target
    if not isinstance(module, types.ModuleType):
        raise TypeError(f"target must be 'transformers' or a Python module, got {type(target).__name__}")
    classes = [getattr(module, name) for name in _CLASS_FORWARDS if isinstance(getattr(module, name, None), type)]
    if not classes:
        raise ValueError(f"{module.__name__} defines none of {sorted(_CLASS_FORWARDS)}")
    return classes


def apply_groupvit_fast_to_classes(
    target: str | types.ModuleType = "transformers", *, attn_backend: str = "auto", assign_backend: str = "auto"
) -> list[str]:
    """Patch the GroupViT classes of ``target`` (``"transformers"`` or the module defining NVlabs'
    ``AssignAttention`` / ``Attention``): every instance, built before or after, runs the fast path.
    Returns the patched class names. ``revert_groupvit_fast_classes(target)`` undoes it."""
    _check_backends(attn_backend, assign_backend)
    names = []
    for cls in _target_classes(target):
        forward, backend_attr = _CLASS_FORWARDS[cls.__name__]
        if cls not in _CLASS_ORIGINALS:
            _CLASS_ORIGINALS[cls] = cls.forward
        cls.forward = forward
        if backend_attr is not None:
            setattr(cls, backend_attr, assign_backend if backend_attr == _ASSIGN_BACKEND else attn_backend)
        names.append(cls.__name__)
    return names


def revert_groupvit_fast_classes(target: str | types.ModuleType = "transformers") -> list[str]:
    """Restore the classes patched by ``apply_groupvit_fast_to_classes(target)``; returns their names."""
    names = []
    for cls in _target_classes(target):
        if cls in _CLASS_ORIGINALS:
            cls.forward = _CLASS_ORIGINALS.pop(cls)
            _, backend_attr = _CLASS_FORWARDS[cls.__name__]
            if backend_attr is not None and backend_attr in cls.__dict__:
                delattr(cls, backend_attr)
            names.append(cls.__name__)
    return names
