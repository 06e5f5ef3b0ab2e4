"""One exploratory run of the table: ``python launch.py NAME TAU DATA [KEY=VALUE ...]``.

``groupvit-fast train --config scenes`` on the scenes under DATA (``prepare-data scenes --out DATA
--train-length 4096``) with the table's schedule (4,096 scenes, 6 epochs, stopped by the options'
``train.max_steps``), output ``runs/NAME``, one thread; TAU sets the grouping blocks' Gumbel
temperature (not a config key: NVlabs' GroupViT fixes it at 1; only row v1 uses another value).
"""

import sys
import time

import torch

from groupvit_fast.train import load_config
from groupvit_fast.train.loop import Trainer

torch.set_num_threads(1)
name, tau, data, *opts = sys.argv[1:]
base = [f"data.dataset.meta.scenes.path={data}", "data.dataset.meta.scenes.length=4096", "train.epochs=6"]
trainer = Trainer(load_config("scenes", base + opts, output=f"runs/{name}"), quiet=True)
for module in trainer.model.modules():
    if hasattr(module, "gumbel_tau"):
        module.gumbel_tau = float(tau)
start = time.time()
trainer.run()
print(f"wall {time.time() - start:.0f} s", flush=True)
