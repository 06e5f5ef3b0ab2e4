"""Training data from the config's ``data`` section (docs/training.md, "Data").

``TrainData(cfg, rank, world)`` checks everything before training starts (unknown dataset names,
missing shards, too few shards for ranks x workers, fewer samples than one global batch) and
builds one ``DataLoader`` per epoch: ``loader(epoch, start_positions, worker_offset)``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch

from ...common.distributed import rank_and_world
from ...datasets.scenes import write_scenes
from ...datasets.shapes import write_shapes
from .manifest import read_manifest
from .sources import ManifestSource, ShardSource, expand_shards
from .stream import ImageTextBatches
from .synthetic import write_synthetic_shards

if TYPE_CHECKING:  # annotations only (postponed: never evaluated at run time)
    from collections.abc import Callable

    from omegaconf import DictConfig

__all__ = [
    "TrainData",
    "ImageTextBatches",
    "ShardSource",
    "ManifestSource",
    "read_manifest",
    "write_synthetic_shards",
    "write_scenes",
    "write_shapes",
    "expand_shards",
]


def _prepare_synthetic(name: str, entry: dict, output: str, image_size: int, seed: int) -> str:
    """The synthetic dataset's folder, written (by rank 0, once) when its shards are missing."""
    folder = entry["path"] or os.path.join(output, "synthetic_shards")
    shards = expand_shards(folder, entry["prefix"])
    _write_once(
        shards,
        lambda: write_synthetic_shards(
            folder,
            len(shards),
            entry["length"],
            image_size=image_size,
            seed=seed,
            pattern=_pattern_of(entry["prefix"], name),
        ),
    )
    return folder


#: the generated data sets: type -> their writer (docs/training.md, "Scenes: segmentation from captions"
#: and "Shapes: grouping where colour does not name the class")
_GENERATED = {"scenes": write_scenes, "shapes": write_shapes}


def _prepare_generated(name: str, entry: dict, output: str, seed: int) -> str:
    """A generated data set's shard folder (``<path>/train``), written by rank 0 with the held-out split
    (``<path>/eval``) when its shards are missing; ``<path>`` defaults to ``<output>/<type>``."""
    kind = entry["type"]
    root = entry["path"] or os.path.join(output, kind)
    folder = os.path.join(root, "train")
    shards = expand_shards(folder, entry["prefix"])

    def write() -> None:
        if _pattern_of(entry["prefix"], name) != kind + "-{:06d}.tar":
            raise ValueError(
                f"data.dataset.meta.{name}.prefix: generated {kind} are named "
                f"'{kind}-{{000000..{len(shards) - 1:06d}}}.tar', got {entry['prefix']!r}"
            )
        _GENERATED[kind](root, train_length=entry["length"], num_shards=len(shards), seed=seed)

    _write_once(shards, write)
    return folder


def _write_once(shards: list[str], write: Callable[[], object]) -> None:
    """A generated dataset: rank 0 writes it when a shard is missing, and every rank waits for it."""
    rank, world = rank_and_world()
    if rank == 0 and not all(os.path.isfile(s) for s in shards):
        write()
    if world > 1:
        torch.distributed.barrier()


def _pattern_of(prefix: str, name: str) -> str:
    """``synthetic-{000000..000007}.tar`` -> ``synthetic-{:06d}.tar`` (the writer's file names)."""
    import re

    match = re.fullmatch(r"(.*)\{(\d+)\.\.(\d+)\}(.*)", prefix)
    if not match or int(match.group(2)) != 0:
        raise ValueError(
            f"data.dataset.meta.{name}.prefix: a synthetic dataset needs a pattern like "
            f"'synthetic-{{000000..000007}}.tar', got {prefix!r}"
        )
    return match.group(1) + "{:0" + str(len(match.group(2))) + "d}" + match.group(4)


