"""The zero-shot segmentation cases: the step-by-step reference pipeline against
GroupViTSegmenter, same weights, same images."""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch

from groupvit_fast.segmentation.classes import PRESETS, VOC_CLASSES
from groupvit_fast.segmentation.test_time import PROTOCOL

from .family import BuildContext, Family, throughput_record
from .model import IMAGE_TEXT_CONFIGS, ModelBank, model_bank
from .runner import Runner, dispatched_backends

SEGMENT_IMPLS = ("reference", "ours")


@dataclass(frozen=True)
class SegmentCase:
    """Zero-shot segmentation throughput (docs/segmentation.md): ``images`` random ``size x size``
    images through the 448 px slide-inference protocol (``crop``/``stride`` windows after resizing
    the short side to ``crop``; NVlabs' protocol, ``segmentation.test_time.PROTOCOL``, and VOC's threshold
    by default), ``classes`` the class names (first ``background``: thresholded; the evaluation's VOC
    names, ``segmentation.classes.VOC_CLASSES``)."""

    config: str  # an IMAGE_TEXT_CONFIGS name
    images: int
    size: tuple[int, int]
    classes: tuple[str, ...]
    impls: tuple[str, ...]
    crop: int = PROTOCOL.crop_size
    stride: int = PROTOCOL.stride
    bg_thresh: float = PRESETS["voc"].bg_thresh
    task: str = "segment"
    dtype: str = "fp32"

    @property
    def batch(self) -> int:
        return self.images

    @property
    def id(self) -> str:
        return f"segment/{self.config}/{self.images}x{self.size[0]}x{self.size[1]}/k{len(self.classes)}"

    @property
    def group(self) -> str:
        return self.id


def _class_tokens(config: str, texts: list[str]) -> torch.Tensor:
    """Deterministic token ids per text (the real BPE tokenizer is not needed for throughput): ids
    from the characters, then the end-of-text token (the largest id: the text encoder reads its
    feature there), as ``ModelBank.inputs`` builds them."""
    enc = IMAGE_TEXT_CONFIGS[config]["text_encoder"]
    vocab, length = enc["vocab_size"], enc["context_length"]
    out = torch.zeros(len(texts), length, dtype=torch.long)
    for i, t in enumerate(texts):
        ids = [1 + (sum(map(ord, t)) * (j + 7)) % (vocab - 2) for j in range(min(len(t), length - 1))]
        out[i, : len(ids)] = torch.tensor(ids)
        out[i, len(ids)] = vocab - 1
    return out


class SegmentBank:
    """What both implementations of one SegmentCase share: the images (uint8, random), the class
    embeddings (computed once, by our model: the same weights as the reference's) and the
    reference pipeline's label maps (from its last timed call, else computed once)."""

    def __init__(self, case: SegmentCase, models: ModelBank, seed: int = 4):
        from groupvit_fast.segmentation import TextEmbeddingCache, resolve_classes

        self.case, self.models, self.device = case, models, models.device
        self.class_set = resolve_classes(list(case.classes), case.bg_thresh)
        gen = torch.Generator().manual_seed(seed)
        self.images = [
            torch.randint(0, 256, (3, *case.size), dtype=torch.uint8, generator=gen).to(self.device)
            for _ in range(case.images)
        ]
        self.text_cache = TextEmbeddingCache()
        self.text_model = models.model("ours").eval()
        self.text = self.text_cache.get(
            self.text_model,
            self.class_set.text_names,
            "simple",
            tokenizer=functools.partial(_class_tokens, case.config),
        )
        self.reference_labels: list[torch.Tensor] | None = None

    def reference_call(self, model: torch.nn.Module) -> list[torch.Tensor]:
        from groupvit_fast.reference.segmentation import reference_segment_scores

        c = self.case
        labels = [
            reference_segment_scores(
                model,
                img,
                self.text,
                with_bg=self.class_set.with_bg,
                bg_thresh=self.class_set.bg_thresh,
                crop=c.crop,
                stride=c.stride,
                short_side=c.crop,
            ).argmax(0)
            for img in self.images
        ]
        self.reference_labels = labels
        return labels

    def label_disagreement(self, labels: list[torch.Tensor]) -> float:
        if self.reference_labels is None:
            self.reference_call(self.models.model("reference").eval())
        same = sum(int((a == b).sum()) for a, b in zip(labels, self.reference_labels, strict=True))
        return 1.0 - same / sum(a.numel() for a in labels)


