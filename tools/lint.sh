#!/usr/bin/env bash
# The lint checks CI runs (.ci/run calls this from the repository root; .pre-commit-config.yaml runs the
# same before a commit): ruff's rules (ruff.toml), ruff's formatting, and mypy over the op and model
# layers (its settings: [tool.mypy] in pyproject.toml). Each runs even when an earlier one failed; the
# exit status is 1 when any failed. CONTRIBUTING.md, "Lint, format, types".
set -u
cd "$(dirname "$0")/.."
status=0
run() {
    echo "+ $*"
    "$@" || status=1
}
run ruff check .
run ruff format --check .
run mypy
exit $status
