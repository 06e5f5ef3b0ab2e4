"""The eval family: the two evaluation pipelines of ``groupvit-fast eval`` at their benchmark settings
(docs/evaluation.md, "Speed"), timed from the decoded image to the prediction.

* seg (``eval/seg/<config>/<n>x<H>x<W>/k<classes>``): VOC-sized images (375 x 500, the most common
  VOC size) through the VOC protocol (short side resized to 448, 448 px windows at stride 224, the
  21 VOC classes with a thresholded background): ``GroupViTSegmenter`` (one encoder pass per crop,
  crops batched) against the step-by-step reference pipeline (one crop at a time, the encoder
  twice per crop, as NVlabs), the same runners as the ``segment`` family;
* cls (``eval/cls/<config>/b<B>/k<classes>``): a batch of 224 x 224 images through the image
  encoder and a 1000-class zero-shot classifier to the top-5 classes, ours against the reference
  formulation.

Decoding and resizing run in DataLoader workers that overlap the model in ``eval`` and are left
out; random weights (speed does not depend on them) and class embeddings.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from .family import BuildContext, Family, throughput_record
from .model import IMAGE_TEXT_CONFIGS, model_bank
from .runner import Runner, dispatched_backends
from .segment import SEGMENT_IMPLS, SEGMENT_NOTE, VOC_CLASSES, SegmentCase, build_segment_runner, segment_bank

#: The most common PASCAL VOC image size (height, width).
VOC_SIZE = (375, 500)


@dataclass(frozen=True)
class EvalSegCase(SegmentCase):
    """``eval seg``: a ``SegmentCase`` at the evaluation's settings, under the ``eval`` family."""

    task: str = "seg"

    @property
    def id(self) -> str:
        return f"eval/seg/{self.config}/{self.images}x{self.size[0]}x{self.size[1]}/k{len(self.classes)}"

    @property
    def group(self) -> str:
        return self.id


@dataclass(frozen=True)
class EvalClsCase:
    """``eval cls``: ``batch`` images through the image encoder and a ``classes``-way classifier."""

    config: str  # an IMAGE_TEXT_CONFIGS name
    batch: int
    impls: tuple[str, ...]
    classes: int = 1000
    task: str = "cls"
    dtype: str = "fp32"

    @property
    def id(self) -> str:
        return f"eval/cls/{self.config}/b{self.batch}/k{self.classes}"

    @property
    def group(self) -> str:
        return self.id


class _ClsBank:
    """What both implementations of one EvalClsCase share: the images, the normalised class
    embeddings ``[classes, D]`` (random) and the reference's logits for the error column."""

    def __init__(self, case: EvalClsCase, ctx: BuildContext):
        self.models = model_bank(ctx, case.config)
        self.images = self.models.images(case.batch)
        reference = self.models.model("reference").eval()
        with torch.no_grad():
            dim = reference.encode_image(self.images[:1]).shape[-1]
        gen = torch.Generator(device=ctx.device).manual_seed(5)
        self.weight = torch.nn.functional.normalize(
            torch.randn(case.classes, dim, generator=gen, device=ctx.device), dim=-1
        )
        self.reference = reference
        self._reference_logits: torch.Tensor | None = None

    def logits(self, model: torch.nn.Module) -> torch.Tensor:
        with torch.no_grad():
            return torch.nn.functional.normalize(model.encode_image(self.images), dim=-1) @ self.weight.t()

    def reference_logits(self) -> torch.Tensor:
        if self._reference_logits is None:
            self._reference_logits = self.logits(self.reference)
        return self._reference_logits


def build_cls_runner(case: EvalClsCase, impl: str, ctx: BuildContext) -> Runner:
    """The timed call: the logits of the batch and their top-5 classes ``[B, 5]``."""
    from ..timing import rel_error

    if impl not in ("reference", "ours"):
        raise ValueError(f"{case.id}: unknown implementation {impl!r} (reference or ours)")
    bank = ctx.shared(("cls-bank", case), lambda: _ClsBank(case, ctx))
    model = bank.reference if impl == "reference" else bank.models.model("ours").eval()
    last: list[torch.Tensor] = []

    def fn():
        logits = bank.logits(model)
        last[:] = [logits]
        return logits.topk(5, dim=-1).indices

    def error() -> float:
        return rel_error([last[0] if last else bank.logits(model)], [bank.reference_logits()])

    runner = Runner(
        fn=fn,
        images=case.batch,
        owned_storages={p.untyped_storage().data_ptr() for p in model.parameters()},
        error=error,
        error_vs="relative error of the logits against the reference model's",
    )
    with torch.no_grad():
        runner.backend = dispatched_backends(lambda: model.encode_image(bank.images[:1]))
    return runner


def _build(case: EvalSegCase | EvalClsCase, impl: str, ctx: BuildContext) -> Runner:
    if isinstance(case, EvalClsCase):
        return build_cls_runner(case, impl, ctx)
    return build_segment_runner(case, impl, segment_bank(case, ctx))


def _record(
    case: EvalSegCase | EvalClsCase, impl: str, stats: dict[str, Any], runner: Runner, ctx: BuildContext
) -> dict:
    return throughput_record(case, impl, stats, runner)


def _seg(config: str, images: int, size: tuple[int, int] = VOC_SIZE, **kw: Any) -> EvalSegCase:
    return EvalSegCase(config, images, size, VOC_CLASSES, SEGMENT_IMPLS, **kw)


_IMPLS = ("reference", "ours")
EVAL_TIER_CASES: dict[str, tuple[EvalSegCase | EvalClsCase, ...]] = {
    name: tuple(c for c in cases if c.config in IMAGE_TEXT_CONFIGS)
    for name, cases in {
        "gpu": (_seg("groupvit-s-image-text", 8), EvalClsCase("groupvit-s-image-text", 256, _IMPLS)),
        "gpu-quick": (_seg("groupvit-s-image-text", 4), EvalClsCase("groupvit-s-image-text", 64, _IMPLS)),
        "cpu": (_seg("groupvit-s-image-text", 2), EvalClsCase("groupvit-s-image-text", 32, _IMPLS)),
        "cpu-quick": (EvalClsCase("groupvit-s-image-text", 8, _IMPLS),),
        "smoke": (
            _seg("groupvit-tiny-image-text", 2, (60, 80), crop=64, stride=32, bg_thresh=0.5),
            EvalClsCase("groupvit-tiny-image-text", 2, _IMPLS),
        ),
    }.items()
}

FAMILY = Family(
    name="eval",
    title="Evaluation pipelines",
    cases=EVAL_TIER_CASES,
    build=_build,
    record=_record,
    impl_info={
        "reference": "the reference formulation (seg: the step-by-step reference pipeline)",
        "ours": "our model (seg: GroupViTSegmenter)",
    },
    note=(
        "seg: "
        + SEGMENT_NOTE.removeprefix("segment: ").replace(
            "(448 px slide inference; smoke: 64 px)",
            "(VOC protocol: short side 448, 448 px windows at stride 224; smoke: 64 px)",
        )
        + " cls: B images at the model's size (224 px for GroupViT-S) through the image encoder and a "
        "1000-class classifier to the top-5; rel err: the logits against the reference model's."
    ),
)
