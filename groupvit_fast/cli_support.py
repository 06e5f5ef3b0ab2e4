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

    from .segmentation.test_time import TestTimeSettings

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


def add_test_time_arguments(parser: argparse.ArgumentParser, fallback: str | None = None) -> None:
    """``--short-side``, ``--crop-size``, ``--stride``: override the test-time resolution and window that
    the checkpoint's training config sets (docs/segmentation.md, "Test-time settings from the checkpoint");
    ``fallback`` names what applies without either (default: NVlabs' protocol, with its value)."""
    from .segmentation.test_time import PROTOCOL

    for flag, what in (
        ("short_side", "resize images to this short side"),
        ("crop_size", "sliding-window size"),
        ("stride", "sliding-window stride"),
    ):
        default = fallback or f"NVlabs' {getattr(PROTOCOL, flag)}"
        parser.add_argument(
            "--" + flag.replace("_", "-"),
            type=positive_int,
            help=f"{what} (default: the checkpoint config's evaluate.seg.{flag}, else {default})",
        )


def test_time_settings(args: argparse.Namespace, preset: TestTimeSettings | None = None) -> TestTimeSettings:
    """The test-time settings of a command (``segmentation.test_time.resolve_test_time``): a flag given on the
    command line, else the checkpoint's training config (``evaluate.seg``), else ``preset`` (the dataset's),
    else NVlabs' protocol; ``.source`` names where each value came from."""
    from .segmentation.test_time import TEST_TIME_KEYS, resolve_test_time

    thresh = getattr(args, "bg_thresh", None)
    if thresh is not None and not 0.0 <= thresh <= 1.0:
        raise CliError(f"--bg-thresh must be in [0, 1], got {thresh}")
    flags = {key: getattr(args, key, None) for key in TEST_TIME_KEYS}
    try:
        return resolve_test_time(preset, checkpoint=getattr(args, "checkpoint_test_time", None), overrides=flags)
    except ValueError as err:
        raise CliError(str(err)) from None


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
