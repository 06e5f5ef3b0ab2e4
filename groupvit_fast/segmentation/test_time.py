"""Test-time settings of a segmentation, resolved in one place (docs/segmentation.md, "Test-time settings
from the checkpoint"), as timm's ``resolve_data_config`` resolves a model's input settings.

Every caller (``segment``, ``eval seg``, ``eval emergence``, the benchmark cases, the experiment
scripts) asks ``resolve_test_time`` with what it has, and each value comes from the first that sets it:

1. ``overrides``: what the caller was told (a command-line flag, a function argument; ``None`` = not set);
2. ``checkpoint``: the ``evaluate.seg`` keys of the training config the checkpoint carries
   (``Checkpoint.meta['test_time']``; a recipe trained at 64 px is cut into 64 px windows);
3. ``preset``: the dataset's settings (``evaluation.presets.DATASETS[name].test_time``);
4. ``PROTOCOL``: NVlabs' evaluation protocol, 448 px short side, 448 px windows at stride 224, long side
   at most 2048 px (``segmentation/configs/_base_/datasets`` of NVlabs' repository).

The result names the source of every value (``settings.source``), which reports carry. This module
imports only the standard library: the ONNX runner reads it where torch is absent.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

__all__ = ["TestTimeSettings", "PROTOCOL", "TEST_TIME_KEYS", "resolve_test_time", "preset_settings"]

#: The settings a training config (``evaluate.seg``), a flag or an argument may set.
TEST_TIME_KEYS = ("short_side", "crop_size", "stride", "bg_thresh")
_PIXELS = ("short_side", "crop_size", "stride", "max_long_side")


@dataclass(frozen=True)
class TestTimeSettings:
    """How images are resized and windowed for segmentation.

    ``short_side`` / ``max_long_side``: mmseg's keep-ratio resize ``img_scale=(max_long_side, short_side)``;
    ``crop_size`` / ``stride``: the sliding window; ``bg_thresh``: the background threshold (``None``:
    the class set's own, or no background class); ``source``: per key, ``'override'``, ``'checkpoint'``,
    ``'preset'`` or ``'protocol'`` (not part of equality).
    """

    __test__ = False  # a class named Test*: not a pytest test class

    short_side: int = 448
    crop_size: int = 448
    stride: int = 224
    max_long_side: int = 2048
    bg_thresh: float | None = None
    source: Mapping[str, str] = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        for key in _PIXELS:
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"{key} must be a positive number of pixels, got {value!r}")
        thresh = self.bg_thresh
        if thresh is not None and (
            isinstance(thresh, bool) or not isinstance(thresh, (int, float)) or not 0.0 <= thresh <= 1.0
        ):
            raise ValueError(f"bg_thresh must be in [0, 1], got {thresh!r}")

    def windows(self) -> dict[str, int]:
        """``{short_side, crop_size, stride, max_long_side}``: the resize and the sliding window, by the names
        ``GroupViTSegmenter`` (and the ONNX runner) take them."""
        return {key: getattr(self, key) for key in _PIXELS}

    def as_dict(self) -> dict[str, Any]:
        """``{short_side, crop_size, stride, bg_thresh}``: what a report or ``scene_emergence`` takes."""
        return {key: getattr(self, key) for key in TEST_TIME_KEYS}


#: NVlabs' evaluation protocol: the settings of every benchmark that sets none of its own.
PROTOCOL = TestTimeSettings()


def _given(values: Mapping[str, Any] | None, key: str, zero_unset: bool) -> Any:
    """``values[key]`` when set: absent and ``None`` are not, nor 0 where ``zero_unset`` (a training
    config's "not set": ``evaluate.seg``'s defaults)."""
    value = values.get(key) if values else None
    if zero_unset and not isinstance(value, bool) and isinstance(value, (int, float)) and value == 0:
        return None
    return value


def resolve_test_time(
    preset: TestTimeSettings | None = None,
    checkpoint: Mapping[str, Any] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> TestTimeSettings:
    """The settings, each from ``overrides``, else ``checkpoint``, else ``preset``, else ``PROTOCOL``.

    ``preset``: the dataset's settings; ``checkpoint``: ``{short_side, crop_size, stride, bg_thresh}`` of the
    checkpoint's training config (any subset; 0 = not set, as in ``evaluate.seg``); ``overrides``: the same
    keys, ``None`` for "not given".
    ``max_long_side`` is the preset's, scaled with the short side when that changes (448 -> 64 keeps
    2048 -> 292), so that a long image keeps its aspect ratio's bound. ``ValueError`` naming the key of a
    value that is not a positive number of pixels, or a threshold outside [0, 1].
    """
    base = PROTOCOL if preset is None else preset
    unknown = sorted(set(overrides or {}) - set(TEST_TIME_KEYS))
    if unknown:
        raise ValueError(f"unknown test-time setting {unknown[0]!r}: use {', '.join(TEST_TIME_KEYS)}")
    chosen: dict[str, Any] = {}
    source: dict[str, str] = {}
    for key in TEST_TIME_KEYS:
        for origin, values in (("override", overrides), ("checkpoint", checkpoint)):
            value = _given(values, key, zero_unset=origin == "checkpoint")
            if value is not None:
                chosen[key], source[key] = value, origin
                break
        else:
            chosen[key] = getattr(base, key)
            source[key] = "protocol" if preset is None else "preset"
    for key in TEST_TIME_KEYS[:3]:  # a float from a config file (448.0) is a whole number of pixels; 448.5 is not
        value = chosen[key]
        if isinstance(value, float) and math.isfinite(value) and value.is_integer():
            chosen[key] = int(value)
    if isinstance(chosen["bg_thresh"], int) and not isinstance(chosen["bg_thresh"], bool):
        chosen["bg_thresh"] = float(chosen["bg_thresh"])
    short = chosen["short_side"]
    chosen["max_long_side"] = base.max_long_side
    if isinstance(short, int) and not isinstance(short, bool) and short > 0 and short != base.short_side:
        chosen["max_long_side"] = max(short, base.max_long_side * short // base.short_side)
    source["max_long_side"] = source["short_side"]
    return TestTimeSettings(**chosen, source=source)


def preset_settings(**values: Any) -> TestTimeSettings:
    """A dataset's own settings: ``PROTOCOL``'s where ``values`` gives none (``short_side``, ``crop_size``,
    ``stride``, ``max_long_side``, ``bg_thresh``)."""
    return replace(PROTOCOL, **values)
