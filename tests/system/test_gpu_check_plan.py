"""benchmarks/gpu_check.sh rehearsed without a GPU: its plan, its wheelhouse check, its time caps and traps.

The GPU machine is lent for minutes, offline; a missing script, a package without a wheel or caps that
overrun the budget must show here, in `gpu_check.sh plan`, not there. The stage runner's promises
(a stage over its cap is stopped and reported; a signal still leaves summary.txt and the archive) are
checked with a stand-in Python whose bench only sleeps.
"""

import collections
import importlib.util
import os
import re
import shutil
import signal
import subprocess
import sys
import tarfile
import time
import zipfile
from pathlib import Path

import pytest

from groupvit_fast.bench import cases
from paths import REPO_ROOT

SCRIPT = "benchmarks/gpu_check.sh"
STAGES = ("build", "test", "memcheck", "racecheck", "bench")
#: what `plan` checks in the checkout: a copy of these is a checkout as far as the plan can tell
PLAN_FILES = (
    "benchmarks/gpu_check.sh",
    "benchmarks/fill_wheelhouse.sh",
    "benchmarks/wheelhouse.py",
    "benchmarks/sanitizer_cases.py",
    "setup.py",
    "pytest.ini",
    "groupvit_fast/bench/__main__.py",
    "groupvit_fast/info.py",
    "tests/conftest.py",
    "tests/helpers/requirements.py",
)


