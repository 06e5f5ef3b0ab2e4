"""``python -m groupvit_fast ...`` is the ``groupvit-fast`` command."""

from .cli import main

raise SystemExit(main())
