"""CI installs through a lock file (.ci/constraints.txt, refreshed by tools/refresh_lock.sh): exact pins
only, covering everything the README's set-up pulls in, and CI's environment is what it says."""

from __future__ import annotations

import importlib.metadata
import os
import re

import pytest

from groupvit_fast import _extras
from paths import REPO_ROOT

LOCK = REPO_ROOT / ".ci" / "constraints.txt"
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;]+)$")


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _pins() -> dict[str, str]:
    pins = {}
    for line in LOCK.read_text().splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        match = PIN.match(line.strip())
        assert match, f"{LOCK.name}: not an exact pin: {line!r}"
        pins[_canonical(match.group(1))] = match.group(2)
    return pins


def test_every_line_is_an_exact_pin_and_the_stack_is_locked():
    pins = _pins()
    for name in ("torch", "triton", "transformers", "pip", "setuptools", "numpy"):
        assert name in pins, f"{name} is not in {LOCK.name}"


def test_the_lock_covers_the_set_up():
    """Everything the README's set-up asks for (the test extra, nested extras expanded, and the core),
    and the dev extra's linters that CI adds (.ci/run)."""
    pins = _pins()
    wanted = _extras.extra_requirements("dev") + [
        re.match(r"[A-Za-z0-9._-]+", line).group(0)
        for line in importlib.metadata.requires("groupvit_fast") or []
        if "extra ==" not in line
    ]
    missing = sorted({_canonical(name) for name in wanted} - set(pins))
    assert not missing, f"{LOCK.name} lacks {missing}: run tools/refresh_lock.sh"


@pytest.mark.skipif(
    os.environ.get("GROUPVIT_FAST_LOCKED") != "1",
    reason="this environment was not installed through the lock (.ci/run sets GROUPVIT_FAST_LOCKED=1)",
)
def test_ci_environment_is_the_lock():
    # The first of each name in path order is what imports (setuptools appends its own vendored copies,
    # e.g. packaging and platformdirs, to the end of sys.path once it is imported).
    installed: dict[str, str] = {}
    for dist in importlib.metadata.distributions():
        installed.setdefault(_canonical(dist.metadata["Name"]), dist.version)
    different = {
        name: (version, installed.get(name))
        for name, version in _pins().items()
        if installed.get(name) is not None and installed[name] != version
    }
    assert not different, f"installed versions differ from {LOCK.name} (locked, installed): {different}"
