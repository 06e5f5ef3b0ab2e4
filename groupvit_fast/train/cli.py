"""What ``groupvit-fast train`` / ``python -m groupvit_fast.train`` runs (the parser is in
``groupvit_fast/cli/train.py``). Under ``torchrun`` every process runs the same command. Config and
data errors end the command with one line and exit status 1.
"""

from __future__ import annotations

import argparse
import sys

__all__ = ["run_train"]


def run_train(args: argparse.Namespace) -> int:
    """Load the config, train, leave the process group; ``ValueError``/``TypeError``/``RuntimeError``
    before training become one line."""
    import os

    from .config import load_config
    from .distributed import cleanup
    from .loop import Trainer

    world = int(os.environ.get("WORLD_SIZE", "1"))
    try:
        try:
            cfg = load_config(args.config, args.opts, output=args.output, tag=args.tag, world_size=world)
            trainer = Trainer(cfg, resume=args.resume, init=args.init, device=args.device, quiet=args.quiet)
        except (ValueError, TypeError, RuntimeError) as err:
            print(f"groupvit-fast train: error: {err}", file=sys.stderr)
            return 1
        trainer.run()
        return 0
    finally:
        # a gloo/NCCL group still alive at interpreter exit can abort a rank ("terminate called
        # without an active exception") and turn a finished run into a failed torchrun
        cleanup()
