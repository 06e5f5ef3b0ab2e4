"""What each install path must be able to do: ``python tools/install_path_checks.py EXTRA WORKDIR``, run by
``tools/install_paths.sh`` inside a virtual environment that holds the wheel with that one extra (``core``:
no extra). Each check runs the extra's own entry point the way a user would, on data it writes itself;
a failure raises with the command that failed.
"""

from __future__ import annotations

import os
import subprocess
import sys


def tiny_config() -> dict:
    """NVlabs' GroupViT-S config shrunk to a CPU check of seconds; the text side keeps CLIP's tokenizer
    (vocabulary, context) so ``segment`` can prompt it with words."""
    from groupvit_fast.models.registry import released_config

    config = released_config(multi_label=0)
    config["img_encoder"].update(
        img_size=64, patch_size=16, embed_dim=64, num_heads=[2, 2, 2], depths=[1, 1, 1],
        num_group_tokens=[8, 4, 0], num_output_groups=[8, 4], drop_path_rate=0.0,
    )  # fmt: skip
    config["text_encoder"].update(width=64, layers=1)
    config.update(output_dim=32, proj_inner_dim=128)
    return config


def run(*argv: str) -> str:
    """Run a command; raise with its output when it fails."""
    proc = subprocess.run(argv, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"`{' '.join(argv)}` exited {proc.returncode}:\n{proc.stdout[-1500:]}{proc.stderr[-3000:]}")
    return proc.stdout


def tiny_checkpoint(workdir: str) -> str:
    import torch

    from groupvit_fast import build_model
    from groupvit_fast.checkpoint import save_checkpoint

    torch.manual_seed(0)
    path = os.path.join(workdir, "tiny.pth")
    config = tiny_config()
    seg = {"dataset": "scenes", "short_side": 64, "crop_size": 64, "stride": 32, "bg_thresh": 0.5}
    save_checkpoint(build_model(config), path, config={"model": config, "evaluate": {"seg": seg}})
    return path


def one_image(workdir: str) -> str:
    import numpy as np
    from PIL import Image

    path = os.path.join(workdir, "image.png")
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (48, 80, 3), dtype=np.uint8)).save(path)
    return path


def check_front_door(workdir: str) -> None:
    """What every install path must do: the command line and ``info``."""
    run("groupvit-fast", "--help")
    run(sys.executable, "-m", "groupvit_fast.info")


def check_core(workdir: str) -> None:
    for argv in (["segment"], ["eval", "seg"], ["train"], ["prepare-data", "scenes"], ["convert"]):
        run("groupvit-fast", *argv, "--help")
    # the drop-in model and the op run with the core alone
    run(sys.executable, "-c", "import torch, groupvit_fast as g; m = g.GroupViT(); m(torch.randn(1, 3, 224, 224))")


def check_text(workdir: str) -> None:
    out = os.path.join(workdir, "segment_out")
    run("groupvit-fast", "segment", one_image(workdir), "--classes", "cat", "dog", "--checkpoint",
        tiny_checkpoint(workdir), "--out", out, "--device", "cpu", "--quiet")  # fmt: skip
    assert os.path.isfile(os.path.join(out, "summary.json")) and os.path.isfile(os.path.join(out, "image_label.png"))


def check_hf(workdir: str) -> None:
    code = """
import torch, transformers, groupvit_fast
cfg = transformers.GroupViTConfig(
    text_config={"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 1, "num_attention_heads": 1,
                 "max_position_embeddings": 16, "vocab_size": 100},
    vision_config={"hidden_size": 64, "intermediate_size": 128, "depths": [1, 1, 1], "num_hidden_layers": 3,
                   "num_attention_heads": 2, "num_group_tokens": [8, 4, 0], "num_output_groups": [8, 4, 4],
                   "image_size": 64, "patch_size": 16},
    projection_dim=32, projection_intermediate_dim=64)
groupvit_fast.apply_groupvit_fast_to_classes("transformers")
model = transformers.GroupViTModel(cfg).eval()
out = model(input_ids=torch.randint(3, 90, (2, 16)), pixel_values=torch.randn(2, 3, 64, 64), output_segmentation=True)
assert out.segmentation_logits.shape[0] == 2
assert sum(groupvit_fast.ops.backend_usage().values()) > 0
"""
    run(sys.executable, "-c", code)


def check_eval(workdir: str) -> None:
    run("groupvit-fast", "eval", "seg", "--help")
    data = os.path.join(workdir, "scenes")
    run(
        sys.executable,
        "-c",
        f"from groupvit_fast.datasets.scenes import write_scene_eval; write_scene_eval({data!r}, 2)",
    )
    out = os.path.join(workdir, "eval_out")
    run("groupvit-fast", "eval", "seg", "--dataset", "scenes", "--data-root", data, "--checkpoint",
        tiny_checkpoint(workdir), "--out", out, "--device", "cpu", "--workers", "0", "--quiet")  # fmt: skip
    assert os.path.isfile(os.path.join(out, "scenes.json")), os.listdir(out)


def check_train(workdir: str) -> None:
    out = os.path.join(workdir, "run")
    opts = ["train.max_steps=1", "data.dataset.meta.synthetic.length=64", "data.num_workers=0"]
    opts += ["data.dataset.meta.synthetic.prefix=synthetic-{000000..000001}.tar"]
    run("groupvit-fast", "train", "--config", "tiny", "--output", out, "--device", "cpu", "--quiet", "--opts", *opts)
    assert os.path.isfile(os.path.join(out, "checkpoint.pth")), os.listdir(out)


def check_bench(workdir: str) -> None:
    run("groupvit-fast", "bench", "--quick", "--only", "op", "--out", os.path.join(workdir, "bench"))


def check_export(workdir: str) -> None:
    onnx_dir, out = os.path.join(workdir, "onnx"), os.path.join(workdir, "onnx_segment_out")
    run("groupvit-fast", "export", "onnx", "--checkpoint", tiny_checkpoint(workdir), "--out", onnx_dir,
        "--classes", "cat", "dog")  # fmt: skip
    run("groupvit-fast", "segment", one_image(workdir), "--onnx", onnx_dir, "--classes", "cat", "dog", "--out", out,
        "--quiet")  # fmt: skip
    assert os.path.isfile(os.path.join(out, "summary.json")) and os.path.isfile(os.path.join(out, "image_label.png"))


CHECKS = {
    "core": check_core,
    "text": check_text,
    "hf": check_hf,
    "eval": check_eval,
    "train": check_train,
    "bench": check_bench,
    "export": check_export,
}


def main(argv: list[str]) -> int:
    if len(argv) != 2 or argv[0] not in CHECKS:
        print(f"usage: python tools/install_path_checks.py {{{','.join(CHECKS)}}} WORKDIR", file=sys.stderr)
        return 2
    extra, workdir = argv
    os.makedirs(workdir, exist_ok=True)
    check_front_door(workdir)
    CHECKS[extra](workdir)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
