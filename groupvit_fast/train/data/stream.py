"""The training stream: decoded, augmented and tokenised batches built inside the loader workers.

Each worker builds whole batches (``DataLoader(batch_size=None)``), so a batch is the work of one
worker and carries where that worker stands: ``{'image' [B, 3, S, S], 'text' [B, 1 + M, L],
'worker', 'position', 'skipped'}``. ``position`` is the number of raw records the worker has read
(the value to resume from); ``skipped`` counts the records it dropped (corrupt image, empty
caption) since its previous batch. Every sample's augmentation and prompt choice is drawn from
generators seeded by (seed, epoch, rank, worker, position), so it is the same whether the run was
interrupted or not. ``DataLoader`` takes batches from its workers in turn; ``worker_offset``
rotates which logical worker is asked first, so a resumed epoch continues the same round-robin.
"""

from __future__ import annotations

import contextlib
import random
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch.utils.data import IterableDataset, get_worker_info

from .decode import decode_record, record_nouns

if TYPE_CHECKING:  # annotations only (postponed: never evaluated at run time)
    from .sources import ShardSource

__all__ = ["ImageTextBatches", "seeded"]


@contextlib.contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Seed Python's, NumPy's and torch's CPU generators (timm draws from all three) and restore them after."""
    py_state, np_state = random.getstate(), np.random.get_state()
    with torch.random.fork_rng(devices=[]):
        random.seed(seed)
        np.random.seed(seed % 2**32)
        torch.manual_seed(seed)
        try:
            yield
        finally:
            random.setstate(py_state)
            np.random.set_state(np_state)


class ImageTextBatches(IterableDataset):
    """Batches of one epoch of ``source`` for one rank (see the module docstring)."""

    def __init__(
        self,
        source: ShardSource,
        image_transform: Callable,
        text_transform: Callable,
        batch_size: int,
        *,
        epoch: int,
        rank: int,
        world: int,
        seed: int,
        num_workers: int,
        start_positions: Sequence[int] | None = None,
        worker_offset: int = 0,
    ):
        super().__init__()
        self.source = source
        self.image_transform = image_transform
        self.text_transform = text_transform
        self.batch_size = batch_size
        self.epoch, self.rank, self.world, self.seed = epoch, rank, world, seed
        self.num_workers = max(1, num_workers)
        self.start_positions = list(start_positions) if start_positions else [0] * self.num_workers
        self.worker_offset = worker_offset

    def __iter__(self) -> Iterator[dict]:
        info = get_worker_info()
        worker = ((info.id if info is not None else 0) + self.worker_offset) % self.num_workers
        images, texts, skipped = [], [], 0
        records = self.source.records(
            self.epoch, self.rank, self.world, worker, self.num_workers, self.start_positions[worker]
        )
        for position, record in records:
            sample = decode_record(record)
            if sample is None:
                skipped += 1
                continue
            image, caption = sample
            rng = random.Random(f"{self.seed}-{self.epoch}-{self.rank}-{worker}-{position}")
            with seeded(rng.getrandbits(63)):
                images.append(self.image_transform(image))
            nouns = record_nouns(record)  # carried by generated shards: the prompts need no tagger then
            texts.append(
                self.text_transform(caption, rng) if nouns is None else self.text_transform(caption, rng, nouns=nouns)
            )
            if len(images) == self.batch_size:
                yield {
                    "image": torch.stack(images),
                    "text": torch.stack(texts),
                    "worker": worker,
                    "position": position + 1,
                    "skipped": skipped,
                }
                images, texts, skipped = [], [], 0
