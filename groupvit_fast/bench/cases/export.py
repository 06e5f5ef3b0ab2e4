"""The export cases (docs/export.md, "Speed"): the same images segmented by the PyTorch pipeline
(``GroupViTSegmenter``) and by the exported graph on onnxruntime's CPU provider (``OnnxSegmenter``), same
weights, same class embeddings; the report also gives the graph's size on disk."""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, fields

import numpy as np
import torch

from .family import BuildContext, Family, throughput_record
from .runner import Runner, dispatched_backends
from .segment import SEGMENT_CASES, SegmentCase, segment_bank

EXPORT_IMPLS = ("pytorch", "onnxruntime")


@dataclass(frozen=True)
class ExportCase(SegmentCase):
    """``SegmentCase``'s problem (``images`` random ``size`` images, slide inference, ``classes``), timed
    through the PyTorch pipeline and through the exported graph on onnxruntime."""

    task: str = "segment-export"

    @property
    def id(self) -> str:
        return f"export/{self.config}/{self.images}x{self.size[0]}x{self.size[1]}/k{len(self.classes)}"


class ExportBank:
    """The export of one case's model (its ``SegmentBank``'s weights), written once per run."""

    def __init__(self, case: ExportCase, ctx: BuildContext):
        from groupvit_fast.export import export_onnx

        self.segment = segment_bank(case, ctx)
        self.folder = tempfile.mkdtemp(prefix="groupvit-bench-onnx-")
        self.record = export_onnx(self.segment.text_model.cpu().eval(), self.folder, force=True)
        self.images_hwc = [img.permute(1, 2, 0).cpu().numpy() for img in self.segment.images]

    @property
    def size_mb(self) -> float:
        return os.path.getsize(os.path.join(self.folder, "image.onnx")) / 2**20


def _bank(case: ExportCase, ctx: BuildContext) -> ExportBank:
    return ctx.shared(("export-bank", case.id), lambda: ExportBank(case, ctx))


def build_export_runner(case: ExportCase, impl: str, ctx: BuildContext) -> Runner:
    """``pytorch``: ``GroupViTSegmenter.predict`` on the images; ``onnxruntime``: ``OnnxSegmenter.predict`` on
    the same images (uint8 HWC), with the PyTorch pipeline's class embeddings; its rel err is the fraction of
    pixels labelled differently from the PyTorch pipeline."""
    from groupvit_fast.segmentation import GroupViTSegmenter

    if impl not in EXPORT_IMPLS:
        raise ValueError(f"unknown export implementation {impl!r}")
    bank = _bank(case, ctx)
    seg = bank.segment
    pytorch = GroupViTSegmenter(
        seg.text_model,
        seg.class_set,
        crop_size=case.crop,
        stride=case.stride,
        short_side=case.crop,
        text_cache=seg.text_cache,
    )
    if impl == "pytorch":
        last: list = []

        def fn():
            last[:] = pytorch.predict(seg.images)
            return last

        runner = Runner(fn=fn, images=case.images)
        with torch.no_grad():
            runner.backend = dispatched_backends(
                lambda: seg.text_model.img_encoder(torch.zeros(1, 3, case.crop, case.crop))
            )
        return runner
    from groupvit_fast.export.runner import OnnxSegmenter

    ort = OnnxSegmenter(
        bank.folder,
        seg.class_set,
        crop_size=case.crop,
        stride=case.stride,
        short_side=case.crop,
        text_embeddings=seg.text.cpu().numpy(),
        threads=torch.get_num_threads(),  # the same thread count as the PyTorch side (the header records it)
    )

    def fn_ort():
        return ort.predict(bank.images_hwc)

    def error() -> float:
        ours = ort.predict(bank.images_hwc)
        ref = [t.cpu().numpy() for t in pytorch.predict(seg.images)]
        return 1.0 - sum(int((a == b).sum()) for a, b in zip(ours, ref, strict=True)) / sum(a.size for a in ref)

    runner = Runner(
        fn=fn_ort,
        images=case.images,
        error=error,
        error_vs="fraction of pixels labelled differently from the PyTorch pipeline",
    )
    runner.backend = "onnxruntime-" + ",".join(ort.session.get_providers())
    return runner


def _record(case: ExportCase, impl: str, stats: dict, runner: Runner, ctx: BuildContext) -> dict:
    bank = _bank(case, ctx)
    import onnxruntime

    versions = {"onnxruntime": onnxruntime.__version__, "numpy": np.__version__}
    return throughput_record(case, impl, stats, runner, image_onnx_mb=round(bank.size_mb, 1), **versions)


#: the segment family's CPU tiers: the export family times the same problems (onnxruntime's CPU provider only)
EXPORT_TIERS = ("cpu", "cpu-quick", "smoke")


def export_case(case: SegmentCase) -> ExportCase:
    """``case``'s problem (model, images, size, classes, windows, threshold) with the export family's impls."""
    same = {f.name: getattr(case, f.name) for f in fields(SegmentCase) if f.name not in ("impls", "task")}
    return ExportCase(**same, impls=EXPORT_IMPLS)


EXPORT_CASES: dict[str, tuple[ExportCase, ...]] = {
    tier: tuple(export_case(c) for c in SEGMENT_CASES[tier]) for tier in EXPORT_TIERS
}

FAMILY = Family(
    name="export",
    title="Export: onnxruntime against PyTorch",
    cases=EXPORT_CASES,
    build=build_export_runner,
    record=_record,
    impl_info={
        "pytorch": "GroupViTSegmenter (the PyTorch CPU pipeline, our kernels)",
        "onnxruntime": "the exported image graph on onnxruntime's CPU provider, OnnxSegmenter around it",
    },
    reference_impl="pytorch",
    note=(
        "export: B random images segmented at 448 px (smoke: 64 px) by the PyTorch pipeline and by the exported "
        "graph on onnxruntime (CPU provider), same weights and class embeddings; `vs ref` is the speed-up of "
        "onnxruntime over PyTorch; `image_onnx_mb` the image graph's size on disk."
    ),
)
