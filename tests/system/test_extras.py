"""Dependencies are declared once (pyproject.toml) and a feature whose extra is missing names it."""

from __future__ import annotations

import importlib.metadata
import tomllib

import pytest

from groupvit_fast import _extras
from paths import REPO_ROOT

PYPROJECT = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())
EXTRAS = PYPROJECT["project"]["optional-dependencies"]


def _requires_dist() -> list[str]:
    """pyproject.toml's dependencies as the wheel's Requires-Dist lines, without a build."""
    lines = list(PYPROJECT["project"]["dependencies"])
    for extra, requirements in EXTRAS.items():
        lines += [f'{requirement}; extra == "{extra}"' for requirement in requirements]
    return lines


@pytest.mark.parametrize(
    "extra, expected",
    [
        ("text", ["open-clip-torch", "ftfy", "regex"]),
        ("train", ["webdataset", "timm", "nltk", "open-clip-torch", "ftfy", "regex"]),  # text comes with train
        ("eval", ["timm", "open-clip-torch", "ftfy", "regex"]),
        ("hf", ["transformers"]),
        ("nonexistent", []),
    ],
)
def test_an_extra_expands_to_its_distributions_with_nested_extras(extra, expected):
    assert _extras.extra_requirements(extra, _requires_dist()) == expected


def test_the_installed_metadata_is_pyproject_toml():
    """The editable install's metadata says what pyproject.toml says (no second list anywhere)."""
    installed = importlib.metadata.requires("groupvit_fast")
    for extra in EXTRAS:
        assert sorted(_extras.extra_requirements(extra, installed)) == sorted(
            _extras.extra_requirements(extra, _requires_dist())
        )


def test_the_test_extra_covers_everything_the_suite_imports():
    needed = set(_extras.extra_requirements("test", _requires_dist()))
    assert {
        "pytest",
        "scipy",
        "transformers",
        "webdataset",
        "timm",
        "nltk",
        "open-clip-torch",
        "triton",
        "pytest-benchmark",
        "matplotlib",
        "ninja",
    } <= needed


def test_a_missing_extra_is_one_line_naming_it(monkeypatch):
    real = _extras._installed
    monkeypatch.setattr(_extras, "_installed", lambda name: name not in ("webdataset", "nltk") and real(name))
    with pytest.raises(ModuleNotFoundError) as err:
        _extras.require_extra("groupvit_fast.train", "train")
    message = str(err.value)
    assert message == "groupvit_fast.train needs webdataset, nltk: pip install 'groupvit_fast[train]'"
    assert "\n" not in message and err.value.name == "webdataset"


def test_the_test_extra_is_installed_where_the_suite_runs():
    _extras.require_extra("the test suite", "test")


@pytest.mark.parametrize(
    "argv, code, out",
    [
        (["dev", "--beyond", "test"], 0, "ruff\nmypy\npre-commit\n"),  # what CI installs for tools/lint.sh
        (["hf"], 0, "transformers\n"),
        (["nope"], 1, ""),
        (["dev", "--without", "test"], 2, ""),
    ],
)
def test_the_extras_command_lists_an_extras_distributions(argv, code, out, capsys):
    assert _extras._main(argv) == code
    captured = capsys.readouterr()
    assert captured.out == out
    assert (code == 0) == (captured.err == "")


def test_every_extra_a_user_installs_alone_has_an_install_path_check():
    """tools/install_paths.sh installs the wheel with each extra alone and runs that extra's own commands
    (tools/install_path_checks.py); an extra without a check would be an install path nobody tried."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("install_path_checks", REPO_ROOT / "tools" / "install_path_checks.py")
    checks = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(checks)
    # test/dev are the sets for working on the package; triton needs a GPU; xformers pins its own torch
    user_extras = set(EXTRAS) - {"test", "dev", "triton", "xformers"}
    assert set(checks.CHECKS) == user_extras | {"core"}
    assert "bash tools/install_paths.sh" in (REPO_ROOT / ".ci" / "run").read_text()
