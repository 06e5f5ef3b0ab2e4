"""The model cases: GroupViT (eval forward, training step) and the image-text model (training
step), ours against the reference formulation, their compiled versions and Hugging Face's model."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from ...common.precision import autocast_context
from .family import BuildContext, Family
from .grad_cache import grad_cache_impls
from .runner import Runner, fresh_compile

#: Model implementations. ``reference``: GroupViT(attn_backend="explicit", assign_backend="reference"),
#: the original formulation; ``ours``: the default GroupViT() (SDPA + assign_backend="auto");
#: ``*-compiled``: torch.compile of that module; ``hf``: transformers' GroupViTVisionModel.
MODEL_IMPL_INFO = {  # (image-text models: the same choice for their GroupViT and text encoders)
    "reference": 'GroupViT(attn_backend="explicit", assign_backend="reference"), eager',
    "reference-compiled": "torch.compile of the reference model",
    "ours": 'GroupViT() (attn_backend="sdpa", assign_backend="auto"), eager',
    "ours-compiled": "torch.compile of our model",
    "hf": "transformers GroupViTVisionModel (same weights), eager",
    "ours-gc<C>": "ours trained with gradient caching in chunks of C pairs (groupvit_fast.train.grad_cache)",
}

#: Vision-encoder configurations (GroupViT keyword arguments): GroupViT-S (the released one,
#: GroupViT's defaults) and a tiny one for the CI smoke tier.
MODEL_CONFIGS: dict[str, dict[str, Any]] = {
    "groupvit-s": {},
    "groupvit-tiny": {
        "img_size": 64,
        "embed_dim": 96,
        "depths": (1, 1, 1),
        "num_heads": (2, 2, 2),
        "num_group_tokens": (8, 4, 0),
        "num_output_groups": (8, 4),
    },
}


def _image_text_configs() -> dict[str, dict[str, Any]]:
    """Image-text models (``MultiLabelContrastive``, NVlabs config dicts for ``groupvit_fast.models.registry``):
    the released GroupViT-S one (multi_label=3: each image has its caption and 3 noun prompts) and
    a tiny one for the smoke tier."""
    try:
        from groupvit_fast.models.registry import released_config
    except ImportError:  # a checkout without the image-text model: those cases are left out
        return {}
    tiny = {
        "type": "MultiLabelContrastive",
        "img_encoder": {"type": "GroupViT", **MODEL_CONFIGS["groupvit-tiny"]},
        "text_encoder": {"type": "TextTransformer", "context_length": 16, "width": 64, "layers": 1, "vocab_size": 1000},
        "output_dim": 32,
        "proj_inner_dim": 64,
        "multi_label": 1,
    }
    return {"groupvit-s-image-text": released_config(multi_label=3), "groupvit-tiny-image-text": tiny}


IMAGE_TEXT_CONFIGS = _image_text_configs()

#: What docs/benchmarks.md asks for that no case measures yet (every report lists it).
NOT_MEASURED = (
    []
    if IMAGE_TEXT_CONFIGS
    else [
        "The image-text model (MultiLabelContrastive) is not in this checkout: its training-step and zero-shot "
        "segmentation cases are left out."
    ]
)


@dataclass(frozen=True)
class ModelCase:
    """One model, task and batch size in one dtype: the implementations ``impls`` side by side."""

    config: str
    task: str  # "eval" (forward, no grad) or "train" (forward + backward + optimizer step)
    batch: int
    dtype: str  # "fp32" or "bf16-autocast"
    impls: tuple[str, ...]

    @property
    def id(self) -> str:
        return f"model/{self.config}/{self.task}/b{self.batch}/{self.dtype}"

    @property
    def group(self) -> str:
        return f"model/{self.config}/{self.task}/b{self.batch}"


def _autocast(device: str, dtype: str):
    # fp32 cases switch autocast off: a timed fp32 run stays fp32 whatever encloses it
    return autocast_context(device, torch.bfloat16 if dtype == "bf16-autocast" else None, disable_outer=True)


def hf_config(config: str):
    """The ``transformers.GroupViTVisionConfig`` of the same network as ``GroupViT(**MODEL_CONFIGS[config])``."""
    from groupvit_fast.convert.hf_config import hf_vision_config

    return hf_vision_config(MODEL_CONFIGS[config])  # missing keys take GroupViT-S's defaults


_REFERENCE_BACKENDS = {"attn_backend": "explicit", "assign_backend": "reference"}


def _image_text_config(config: str, reference: bool) -> dict[str, Any]:
    cfg = dict(IMAGE_TEXT_CONFIGS[config])
    if reference:  # the original formulation in both encoders
        cfg["img_encoder"] = {**cfg["img_encoder"], **_REFERENCE_BACKENDS}
        cfg["text_encoder"] = {**cfg["text_encoder"], "attn_backend": "explicit"}
    return cfg


class ModelBank:
    """Builds each model of one configuration, all with the same weights (the reference's), on
    the same inputs, and caches the fp32 reference output per batch size for the error column."""

    def __init__(self, config: str, device: str, seed: int = 0):
        self.config, self.device = config, device
        self.image_text = config in IMAGE_TEXT_CONFIGS
        torch.manual_seed(seed)
        self.reference = self._build(reference=True).to(device)
        self.state = {k: v.detach().clone() for k, v in self.reference.state_dict().items()}
        vision = self.reference.img_encoder if self.image_text else self.reference
        self.img_size = vision.patch_embed.img_size[0]
        self._inputs: dict[int, tuple[torch.Tensor, torch.Tensor | None]] = {}
        self._ref_out: dict[int, torch.Tensor] = {}

    def _build(self, reference: bool) -> torch.nn.Module:
        if self.image_text:
            from groupvit_fast.models.registry import build_model

            return build_model(_image_text_config(self.config, reference))
        from groupvit_fast import GroupViT

        return GroupViT(**MODEL_CONFIGS[self.config], **(_REFERENCE_BACKENDS if reference else {}))

    def model(self, impl: str) -> torch.nn.Module:
        base = impl.removesuffix("-compiled")
        if base == "hf":
            from transformers import GroupViTVisionModel

            from groupvit_fast.convert import nvlabs_to_hf

            model = GroupViTVisionModel(hf_config(self.config))
            missing, unexpected = model.load_state_dict(nvlabs_to_hf(self.state), strict=False)
            if unexpected or [k for k in missing if "position_ids" not in k]:
                raise RuntimeError(f"HF weights do not match: missing {missing[:3]}, unexpected {unexpected[:3]}")
            return model.to(self.device)
        if base not in ("reference", "ours"):
            raise ValueError(f"unknown model implementation {impl!r}")
        model = self._build(reference=base == "reference")
        model.load_state_dict(self.state)
        return model.to(self.device)

    def inputs(self, batch: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``images [batch, 3, H, W]`` (N(0, 1)) and, for an image-text model, token ids
        ``[batch, 1 + multi_label, L]`` (random words, the end-of-text token, the largest id, at a
        random position: the text encoder reads its feature there). The same for every model."""
        if batch not in self._inputs:
            gen = torch.Generator(device=self.device).manual_seed(3)
            images = torch.randn(batch, 3, self.img_size, self.img_size, generator=gen, device=self.device)
            text = None
            if self.image_text:
                cfg = IMAGE_TEXT_CONFIGS[self.config]
                vocab, length = cfg["text_encoder"]["vocab_size"], cfg["text_encoder"]["context_length"]
                shape = (batch, 1 + cfg.get("multi_label", 0), length)
                text = torch.randint(1, vocab - 1, shape, generator=gen, device=self.device)
                ends = torch.randint(2, length, shape[:2] + (1,), generator=gen, device=self.device)
                text.scatter_(-1, ends, vocab - 1)
            self._inputs[batch] = (images, text)
        return self._inputs[batch]

    def images(self, batch: int) -> torch.Tensor:
        return self.inputs(batch)[0]

    def reference_output(self, batch: int) -> torch.Tensor:
        """fp32 eager reference-model output ``[B, C]`` on ``images(batch)`` (eval mode)."""
        if batch not in self._ref_out:
            self.reference.eval()
            with torch.no_grad():
                self._ref_out[batch] = self.reference(self.images(batch)).float()
        return self._ref_out[batch]


def _forward(model: torch.nn.Module, impl: str, x: torch.Tensor) -> torch.Tensor:
    if impl == "hf":
        return model(pixel_values=x).pooler_output
    return model(x)


def build_model_runner(case: ModelCase, impl: str, bank: ModelBank) -> Runner:
    from groupvit_fast.ops import backend_usage

    from .grad_cache import build_grad_cache_runner, grad_cache_chunk

    if grad_cache_chunk(impl) is not None:  # ours-gc<C>: the same model trained with gradient caching
        return build_grad_cache_runner(case, impl, bank)

    device = bank.device
    model = bank.model(impl)
    call = fresh_compile(model) if impl.endswith("-compiled") else model
    x, text = bank.inputs(case.batch)
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    params.update(t.untyped_storage().data_ptr() for t in (x, text) if t is not None)
    if bank.image_text and case.task != "train":
        raise ValueError(f"{case.id}: image-text models are benchmarked in training only")

    if case.task == "eval":
        model.eval()

        last: list[torch.Tensor] = []

        def fn():
            with torch.no_grad(), _autocast(device, case.dtype):
                out = _forward(call, impl, x)
            last[:] = [out]  # the error column reuses the last timed output: no extra forward
            return out

        runner = Runner(fn=fn, images=case.batch, outputs=lambda: [last[0].float()], owned_storages=params)
    else:
        model.train()
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5)

        def forward():
            with _autocast(device, case.dtype):
                if bank.image_text:  # the contrastive (+ multi-label) losses of MultiLabelContrastive
                    return sum(loss.float() for loss in call(x, text).values())
                return _forward(call, impl, x).float().square().mean()

        def fn():
            optimizer.zero_grad(set_to_none=True)
            loss = forward()
            loss.backward()
            optimizer.step()
            return loss

        runner = Runner(fn=fn, images=case.batch, owned_storages=params, forward_for_saved=forward)

    if impl != "hf":
        # which assignment backend dispatch picks, seen on one eager image in the task's mode
        # (usage is not counted inside compiled graphs, so ask the eager module)
        before = backend_usage()
        with torch.no_grad(), _autocast(device, case.dtype):
            (model.img_encoder if bank.image_text else model)(x[:1])
        used = {k for k, n in backend_usage().items() if n > before.get(k, 0)}
        runner.backend = ",".join(sorted(used)) or None
    return runner


