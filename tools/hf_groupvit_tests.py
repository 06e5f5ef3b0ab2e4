"""Run Hugging Face's own GroupViT test file without and with groupvit_fast's patch; compare per test.

    python tools/hf_groupvit_tests.py --transformers GIT [--rev REV] [--workdir DIR] [--report FILE]

``GIT`` is a transformers git checkout or bare git directory (any mirror of the repository). The
script never copies upstream code into this repository: it lays out ``tests/``, ``utils/`` and
``pyproject.toml`` of ``REV`` in ``DIR`` (default: a folder under the system temp directory; refused inside the
repository), then

1. guards one import of ``tests/test_modeling_common.py`` that newer transformers releases removed
   (``_get_parameter_tp_plan``; only ``test_tp_plan_matches_params`` uses it, which skips for GroupViT),
   so the file imports;
2. links ``DIR/src/transformers`` to the installed transformers (the pipeline mixin imports it by path);
3. writes a pytest plugin that calls ``groupvit_fast.apply_groupvit_fast_to_classes("transformers")``
   at session start and prints how many calls groupvit_fast's ops served;
4. runs ``tests/models/groupvit/test_modeling_groupvit.py`` twice (``-p no:cacheprovider``, junit xml),
   without and with the plugin, and prints the outcome counts and every test whose outcome differs.

Exit status 0 when every test has the same outcome with and without the patch, 1 when some differ, 2
when a run passed nothing (a collection error: read ``DIR/unpatched.log`` / ``DIR/patched.log``). Extra packages the
upstream tests import: ``parameterized pytest-timeout pytest-env datasets httpx requests``
(tests/README.md, "Hugging Face's GroupViT tests").
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
TEST_FILE = "tests/models/groupvit/test_modeling_groupvit.py"
GUARDED = "    from transformers.integrations.tensor_parallel import _get_parameter_tp_plan\n"
GUARD = (
    "    try:  # removed from newer transformers; only test_tp_plan_matches_params uses it\n"
    "        from transformers.integrations.tensor_parallel import _get_parameter_tp_plan\n"
    "    except ImportError:\n"
    "        _get_parameter_tp_plan = None\n"
)
PLUGIN = '''"""pytest plugin: Hugging Face's GroupViT classes patched by groupvit_fast for the whole session."""
import groupvit_fast
from groupvit_fast.ops import backend_usage
from groupvit_fast.ops.attention import attention_backend_usage


def pytest_sessionstart(session):
    print("patched:", groupvit_fast.apply_groupvit_fast_to_classes("transformers"))


def pytest_terminal_summary(terminalreporter):
    terminalreporter.write_line(f"groupvit_fast assign_attention calls: {backend_usage()}")
    terminalreporter.write_line(f"groupvit_fast multi_head_attention calls: {attention_backend_usage()}")
