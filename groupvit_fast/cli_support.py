"""What every ``groupvit-fast`` subcommand shares: the one-line error type, the extra check, config files,
and the model a command runs (from ``--checkpoint`` / ``--config``). The pipelines' own handlers
(``evaluation/cli.py``, ``train/cli.py``) import this, not ``groupvit_fast.cli``, so the command line
(which calls them) is never imported back. Importing this module imports no extra and no pipeline.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from torch import nn

__all__ = [
    "PROG",
    "CliError",
    "require_command_extra",
    "load_config_file",
    "build_model_from_args",
    "positive_int",
    "add_assign_argument",
    "add_test_time_arguments",
    "test_time_settings",
    "input_images",
]

PROG = "groupvit-fast"


class CliError(Exception):
    """A user-facing failure: printed as one line, exit status 1."""


def require_command_extra(command: str, extra: str) -> None:
    """A ``CliError`` naming ``extra`` when one of its packages is missing: ``groupvit-fast COMMAND`` runs
    only with its extra, while its parser and ``--help`` need none (README.md, "Install")."""
    from ._extras import require_extra

    try:
        require_extra(f"{PROG} {command}", extra)
    except ModuleNotFoundError as err:
        raise CliError(str(err)) from None


def load_config_file(path: str) -> dict:
    import json

    if not os.path.isfile(path):
        raise CliError(f"{path}: no such config file")
    with open(path, encoding="utf-8") as f:
        text = f.read()
    if path.endswith((".yml", ".yaml")):
        from omegaconf import OmegaConf  # a core dependency

        try:
            cfg = OmegaConf.to_container(OmegaConf.load(path), resolve=True)
        except Exception as err:  # noqa: BLE001
            raise CliError(f"{path}: not a valid config ({err})") from None
    else:
        try:
            cfg = json.loads(text)
        except json.JSONDecodeError as err:
            raise CliError(f"{path}: not valid JSON ({err})") from None
    if isinstance(cfg, dict) and "type" not in cfg and isinstance(cfg.get("model"), dict):
        cfg = cfg["model"]
    if not isinstance(cfg, dict) or "type" not in cfg:
        raise CliError(f"{path}: no model config (a mapping with 'type', or with a 'model' entry)")
    return cfg


def build_model_from_args(args: argparse.Namespace) -> nn.Module:
    """The model of ``--checkpoint`` (and ``--config``), else the released config with random weights (warned),
    on ``--device``, in eval mode."""
    import torch

    from .checkpoint import load_checkpoint
    from .models.registry import build_model, released_config

    config = load_config_file(args.config) if args.config else None
    try:
        if args.checkpoint:
            model = build_model(config) if config is not None else None
            ckpt = load_checkpoint(args.checkpoint, model, trust_pickle=args.trust_pickle)
            model = ckpt.model
            args.checkpoint_test_time = dict(ckpt.meta.get("test_time") or {})
            if ckpt.kind != "full":
                raise CliError(
                    f"{args.checkpoint}: holds only vision-encoder weights; segmentation needs the image-text model"
                )
        else:
            model = build_model(config if config is not None else released_config())
            bar = "!" * 78
            print(
                f"{bar}\n{PROG}: WARNING: no --checkpoint given: the model has RANDOM weights and its "
                f"segmentations are meaningless.\n{bar}",
                file=sys.stderr,
            )
    except ValueError as err:
        raise CliError(str(err)) from None
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    try:
        model = model.to(device).eval()
    except (RuntimeError, AssertionError) as err:
        raise CliError(f"cannot use device {device!r} ({err})") from None
    return model


def positive_int(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {value}")
    return value


def add_assign_argument(parser: argparse.ArgumentParser) -> None:
    """``--assign soft|hard`` of ``segment`` and ``eval seg``: which grouping maps the segmentation
    composes (docs/segmentation.md, "Soft or hard assignment"); a value outside the choices is a usage error."""
    from .segmentation.assignment import ASSIGNMENTS

    parser.add_argument(
        "--assign",
        choices=ASSIGNMENTS,
        default="soft",
        help="compose the grouping blocks' soft maps (NVlabs' protocol, default) or their one-hot hard maps (ablation)",
    )


def add_test_time_arguments(parser: argparse.ArgumentParser, what: str) -> None:
    """``--short-side``, ``--crop-size``, ``--stride``: override the test-time resolution and window that
    the checkpoint's training config sets (docs/segmentation.md, "Test-time settings from the checkpoint")."""
    parser.add_argument(
        "--short-side",
        type=positive_int,
        help=f"resize images to this short side (default: the "
        f"checkpoint config's evaluate.seg.short_side, else {what})",
    )
    parser.add_argument(
        "--crop-size",
        type=positive_int,
        help=f"sliding-window size (default: the checkpoint config's evaluate.seg.crop_size, else {what})",
    )
    parser.add_argument(
        "--stride",
        type=positive_int,
        help=f"sliding-window stride (default: the checkpoint config's evaluate.seg.stride, else {what})",
    )


def test_time_settings(args: argparse.Namespace, defaults: dict) -> dict:
    """``{short_side, crop_size, stride, bg_thresh}``: a flag given on the command line, else the
    checkpoint's training config (``evaluate.seg``), else ``defaults``; also ``source`` per key."""
    stored = getattr(args, "checkpoint_test_time", None) or {}
    out, source = {}, {}
    for key in ("short_side", "crop_size", "stride", "bg_thresh"):
        flag = getattr(args, key, None)
        if flag is not None:
            out[key], source[key] = flag, "flag"
        elif key in stored:
            out[key], source[key] = stored[key], "checkpoint"
        else:
            out[key], source[key] = defaults.get(key), "default"
    if out["bg_thresh"] is not None and not 0.0 <= out["bg_thresh"] <= 1.0:
        raise CliError(f"--bg-thresh must be in [0, 1], got {out['bg_thresh']}")
    out["source"] = source
    return out


def input_images(path: str) -> list[str]:
    """The images ``segment`` reads from ``path``: the file itself, or a folder's images sorted by name."""
    from .segmentation.io import list_images

    if os.path.isdir(path):
        images = list_images(path)
        if not images:
            raise CliError(f"{path}: no images in this folder")
        return images
    if os.path.isfile(path):
        return [path]
    raise CliError(f"{path}: no such file or folder")
