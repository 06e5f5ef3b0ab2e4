"""docs/export.md's deployment example runs as written (docs/export.md, "Deploying without torch"), on the
small export of the tests."""

from __future__ import annotations

import os
import re

import numpy as np
from PIL import Image

from paths import REPO_ROOT


def _example_blocks() -> list[str]:
    text = (REPO_ROOT / "docs" / "export.md").read_text()
    section = text[text.index("### Deploying without torch") : text.index("## torch.export")]
    return re.findall(r"```python\n(.*?)```", section, flags=re.S)


def test_the_deployment_example_runs(small, tmp_path, monkeypatch, capsys):
    _, folder = small
    monkeypatch.chdir(tmp_path)
    os.symlink(folder, tmp_path / "groupvit-onnx")
    Image.fromarray(np.random.default_rng(3).integers(0, 256, (70, 110, 3), dtype=np.uint8)).save("cat.png")
    blocks = _example_blocks()
    assert len(blocks) == 2
    namespace: dict = {}
    for block in blocks:
        exec(compile(block, "docs/export.md", "exec"), namespace)  # noqa: S102 (the documented example)
    assert namespace["labels"].shape == (70, 110)
    assert namespace["scores"].shape == (1, 4, 448, 448) and namespace["crop_labels"].shape == (1, 448, 448)
    out = capsys.readouterr().out
    assert "(70, 110) export.json" in out  # cat and dog are in the stored vocabulary
