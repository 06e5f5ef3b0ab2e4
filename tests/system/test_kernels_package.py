"""The Triton kernels are the package ``groupvit_fast.kernels`` and never a top-level ``kernels``.

``kernels`` is also the name of a Hugging Face package that transformers depends on and imports; the
repository's ``kernels/`` folder must not hide it, from any working directory, whether that package is
installed or not (kernels/README.md). Every check runs in a fresh interpreter from the repository
root, where Python puts the root first on ``sys.path``.
"""

from __future__ import annotations

import importlib.metadata
import os
import subprocess
import sys
from pathlib import Path

import pytest

from paths import REPO_ROOT


def _hf_kernels_installed() -> bool:
    """Whether Hugging Face's ``kernels`` distribution is installed (its metadata, not what imports)."""
    try:
        importlib.metadata.distribution("kernels")
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


HF_KERNELS_INSTALLED = _hf_kernels_installed()

# transformers' GroupViT builds (the import chain that failed when kernels/ was a package), and what
# `kernels` and `groupvit_fast.kernels` resolve to is printed for the assertions.
PROBE = """
import importlib.util, transformers, torch
from transformers.utils import is_kernels_available
m = transformers.GroupViTVisionModel(transformers.GroupViTVisionConfig(depths=[1, 1, 1])).eval()
print("pooler", tuple(m(pixel_values=torch.zeros(1, 3, 224, 224)).pooler_output.shape))
spec = importlib.util.find_spec("kernels")
print("kernels", None if spec is None else spec.origin)
print("hf-kernels-available", is_kernels_available())
import groupvit_fast.kernels.assign_attention as k
print("groupvit_fast.kernels", k.__name__)
"""


def _site_packages_without_hf_kernels(target: Path) -> Path:
    """A site folder of links to everything this interpreter's site folders hold, less Hugging Face's
    ``kernels`` and its metadata: an environment where that package is not installed."""
    target.mkdir()
    roots = [Path(p) for p in sys.path if p.endswith("site-packages") and Path(p).is_dir()]
    for root in roots:
        for entry in root.iterdir():
            name = entry.name
            if name == "kernels" or (name.startswith("kernels-") and name.endswith(".dist-info")):
                continue
            if name.endswith(".pth") and all(
                Path(line.strip()).is_dir() or not line.strip() for line in entry.read_text().splitlines()
            ):
                continue  # plain path lines: those folders are linked here already
            if not (target / name).exists():
                (target / name).symlink_to(entry)
    return target


def _probe(cwd: Path, site_dir: Path | None = None) -> dict[str, str]:
    if site_dir is None:
        cmd = [sys.executable, "-c", PROBE]
    else:  # no automatic site folders: only the linked one (its .pth files, the editable finder, run)
        cmd = [sys.executable, "-S", "-c", f"import site; site.addsitedir({str(site_dir)!r})\n" + PROBE]
    result = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return dict(line.split(" ", 1) for line in result.stdout.splitlines() if " " in line)


@pytest.mark.skipif(not HF_KERNELS_INSTALLED, reason="Hugging Face's kernels package is not installed here")
def test_from_the_root_kernels_is_hugging_faces_package_when_installed():
    out = _probe(REPO_ROOT)
    assert out["pooler"] == "(1, 384)"
    # an environment inside the checkout (CI's .venv) is fine; the repository's own folder is not
    assert not out["kernels"].startswith(str(REPO_ROOT / "kernels")), out["kernels"]
    assert "site-packages" in out["kernels"], out["kernels"]
    assert out["groupvit_fast.kernels"] == "groupvit_fast.kernels.assign_attention"


def test_from_the_root_without_hugging_faces_kernels_transformers_sees_none(tmp_path):
    out = _probe(REPO_ROOT, _site_packages_without_hf_kernels(tmp_path / "site"))
    assert out["pooler"] == "(1, 384)"
    assert out["kernels"] == "None"  # our folder is a bare namespace portion: no origin
    assert out["hf-kernels-available"] == "False"
    assert out["groupvit_fast.kernels"] == "groupvit_fast.kernels.assign_attention"


def test_the_kernels_folder_is_no_regular_package():
    assert not (REPO_ROOT / "kernels" / "__init__.py").exists()
    link = REPO_ROOT / "groupvit_fast" / "kernels"
    assert link.is_symlink() and link.resolve() == (REPO_ROOT / "kernels").resolve()


def test_a_built_package_holds_the_kernels_as_files_and_no_top_level_kernels(tmp_path):
    """What a wheel ships (setuptools' build_py, pure-Python part): groupvit_fast/kernels/*.py as real
    files; imported from an unrelated folder with only that copy in front of the path."""
    lib = tmp_path / "lib"
    env = {**os.environ, "GROUPVIT_FAST_SKIP_EXTENSION": "1"}
    subprocess.run(
        [sys.executable, "setup.py", "-q", "build_py", "--build-lib", str(lib)],
        cwd=REPO_ROOT,
        env=env,
        check=True,
        capture_output=True,
        timeout=300,
    )
    shipped = lib / "groupvit_fast" / "kernels"
    assert shipped.is_dir() and not shipped.is_symlink()
    assert sorted(p.name for p in shipped.glob("*.py")) == sorted(p.name for p in (REPO_ROOT / "kernels").glob("*.py"))
    assert not (lib / "kernels").exists()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    code = "import groupvit_fast.kernels.assign_attention as k; print(k.__file__)"
    out = subprocess.run(
        [sys.executable, "-c", code],
        cwd=elsewhere,
        env={**os.environ, "PYTHONPATH": str(lib)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == str(shipped / "assign_attention.py")