def build_segment_runner(case: SegmentCase, impl: str, bank: SegmentBank) -> Runner:
    """``reference``: the step-by-step path (groupvit_fast.reference.segmentation) with the
    reference-formulation model, one crop at a time, the encoder twice per crop; ``ours``:
    GroupViTSegmenter with the default model (one pass per batch of crops, batched scoring)."""
    if impl not in SEGMENT_IMPLS:
        raise ValueError(f"unknown segmentation implementation {impl!r}")
    last: list[torch.Tensor] = []
    if impl == "reference":
        model = bank.models.model("reference").eval()

        def fn():
            last[:] = bank.reference_call(model)
            return last

        error = None
    else:
        from groupvit_fast.segmentation import GroupViTSegmenter

        model = bank.text_model  # our model: its embeddings are in the cache already
        seg = GroupViTSegmenter(
            model,
            bank.class_set,
            crop_size=case.crop,
            stride=case.stride,
            short_side=case.crop,
            text_cache=bank.text_cache,
        )

        def fn():
            last[:] = seg.predict(bank.images)
            return last

        error = lambda: bank.label_disagreement(last or seg.predict(bank.images))  # noqa: E731
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    runner = Runner(
        fn=fn,
        images=case.images,
        owned_storages=params,
        error=error,
        error_vs=None if error is None else "fraction of pixels labelled differently from the reference",
    )
    with torch.no_grad():
        runner.backend = dispatched_backends(
            lambda: model.img_encoder(bank.images[0].new_zeros(1, 3, case.crop, case.crop, dtype=torch.float32))
        )
    return runner


# --- the segment family: its cases per tier, its records -------------------------------------

#: Zero-shot segmentation per tier: GroupViT-S at 448 px with the 21 VOC classes (one 448 x 448
#: window per image); the smoke tier's tiny model at 64 px (two windows of 64 at stride 32).
SEGMENT_CASES: dict[str, tuple[SegmentCase, ...]] = {
    name: tuple(c for c in cases if c.config in IMAGE_TEXT_CONFIGS)
    for name, cases in {
        "gpu": (SegmentCase("groupvit-s-image-text", 8, (448, 448), VOC_CLASSES, SEGMENT_IMPLS),),
        "gpu-quick": (SegmentCase("groupvit-s-image-text", 4, (448, 448), VOC_CLASSES, SEGMENT_IMPLS),),
        "cpu": (SegmentCase("groupvit-s-image-text", 2, (448, 448), VOC_CLASSES, SEGMENT_IMPLS),),
        "cpu-quick": (SegmentCase("groupvit-s-image-text", 1, (448, 448), VOC_CLASSES, SEGMENT_IMPLS),),
        "smoke": (
            SegmentCase(
                "groupvit-tiny-image-text",
                1,
                (64, 96),
                VOC_CLASSES[:4],
                SEGMENT_IMPLS,
                crop=64,
                stride=32,
                bg_thresh=0.5,
            ),
        ),
    }.items()
}


def segment_bank(case: SegmentCase, ctx: BuildContext) -> SegmentBank:
    """The run's ``SegmentBank`` of ``case`` (built once, with the model bank of its configuration)."""
    return ctx.shared(("segment-bank", case.id), lambda: SegmentBank(case, model_bank(ctx, case.config)))


def _build(case: SegmentCase, impl: str, ctx: BuildContext) -> Runner:
    return build_segment_runner(case, impl, segment_bank(case, ctx))


def _record(case: SegmentCase, impl: str, stats: dict, runner: Runner, ctx: BuildContext) -> dict:
    return throughput_record(case, impl, stats, runner)


SEGMENT_NOTE = (
    "segment: zero-shot segmentation of B random images (448 px slide inference; smoke: 64 px), "
    "`reference` the step-by-step path of groupvit_fast.reference.segmentation (one crop at a time, the "
    "encoder twice per crop) with the reference model, `ours` GroupViTSegmenter with our model; its rel "
    "err is the fraction of pixels labelled differently from the reference."
)

FAMILY = Family(
    name="segment",
    title="Zero-shot segmentation",
    cases=SEGMENT_CASES,
    build=_build,
    record=_record,
    impl_info={
        "reference": "the step-by-step reference pipeline with the reference model",
        "ours": "GroupViTSegmenter with our model (same weights)",
    },
    note=SEGMENT_NOTE,
)
