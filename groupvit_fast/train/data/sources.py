"""Where training samples come from, in a deterministic order that a resumed run can continue.

A source hands one loader worker its raw records (undecoded) for one epoch: ``records(epoch,
rank, world, worker, num_workers, start)`` yields ``(position, record)`` forever (the stream
repeats, as NVlabs' ``repeat=True`` pipeline), from ``position == start`` on. The order depends
only on the seed, the epoch, the rank and the worker, so skipping ``start`` records reproduces
exactly what an uninterrupted run would have read next.

* ``ShardSource``: webdataset tar shards as img2dataset writes them. The epoch's shard list is
  shuffled with the epoch's seed, split by rank (``shards[rank::world]``) and then by worker;
  each worker reads its shards in turn (reshuffled on every pass) through a seeded shuffle buffer
  of raw samples. Skipping reads tar members but decodes nothing.
* ``ManifestSource``: a CSV/TSV/JSONL list of (image path, caption); the epoch's permutation of all
  rows is split the same way; skipping is arithmetic.
"""

from __future__ import annotations

import os
import random
import sys
from collections.abc import Iterator
from typing import Any

__all__ = ["ShardSource", "ManifestSource", "expand_shards", "shuffle_buffer"]


def expand_shards(path: str, prefix: str) -> list[str]:
    """``path/prefix`` with brace patterns (``{000000..000436}``) expanded, as webdataset does."""
    from webdataset.shardlists import expand_urls

    return [os.path.join(path, shard) for shard in expand_urls(prefix)]


def shuffle_buffer(items: Iterator[Any], size: int, rng: random.Random) -> Iterator[Any]:
    """A shuffle buffer of ``size`` items: each output is a random pick among the next ``size`` inputs."""
    buffer: list[Any] = []
    for item in items:
        if len(buffer) < size:
            buffer.append(item)
            continue
        index = rng.randrange(size)
        buffer[index], item = item, buffer[index]
        yield item
    rng.shuffle(buffer)
    yield from buffer


def _split(items: list, epoch_seed: str, rank: int, world: int, worker: int, num_workers: int) -> list:
    order = list(items)
    random.Random(epoch_seed).shuffle(order)
    return order[rank::world][worker::num_workers]


def _warn_and_continue(err: Exception) -> bool:
    print(f"groupvit-fast train: warning: skipped the rest of a shard ({type(err).__name__}: {err})", file=sys.stderr)
    return True


class ShardSource:
    """Webdataset shards (``key.jpg``/``key.png``/``key.jpeg`` + ``key.txt``/``key.text``)."""

    def __init__(self, shards: list[str], seed: int, buffer_size: int):
        self.shards = list(shards)
        self.seed = seed
        self.buffer_size = max(1, buffer_size)

    def __len__(self) -> int:
        return len(self.shards)

    def _passes(self, mine: list[str], tag: str) -> Iterator[dict]:
        from webdataset.tariterators import tarfile_samples

        for n_pass in range(sys.maxsize):
            order = list(mine)
            if n_pass:
                random.Random(f"{tag}-pass{n_pass}").shuffle(order)
            found = 0
            for shard in order:
                for sample in tarfile_samples([{"url": shard}], handler=_warn_and_continue):
                    found += 1
                    yield sample
            if not found:
                raise RuntimeError(f"shards {mine[:3]}...: no samples in any of them")

    def records(
        self, epoch: int, rank: int, world: int, worker: int, num_workers: int, start: int = 0
    ) -> Iterator[tuple[int, dict]]:
        tag = f"shards-{self.seed}-{epoch}"
        mine = _split(self.shards, tag, rank, world, worker, num_workers)
        if not mine:
            raise RuntimeError(f"{len(self.shards)} shards leave rank {rank} worker {worker} without data")
        local = f"{tag}-{rank}-{worker}"
        stream = shuffle_buffer(self._passes(mine, local), self.buffer_size, random.Random(local + "-buffer"))
        for position, record in enumerate(stream):
            if position >= start:
                yield position, record


class ManifestSource:
    """Rows ``{'path': image file, 'caption': str}`` of a manifest (see ``manifest.read_manifest``)."""

    def __init__(self, rows: list[dict], seed: int):
        self.rows = rows
        self.seed = seed

    def __len__(self) -> int:
        return len(self.rows)

    def records(
        self, epoch: int, rank: int, world: int, worker: int, num_workers: int, start: int = 0
    ) -> Iterator[tuple[int, dict]]:
        tag = f"manifest-{self.seed}-{epoch}"
        mine = _split(range(len(self.rows)), tag, rank, world, worker, num_workers)
        if not mine:
            raise RuntimeError(f"{len(self.rows)} manifest rows leave rank {rank} worker {worker} without data")
        position = start
        n_pass, order = -1, mine
        while True:
            if position // len(mine) != n_pass:
                n_pass = position // len(mine)
                order = list(mine)
                if n_pass:
                    random.Random(f"{tag}-{rank}-{worker}-pass{n_pass}").shuffle(order)
            yield position, self.rows[order[position % len(mine)]]
            position += 1
