"""``export_onnx``: a checkpoint's model as ``image.onnx``, ``text.onnx``, ``tokenizer.json`` and
``export.json`` in one folder (docs/export.md).

Everything is exported into a temporary folder first and only then moved into place, each file through
``atomic_write``: a failed export (a bad opset, a model that does not trace, a full disk) leaves the output
folder as it was.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .._version import __version__
from ..common.files import atomic_write
from ..segmentation.test_time import TestTimeSettings, resolve_test_time
from .assign_translation import OPSET, custom_translation_table
from .graph import INPUT_NAMES, OUTPUT_NAMES, SegmentationGraph
from .layout import EXPORT_FILES, FORMAT, MAX_SIDE
from .text_graph import TEXT_INPUT_NAMES, TEXT_OUTPUT_NAMES, TextEmbeddingGraph

__all__ = [
    "export_onnx",
    "export_image_graph",
    "EXPORT_FILES",
    "MIN_OPSET",
    "MAX_SIDE",
    "ExportError",
    "image_dynamic_shapes",
]

#: the lowest opset the graphs are written in (the translation's, docs/export.md "The image graph")
MIN_OPSET = OPSET


class ExportError(ValueError):
    """A bad export request: printed as one line by the command line."""


def check_opset(opset: int) -> int:
    """``opset`` if the graphs can be written in it, else ``ExportError``."""
    import onnx

    newest = onnx.defs.onnx_opset_version()
    if isinstance(opset, bool) or not isinstance(opset, int) or opset < MIN_OPSET:
        raise ExportError(f"--opset {opset} is below {MIN_OPSET}, the lowest the image graph needs")
    if opset > newest:
        raise ExportError(f"--opset {opset} is above {newest}, the newest the installed onnx {onnx.__version__} knows")
    return opset


def check_outputs(out_dir: str, force: bool) -> dict[str, str]:
    """``{role: path}`` of the files an export into ``out_dir`` writes; ``ExportError`` when one exists and
    ``force`` is not given, or when ``out_dir`` is a file."""
    if os.path.exists(out_dir) and not os.path.isdir(out_dir):
        raise ExportError(f"{out_dir}: exists and is not a folder")
    targets = {role: os.path.join(out_dir, name) for role, name in EXPORT_FILES.items()}
    existing = [p for p in targets.values() if os.path.exists(p)]
    if existing and not force:
        raise ExportError(f"{existing[0]}: exists (use --force to replace it)")
    return targets


def min_side(model: nn.Module) -> int:
    """The smallest image side the graph takes: a token grid of two cells per side (one cell makes the
    position-embedding resize degenerate, so the exported shapes start at two)."""
    proj = model.img_encoder.patch_embed.proj
    return proj.kernel_size[0] + proj.stride[0] - 2 * proj.padding[0]


def embed_dim(model: nn.Module) -> int:
    """``D``: the width of the projected (image and text) embeddings."""
    with torch.no_grad():
        return int(model.img_projector(torch.zeros(2, model.img_encoder.num_features)).shape[-1])


def image_dynamic_shapes(model: nn.Module) -> tuple:
    """``dynamic_shapes`` of ``SegmentationGraph``: batch, height, width and the class count vary."""
    from torch.export import Dim

    side = min_side(model)
    return (
        {
            0: Dim("batch", min=1, max=1024),
            2: Dim("height", min=side, max=MAX_SIDE),
            3: Dim("width", min=side, max=MAX_SIDE),
        },
        {0: Dim("classes", min=1, max=65535)},
        None,
    )


def export_image_graph(model: nn.Module, path: str, *, assignment: str, opset: int, bg_thresh: float) -> None:
    """Write the image graph alone (docs/export.md, "The image graph") of ``model`` to ``path``: ``images
    [B, 3, H, W]``, ``text_embeddings [K, D]``, ``bg_thresh []`` (default ``bg_thresh``) -> ``scores
    [B, 1 + K, H, W]``, ``labels [B, H, W]``. ``export_onnx`` writes it with the rest of an export folder."""
    graph = SegmentationGraph(model, assignment=assignment).eval()
    side = 2 * min_side(model)
    dim = embed_dim(model)
    images = torch.zeros(2, 3, side, side + min_side(model))
    text = F.normalize(torch.ones(3, dim), dim=-1)
    program = torch.onnx.export(
        graph,
        (images, text, torch.tensor(bg_thresh, dtype=torch.float32)),
        dynamo=True,
        opset_version=opset,
        dynamic_shapes=image_dynamic_shapes(model),
        custom_translation_table=custom_translation_table(),
        input_names=list(INPUT_NAMES),
        output_names=list(OUTPUT_NAMES),
        verbose=False,
    )
    program.save(path)
    _default_input(path, "bg_thresh", bg_thresh)


def _default_input(path: str, name: str, value: float) -> None:
    """Give graph input ``name`` a default (an initializer of the same name: ONNX's overridable input)."""
    import numpy as np
    import onnx
    from onnx import numpy_helper

    proto = onnx.load(path)
    proto.graph.initializer.append(numpy_helper.from_array(np.asarray(value, dtype=np.float32), name))
    onnx.save(proto, path)


def _export_text_graph(model: nn.Module, path: str, *, opset: int) -> None:
    from torch.export import Dim

    length = int(model.text_encoder.context_length)
    tokens = torch.zeros(2, 3, length, dtype=torch.int64)
    tokens[..., 0], tokens[..., 1] = 49406, 49407
    program = torch.onnx.export(
        TextEmbeddingGraph(model).eval(),
        (tokens,),
        dynamo=True,
        opset_version=opset,
        dynamic_shapes=({0: Dim("classes", min=1, max=65535), 1: Dim("templates", min=1, max=1024)},),
        input_names=list(TEXT_INPUT_NAMES),
        output_names=list(TEXT_OUTPUT_NAMES),
        verbose=False,
    )
    program.save(path)


def export_onnx(
    model: nn.Module,
    out_dir: str,
    *,
    classes: Sequence[str] | None = None,
    templates: str | Sequence[str] = "simple",
    assignment: str = "soft",
    opset: int = OPSET,
    test_time: TestTimeSettings | Mapping[str, Any] | None = None,
    force: bool = False,
    source: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Export ``model`` (a ``MultiLabelContrastive``, any weights) for onnxruntime into ``out_dir``.

    Writes ``image.onnx`` (``images [B, 3, H, W]``, ``text_embeddings [K, D]``, ``bg_thresh []`` ->
    ``scores [B, 1 + K, H, W]``, ``labels [B, H, W]``), ``text.onnx`` (``tokens [K, T, L]`` ->
    ``text_embeddings [K, D]``), ``tokenizer.json`` and ``export.json`` (test-time settings, templates,
    background threshold, and with ``classes`` their names and ``[K, D]`` embeddings). ``test_time``:
    resolved settings, or ``{short_side, crop_size, stride, bg_thresh}`` overrides of NVlabs' protocol
    (``segmentation.test_time.resolve_test_time``). Returns the
    ``export.json`` record. Raises ``ExportError`` (one line) for a bad request, before writing anything.
    """
    from ..segmentation.classes import resolve_classes
    from ..segmentation.inference import check_assignment
    from ..segmentation.text import _template_list, class_text_embeddings
    from .clip_tokenizer import write_tokenizer_json

    check_opset(opset)
    try:
        check_assignment(assignment, "--assign")
        prompts = list(_template_list(templates))
        class_set = resolve_classes(list(classes)) if classes else None
    except ValueError as err:
        raise ExportError(str(err)) from None
    targets = check_outputs(out_dir, force)
    model = model.eval()
    try:  # one resolver for every pipeline (docs/segmentation.md, "Test-time settings from the checkpoint")
        tt = test_time if isinstance(test_time, TestTimeSettings) else resolve_test_time(overrides=test_time)
    except ValueError as err:
        raise ExportError(str(err)) from None
    graph_bg = 0.95 if tt.bg_thresh is None else float(tt.bg_thresh)
    record: dict[str, Any] = {
        "format": FORMAT,
        "groupvit_fast": __version__,
        "torch": torch.__version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "opset": opset,
        "source": source or {},
        "image_graph": {
            "file": EXPORT_FILES["image"],
            "inputs": list(INPUT_NAMES),
            "outputs": list(OUTPUT_NAMES),
            "assignment": assignment,
            "topk": 5,
            "min_side": min_side(model),
            "max_side": MAX_SIDE,
            "patch_size": list(model.img_encoder.patch_embed.proj.stride),
            "bg_thresh_default": graph_bg,
            "embed_dim": embed_dim(model),
            "dtype": "float32",
        },
        "text_graph": {
            "file": EXPORT_FILES["text"],
            "inputs": list(TEXT_INPUT_NAMES),
            "outputs": list(TEXT_OUTPUT_NAMES),
            "context_length": int(model.text_encoder.context_length),
            "tokenizer": EXPORT_FILES["tokenizer"],
        },
        "test_time": {k: getattr(tt, k) for k in ("short_side", "crop_size", "stride", "max_long_side")},
        "bg_thresh": tt.bg_thresh,
        "templates": prompts,
        "classes": None,
    }
    with torch.no_grad():
        if class_set is not None:
            emb = class_text_embeddings(model, class_set.text_names, prompts)
            record["classes"] = {
                "names": list(class_set.names),
                "text_names": list(class_set.text_names),
                "embeddings": emb.cpu().tolist(),
            }
        os.makedirs(out_dir, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=out_dir, prefix=".export-") as tmp:
            staged = {role: os.path.join(tmp, name) for role, name in EXPORT_FILES.items()}
            try:
                export_image_graph(model, staged["image"], assignment=assignment, opset=opset, bg_thresh=graph_bg)
                _export_text_graph(model, staged["text"], opset=opset)
            except ValueError as err:  # the op's translation refuses what has no ONNX form
                raise ExportError(str(err).splitlines()[0]) from None
            write_tokenizer_json(staged["tokenizer"])
            record["sizes_bytes"] = {role: os.path.getsize(staged[role]) for role in ("image", "text", "tokenizer")}
            with open(staged["config"], "w", encoding="utf-8") as f:
                json.dump(record, f, indent=1)
                f.write("\n")
            # export.json last: a folder whose export.json exists holds the graphs it describes
            for role in ("image", "text", "tokenizer", "config"):
                atomic_write(targets[role], lambda dst, src=staged[role]: shutil.copyfile(src, dst))
    return record
