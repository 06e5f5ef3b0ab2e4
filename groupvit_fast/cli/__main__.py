"""``python -m groupvit_fast.cli ...`` (what ``torchrun -m`` needs) is the ``groupvit-fast`` command."""

from . import main

raise SystemExit(main())
