"""``groupvit_fast`` and ``groupvit_fast.segmentation`` load their public names on first use (PEP 562), so
the torch-free parts (the onnxruntime runner, docs/export.md "The runner") import no torch; every public
name still resolves, to the object of the module that defines it."""

from __future__ import annotations

import subprocess
import sys

import pytest

import groupvit_fast
import groupvit_fast.segmentation as segmentation


def _imports_torch(code: str) -> bool:
    probe = f"import sys\n{code}\nprint('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=120)
    return out.stdout.strip().splitlines()[-1] == "True"


@pytest.mark.parametrize(
    "code",
    [
        "import groupvit_fast",
        "import groupvit_fast.segmentation",
        "from groupvit_fast.segmentation import geometry, classes, io",
        "import groupvit_fast.export, groupvit_fast.export.runner, groupvit_fast.export.cli",
    ],
)
def test_torch_free_modules_import_no_torch(code):
    assert not _imports_torch(code)


def test_a_public_name_loads_its_module():
    assert _imports_torch("import groupvit_fast; groupvit_fast.GroupViT")


@pytest.mark.parametrize("package", [groupvit_fast, segmentation], ids=["groupvit_fast", "segmentation"])
def test_every_public_name_resolves(package):
    for name in package.__all__:
        assert getattr(package, name) is not None, name
        assert name in dir(package)
    with pytest.raises(AttributeError, match="no attribute 'nonexistent_name'"):
        package.nonexistent_name  # noqa: B018


def test_names_are_the_defining_modules_objects():
    from groupvit_fast.models import GroupViT
    from groupvit_fast.segmentation.geometry import sliding_windows
    from groupvit_fast.segmentation.inference import GroupViTSegmenter

    assert groupvit_fast.GroupViT is GroupViT
    assert segmentation.GroupViTSegmenter is GroupViTSegmenter
    assert segmentation.sliding_windows is sliding_windows
    assert segmentation.inference.sliding_windows is sliding_windows  # the submodule as an attribute
