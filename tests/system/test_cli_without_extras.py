"""The command line with only some extras installed: every parser builds and ``--help`` works with the
core alone, and a subcommand whose extra is missing says which one to install in one line (exit 1).

Each case runs in a fresh interpreter in which the extras' modules cannot be imported and their
distributions read as not installed, as in a virtual environment that never had them (CI's install-paths
stage does the same with real environments; this test runs everywhere in seconds).
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

from paths import REPO_ROOT

#: extra -> (distribution names, top-level modules) it brings beyond the core
EXTRA_PACKAGES = {
    "text": (["open-clip-torch", "ftfy", "regex"], ["open_clip", "ftfy", "regex"]),
    "hf": (["transformers"], ["transformers"]),
    "train": (["webdataset", "nltk", "timm"], ["webdataset", "nltk", "timm"]),
    "eval": (["timm"], ["timm"]),
    "bench": (["pytest-benchmark", "matplotlib"], ["pytest_benchmark", "matplotlib"]),
    "export": (["onnx", "onnxscript", "onnxruntime"], ["onnx", "onnxscript", "onnxruntime"]),
}
#: torch itself, absent where only the ONNX runner is deployed (docs/export.md)
NO_TORCH = (["torch", "triton"], ["torch", "triton"])

_RUNNER = textwrap.dedent(
    """
    import contextlib, importlib.abc, io, json, re, sys
    dists, modules, commands = json.loads(sys.argv[1])

    class Absent(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in modules:
                raise ModuleNotFoundError(f"No module named {name!r}", name=name)
            return None

    sys.meta_path.insert(0, Absent())
    from groupvit_fast import _extras
    canon = lambda n: re.sub(r"[-_.]+", "-", n).lower()
    real = _extras._installed
    _extras._installed = lambda d: canon(d) not in {canon(x) for x in dists} and real(d)
    from groupvit_fast.cli import main
    results = []
    for argv in commands:
        err = io.StringIO()
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            try:
                code = main(argv)
            except SystemExit as exit_:
                code = exit_.code
        results.append({"code": code, "stderr": err.getvalue()})
    print(json.dumps(results))
    """
)


def _run_without(extras: list[str], commands: list[list[str]], *, torch: bool = True) -> list[dict]:
    """``{code, stderr}`` of each command, run one after the other in one interpreter lacking ``extras``
    (and torch too with ``torch=False``)."""
    packages = [EXTRA_PACKAGES[e] for e in extras] + ([] if torch else [NO_TORCH])
    dists = [d for names, _ in packages for d in names]
    modules = [m for _, names in packages for m in names]
    proc = subprocess.run(
        [sys.executable, "-c", _RUNNER, json.dumps([dists, modules, commands])],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT.parent,  # not the checkout's root: nothing of it shadows the installed package
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


ALL_EXTRAS = list(EXTRA_PACKAGES)
HELP = [
    ["--help"],
    ["segment", "--help"],
    ["convert", "--help"],
    ["eval", "seg", "--help"],
    ["eval", "cls", "--help"],
    ["prepare-data", "scenes", "--help"],
    ["train", "--help"],
    ["export", "onnx", "--help"],
]
#: command -> the extra it must name when it is missing
NEEDS = [
    (["train", "--config", "tiny"], "train"),
    (["eval", "seg", "--dataset", "voc", "--data-root", ".", "--checkpoint", "x"], "eval"),
    (["eval", "cls", "--data", ".", "--checkpoint", "x"], "eval"),
    (["prepare-data", "scenes", "--out", "never-written"], "train"),
    (["segment", "never-read.png", "--classes", "voc"], "text"),
    (["bench", "--quick"], "bench"),
    (["export", "onnx", "--checkpoint", "x", "--out", "never-written"], "export"),
]
SEGMENT = ["segment", "never-read.png", "--classes", "voc"]


@pytest.fixture(scope="module")
def core_only() -> list[dict]:
    return _run_without(ALL_EXTRAS, HELP + [argv for argv, _ in NEEDS])


@pytest.mark.parametrize("index", range(len(HELP)), ids=[" ".join(a) for a in HELP])
def test_every_parser_builds_with_the_core_alone(core_only, index):
    result = core_only[index]
    assert result["code"] == 0, result["stderr"]


@pytest.mark.parametrize("index", range(len(NEEDS)), ids=[" ".join(a) for a, _ in NEEDS])
def test_a_command_whose_extra_is_missing_names_it_in_one_line(core_only, index):
    result, extra = core_only[len(HELP) + index], NEEDS[index][1]
    assert result["code"] == 1
    message = result["stderr"].strip()
    assert "\n" not in message, message
    assert message.startswith("groupvit-fast: error: groupvit-fast "), message
    assert f"pip install 'groupvit_fast[{extra}]'" in message, message
    assert not (REPO_ROOT.parent / "never-written").exists()


def test_segment_needs_only_the_text_extra():
    # with text installed and every other extra absent, segment gets past its extra check (to the input check)
    (result,) = _run_without([e for e in ALL_EXTRAS if e != "text"], [SEGMENT])
    assert result["code"] == 1
    assert result["stderr"].strip() == "groupvit-fast: error: never-read.png: no such file or folder"


def test_every_parser_builds_without_torch():
    # where only the ONNX runner is deployed (onnxruntime, numpy, pillow, tokenizers), `segment --onnx`
    # must get past the parser: no parser may import torch
    for argv, result in zip(HELP, _run_without(ALL_EXTRAS, HELP, torch=False), strict=True):
        assert result["code"] == 0, (argv, result["stderr"][-1500:])
