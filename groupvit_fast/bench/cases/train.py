"""The train family: the training pipeline's own step and its data loader (docs/training.md, "Benchmark").

* step (``train/<preset>/step/b<B>/<dtype>``): ``groupvit_fast.train.step.train_step`` on the
  image-text model (vision + text encoders, multi-label contrastive loss, backward, gradient
  clipping, AdamW built by ``groupvit_fast.train.optim``), ours against NVlabs' formulation
  (explicit attention, the reference assignment) and its ``torch.compile``, same weights and
  data. Presets: ``groupvit-s`` (the released configuration, multi_label=3), ``small`` (its
  layout at embed 192, depths [2, 1, 1], a 2-layer text encoder of width 128: a CPU size) and
  ``tiny`` (the smoke tier's);
* loader (``train/loader/w<workers>/b<B>``): decoded + DeiT-augmented (224 px) + tokenised
  images/s of ``TrainData`` with ``workers`` worker processes on synthetic webdataset shards
  (256 px JPEGs) written once per run.

A step record also carries ``recipe_hours``: the measured step time times the steps of the
30-epoch GCC + YFCC recipe at that batch in one process, the wall time that projects to.
"""

from __future__ import annotations

import copy
import tempfile
from dataclasses import dataclass
from typing import Any

import torch

from .family import BuildContext, Family, throughput_record
from .model import IMAGE_TEXT_CONFIGS
from .runner import Runner, dispatched_backends, fresh_compile

#: GCC3M + GCC12M + YFCC14M samples (configs/group_vit_gcc_yfcc_30e.yml), and its epochs.
RECIPE_SAMPLES = 2891445 + 11156203 + 14615499
RECIPE_EPOCHS = 30

TRAIN_IMPL_INFO = {
    "reference": 'NVlabs\' formulation: attn_backend="explicit", assign_backend="reference" in both encoders, eager',
    "reference-compiled": "torch.compile of the reference model (the compile falls in the warm-up)",
    "ours": 'the defaults: attn_backend="sdpa", assign_backend="auto", eager',
    "ours-compiled": "torch.compile of our model",
    "loader": "TrainData (webdataset shards, DeiT augmentation at 224, 77-token text) with its worker processes",
}
PRESETS = ("groupvit-s", "small", "tiny")


def preset_config(preset: str, impl: str) -> dict[str, Any]:
    """The NVlabs config dict of ``preset`` with the attention and assignment backends of ``impl``."""
    from groupvit_fast.models.registry import released_config

    if preset == "tiny":
        cfg = copy.deepcopy(IMAGE_TEXT_CONFIGS["groupvit-tiny-image-text"])
    elif preset in ("groupvit-s", "small"):
        cfg = released_config(multi_label=3)
        if preset == "small":  # GroupViT-S's layout at a fraction of its depth and width, for CPUs
            cfg["img_encoder"].update(embed_dim=192, num_heads=[3, 3, 3], depths=[2, 1, 1], img_size=224)
            cfg["text_encoder"].update(layers=2, width=128)
            cfg["output_dim"] = 128
    else:
        raise ValueError(f"unknown training preset {preset!r} (known: {', '.join(PRESETS)})")
    reference = impl.removesuffix("-compiled") == "reference"
    cfg["img_encoder"].update(
        attn_backend="explicit" if reference else "sdpa", assign_backend="reference" if reference else "auto"
    )
    cfg["text_encoder"]["attn_backend"] = "explicit" if reference else "sdpa"
    return cfg


@dataclass(frozen=True)
class TrainCase:
    """One optimiser step of the image-text model at ``preset``, ``batch`` images, in ``dtype``
    (``fp32``, ``bf16-autocast`` or ``fp16-autocast`` with a GradScaler)."""

    preset: str
    batch: int
    dtype: str
    impls: tuple[str, ...]
    task: str = "step"

    @property
    def config(self) -> str:
        return self.preset

    @property
    def id(self) -> str:
        return f"train/{self.preset}/step/b{self.batch}/{self.dtype}"

    @property
    def group(self) -> str:
        return f"train/{self.preset}/step/b{self.batch}"


@dataclass(frozen=True)
class LoaderCase:
    """One batch of ``batch`` samples from ``TrainData`` with ``workers`` workers, on ``samples``
    synthetic samples (over 4 shards)."""

    batch: int
    workers: int
    samples: int = 512
    impls: tuple[str, ...] = ("loader",)
    task: str = "load"
    dtype: str = "fp32"
    config: str = "deit-224"

    @property
    def id(self) -> str:
        return f"train/loader/w{self.workers}/b{self.batch}"

    @property
    def group(self) -> str:
        return self.id