class TrainData:
    """The training datasets of a config, checked, for one rank of ``world``."""

    def __init__(  # noqa: C901  (one branch per dataset type and per config key it checks, read top to bottom)
        self,
        cfg: DictConfig,
        rank: int,
        world: int,
        *,
        accumulation: int = 1,
        text_transform: Callable | None = None,
        image_transform: Callable | None = None,
    ) -> None:
        from ..augment import build_train_transform
        from ..prompts import TextTransform

        data = cfg.data
        meta = data.dataset.meta
        self.rank, self.world = rank, world
        self.batch_size = int(data.batch_size)
        self.num_workers = int(data.num_workers)
        self.seed = int(data.seed)
        if self.batch_size <= 0:
            raise ValueError(f"data.batch_size must be positive, got {self.batch_size}")
        if self.num_workers < 0:
            raise ValueError(f"data.num_workers must be >= 0, got {self.num_workers}")
        names = list(data.dataset.train)
        if not names:
            raise ValueError("data.dataset.train names no dataset")
        shards, rows, self.length = [], [], 0
        carries_nouns = all(meta[n]["type"] in _GENERATED for n in names if n in meta)
        for name in names:
            if name not in meta:
                raise ValueError(
                    f"data.dataset.train names {name!r}, which data.dataset.meta does not define "
                    f"(defined: {', '.join(meta)})"
                )
            entry = dict(meta[name])
            if entry["type"] == "img_cls_pair":
                raise ValueError(
                    f"data.dataset.meta.{name} is an img_cls_pair (classification) dataset; "
                    f"training needs image-text pairs"
                )
            if entry["type"] == "manifest":
                found = read_manifest(entry["path"])
                rows += found
                self.length += entry.get("length") or len(found)
                continue
            folder = entry["path"]
            if entry["type"] == "synthetic":
                folder = _prepare_synthetic(name, entry, cfg.output, int(data.img_aug.img_size), self.seed)
            elif entry["type"] in _GENERATED:
                folder = _prepare_generated(name, entry, cfg.output, self.seed)
            if not os.path.isdir(folder):
                raise ValueError(f"data.dataset.meta.{name}.path: {folder}: no such folder")
            found = expand_shards(folder, entry["prefix"])
            missing = [s for s in found if not os.path.isfile(s)]
            if missing:
                raise ValueError(
                    f"data.dataset.meta.{name}: {len(missing)} of {len(found)} shards missing, e.g. {missing[0]}"
                )
            shards += found
            self.length += entry["length"]
        if shards and rows:
            raise ValueError("data.dataset.train mixes webdataset shards and manifests; train on one kind")
        workers = max(1, self.num_workers)
        if shards:
            if len(shards) < world * workers:
                raise ValueError(
                    f"data.dataset.train: {len(shards)} shards cannot feed {world} process(es) x "
                    f"{workers} loader worker(s) (each needs one); lower data.num_workers or use "
                    f"more shards"
                )
            self._check_not_empty(shards[0])
            self.source = ShardSource(shards, self.seed, int(data.shuffle_buffer))
        else:
            if len(rows) < world * workers * self.batch_size:
                raise ValueError(
                    f"data.dataset.train: {len(rows)} manifest rows cannot fill a batch of "
                    f"{self.batch_size} on each of {world} process(es) x {workers} worker(s)"
                )
            self.source = ManifestSource(rows, self.seed)
        self.global_batch = self.batch_size * world * accumulation
        self.steps_per_epoch = self.length // self.global_batch
        if self.steps_per_epoch == 0:
            raise ValueError(
                f"data.dataset.train: {self.length} samples make no full global batch of "
                f"{self.global_batch} (data.batch_size {self.batch_size} x {world} process(es) x "
                f"{accumulation} accumulation step(s))"
            )
        text = data.text_aug
        self.text_transform = text_transform or TextTransform(int(text.max_seq_len), int(text.multi_label))
        self.image_transform = image_transform or build_train_transform(data.img_aug)
        self.pin_memory = bool(data.pin_memory) and torch.cuda.is_available()
        self.prefetch_factor = int(data.prefetch_factor)
        if int(text.multi_label) > 0 and text_transform is None and not carries_nouns:
            _ = self.text_transform.tagger  # a missing NLTK tagger is an error now, not in a worker

    @staticmethod
    def _check_not_empty(shard: str) -> None:
        from webdataset.tariterators import tarfile_samples

        try:
            next(iter(tarfile_samples([{"url": shard}])))
        except StopIteration:
            raise ValueError(f"{shard}: the shard holds no samples") from None
        except Exception as err:  # noqa: BLE001  (not a tar file at all)
            raise ValueError(f"{shard}: not a readable webdataset shard ({type(err).__name__}: {err})") from None

    def dataset(
        self, epoch: int, start_positions: Sequence[int] | None = None, worker_offset: int = 0
    ) -> ImageTextBatches:
        return ImageTextBatches(
            self.source,
            self.image_transform,
            self.text_transform,
            self.batch_size,
            epoch=epoch,
            rank=self.rank,
            world=self.world,
            seed=self.seed,
            num_workers=self.num_workers,
            start_positions=start_positions,
            worker_offset=worker_offset,
        )

    def loader(
        self, epoch: int, start_positions: Sequence[int] | None = None, worker_offset: int = 0
    ) -> torch.utils.data.DataLoader:
        """The epoch's batches (an endless stream: the caller takes ``steps_per_epoch x accumulation``)."""
        extra = {"prefetch_factor": self.prefetch_factor} if self.num_workers > 0 else {}
        # a generator of its own: DataLoader draws its workers' base seed from it, and drawing from the
        # global one would shift the model's random stream (Gumbel noise, drop path) on resume
        generator = torch.Generator().manual_seed(self.seed + 1000 * epoch)
        return torch.utils.data.DataLoader(
            self.dataset(epoch, start_positions, worker_offset),
            batch_size=None,
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
            generator=generator,
            **extra,
        )