# --- the model family: its cases per tier, its records ---------------------------------------


def _gpu_model_cases() -> list[ModelCase]:
    cases = []
    for task in ("eval", "train"):
        for batch in (1, 64, 256):
            compiled = ("reference-compiled", "ours-compiled") if batch == 64 else ()
            cases.append(
                ModelCase(
                    "groupvit-s",
                    task,
                    batch,
                    "bf16-autocast",
                    ("reference", *compiled[:1], "ours", *compiled[1:], *(("hf",) if task == "eval" else ())),
                )
            )
    cases.append(ModelCase("groupvit-s", "eval", 64, "fp32", ("reference", "ours", "hf")))
    cases.append(ModelCase("groupvit-s", "train", 64, "fp32", ("reference", "ours")))
    cases.append(ModelCase("groupvit-s-image-text", "train", 64, "bf16-autocast", ("reference", "ours")))
    # gradient caching (docs/training.md): GroupViT-S at batch 256, plain and in chunks of 64 (B=64 above: one chunk)
    cases.append(ModelCase("groupvit-s-image-text", "train", 256, "bf16-autocast", ("ours", "ours-gc64")))
    return cases


def _known(cases) -> tuple[ModelCase, ...]:
    return tuple(c for c in cases if c.config in MODEL_CONFIGS or c.config in IMAGE_TEXT_CONFIGS)


