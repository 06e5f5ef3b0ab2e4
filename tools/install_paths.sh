#!/usr/bin/env bash
# Every way a user installs groupvit_fast works: the wheel with the core alone and with each extra alone,
# each in a fresh virtual environment through the lock file, running that extra's own entry point
# (tools/install_path_checks.py). CI runs it (.ci/run, "install paths"); by hand:
#
#   bash tools/install_paths.sh [EXTRA ...]        # default: core text hf eval train bench export
#
# torch is installed once, into an environment of its own that each path's environment sees through a
# .pth file (torch's 5 GB are not copied seven times); pip in each path sees it as installed, as it would
# be on a user's machine, and installs everything else the path needs from the lock file.
set -uo pipefail
cd "$(dirname "$0")/.."
repo=$PWD
extras=("$@")
[ ${#extras[@]} -gt 0 ] || extras=(core text hf eval train bench export)
work=${INSTALL_PATHS_DIR:-$(mktemp -d)}
export PIP_CONSTRAINT="$repo/.ci/constraints.txt" PIP_DISABLE_PIP_VERSION_CHECK=1
python=${PYTHON:-python3}
torch_version=$(grep -E '^torch==' .ci/constraints.txt | cut -d= -f3)

echo "== install paths: the wheel (once), then ${extras[*]} (work folder $work)"
python3 -m venv "$work/torch" && "$work/torch/bin/python" -m pip install -q --upgrade pip \
  && "$work/torch/bin/python" -m pip install -q "setuptools>=77" ninja "torch==$torch_version" \
  || { echo "install paths: FAILED to install torch==$torch_version"; exit 1; }
torch_site=$("$work/torch/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
# the wheel a user would get: built once against that torch (the CPU kernels; the CUDA ones need nvcc and
# are compiled by the main set-up)
GROUPVIT_FAST_BUILD_CUDA=0 "$work/torch/bin/python" -m pip wheel -q --no-build-isolation --no-deps . -w "$work/wheel" \
  || { echo "install paths: FAILED to build the wheel"; exit 1; }
wheel=$(ls "$work"/wheel/groupvit_fast-*.whl)

failed=()
for extra in "${extras[@]}"; do
  env="$work/env-$extra"
  start=$SECONDS
  "$python" -m venv "$env"
  site=$("$env/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
  echo "$torch_site" > "$site/_torch_from_shared_env.pth"
  spec=$wheel
  [ "$extra" = core ] || spec="groupvit_fast[$extra] @ file://$wheel"
  if ! "$env/bin/python" -m pip install -q "$spec" >"$work/$extra.install.log" 2>&1; then
    echo "install path '$extra': FAILED to install (pip install 'groupvit_fast[$extra]'):"; tail -20 "$work/$extra.install.log"
    failed+=("$extra"); continue
  fi
  # from outside the checkout, so only the installed wheel can be imported
  if (cd "$work" && PATH="$env/bin:$PATH" "$env/bin/python" "$repo/tools/install_path_checks.py" "$extra" "$work/run-$extra") \
      >"$work/$extra.log" 2>&1; then
    echo "install path '$extra': ok ($((SECONDS - start)) s)"
  else
    echo "install path '$extra': FAILED (pip install 'groupvit_fast[$extra]'):"; tail -30 "$work/$extra.log"
    failed+=("$extra")
  fi
done
if [ ${#failed[@]} -gt 0 ]; then
  echo "install paths: FAILED for: ${failed[*]}"
  exit 1
fi
echo "install paths: all ${#extras[@]} ok"
