"""CI runs exactly what the README tells a user to run."""

import re

from paths import REPO_ROOT

ROOT = REPO_ROOT


def _bash_blocks(text: str) -> list[str]:
    return [block.strip() for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S)]


def test_ci_runs_the_readme_setup_and_test_commands():
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    setup_block, test_command = _bash_blocks(readme)[:2]
    setup_lines = setup_block.splitlines()
    assert all(line.startswith("python -m pip install") for line in setup_lines)
    assert "torch==" in setup_lines[0] and '--no-build-isolation -e ".[test]"' in setup_lines[-1]
    assert test_command == "pytest -q"
    ci_lines = [line.strip() for line in ci.splitlines()]
    for line in setup_lines:
        assert line in ci_lines, f"CI does not run the README's set-up line {line!r}"
    assert test_command in ci_lines
    # ...and through the lock file the README names
    assert 'export PIP_CONSTRAINT="$PWD/.ci/constraints.txt"' in ci_lines
    assert ci_lines.index('export PIP_CONSTRAINT="$PWD/.ci/constraints.txt"') < ci_lines.index(setup_lines[0])
