"""One resolver of the test-time settings (groupvit_fast/segmentation/test_time.py; docs/segmentation.md,
"Test-time settings from the checkpoint"): a value given, else the checkpoint's training config, else the
dataset's preset, else NVlabs' protocol, each with its source; and every caller reads it."""

from __future__ import annotations

import ast
import sys

import pytest

from groupvit_fast.segmentation import test_time as tt_module
from groupvit_fast.segmentation.test_time import PROTOCOL, TestTimeSettings, resolve_test_time


def test_nvlabs_protocol_is_what_nothing_overrides():
    tt = resolve_test_time()
    assert (tt.short_side, tt.crop_size, tt.stride, tt.max_long_side, tt.bg_thresh) == (448, 448, 224, 2048, None)
    assert set(tt.source.values()) == {"protocol"}


def test_each_value_comes_from_the_first_source_that_sets_it():
    preset = TestTimeSettings(short_side=64, crop_size=64, stride=32, max_long_side=128, bg_thresh=0.5)
    checkpoint = {"short_side": 448, "crop_size": 64, "bg_thresh": 0.4}
    tt = resolve_test_time(preset, checkpoint=checkpoint, overrides={"crop_size": 48, "stride": None})
    assert tt.as_dict() == {"short_side": 448, "crop_size": 48, "stride": 32, "bg_thresh": 0.4}
    assert dict(tt.source) == {
        "short_side": "checkpoint",
        "crop_size": "override",
        "stride": "preset",
        "bg_thresh": "checkpoint",
        "max_long_side": "checkpoint",
    }


@pytest.mark.parametrize(
    "preset, short_side, max_long_side",
    [
        (None, 448, 2048),
        (None, 64, 292),  # 2048 * 64 // 448: the protocol's aspect bound kept in proportion
        (TestTimeSettings(64, 64, 32, 128, 0.5), 448, 896),  # the scenes preset at the recipe's 448 px
        (TestTimeSettings(64, 64, 32, 128, 0.5), 64, 128),
        (TestTimeSettings(64, 64, 32, 65, 0.5), 32, 32),  # never below the short side
    ],
)
def test_the_long_side_bound_scales_with_the_short_side(preset, short_side, max_long_side):
    tt = resolve_test_time(preset, overrides={"short_side": short_side})
    assert (tt.short_side, tt.max_long_side) == (short_side, max_long_side)


def test_zero_means_not_set_in_a_training_config_but_is_a_value_when_given():
    tt = resolve_test_time(checkpoint={"short_side": 0, "crop_size": 0, "stride": 0, "bg_thresh": 0.0})
    assert tt == PROTOCOL and set(tt.source.values()) == {"protocol"}
    assert resolve_test_time(overrides={"bg_thresh": 0.0}).bg_thresh == 0.0
    # whole numbers from a YAML file are pixels; an int threshold is a float
    tt = resolve_test_time(checkpoint={"short_side": 96.0, "bg_thresh": 1})
    assert tt.short_side == 96 and isinstance(tt.short_side, int) and tt.bg_thresh == 1.0


@pytest.mark.parametrize(
    "overrides, culprit",
    [
        ({"short_side": 0}, "short_side"),
        ({"crop_size": -64}, "crop_size"),
        ({"stride": 16.5}, "stride"),
        ({"stride": True}, "stride"),
        ({"bg_thresh": 1.5}, "bg_thresh"),
        ({"bg_thresh": "0.5"}, "bg_thresh"),
        ({"window": 64}, "window"),
    ],
)
def test_a_bad_value_is_one_line_naming_it(overrides, culprit):
    with pytest.raises(ValueError, match=culprit) as err:
        resolve_test_time(overrides=overrides)
    assert "\n" not in str(err.value)


def test_the_resolver_imports_only_the_standard_library():
    # the ONNX runner reads it where torch is absent (docs/segmentation.md)
    tree = ast.parse(open(tt_module.__file__, encoding="utf-8").read())
    names = [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
    names += [n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
    assert all(n == "__future__" or n.split(".")[0] in sys.stdlib_module_names for n in names), names


def test_every_preset_reads_the_protocol_where_it_sets_nothing():
    from groupvit_fast.evaluation.datasets import DATASETS

    voc = DATASETS["voc"].test_time
    assert (voc.short_side, voc.crop_size, voc.stride, voc.max_long_side) == (448, 448, 224, 2048)
    assert voc.bg_thresh == 0.95
    scenes = DATASETS["scenes"].test_time
    assert (scenes.short_side, scenes.crop_size, scenes.stride, scenes.max_long_side, scenes.bg_thresh) == (
        64,
        64,
        32,
        128,
        0.5,
    )


def test_the_scenes_recipe_carries_its_test_time_through_the_resolver():
    # the recipe's config is the one home of its test time: what its checkpoint carries, and what the
    # experiment scripts score at (benchmarks/experiments/scenes-emergence/score.py)
    pytest.importorskip("webdataset")
    from groupvit_fast.checkpoint import config_test_time
    from groupvit_fast.evaluation.datasets import DATASETS
    from groupvit_fast.train import load_config

    recipe = config_test_time(load_config("scenes"))
    tt = resolve_test_time(DATASETS["scenes"].test_time, checkpoint=recipe)
    assert tt.as_dict() == {"short_side": 448, "crop_size": 64, "stride": 32, "bg_thresh": 0.5}
    assert tt.max_long_side == 896 and set(tt.source.values()) == {"checkpoint"}
