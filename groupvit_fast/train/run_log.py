"""What a run writes besides checkpoints: ``log.txt``, ``metrics.jsonl``, TensorBoard events, a progress bar.

Only rank 0 writes. ``metrics.jsonl`` has one JSON object per logged step (``step``, ``epoch``,
the losses, ``lr``, ``grad_norm``, ``images_per_s``, ``peak_memory_mb``, ``skipped``) and one per
evaluation (``eval``); TensorBoard events go to ``<output>/tensorboard`` when the ``tensorboard``
package is installed. The progress bar (tqdm, on stderr) shows the step, loss, lr, images/s and ETA.
"""

from __future__ import annotations

import json
import logging
import os
import sys

__all__ = ["RunLog"]


class RunLog:
    """Rank 0's log files and progress bar; on other ranks every method does nothing."""

    def __init__(self, folder: str, is_main: bool, *, total_steps: int, start_step: int = 0, quiet: bool = False):
        self.is_main = is_main
        self.quiet = quiet
        self.folder = folder
        self._bar = None
        self._tb = None
        self._metrics = None
        self.logger = logging.getLogger(f"groupvit_fast.train.{id(self)}")
        self.logger.propagate = False
        self.logger.setLevel(logging.INFO)
        if not is_main:
            return
        os.makedirs(folder, exist_ok=True)
        handler = logging.FileHandler(os.path.join(folder, "log.txt"), encoding="utf-8")
        handler.setFormatter(logging.Formatter("[%(asctime)s] %(message)s", "%Y-%m-%d %H:%M:%S"))
        self.logger.addHandler(handler)
        self._metrics = open(os.path.join(folder, "metrics.jsonl"), "a", encoding="utf-8")
        try:
            from torch.utils.tensorboard import SummaryWriter

            self._tb = SummaryWriter(os.path.join(folder, "tensorboard"))
        except ImportError:  # tensorboard not installed: JSONL only
            self._tb = None
        if not quiet:
            from tqdm import tqdm

            self._bar = tqdm(
                total=total_steps, initial=start_step, desc="train", unit="step", file=sys.stderr, dynamic_ncols=True
            )

    def info(self, message: str) -> None:
        """A line in log.txt and on the console (above the progress bar)."""
        if not self.is_main:
            return
        self.logger.info(message)
        if self._bar is not None:
            self._bar.write(message, file=sys.stderr)
        elif not self.quiet:
            print(message, file=sys.stderr)

    def metrics(self, record: dict) -> None:
        if not self.is_main:
            return
        self._metrics.write(json.dumps(record) + "\n")
        self._metrics.flush()
        if self._tb is not None and "step" in record:
            for key, value in record.items():
                if key != "step" and isinstance(value, (int, float)) and not isinstance(value, bool):
                    self._tb.add_scalar(key if "/" in key else f"train/{key}", value, record["step"])

    def advance(self, steps: int, **fields: float) -> None:
        if self._bar is not None:
            self._bar.update(steps)
            if fields:
                self._bar.set_postfix(fields, refresh=False)

    def close(self) -> None:
        if not self.is_main:
            return
        if self._bar is not None:
            self._bar.close()
        if self._tb is not None:
            self._tb.close()
        if self._metrics is not None:
            self._metrics.close()
        for handler in list(self.logger.handlers):
            handler.close()
            self.logger.removeHandler(handler)
