"""Every key a training config may set, its type and its default (OmegaConf structured configs).

NVlabs' ``configs/default.yml`` keys keep their names and values, so the original recipes load as they
are; keys marked "ours" are additions whose defaults keep the original behaviour (docs/training.md
"Config keys"). Adding a key is one line here: a field with its type and default in the dataclass of
its section (a new section is a new dataclass and one field naming it). ``config.load_config`` merges
the YAML files and ``--opts`` onto ``TrainingConfig``: OmegaConf refuses an unknown key or a value that
does not convert to the field's type, and ``config`` words that as one line naming the key.

Free-form on purpose: ``model`` (checked by ``build_model``) and the entries of ``data.dataset.meta``
(a name per dataset, each a ``DatasetMeta``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

__all__ = ["DATASET_TYPES", "DatasetMeta", "TrainingConfig"]

# OmegaConf's markers written out, so that this module (and ``groupvit_fast.train``) imports without the
# ``train`` extra: "???" is omegaconf.MISSING (a mandatory value), "${a.b}" is omegaconf.II("a.b").
MISSING = "???"

#: The values ``data.dataset.meta.<name>.type`` may take.
DATASET_TYPES = ("img_txt_pair", "img_cls_pair", "manifest", "synthetic", "scenes", "shapes")


@dataclass
class DatasetMeta:
    type: str = MISSING  # one of DATASET_TYPES
    path: str = MISSING
    prefix: str = ""
    length: int = MISSING  # type: ignore[assignment]


def _nvlabs_datasets() -> dict[str, DatasetMeta]:
    return {
        "gcc3m": DatasetMeta("img_txt_pair", "local_data/gcc3m_shards", "gcc-train-{000000..00436}.tar", 2891445),
        "gcc12m": DatasetMeta(
            "img_txt_pair", "local_data/gcc12m_shards", "gcc-conceptual-12m-{000000..001943}.tar", 11156203
        ),
        "yfcc14m": DatasetMeta("img_txt_pair", "local_data/yfcc14m_shards", "yfcc14m-{000000..001888}.tar", 14615499),
        "redcap12m": DatasetMeta(
            "img_txt_pair", "local_data/redcap12m_shards", "redcap12m-{000000..001211}.tar", 11866987
        ),
        "imagenet": DatasetMeta(
            "img_cls_pair", "local_data/imagenet_shards", "imagenet-val-{000000..000049}.tar", 50000
        ),
    }


@dataclass
class DatasetConfig:
    meta: dict[str, DatasetMeta] = field(default_factory=_nvlabs_datasets)
    train: list[str] = field(default_factory=lambda: ["gcc3m", "gcc12m", "yfcc14m"])
    val: list[str] = field(default_factory=lambda: ["imagenet"])


@dataclass
class ImageAugConfig:
    deit_aug: bool = True
    img_size: int = 224
    img_scale: list[float] = field(default_factory=lambda: [0.08, 1.0])
    interpolation: str = "bilinear"
    color_jitter: float = 0.4
    auto_augment: str = "rand-m9-mstd0.5-inc1"
    re_prob: float = 0.25
    re_mode: str = "pixel"
    re_count: int = 1


@dataclass
class TextAugConfig:
    max_seq_len: int = 77
    multi_label: int = 0
    word_type: str = "noun"


@dataclass
class DataConfig:
    batch_size: int = 256  # per process
    pin_memory: bool = True
    num_workers: int = 6
    shuffle_buffer: int = 10000
    prefetch_factor: int = 2  # ours: batches prefetched per loader worker
    seed: int = "${train.seed}"  # type: ignore[assignment]  # an interpolation
    dataset: DatasetConfig = field(default_factory=DatasetConfig)
    img_aug: ImageAugConfig = field(default_factory=ImageAugConfig)
    text_aug: TextAugConfig = field(default_factory=TextAugConfig)


@dataclass
class SchedulerConfig:
    name: str = "cosine"


@dataclass
class OptimizerConfig:
    name: str = "adamw"
    eps: float = 1e-8
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])


@dataclass
class GradCacheConfig:
    # ours: the encoders run this many pairs at a time, the loss sees the whole batch (None: off;
    # docs/training.md, "Gradient caching"; checked against the batch by train/grad_cache.py)
    chunk_size: Optional[int] = None  # noqa: UP045 (OmegaConf 2.3 reads the annotation: no `int | None`)


@dataclass
class TrainConfig:
    start_epoch: int = 0
    epochs: int = 30
    warmup_epochs: int = 2
    base_lr: float = 1.6e-3
    weight_decay: float = 0.05
    warmup_lr: float = 4e-6
    min_lr: float = 4e-5
    clip_grad: float = 5.0
    accumulation_steps: int = 0
    amp_opt_level: str = "O1"  # O0 = fp32; anything else = mixed precision with train.amp_dtype
    seed: int = 0
    amp_dtype: str = "auto"  # ours: auto (bf16 on CUDA, fp32 on CPU), bf16, fp16 (+ GradScaler), fp32
    strategy: str = "ddp"  # ours: ddp or fsdp (FSDP2 fully_shard)
    compile: bool = False  # ours: torch.compile the model
    skip_decay_embeddings: bool = False  # ours: true also exempts pos_embed, group tokens, logit scales from decay
    max_steps: int = 0  # ours: stop after this many optimiser steps in total (0: the whole schedule)
    grad_cache: GradCacheConfig = field(default_factory=GradCacheConfig)
    lr_scheduler: SchedulerConfig = field(default_factory=SchedulerConfig)
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)


@dataclass
class ClassificationEvalConfig:
    save_best: bool = True
    template: str = "subset"


@dataclass
class SegmentationEvalConfig:
    save_best: bool = True
    cfg: str = "segmentation/configs/_base_/datasets/pascal_voc12.py"
    template: str = "simple"
    opts: list[Any] = field(default_factory=list)
    dataset: str = ""  # ours: voc, context, coco-object, ade20k, cityscapes (groupvit_fast.evaluation)
    data_root: str = ""  # ours: that dataset's folder
    images: str = ""  # ours: fallback: a folder of images ...
    gt: str = ""  # ours: ... with <stem>.png label masks
    classes: str = "voc"  # ours: the fallback's classes (a preset or a comma-separated list)
    short_side: int = 0  # ours: test-time short side (0: the dataset's, 448 for the benchmarks)
    crop_size: int = 0  # ours: sliding-window size (0: the dataset's, 448)
    stride: int = 0  # ours: sliding-window stride (0: the dataset's, 224)
    bg_thresh: float = 0.0  # ours: background threshold (0: the dataset's)


@dataclass
class EvaluateConfig:
    eval_only: bool = False
    eval_freq: int = 1
    task: list[str] = field(default_factory=lambda: ["cls", "seg"])
    cls: ClassificationEvalConfig = field(default_factory=ClassificationEvalConfig)
    seg: SegmentationEvalConfig = field(default_factory=SegmentationEvalConfig)


@dataclass
class CheckpointConfig:
    auto_resume: bool = True
    resume: str = ""
    freq: int = 1
    max_kept: int = -1
    save_freq: int = 1
    step_freq: int = 0  # ours: also write checkpoint.pth every this many steps (0: only per epoch)


@dataclass
class TrainingConfig:
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    evaluate: EvaluateConfig = field(default_factory=EvaluateConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    model: dict[str, Any] = field(default_factory=dict)  # free-form: build_model checks it
    model_name: str = ""  # display name in the logger
    output: str = MISSING  # set by load_config: output/<run name>[/<tag>] unless given
    tag: str = "default"
    print_freq: int = 10
    seed: int = 0
    wandb: bool = False
    local_rank: int = MISSING  # type: ignore[assignment]  # set by load_config from $LOCAL_RANK
    vis: list[Any] = field(default_factory=list)
