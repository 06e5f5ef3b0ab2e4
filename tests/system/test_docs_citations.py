"""The project's contract lives in docs/: every citation of a docs page must resolve.

Code and docs cite pages as ``docs/<page>.md`` and sections as ``docs/<page>.md, "Section"``
(also ``docs/<page>.md "Section"`` and ``docs/<page>.md ("A" and "B")``). The checks: every cited
page exists, every cited section is a heading of that page (case-insensitive), and nothing cites
a specification folder outside the repository (``spec/``), which a reader of the repository does not have.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from paths import REPO_ROOT

REPO = REPO_ROOT
THIS_FILE = Path(__file__).resolve()

#: Files that can hold citations: source, build and documentation text.
SUFFIXES = {".py", ".md", ".sh", ".h", ".hpp", ".cpp", ".cu", ".cuh", ".txt", ".toml", ".cfg", ".ini", ".yml", ".yaml"}
#: Not scanned: tool and build output, environments, and recorded benchmark results (run records).
SKIP_DIRS = {".git", ".venv", "venv", "build", "dist", "__pycache__", ".pytest_cache", ".ruff_cache", "node_modules"}
SKIP_PATHS = {REPO / "benchmarks" / "results"}

# A page path, then (optionally after a closing backtick) a comma or a space / opening parenthesis,
# then one or more quoted section names joined by "," or "and".
_PAGE = r"(?<![\w.-])(?:\.\./)*docs/([\w./-]+?\.md)"
_CITATION = re.compile(_PAGE + r'`?(?:,\s*|\s+\(?)((?:"[^"\n]{1,80}"(?:\s*(?:,|and)\s*)?)+)')
_PAGE_ONLY = re.compile(_PAGE)
_QUOTED = re.compile(r'"([^"\n]+)"')
# Built from two parts so that this file does not match itself.
# A path into the folder, or a section cited by name only: spec "Backward".
_PRIVATE_SPEC = re.compile(r"(?<![\w.-])" + "spec" + r'(?:/[\w./-]*|\s+"[^"\n]+")')
_HEADING = re.compile(r"^#{1,6}\s+(.+?)\s*#*\s*$", re.MULTILINE)


def cited_sections(text: str) -> list[tuple[str, str]]:
    """``(page, section)`` for every sectioned citation in ``text``; ``page`` relative to docs/."""
    return [(m.group(1), name) for m in _CITATION.finditer(text) for name in _QUOTED.findall(m.group(2))]


def cited_pages(text: str) -> list[str]:
    return [m.group(1) for m in _PAGE_ONLY.finditer(text)]


def headings(markdown: str) -> set[str]:
    """The heading texts of a markdown page, lower-cased, inline code marks removed."""
    return {h.replace("`", "").strip().lower() for h in _HEADING.findall(markdown)}


def _candidates() -> list[Path]:
    """The repository's own files: git's view (tracked, or new and not ignored) when there is a git
    checkout, so environments and tool output inside it (.venv/, .compat/, build/) are never read;
    else every file under the root."""
    try:
        out = subprocess.run(
            ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
            cwd=REPO,
            capture_output=True,
            check=True,
            timeout=60,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return sorted(REPO.rglob("*"))
    return sorted(REPO / name for name in out.decode().split("\0") if name)


def _scanned_files() -> list[Path]:
    files = []
    for path in _candidates():
        rel = path.relative_to(REPO)
        if any(part in SKIP_DIRS or part.endswith(".egg-info") for part in rel.parts):
            continue
        if any(path == skip or skip in path.parents for skip in SKIP_PATHS) or path == THIS_FILE:
            continue
        if path.is_file() and (path.suffix in SUFFIXES or rel.parts[0] == ".ci"):
            files.append(path)
    return files


FILES = _scanned_files()
TEXTS = {path.relative_to(REPO).as_posix(): path.read_text(encoding="utf-8", errors="replace") for path in FILES}


# ---- the extractor itself, on hand-written lines (so the checks below cannot pass vacuously) ----


@pytest.mark.parametrize(
    "line, pages, sections",
    [
        ('"""Reference path (docs/assign_op.md, "Math").', ["assign_op.md"], [("assign_op.md", "Math")]),
        (
            'executable form of docs/assign_op.md ("Math" and "Backward"): the',
            ["assign_op.md"],
            [("assign_op.md", "Math"), ("assign_op.md", "Backward")],
        ),
        ('"""docs/assign_op.md "Math", one scalar at a time."""', ["assign_op.md"], [("assign_op.md", "Math")]),
        (
            'see `docs/assign_op.md`, "Noise: what is guaranteed"',
            ["assign_op.md"],
            [("assign_op.md", "Noise: what is guaranteed")],
        ),
        ("[`docs/benchmarks.md`](../docs/benchmarks.md): shapes", ["benchmarks.md", "benchmarks.md"], []),
        ('the model (docs/groupvit.md, "Data flow", step 3).', ["groupvit.md"], [("groupvit.md", "Data flow")]),
        ('paths = ("docs/a.md", "docs/b.md")', ["a.md", "b.md"], []),
        ("mydocs/x.md and docs.md are not pages", [], []),
    ],
)
def test_extractor_finds_pages_and_sections(line, pages, sections):
    assert cited_pages(line) == pages
    assert cited_sections(line) == sections


@pytest.mark.parametrize(
    "line, cites",
    [
        ("The contract is `spec/assign_op.md`.", True),
        ("written from /work/shared/spec/groupvit.md", True),
        ('the backward (spec "Backward"), recomputing z', True),
        ("inspect/ the values; the spec's shapes; a specification", False),
    ],
)
def test_private_spec_pattern(line, cites):
    assert bool(_PRIVATE_SPEC.search(line)) is cites


def test_headings_are_read_from_markdown():
    page = "# Title\n\n## Math\ntext ## not a heading\n### Noise: `what` is guaranteed\n"
    assert headings(page) == {"title", "math", "noise: what is guaranteed"}


# ---- the repository ---------------------------------------------------------------------------


def test_the_scan_sees_the_code_and_the_docs():
    scanned = set(TEXTS)
    assert {"groupvit_fast/ops/assign_attention.py", "docs/assign_op.md", "groupvit_fast/bench/cases/op.py"} <= scanned
    assert any(name.startswith("csrc/") for name in scanned)
    assert sum(len(cited_pages(t)) for t in TEXTS.values()) >= 40  # the code cites its docs throughout


def test_every_cited_docs_page_exists():
    missing = sorted(
        {
            f"{name}: docs/{page}"
            for name, text in TEXTS.items()
            for page in cited_pages(text)
            if not (REPO / "docs" / page).is_file()
        }
    )
    assert not missing, "cited docs pages that do not exist:\n" + "\n".join(missing)


def test_every_cited_section_is_a_heading_of_its_page():
    bad = []
    for name, text in TEXTS.items():
        for page, section in cited_sections(text):
            target = REPO / "docs" / page
            if target.is_file() and section.lower() not in headings(target.read_text(encoding="utf-8")):
                bad.append(f'{name}: docs/{page}, "{section}"')
    assert not bad, "cited sections with no such heading:\n" + "\n".join(sorted(set(bad)))


def test_nothing_cites_the_private_spec_folder():
    hits = [
        f"{name}:{text.count(chr(10), 0, m.start()) + 1}: {m.group(0)}"
        for name, text in TEXTS.items()
        for m in _PRIVATE_SPEC.finditer(text)
    ]
    assert not hits, "cite docs/<page>.md instead of:\n" + "\n".join(hits)
