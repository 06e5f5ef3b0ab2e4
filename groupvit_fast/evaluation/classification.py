"""Zero-shot ImageNet classification of a GroupViT (``groupvit-fast eval cls``).

The text classifier is built as NVlabs builds it (``build_text_embedding``): per class, the
*unnormalised* projected text embeddings of all prompt templates are averaged and the mean is
L2-normalised once. CLIP's notebook normalises each template embedding before averaging (and
normalises again after); the two differ whenever the template embeddings differ in norm, and the
published GroupViT numbers use the first (docs/evaluation.md).

Prediction: ``logits = normalize(encode_image(x)) @ W.T`` (``W [K, C]`` the classifier); top-1 and
top-5 counts and per-class counts are integers summed over ranks, so every rank returns the
single-process numbers.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..common.files import atomic_write
from ..common.precision import autocast_context, autocast_dtype
from ..segmentation.text import class_text_embeddings
from .data_files import read_names
from .distributed import all_gather_errors, all_reduce_sum, compute_once_and_broadcast, rank_and_world, rank_slice
from .imagenet import ImageNetSamples, find_imagefolder, find_shards, index_shards

__all__ = [
    "evaluate_classification",
    "build_classifier",
    "classifier_cache_key",
    "resolve_templates",
    "imagenet_classes",
    "imagenet_subset_classes",
    "CLS_OPTIONS",
]

#: keyword options of ``evaluate_classification`` besides the named ones, with their defaults
CLS_OPTIONS = {"cache_dir": None, "checkpoint": None, "max_images": None, "autocast": None}


def imagenet_classes() -> tuple[str, ...]:
    """The 1000 ImageNet class names (CLIP's cleaned list, as NVlabs uses), in wnid order."""
    return read_names("imagenet_classes.txt")


def imagenet_subset_classes(wnids: Sequence[str]) -> tuple[str, ...] | None:
    """CLIP's names of the ImageNet classes whose WordNet ids are ``wnids`` (folders of a subset such as
    Imagenette, ImageWoof or ImageNet-100), in the given order; ``None`` if one is no ImageNet wnid.

    timm's ``ImageNetInfo`` lists the 1000 wnids in the standard (sorted) class order, the order of
    ``imagenet_classes()``, so a wnid's index there is its index in the names."""
    from timm.data import ImageNetInfo

    index = {wnid: i for i, wnid in enumerate(ImageNetInfo().label_names())}
    if not all(w in index for w in wnids):
        return None
    names = imagenet_classes()
    return tuple(names[index[w]] for w in wnids)


def resolve_templates(templates: str | Sequence[str]) -> tuple[str, ...]:
    """``'subset'`` (NVlabs' 7, used for its published numbers), ``'full'`` (the 80 CLIP templates),
    ``'simple'``, ``'identity'``, or a list of strings with ``{}``."""
    from ..segmentation.classes import TEMPLATES

    if isinstance(templates, str):
        if templates == "full":
            return read_names("clip_templates.txt")
        if templates not in TEMPLATES:
            raise ValueError(f"unknown template set {templates!r}; known: full, {', '.join(sorted(TEMPLATES))}")
        return TEMPLATES[templates]
    out = tuple(templates)
    if not out or any(not isinstance(t, str) or "{}" not in t for t in out):
        raise ValueError("templates must be a non-empty list of strings with a '{}' placeholder")
    return out


def build_classifier(
    model: nn.Module, class_names: Sequence[str], templates: str | Sequence[str] = "subset", **kwargs: Any
) -> torch.Tensor:
    """``W [K, C]``: row ``k`` is ``normalize(mean_t text_projector(text_encoder(tok(t.format(name_k)))))``.

    Equivalent PyTorch: ``F.normalize(torch.stack([model.encode_text(tokenize([t.format(n) for t in
    templates])).mean(0) for n in class_names]), dim=-1)``.
    """
    return class_text_embeddings(model, list(class_names), resolve_templates(templates), **kwargs)


def classifier_cache_key(checkpoint: str, class_names: Sequence[str], templates: Sequence[str]) -> str:
    """SHA-256 of the checkpoint file's identity (real path, size, modification time) and of the
    class names and templates: a new or rewritten checkpoint, or other prompts, get a new entry."""
    st = os.stat(checkpoint)
    ident = {
        "checkpoint": os.path.realpath(checkpoint),
        "size": st.st_size,
        "mtime_ns": st.st_mtime_ns,
        "classes": list(class_names),
        "templates": list(templates),
    }
    return hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()


def _cached_classifier(model, names, temps, cache_dir: str | None, checkpoint: str | None) -> torch.Tensor:
    if cache_dir is None or checkpoint is None:
        return build_classifier(model, names, temps).cpu()
    path = os.path.join(cache_dir, f"classifier-{classifier_cache_key(checkpoint, names, temps)}.pt")
    if os.path.isfile(path):
        w = torch.load(path, map_location="cpu", weights_only=True)
        if w.shape[0] == len(names):
            return w
    w = build_classifier(model, names, temps).cpu()
    os.makedirs(cache_dir, exist_ok=True)
    atomic_write(path, lambda tmp: torch.save(w, tmp))
    return w


def _collate(batch: list[dict]) -> list[dict]:
    return batch


def _worker_init(_worker_id: int) -> None:
    torch.set_num_threads(1)


def evaluate_classification(
    model: nn.Module,
    data: str,
    *,
    class_names: Sequence[str] | None = None,
    templates: str | Sequence[str] = "subset",
    batch_size: int = 64,
    num_workers: int = 2,
    resize: int = 256,
    crop: int = 224,
    device: str | torch.device | None = None,
    progress: bool = True,
    **options: Any,
) -> dict:
    """Zero-shot top-1/top-5 of ``model`` (a ``MultiLabelContrastive``) on ImageNet-style data.

    ``data``: an ImageFolder tree (``val/<wnid>/*.JPEG``) or webdataset shards (a folder of
    ``.tar``, a glob or ``name-{000000..000049}.tar``). ``class_names``: one per class folder /
    ``cls`` index (default: the 1000 ImageNet names). ``options``: ``cache_dir`` and
    ``checkpoint`` (cache the classifier on disk per checkpoint file, class list and templates),
    ``max_images``, ``autocast`` (None | 'bf16' | 'fp16', as ``evaluate_segmentation``).

    Returns ``{'top1', 'top5', 'mean_per_class_top1'}`` (percent), ``'per_class'``
    ``{name: {'top1', 'top5', 'images'}}``, ``'num_images'``, ``'settings'``, ``'seconds'``,
    ``'images_per_s'``; identical on every rank and to a single process.
    """
    unknown = sorted(set(options) - set(CLS_OPTIONS))
    if unknown:
        raise TypeError(
            f"evaluate_classification got unknown option(s) {', '.join(unknown)}; known: {', '.join(CLS_OPTIONS)}"
        )
    opts = {**CLS_OPTIONS, **options}
    for name, value in (("batch_size", batch_size), ("resize", resize), ("crop", crop)):
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise ValueError(f"{name} must be a positive int, got {value!r}")
    if crop > resize:
        raise ValueError(f"crop ({crop}) must not exceed resize ({resize})")
    temps = resolve_templates(templates)
    data = os.fspath(data)
    if os.path.isdir(data) and not any(f.endswith(".tar") for f in os.listdir(data)):
        folders, records = find_imagefolder(data)
        layout = "imagefolder"
    else:
        records = index_shards(find_shards(data))
        folders, layout = None, "webdataset"
    names, class_set = _class_names(data, folders, class_names)
    num_classes = len(folders) if folders is not None else max(r.label for r in records) + 1
    if folders is not None and len(folders) != len(names):
        raise ValueError(f"{data}: {len(folders)} class folders but {len(names)} class names")
    if num_classes > len(names) or min(r.label for r in records) < 0:
        bad = next(r for r in records if not 0 <= r.label < len(names))
        raise ValueError(f"{bad.path}: sample {bad.name!r} has class {bad.label}, outside 0..{len(names) - 1}")
    if opts["max_images"] is not None:
        records = records[: int(opts["max_images"])]
    device = torch.device(device) if device is not None else next(model.parameters()).device
    model = model.to(device)
    rank, world = rank_and_world()
    k = len(names)
    was_training = model.training
    model.eval()
    try:
        weight = compute_once_and_broadcast(
            lambda: _cached_classifier(model, names, temps, opts["cache_dir"], opts["checkpoint"])
        )
        weight = weight.to(device).float()
        dataset = ImageNetSamples(records, rank_slice(len(records), rank, world), resize, crop)
        loader = torch.utils.data.DataLoader(
            dataset,
            batch_size=batch_size,
            num_workers=num_workers,
            collate_fn=_collate,
            worker_init_fn=_worker_init if num_workers else None,
        )
        # rows: images of the class, top-1 hits, top-5 hits
        counts = torch.zeros(3, k, dtype=torch.int64)
        ac = autocast_context(device.type, autocast_dtype(opts["autocast"], device, fp16_needs_cuda=True))
        error, start = None, time.perf_counter()
        bar = _progress(len(records), progress and rank == 0)
        with torch.no_grad(), bar:
            for batch in loader:
                error = next((item["error"] for item in batch if "error" in item), None)
                if error is not None:
                    break
                images = torch.stack([item["image"] for item in batch]).to(device)
                labels = torch.tensor([item["label"] for item in batch], dtype=torch.int64)
                with ac:
                    feats = model.encode_image(images)
                logits = F.normalize(feats.float(), dim=-1) @ weight.t()
                top = logits.topk(min(5, k), dim=-1).indices.cpu()
                hit1 = top[:, 0] == labels
                hit5 = (top == labels[:, None]).any(dim=1)
                counts[0] += torch.bincount(labels, minlength=k)
                counts[1] += torch.bincount(labels[hit1], minlength=k)
                counts[2] += torch.bincount(labels[hit5], minlength=k)
                bar.update(len(batch) * world)
        error = all_gather_errors(error)
        if error is not None:
            raise ValueError(error)
        counts = all_reduce_sum(counts)
        seconds = time.perf_counter() - start
    finally:
        model.train(was_training)
    total = int(counts[0].sum())
    per_class = {}
    # CLIP's ImageNet list names two pairs of classes alike (missile, sunglasses): such keys get the index
    repeated = {n for n in names if names.count(n) > 1}
    for i, name in enumerate(names):
        n = int(counts[0, i])
        key = f"{name} [{i}]" if name in repeated else name
        per_class[key] = {
            "top1": 100.0 * int(counts[1, i]) / n if n else None,
            "top5": 100.0 * int(counts[2, i]) / n if n else None,
            "images": n,
        }
    present = [v["top1"] for v in per_class.values() if v["top1"] is not None]
    return {
        "class_names": list(names),
        "top1": 100.0 * int(counts[1].sum()) / total,
        "top5": 100.0 * int(counts[2].sum()) / total,
        "mean_per_class_top1": sum(present) / len(present),
        "per_class": per_class,
        "num_images": total,
        "seconds": seconds,
        "images_per_s": total / max(seconds, 1e-9),
        "settings": {
            "layout": layout,
            "templates": list(temps),
            "resize": resize,
            "crop": crop,
            "num_classes": k,
            "class_set": class_set,
            "world_size": world,
        },
    }


def _class_names(
    data: str, folders: list[str] | None, class_names: Sequence[str] | None
) -> tuple[tuple[str, ...], str]:
    """The names to classify among, and where they came from (the report's ``class_set``):

    * ``given``: ``class_names``, one per class folder / ``cls`` index;
    * ``imagenet-subset``: class folders named by ImageNet WordNet ids (all 1000 or a subset): CLIP's
      names of exactly those classes, so a subset is classified among the classes present;
    * ``imagenet``: otherwise, the 1000 names in index order (webdataset shards, whose ``cls`` are
      ImageNet indices)."""
    if class_names is not None:
        return tuple(class_names), "given"
    if folders is not None:
        subset = imagenet_subset_classes(folders)
        if subset is not None:
            return subset, "imagenet" if len(subset) == 1000 else "imagenet-subset"
        if len(folders) != 1000:
            stray = next(f for f in folders if imagenet_subset_classes([f]) is None)
            raise ValueError(
                f"{data}: class folder {stray!r} is no ImageNet WordNet id and no class names were "
                f"given ({len(folders)} folders): pass class_names (--class-names FILE)"
            )
    return imagenet_classes(), "imagenet"


def _progress(total: int, enabled: bool):
    if not enabled:
        from .segmentation import _NoBar

        return _NoBar()
    from tqdm import tqdm

    return tqdm(total=total, desc="eval cls", unit="img", file=sys.stderr, dynamic_ncols=True)