_AUTOCAST = {"fp32": None, "bf16-autocast": torch.bfloat16, "fp16-autocast": torch.float16}


def _step_inputs(cfg: dict[str, Any], batch: int, device: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Images ``[B, 3, S, S]`` N(0, 1) and token ids ``[B, 1 + multi_label, L]`` (random words and
    the end-of-text token, the largest id, at a random position), seeded: the same for every impl."""
    gen = torch.Generator(device=device).manual_seed(3)
    size = cfg["img_encoder"].get("img_size", 224)
    images = torch.randn(batch, 3, size, size, generator=gen, device=device)
    vocab, length = cfg["text_encoder"]["vocab_size"], cfg["text_encoder"]["context_length"]
    shape = (batch, 1 + cfg.get("multi_label", 0), length)
    text = torch.randint(1, vocab - 1, shape, generator=gen, device=device)
    text.scatter_(-1, torch.randint(2, length, shape[:2] + (1,), generator=gen, device=device), vocab - 1)
    return images, text


def build_step_runner(case: TrainCase, impl: str, device: str) -> Runner:
    """The timed call is one ``train_step`` (returns the total loss); its forward alone (under
    grad, for the saved-bytes count) is the model's losses summed as the step sums them."""
    from omegaconf import OmegaConf

    from groupvit_fast.models.registry import build_model
    from groupvit_fast.train.optim import build_optimizer
    from groupvit_fast.train.step import total_loss, train_step

    if case.dtype not in _AUTOCAST:
        raise ValueError(f"{case.id}: dtype must be one of {', '.join(_AUTOCAST)}, got {case.dtype!r}")
    cfg = preset_config(case.preset, impl)
    torch.manual_seed(0)  # the same weights for every implementation (the backends hold no parameters)
    model = build_model(cfg).to(device).train()
    optimizer = build_optimizer(
        model,
        OmegaConf.create(
            {
                "weight_decay": 0.05,
                "skip_decay_embeddings": False,
                "optimizer": {"name": "adamw", "eps": 1e-8, "betas": [0.9, 0.999]},
            }
        ),
        lr=1e-4,
    )
    call = fresh_compile(model) if impl.endswith("-compiled") else model
    images, text = _step_inputs(cfg, case.batch, device)
    autocast_dtype = _AUTOCAST[case.dtype]
    scaler = torch.amp.GradScaler(device) if autocast_dtype == torch.float16 else None
    dev = torch.device(device)

    def fn():
        return train_step(
            call, [{"image": images, "text": text}], optimizer, device=dev, autocast_dtype=autocast_dtype, scaler=scaler
        )["total_loss"]

    def forward():
        with torch.autocast(dev.type, dtype=autocast_dtype or torch.float32, enabled=autocast_dtype is not None):
            return total_loss(call(images, text))

    owned = {p.untyped_storage().data_ptr() for p in model.parameters()}
    owned.update(t.untyped_storage().data_ptr() for t in (images, text))
    runner = Runner(fn=fn, images=case.batch, owned_storages=owned, forward_for_saved=forward)
    with torch.no_grad():
        runner.backend = dispatched_backends(lambda: model.img_encoder(images[:1]))
    return runner


class _Loader:
    """An endless stream of ``TrainData`` batches (a new epoch when one ends) over synthetic shards
    in a temporary folder that lives as long as this object."""

    def __init__(self, case: LoaderCase):
        from groupvit_fast.train.config import load_config
        from groupvit_fast.train.data import TrainData, write_synthetic_shards

        self._folder = tempfile.TemporaryDirectory(prefix="groupvit-fast-bench-shards-")
        folder = self._folder.name
        write_synthetic_shards(folder, 4, case.samples, image_size=256)
        opts = [
            f"data.dataset.meta.synthetic.path={folder}",
            "data.dataset.meta.synthetic.prefix=synthetic-{000000..000003}.tar",
            f"data.dataset.meta.synthetic.length={case.samples}",
            f"data.batch_size={case.batch}",
            f"data.num_workers={case.workers}",
            "data.img_aug.deit_aug=true",
            "data.img_aug.img_size=224",
            "data.img_aug.img_scale=[0.08,1.0]",
            "data.text_aug.max_seq_len=77",
        ]
        self.data = TrainData(load_config("tiny", opts, output=folder), 0, 1)
        self.epoch = 0
        self._it = iter(self.data.loader(self.epoch))

    def next(self) -> dict[str, torch.Tensor]:
        try:
            return next(self._it)
        except StopIteration:  # the epoch ended: the next one (its worker start-up is one slow call)
            self.epoch += 1
            self._it = iter(self.data.loader(self.epoch))
            return next(self._it)


def build_loader_runner(case: LoaderCase, impl: str, ctx: BuildContext) -> Runner:
    if impl != "loader":
        raise ValueError(f"{case.id}: the only implementation is 'loader', got {impl!r}")
    loader = ctx.shared(("loader", case), lambda: _Loader(case))
    loader.next()  # worker start-up and the shuffle buffer's fill: not part of any timed call
    return Runner(fn=loader.next, images=case.batch)


def _build(case: TrainCase | LoaderCase, impl: str, ctx: BuildContext) -> Runner:
    if isinstance(case, LoaderCase):
        return build_loader_runner(case, impl, ctx)
    return build_step_runner(case, impl, ctx.device)


def train_record(
    case: TrainCase | LoaderCase, impl: str, stats: dict[str, Any], runner: Runner, ctx: BuildContext
) -> dict:
    record = throughput_record(case, impl, stats, runner)
    if isinstance(case, TrainCase):
        steps = RECIPE_SAMPLES // case.batch * RECIPE_EPOCHS
        record["recipe_steps"] = steps
        record["recipe_hours"] = steps * stats["median_ms"] / 1e3 / 3600
    else:
        record["workers"] = case.workers
    return record


def recipe_projection(records: list[dict[str, Any]]) -> list[str]:
    """One line per step record of ``ours``: the 30-epoch recipe's wall time in one process."""
    lines = [
        f"- {r['config']} B={r['batch']} {r['dtype']}: {r['recipe_steps']:,} steps x {r['median_ms']:.0f} ms = "
        f"{r['recipe_hours']:,.0f} hours"
        for r in records
        if r.get("recipe_hours") and r["impl"] == "ours"
    ]
    if not lines:
        return []
    return [
        "",
        f"Projection (ours): 30 epochs of {RECIPE_SAMPLES:,} samples (GCC3M + GCC12M + YFCC14M) in one process "
        "on this device at the measured batch (the original: 16 V100 for about 2 days, GroupViT-S, global "
        "batch 4096):",
        "",
        *lines,
    ]


TRAIN_TIER_CASES: dict[str, tuple[TrainCase | LoaderCase, ...]] = {
    "gpu": (
        TrainCase("groupvit-s", 256, "bf16-autocast", ("reference", "reference-compiled", "ours")),
        TrainCase("groupvit-s", 64, "bf16-autocast", ("reference", "ours")),
        LoaderCase(batch=64, workers=4),
    ),
    "gpu-quick": (TrainCase("groupvit-s", 64, "bf16-autocast", ("reference", "ours")),),
    # the README's CPU training-step tables: small and GroupViT-S at B=4, fp32, with torch.compile
    "cpu": (
        TrainCase("small", 4, "fp32", ("reference", "reference-compiled", "ours")),
        TrainCase("groupvit-s", 4, "fp32", ("reference", "reference-compiled", "ours")),
        LoaderCase(batch=32, workers=1),
    ),
    "cpu-quick": (TrainCase("small", 2, "fp32", ("reference", "ours")),),
    "smoke": (TrainCase("tiny", 2, "fp32", ("reference", "ours")), LoaderCase(batch=8, workers=1, samples=64)),
}
if not IMAGE_TEXT_CONFIGS:  # a checkout without the image-text model: no training step to time
    TRAIN_TIER_CASES = {
        name: tuple(c for c in cases if isinstance(c, LoaderCase)) for name, cases in TRAIN_TIER_CASES.items()
    }

FAMILY = Family(
    name="train",
    title="Training pipeline",
    cases=TRAIN_TIER_CASES,
    build=_build,
    record=train_record,
    impl_info=TRAIN_IMPL_INFO,
    summary=recipe_projection,
    note=(
        "step: one groupvit_fast.train.step.train_step of the image-text model (forward of both encoders, "
        "multi-label contrastive loss, backward, gradient clipping, AdamW), same weights and data for every "
        "implementation; peak memory after the optimizer state exists. load: one batch from TrainData "
        "(decode, DeiT augmentation, tokenisation) with the worker processes the case id names (w<N>): "
        "images/s per worker is images/s over N. On a CPU shared with other jobs `--threads 1` gives steadier "
        "step times (all cores' OpenMP threads otherwise stall on each other)."
    ),
)
