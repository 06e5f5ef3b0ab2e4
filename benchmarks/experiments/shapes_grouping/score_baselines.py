"""The baselines ``scene_emergence`` does not give, for the checkpoints of ``probe.py``:
``python score_baselines.py DATA_EVAL CKPT [CKPT ...]``.

Per checkpoint, and for the same architecture untrained (seed 0), at the recipe's test time: the
saturation "no grouping" mIoU and the groups in use on 3-object scenes (``baselines.py``). One JSON
line per checkpoint on stdout.
"""

from __future__ import annotations

import json
import sys

import torch

torch.set_num_threads(1)

from baselines import groups_on_three_object_scenes, saturation_no_grouping  # noqa: E402

from groupvit_fast.checkpoint import load_checkpoint  # noqa: E402
from groupvit_fast.models.registry import build_model  # noqa: E402


def main() -> None:
    data = sys.argv[1]
    for path in sys.argv[2:]:
        ckpt = load_checkpoint(path)
        tt = {k: ckpt.meta["test_time"][k] for k in ("short_side", "crop_size", "stride")}
        tt["bg_thresh"] = 0.5
        torch.manual_seed(0)
        row = {"checkpoint": path, "test_time": tt}
        for who, model in (("trained", ckpt.model), ("untrained", build_model(ckpt.config))):
            row[who] = {
                "saturation_no_grouping_mIoU": saturation_no_grouping(model, data, **tt),
                "groups_on_3_object_scenes": groups_on_three_object_scenes(model, data, tt["crop_size"]),
            }
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
