"""The two splits every generated data set writes: training shards and a held-out split with masks.

A generator is a function ``draw(rng, spec, with_mask=...)`` returning an object with ``image`` (RGB
``PIL.Image``), ``mask`` (``uint8 [H, W]``), ``caption`` and ``nouns``. Every sample is drawn from its
own stream, ``random.Random(f"{name}-{split}-{seed}-{index}")``: the held-out split (``'eval'``) never
draws from a training stream (``'train'``), so no held-out scene is a training scene by construction.

* ``write_shards(folder, draw, ...)``: ``<folder>/<name>-{000000..}.tar`` (webdataset: ``<key>.png``,
  ``<key>.txt``, ``<key>.json`` = ``{"caption", "nouns"}``; no masks);
* ``write_eval(folder, draw, ...)``: ``<folder>/{images,masks}/<stem>.png`` and ``captions.jsonl``.

Every file appears complete or not at all (``atomic_write``).
"""

from __future__ import annotations

import json
import os
import random
from collections.abc import Callable
from typing import Any

from .._extras import require_extra
from ..common.files import atomic_write
from .canvas import png_bytes

__all__ = ["check_counts", "stream", "write_shards", "write_eval", "write_splits"]


def stream(name: str, split: str, seed: int, index: int) -> random.Random:
    """The random stream of sample ``index`` of ``split`` (``'train'`` or ``'eval'``) of data set ``name``."""
    return random.Random(f"{name}-{split}-{seed}-{index}")


def check_counts(length: int, num_shards: int) -> None:
    """``ValueError`` unless every one of ``num_shards`` (> 0) shards gets at least one of ``length`` samples."""
    if num_shards <= 0 or length < num_shards:
        raise ValueError(
            f"the training split needs at least one scene per shard, got {length} scene(s) for {num_shards} shard(s)"
        )


def write_shards(
    folder: str,
    draw: Callable[..., Any],
    spec: Any,
    num_shards: int,
    length: int,
    *,
    name: str,
    seed: int,
    pattern: str,
) -> list[str]:
    """``length`` training samples of ``draw`` over ``num_shards`` shards named ``pattern.format(i)``."""
    require_extra(f"writing {name} shards", "train")  # webdataset's TarWriter: one line naming the extra
    from webdataset import TarWriter

    spec.check()
    check_counts(length, num_shards)
    os.makedirs(folder, exist_ok=True)
    paths = []
    for shard in range(num_shards):
        indices = range(shard * length // num_shards, (shard + 1) * length // num_shards)

        def write(tmp: str, indices: range = indices) -> None:
            with TarWriter(tmp) as sink:
                for index in indices:
                    scene = draw(stream(name, "train", seed, index), spec, with_mask=False)
                    sink.write(
                        {
                            "__key__": f"{index:09d}",
                            "png": png_bytes(scene.image),
                            "txt": scene.caption,
                            "json": json.dumps({"caption": scene.caption, "nouns": scene.nouns}).encode(),
                        }
                    )

        path = os.path.join(folder, pattern.format(shard))
        atomic_write(path, write)
        paths.append(path)
    return paths


def write_eval(
    folder: str, draw: Callable[..., Any], spec: Any, count: int, *, name: str, seed: int, stem: str
) -> list[str]:
    """``count`` held-out samples of ``draw``: ``images/<stem>_NNNNN.png``, ``masks/<stem>_NNNNN.png``
    (label PNG) and ``captions.jsonl`` (written last: a folder with it is a complete split); the stems."""
    from PIL import Image

    spec.check()
    if count <= 0:
        raise ValueError(f"the held-out split needs at least one scene, got {count}")
    images, masks = os.path.join(folder, "images"), os.path.join(folder, "masks")
    os.makedirs(images, exist_ok=True)
    os.makedirs(masks, exist_ok=True)
    stems, lines = [], []
    for index in range(count):
        scene = draw(stream(name, "eval", seed, index), spec, with_mask=True)
        key = f"{stem}_{index:05d}"
        atomic_write(os.path.join(images, key + ".png"), lambda tmp, im=scene.image: im.save(tmp, format="PNG"))
        mask = Image.fromarray(scene.mask, mode="L")
        atomic_write(os.path.join(masks, key + ".png"), lambda tmp, m=mask: m.save(tmp, format="PNG"))
        stems.append(key)
        lines.append(json.dumps({"stem": key, "caption": scene.caption, "nouns": scene.nouns}))

    def write(tmp: str) -> None:
        with open(tmp, "w", encoding="utf-8") as f:
            f.writelines(line + "\n" for line in lines)

    atomic_write(os.path.join(folder, "captions.jsonl"), write)
    return stems


def write_splits(
    out: str,
    write_train: Callable[..., Any],
    write_held_out: Callable[..., Any],
    spec: Any,
    eval_spec: Any,
    *,
    train_length: int,
    num_shards: int,
    eval_count: int,
    seed: int,
) -> dict[str, str]:
    """Both splits under ``out``, every argument checked before anything is written:
    ``write_train(out/train, num_shards, train_length, seed=, spec=)`` and
    ``write_held_out(out/eval, eval_count, seed=, spec=eval_spec)``. Returns ``{'train', 'eval'}`` folders."""
    if os.path.exists(out) and not os.path.isdir(out):
        raise ValueError(f"{out}: exists and is not a folder")
    spec.check()
    eval_spec.check()
    check_counts(train_length, num_shards)
    if eval_count <= 0:
        raise ValueError(f"the held-out split needs at least one scene, got {eval_count}")
    train_dir, eval_dir = os.path.join(out, "train"), os.path.join(out, "eval")
    write_train(train_dir, num_shards, train_length, seed=seed, spec=spec)
    write_held_out(eval_dir, eval_count, seed=seed, spec=eval_spec)
    return {"train": train_dir, "eval": eval_dir}