'''


def git(source: Path, *args: str, **kwargs) -> subprocess.CompletedProcess:
    where = ["-C", str(source)] if (source / ".git").exists() else [f"--git-dir={source}"]
    return subprocess.run(["git", *where, *args], check=True, **kwargs)


def lay_out(source: Path, rev: str, workdir: Path) -> str:
    """Upstream tests of ``rev`` in ``workdir``, guarded and linked; returns the full commit id."""
    commit = git(source, "rev-parse", f"{rev}^{{commit}}", capture_output=True, text=True).stdout.strip()
    workdir.mkdir(parents=True, exist_ok=True)
    # utils/ holds test helpers the common tests put on sys.path (utils/test_module)
    archive = git(source, "archive", commit, "tests", "utils", "pyproject.toml", capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(workdir)], input=archive, check=True)
    common = workdir / "tests" / "test_modeling_common.py"
    text = common.read_text()
    if GUARDED in text:
        common.write_text(text.replace(GUARDED, GUARD))
    import transformers

    link = workdir / "src" / "transformers"
    link.parent.mkdir(exist_ok=True)
    if link.is_symlink() or link.exists():
        link.unlink()
    link.symlink_to(Path(transformers.__file__).parent, target_is_directory=True)
    (workdir / "plugin").mkdir(exist_ok=True)
    (workdir / "plugin" / "groupvit_fast_hf_patch.py").write_text(PLUGIN)
    return commit


def run(workdir: Path, patched: bool, extra: list[str]) -> tuple[Path, str]:
    xml = workdir / ("patched.xml" if patched else "unpatched.xml")
    cmd = [
        sys.executable,
        "-m",
        "pytest",
        TEST_FILE,
        "-p",
        "no:cacheprovider",
        "-q",
        "-rA",
        f"--junitxml={xml}",
        *extra,
    ]
    env = None
    if patched:
        env = dict(
            os.environ,
            PYTHONPATH=os.pathsep.join(filter(None, [str(workdir / "plugin"), os.environ.get("PYTHONPATH")])),
        )
        cmd += ["-p", "groupvit_fast_hf_patch"]
    proc = subprocess.run(cmd, cwd=workdir, env=env, capture_output=True, text=True)
    (workdir / (xml.stem + ".log")).write_text(proc.stdout + proc.stderr)
    last = [line for line in proc.stdout.splitlines() if line.startswith("=") and " in " in line]
    return xml, (last[-1].strip("= ") if last else f"pytest exited {proc.returncode}")


def outcomes(xml: Path) -> dict[str, str]:
    result = {}
    for case in ET.parse(xml).getroot().iter("testcase"):
        kinds = {child.tag for child in case}
        name = f"{case.get('classname').rsplit('.', 1)[-1]}::{case.get('name')}"
        result[name] = (
            "failed"
            if "failure" in kinds
            else "error"
            if "error" in kinds
            else "skipped"
            if "skipped" in kinds
            else "passed"
        )
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--transformers", type=Path, required=True, help="transformers git checkout or git dir")
    parser.add_argument("--rev", default="HEAD")
    parser.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "hf-groupvit-tests")
    parser.add_argument("--report", type=Path, help="also write the result as markdown here")
    parser.add_argument("--label", help="how the report names the git source (default: its path)")
    parser.add_argument("pytest_args", nargs="*", help="extra pytest arguments (after --)")
    args = parser.parse_args()
    workdir = args.workdir.resolve()
    if workdir == REPO or REPO in workdir.parents:
        parser.error(f"--workdir {workdir} is inside the repository: upstream test code stays outside it")
    commit = lay_out(args.transformers, args.rev, workdir)
    import torch
    import transformers

    import groupvit_fast

    started = datetime.datetime.now(datetime.UTC)
    (xml_a, summary_a), (xml_b, summary_b) = run(workdir, False, args.pytest_args), run(workdir, True, args.pytest_args)
    a, b = outcomes(xml_a), outcomes(xml_b)
    differ = sorted(name for name in a.keys() | b.keys() if a.get(name) != b.get(name))
    usage = [line for line in (workdir / "patched.log").read_text().splitlines() if "groupvit_fast " in line]
    lines = [
        "# Hugging Face's GroupViT tests with and without groupvit_fast's patch",
        "",
        f"* Date (UTC): {started:%Y-%m-%d %H:%M}; device: CPU only ({platform.processor() or platform.machine()}, "
        f"{platform.system()}); python {platform.python_version()}",
        f"* transformers {transformers.__version__} (installed); test files from commit `{commit}` of "
        f"{args.label or args.transformers}; torch {torch.__version__}; groupvit_fast {groupvit_fast.__version__}",
        f"* Command: `python tools/hf_groupvit_tests.py --transformers <git> --rev {commit[:12]}`",
        "",
        "| run | passed | skipped | failed | errors | pytest summary |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for label, res, summary in (("unpatched", a, summary_a), ("patched", b, summary_b)):
        counts = Counter(res.values())
        lines.append(
            f"| {label} | {counts['passed']} | {counts['skipped']} | {counts['failed']} | {counts['error']} "
            f"| {summary} |"
        )
    lines += ["", f"Tests whose outcome differs: {len(differ)}"]
    lines += [f"* `{name}`: {a.get(name)} -> {b.get(name)}" for name in differ]
    failed = sorted(name for name, outcome in a.items() if outcome in ("failed", "error"))
    lines += [
        "",
        "Failing in both runs (not patch-related when the outcome is the same): "
        + (", ".join(f"`{name}`" for name in failed) or "none"),
    ]
    lines += ["", "Patched run, calls served by groupvit_fast's ops:"] + [f"* {line.strip()}" for line in usage]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.report:
        args.report.parent.mkdir(parents=True, exist_ok=True)
        args.report.write_text(text)
    if not (Counter(a.values())["passed"] and Counter(b.values())["passed"]):
        return 2  # a run collected nothing (see its .log in the workdir): no comparison was made
    return 1 if differ else 0


if __name__ == "__main__":
    sys.exit(main())
