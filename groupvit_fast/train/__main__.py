"""``python -m groupvit_fast.train ...`` and ``torchrun --nproc-per-node N -m groupvit_fast.train ...``."""

from .cli import main

raise SystemExit(main())