MODEL_TIER_CASES: dict[str, tuple[ModelCase, ...]] = {
    name: _known(cases)
    for name, cases in {
        "gpu": _gpu_model_cases(),
        "gpu-quick": (
            ModelCase("groupvit-s", "eval", 64, "bf16-autocast", ("reference", "ours", "hf")),
            ModelCase("groupvit-s", "train", 64, "bf16-autocast", ("reference", "ours")),
            ModelCase("groupvit-s-image-text", "train", 64, "bf16-autocast", ("reference", "ours", "ours-gc16")),
        ),
        "cpu": (
            ModelCase("groupvit-s", "eval", 8, "fp32", ("reference", "ours", "hf")),
            ModelCase("groupvit-s", "eval", 8, "bf16-autocast", ("ours",)),  # vs its fp32 row: speed-up, error
            ModelCase("groupvit-s", "train", 2, "fp32", ("reference", "ours")),
            ModelCase("groupvit-s-image-text", "train", 2, "fp32", ("reference", "ours")),
            # gradient caching (docs/training.md): a small image-text model, so that batch 256 takes seconds
            ModelCase("groupvit-tiny-image-text", "train", 16, "fp32", ("ours",)),  # one chunk's plain step
            *(
                ModelCase("groupvit-tiny-image-text", "train", b, "fp32", grad_cache_impls(b, (16, 64)))
                for b in (64, 128, 256)
            ),
        ),
        "cpu-quick": (ModelCase("groupvit-s", "eval", 8, "fp32", ("reference", "ours")),),
        "smoke": (
            ModelCase("groupvit-tiny", "eval", 2, "fp32", ("reference", "ours", "hf")),
            ModelCase("groupvit-tiny", "train", 2, "fp32", ("reference", "ours")),
            ModelCase("groupvit-tiny-image-text", "train", 2, "fp32", ("reference", "ours")),
        ),
    }.items()
}


def model_bank(ctx: BuildContext, config: str) -> ModelBank:
    """The run's ``ModelBank`` of ``config`` (one set of weights for every implementation), built once."""
    return ctx.shared(("model-bank", config), lambda: ModelBank(config, ctx.device))


def model_record(
    case: ModelCase, impl: str, stats: dict[str, Any], runner: Runner, ctx: BuildContext
) -> dict[str, Any]:
    """The report's record of one model measurement; the error is against the fp32 eager reference."""
    from ..timing import rel_error
    from .family import throughput_record

    record = throughput_record(case, impl, stats, runner)
    if runner.outputs is not None:
        record["rel_error"] = rel_error(runner.outputs(), [model_bank(ctx, case.config).reference_output(case.batch)])
        record["error_vs"] = "fp32 eager reference model, same weights and images"
    return record


def _build(case: ModelCase, impl: str, ctx: BuildContext) -> Runner:
    return build_model_runner(case, impl, model_bank(ctx, case.config))


FAMILY = Family(
    name="model",
    title="Models",
    cases=MODEL_TIER_CASES,
    build=_build,
    record=model_record,
    impl_info=MODEL_IMPL_INFO,
    note=(
        "eval: forward without grad; train: forward + backward + AdamW step (peak memory after the optimizer "
        "state exists). rel err: ||x - x_ref|| / ||x_ref|| of the image embedding against the fp32 eager "
        "reference model with the same weights and images."
    ),
)
