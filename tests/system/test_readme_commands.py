"""CI runs exactly what the README tells a user to run."""

import re

from paths import REPO_ROOT

ROOT = REPO_ROOT


def _bash_blocks(text: str) -> list[str]:
    return [block.strip() for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S)]


def test_ci_runs_the_readme_setup_and_test_commands():
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    setup_command, test_command = _bash_blocks(readme)[:2]
    assert setup_command.startswith("python -m pip install") and "--no-build-isolation -e ." in setup_command
    assert test_command == "pytest -q"
    ci_lines = [line.strip() for line in ci.splitlines()]
    assert setup_command in ci_lines
    assert test_command in ci_lines


def test_transformers_groupvit_works_when_run_from_the_repository_root():
    """kernels/ at the root must not break transformers' probe for a package named `kernels`."""
    import subprocess
    import sys

    code = ("import transformers, torch; from transformers.utils import is_kernels_available; "
            "assert not is_kernels_available(); "
            "m = transformers.GroupViTVisionModel(transformers.GroupViTVisionConfig(depths=[1, 1, 1])).eval(); "
            "print(m(pixel_values=torch.zeros(1, 3, 224, 224)).pooler_output.shape)")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "torch.Size([1, 384])" in result.stdout
