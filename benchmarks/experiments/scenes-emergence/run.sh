#!/bin/bash
# One run of the table: run.sh NAME DATA [KEY=VALUE ...]
# The `scenes` recipe as shipped (8 epochs of 8,192 scenes, batch 64, 1,024 steps) on the scenes
# under DATA (`groupvit-fast prepare-data scenes --out DATA --train-length 8192`), one thread, with
# the row's options; output runs/NAME. Two of these ran side by side on the two cores.
set -euo pipefail
name=$1; data=$2; shift 2
OMP_NUM_THREADS=1 groupvit-fast train --config scenes --output "runs/$name" --quiet --opts \
    "data.dataset.meta.scenes.path=$data" data.dataset.meta.scenes.length=8192 "$@"
