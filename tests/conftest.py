"""Test configuration: shared helpers importable as plain modules, the repo root kept off sys.path.

Tests live in rooms that mirror the package (``ops/``, ``kernels/``, ``models/``, ``system/``, and
the training and evaluation rooms); their shared helpers are plain modules in ``helpers/``. Run with
``pytest --import-mode=importlib`` (pytest.ini sets it) so that ``kernels/`` is never imported as a
top-level module named ``kernels`` (transformers probes for a package of that name); the installed
``groupvit_fast`` (``pip install -e .``) is what the tests import.
"""

import os
import sys

_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(_HERE, "helpers"))
sys.path.insert(1, _HERE)  # test modules that import a sibling helper by name (e.g. groupvit_small)

# Without a CUDA device the Triton kernels run in Triton's interpreter (slow, so the tests use small
# shapes). It must be chosen before the kernels are imported, i.e. here.
if "TRITON_INTERPRET" not in os.environ:
    import torch

    if not torch.cuda.is_available():
        os.environ["TRITON_INTERPRET"] = "1"


# --------------------------------------------------------------------------------------------
# The required-backends contract (helpers/requirements.py) and a per-test time limit
# --------------------------------------------------------------------------------------------

import signal  # noqa: E402

import pytest  # noqa: E402

TIMEOUT_ENV = "GROUPVIT_FAST_TEST_TIMEOUT"


def pytest_configure(config):
    import requirements

    try:
        requirements.required()
    except ValueError as err:
        raise pytest.UsageError(str(err)) from None


def pytest_collection_modifyitems(config, items):
    import requirements

    for item in items:
        names = {name for mark in item.iter_markers("requires") for name in mark.args}
        if names & requirements.GPU_NAMES:
            item.add_marker(pytest.mark.gpu)


def pytest_runtest_setup(item):
    import requirements

    for mark in item.iter_markers("requires"):
        for name in mark.args:
            requirements.check(name)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_call(item):
    """``GROUPVIT_FAST_TEST_TIMEOUT=S``: a test running longer than S seconds fails (SIGALRM), so one
    hanging test cannot eat a time-capped run (the GPU check sets it)."""
    limit = int(os.environ.get(TIMEOUT_ENV, "0") or 0)
    if limit <= 0 or not hasattr(signal, "SIGALRM"):
        yield
        return

    def on_timeout(signum, frame):
        raise TimeoutError(f"test exceeded {TIMEOUT_ENV}={limit} s")

    previous = signal.signal(signal.SIGALRM, on_timeout)
    signal.alarm(limit)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
