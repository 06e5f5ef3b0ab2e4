"""``python -m groupvit_fast.train ...`` and ``torchrun --nproc-per-node N -m groupvit_fast.train ...``:
the ``groupvit-fast train`` command."""

import sys

from ..cli import main

raise SystemExit(main(["train", *sys.argv[1:]]))