def _wheelhouse_module():
    spec = importlib.util.spec_from_file_location("gpu_check_wheelhouse", REPO_ROOT / "benchmarks" / "wheelhouse.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


wheelhouse = _wheelhouse_module()


def _clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GPU_CHECK_", "GROUPVIT_FAST_"))}
    env["PYTHON"] = sys.executable
    env.update(extra)
    return env


def _run(*args: str, root: Path = REPO_ROOT, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["bash", str(root / SCRIPT), *args], capture_output=True, text=True, timeout=120, env=_clean_env(**env)
    )


def _write_wheel(folder: Path, filename: str) -> None:
    """A minimal valid wheel (zip with a METADATA), enough for the plan, which reads names and tags."""
    name, version = filename.split("-")[:2]
    with zipfile.ZipFile(folder / filename, "w") as zf:
        metadata = f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n"
        zf.writestr(f"{name}-{version}.dist-info/METADATA", metadata)


@pytest.fixture
def dummy_wheelhouse(tmp_path):
    folder = tmp_path / "whl"
    folder.mkdir()
    for package in wheelhouse.PACKAGES:
        version = package.requirement.split("==")[1]
        _write_wheel(folder, f"{wheelhouse.normalize(package.name)}-{version}-py3-none-any.whl")
    return folder


def _stage_lines(stdout: str) -> dict[str, str]:
    return {line.split()[0]: line for line in stdout.splitlines() if line[:1].isalpha() and " s  " in line}


@pytest.mark.parametrize("with_wheelhouse", [False, True], ids=["no-wheelhouse", "dummy-wheelhouse"])
def test_plan_passes_here_and_names_every_stage_with_its_cap(with_wheelhouse, dummy_wheelhouse):
    args = ("--wheelhouse", str(dummy_wheelhouse), "plan") if with_wheelhouse else ("plan",)
    result = _run(*args)
    assert result.returncode == 0, result.stderr
    assert result.stdout.rstrip().endswith("gpu_check plan: ok")
    stages = _stage_lines(result.stdout)
    want = (("wheelhouse",) if with_wheelhouse else ()) + STAGES
    assert tuple(stages) == want
    for name in want:
        cap = int(stages[name].split()[1])
        assert cap >= 10, stages[name]
    assert "pytest -m gpu tests -q --maxfail=1000" in stages["test"]
    assert "GROUPVIT_FAST_REQUIRE=cpu\\,triton\\,cuda\\,cuda-device\\,nvcc" in stages["test"]
    assert "-x" not in stages["test"].split()


def test_plan_lists_what_the_bench_stage_measures():
    """The bench stage's line is followed by its cases per family, as the harness lists them (no GPU needed)."""
    result = _run("plan")
    (line,) = [line.strip() for line in result.stdout.splitlines() if line.strip().startswith("measures: ")]
    listed = subprocess.run(
        [sys.executable, "-m", "groupvit_fast.bench", "--device", "cuda", "--quick", "--list"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    ).stdout.split()
    counts = collections.Counter(item.split("/")[0] for item in listed)
    # the quick GPU tier has every family that has GPU cases (export times onnxruntime's CPU provider)
    on_gpu = {name for name, family in cases.families().items() if family.cases.get("gpu-quick")}
    assert on_gpu and set(counts) == on_gpu
    assert line.startswith("measures: " + ", ".join(f"{name} {n}" for name, n in counts.items()) + " ")


@pytest.mark.parametrize("with_wheelhouse", [False, True], ids=["no-wheelhouse", "dummy-wheelhouse"])
def test_the_planned_total_counts_every_cap_and_fits_the_budget(with_wheelhouse, dummy_wheelhouse):
    result = _run(*(("--wheelhouse", str(dummy_wheelhouse)) if with_wheelhouse else ()), "plan")
    caps = sum(int(line.split()[1]) for line in _stage_lines(result.stdout).values())
    header = re.search(r"all in (\d+) s \(stages (\d+) s with grace and overhead\)", result.stdout)
    budget, total = int(header[1]), int(header[2])
    assert budget == 540  # one device command is 600 s at most; the rest is for the machine's start and transfers
    assert caps < total <= budget


@pytest.mark.parametrize(
    "env, reason",
    [
        ({"GPU_CHECK_BUDGET_S": "400"}, "exceed GPU_CHECK_BUDGET_S=400"),
        ({"GPU_CHECK_CAP_TEST": "400"}, "exceed GPU_CHECK_BUDGET_S=540"),
        ({"GPU_CHECK_BUDGET_S": "600"}, "more than 540 s"),
        ({"GROUPVIT_FAST_TEST_TIMEOUT": "210"}, "below the test stage's cap"),
        ({"GPU_CHECK_REQUIRE": "cpu,tritn"}, "unknown name(s) tritn"),
        ({"PYTHON": "/nonexistent/python3"}, "PYTHON=/nonexistent/python3: not found"),
    ],
    ids=[
        "budget-too-small",
        "cap-too-large",
        "budget-past-the-device-limit",
        "test-timeout-vs-cap",
        "required-name-typo",
        "no-python",
    ],
)
def test_plan_fails_with_one_line_per_problem(env, reason):
    result = _run("plan", **env)
    assert result.returncode == 1
    lines = [line for line in result.stderr.splitlines() if line.startswith("gpu_check plan: MISSING: ")]
    assert len(lines) == 1 and reason in lines[0], result.stderr


@pytest.mark.parametrize(
    "break_it, reason",
    [
        (lambda d: (d / "ftfy-6.3.1-py3-none-any.whl").unlink(), "no wheel of ftfy==6.3.1"),
        (lambda d: _write_wheel(d, "ftfy-6.3.0-py3-none-any.whl"), "2 wheels of ftfy"),
        (
            lambda d: (d / "nltk-3.9.2-py3-none-any.whl").rename(
                d / "nltk-3.9.2-cp311-cp311-manylinux_2_17_x86_64.whl"
            ),
            "not for CPython 3.12",
        ),
        (
            lambda d: (d / "nltk-3.9.2-py3-none-any.whl").rename(d / "nltk-3.9.2-py3-none-win_amd64.whl"),
            "not x86-64 manylinux or any",
        ),
        (lambda d: (d / "braceexpand-0.1.7-py3-none-any.whl").write_bytes(b"<html>"), "not a zip archive"),
    ],
    ids=["wheel-missing", "two-versions", "wrong-python", "wrong-platform", "truncated"],
)
def test_plan_fails_on_a_wheelhouse_that_would_not_install(dummy_wheelhouse, break_it, reason):
    break_it(dummy_wheelhouse)
    result = _run("--wheelhouse", str(dummy_wheelhouse), "plan")
    assert result.returncode == 1
    assert reason in result.stderr, result.stderr


@pytest.fixture
def checkout_copy(tmp_path):
    root = tmp_path / "checkout"
    for name in PLAN_FILES:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO_ROOT / name, root / name)
    return root


@pytest.mark.parametrize(
    "path, damage, reason",
    [
        ("benchmarks/sanitizer_cases.py", None, "benchmarks/sanitizer_cases.py: missing"),
        ("groupvit_fast/bench/__main__.py", "def broken(:\n", "groupvit_fast/bench/__main__.py: does not parse"),
        ("benchmarks/fill_wheelhouse.sh", "if then fi\n", "benchmarks/fill_wheelhouse.sh: bash syntax error"),
        ("pytest.ini", "[pytest]\n", "no 'gpu' marker"),
    ],
    ids=["script-missing", "module-syntax-error", "bash-syntax-error", "gpu-marker-unregistered"],
)
def test_plan_fails_on_a_missing_or_broken_stage_file(checkout_copy, path, damage, reason):
    assert _run("plan", root=checkout_copy).returncode == 0  # the copy itself is complete
    target = checkout_copy / path
    target.unlink() if damage is None else target.write_text(damage)
    result = _run("plan", root=checkout_copy)
    assert result.returncode == 1
    assert reason in result.stderr, result.stderr


@pytest.mark.parametrize(
    "filename, problem",
    [
        ("ftfy-6.3.1-py3-none-any.whl", None),
        ("braceexpand-0.1.7-py2.py3-none-any.whl", None),
        ("regex-2025.1.1-cp312-cp312-manylinux_2_17_x86_64.manylinux2014_x86_64.whl", None),
        ("cryptography-44.0.0-cp39-abi3-manylinux_2_28_x86_64.whl", None),
        ("regex-2025.1.1-cp311-cp311-manylinux_2_17_x86_64.whl", "python tag"),
        ("regex-2025.1.1-cp312-cp312-manylinux_2_17_aarch64.whl", "platform tag"),
        ("regex-2025.1.1-cp312-cp312-macosx_11_0_arm64.whl", "platform tag"),
        ("cryptography-44.0.0-cp313-abi3-manylinux_2_28_x86_64.whl", "python tag"),
    ],
)
def test_wheel_tags_accepted_for_cpython_312_on_x86_64_linux(filename, problem):
    why = wheelhouse.incompatibility(filename)
    assert (why is None) if problem is None else (why is not None and problem in why)


def test_wheelhouse_lists_only_what_is_not_importable(dummy_wheelhouse, monkeypatch):
    importable = {"ftfy", "wcwidth"}
    monkeypatch.setattr(wheelhouse.importlib.util, "find_spec", lambda name: object() if name in importable else None)
    names = {wheelhouse.wheel_tags(p.name)[0] for p in wheelhouse.missing_wheels(dummy_wheelhouse)}
    assert names == {wheelhouse.normalize(p.name) for p in wheelhouse.PACKAGES if p.module not in importable}


# --------------------------------------------------------------------------------------------
# The runner's promises, with a stand-in Python: its bench sleeps, everything else is real
# --------------------------------------------------------------------------------------------


@pytest.fixture
def sleepy_python(tmp_path):
    """A python that runs everything, except `-m groupvit_fast.bench`, which sleeps (a hanging stage)."""
    shim = tmp_path / "python"
    shim.write_text(
        f'#!/bin/sh\ncase "$*" in *groupvit_fast.bench*) exec sleep 300 ;; esac\nexec "{sys.executable}" "$@"\n'
    )
    shim.chmod(0o755)
    return shim


def _summary(out: Path) -> str:
    return (out / "summary.txt").read_text()


def _archived(archive: Path) -> set[str]:
    with tarfile.open(archive) as tar:
        return {Path(name).name for name in tar.getnames()}


def test_a_stage_over_its_limit_is_stopped_and_the_summary_says_so(tmp_path, sleepy_python):
    out = tmp_path / "result"
    start = time.monotonic()
    # 60 s: env.txt (which imports torch) must leave the stage its 10 s minimum on a loaded 2-core machine
    result = _run("--out", str(out), "bench", PYTHON=str(sleepy_python), GPU_CHECK_BUDGET_S="60")
    took = time.monotonic() - start
    assert result.returncode == 1
    assert took < 60 + 10  # the budget, plus the final summary
    assert "bench: TIMEOUT after" in _summary(out)
    assert {"summary.txt", "env.txt", "bench.log"} <= _archived(Path(f"{out}.tar.gz"))


def test_a_signal_still_writes_the_summary_and_the_archive(tmp_path, sleepy_python):
    out = tmp_path / "result"
    archive = tmp_path / "back" / "gpu-check.tar.gz"
    env = _clean_env(PYTHON=str(sleepy_python), GPU_CHECK_BUDGET_S="200")
    proc = subprocess.Popen(
        ["bash", str(REPO_ROOT / SCRIPT), "--out", str(out), "--archive", str(archive), "bench"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and "bench: RUNNING" not in (
        (out / "summary.txt").read_text() if (out / "summary.txt").exists() else ""
    ):
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    output, _ = proc.communicate(timeout=30)
    assert proc.returncode == 143, output
    summary = _summary(out)
    assert "bench: INTERRUPTED (SIGTERM)" in summary and "RUNNING" not in summary
    assert "summary.txt" in _archived(archive)


#: the functions of gpu_check.sh that only run before its traps are set (argument errors, `plan`)
_BEFORE_TRAPS = {"usage", "plan", "note"}


def _run_time_code(script: str) -> dict[str, str]:
    """Each piece of gpu_check.sh that runs once its traps are set, comments dropped: the main text
    after the first ``trap`` line and every function but those of ``_BEFORE_TRAPS``."""
    lines = [line for line in script.splitlines() if not line.lstrip().startswith("#")]
    pieces, name, body = {}, None, []
    for line in lines:
        start = re.match(r"^([A-Za-z_]\w*)\(\) \{", line)
        if start and name is None:
            name, body = start.group(1), [line]
            if line.count("{") == line.count("}"):  # a one-line function
                pieces[name], name = line, None
            continue
        if name is not None:
            body.append(line)
            if line == "}":
                pieces[name], name = "\n".join(body), None
    main = "\n".join(lines)
    pieces["main, after the traps"] = main[main.index("\ntrap ") :]
    return {k: v for k, v in pieces.items() if k not in _BEFORE_TRAPS}


def test_nothing_that_runs_under_the_traps_uses_a_command_substitution():
    # bash 5.2 loses a trap whose signal lands while it parses a `$(...)` (the trap's own text fails to
    # parse: "unexpected EOF while looking for matching `)'", and the interrupted command is dropped):
    # a SIGTERM from the device tool's time limit would then leave no INTERRUPTED line. This is what
    # made the signal test above fail once in twenty runs; the script keeps `$(` out of that code.
    pieces = _run_time_code((REPO_ROOT / SCRIPT).read_text())
    assert {"write_summary", "run_stage", "on_signal", "finish", "environment", "main, after the traps"} <= set(pieces)
    offenders = {
        name: [line.strip() for line in code.splitlines() if "$(" in line.replace("$((", "")]
        for name, code in pieces.items()
    }
    assert not {k: v for k, v in offenders.items() if v}, offenders
