#!/usr/bin/env bash
# Refresh CI's lock file, .ci/constraints.txt: the README's set-up in a fresh virtual environment with
# nothing pinned, then every installed distribution's exact version (pip, setuptools and wheel
# included). CI installs through the lock (PIP_CONSTRAINT, .ci/run), so a new upstream release
# reaches CI only when this script is run and its diff committed, with the suite green on it.
#
#   tools/refresh_lock.sh            # writes .ci/constraints.txt; review `git diff`, run .ci/run, commit
#
# Which versions the lock holds: `grep -Ei '^(torch|triton|transformers|kernels)==' .ci/constraints.txt`,
# or tests/system/test_lock_file.py (it checks CI's environment against the file).
set -euo pipefail
cd "$(dirname "$0")/.."
venv=$(mktemp -d)/venv
trap 'rm -rf "$(dirname "$venv")"' EXIT
python3 -m venv "$venv"
# shellcheck disable=SC1091
source "$venv/bin/activate"
unset PIP_CONSTRAINT
python -m pip install -q --upgrade pip
# The README's set-up, its lines as they are (the first ```bash block).
python3 - README.md > "$venv/setup.sh" <<'PY'
import re, sys
print(re.findall(r"```bash\n(.*?)```", open(sys.argv[1]).read(), flags=re.S)[0])
PY
GROUPVIT_FAST_SKIP_EXTENSION=1 bash -euo pipefail "$venv/setup.sh"
# ...and the linters CI runs (.ci/run: the dev extra beyond test), so that they are locked too
python -m pip install $(python -m groupvit_fast._extras dev --beyond test)
{
  echo "# CI's lock: exact versions of everything the README's set-up installs (tools/refresh_lock.sh,"
  echo "# $(date -u +%Y-%m-%d), $(python -V)). Used as PIP_CONSTRAINT by .ci/run; reproduce CI with"
  echo "# PIP_CONSTRAINT=\$PWD/.ci/constraints.txt before the README's set-up."
  python -m pip freeze --all --exclude-editable | grep -vi '^groupvit[-_]fast' | sort -f
} > .ci/constraints.txt
echo "wrote .ci/constraints.txt ($(grep -vc '^#' .ci/constraints.txt) pins)"
