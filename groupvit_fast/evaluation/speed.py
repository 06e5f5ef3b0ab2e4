"""Images/s of ``eval seg`` at VOC settings (ours vs the step-by-step reference) and of ``eval cls``.

    python -m groupvit_fast.evaluation.speed [--model groupvit-s|tiny] [--images 4] [--device cpu] [--out FILE.md]

Segmentation: VOC-sized images (375 x 500, the most common VOC size) through the whole protocol
(resize to short side 448, 448/224 windows, 20 classes + thresholded background), timed from the
decoded uint8 image to the label map: ``GroupViTSegmenter`` (one encoder pass per crop, crops of
all images batched) against ``groupvit_fast.reference.segmentation`` (one crop at a time, the
encoder twice per crop, as NVlabs). Classification: 224 x 224 batches through the image encoder
and the 1000-class classifier. Decoding and resizing in DataLoader workers overlap the model in
``eval`` and are left out of both. Random weights: speed does not depend on them.
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import subprocess
import time

import torch

__all__ = ["measure_eval_speed", "TINY_CONFIG"]

#: a GroupViT small enough for the smoke benchmark (64 channels, one block per stage, 8 -> 4 groups)
TINY_CONFIG = {
    "type": "MultiLabelContrastive",
    "img_encoder": {"type": "GroupViT", "img_size": 64, "patch_size": 16, "embed_dim": 64, "num_heads": [2, 2, 2],
                    "depths": [1, 1, 1], "num_group_tokens": [8, 4, 0], "num_output_groups": [8, 4],
                    "drop_path_rate": 0.0},
    "text_encoder": {"type": "TextTransformer", "context_length": 77, "width": 64, "layers": 1,
                     "vocab_size": 49408},
    "output_dim": 32, "proj_num_layers": 2, "proj_inner_dim": 128, "multi_label": 0,
}


def _model(name: str, device: str):
    from ..models.registry import build_model, released_config

    torch.manual_seed(0)
    config = TINY_CONFIG if name == "tiny" else released_config()
    return build_model(config).to(device).eval()


def _timed(fn, device: str) -> float:
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    start = time.perf_counter()
    fn()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return time.perf_counter() - start


def seg_runners(model, images: list[torch.Tensor], crop_batch_size: int = 8, autocast_dtype=None):
    """``(ours, reference)``: callables returning one label map per image (VOC classes and threshold)."""
    from ..reference.segmentation import reference_segment_scores
    from ..segmentation import GroupViTSegmenter

    segmenter = GroupViTSegmenter(model, "voc", crop_batch_size=crop_batch_size, autocast_dtype=autocast_dtype)
    text = segmenter.text_embedding()  # computed once, outside the timing, for both

    def ours():
        return segmenter.predict(images)

    def reference():
        return [reference_segment_scores(model, im, text, with_bg=True, bg_thresh=0.95).argmax(0) for im in images]

    return ours, reference


def cls_runner(model, batch: int, num_classes: int = 1000, device: str = "cpu"):
    """A callable classifying one ``[batch, 3, 224, 224]`` batch (top-5 of 1000 classes)."""
    import torch.nn.functional as F

    x = torch.randn(batch, 3, 224, 224, device=device)
    with torch.no_grad():
        dim = model.encode_image(x[:1]).shape[-1]
    weight = F.normalize(torch.randn(num_classes, dim, device=device), dim=-1)

    @torch.no_grad()
    def run():
        return (F.normalize(model.encode_image(x), dim=-1) @ weight.t()).topk(5, dim=-1).indices

    return run


@torch.no_grad()
def measure_eval_speed(model_name: str = "groupvit-s", *, device: str = "cpu", num_images: int = 4,
                       image_hw: tuple[int, int] = (375, 500), crop_batch_size: int = 8, cls_batch: int = 32,
                       cls_batches: int = 2, reference: bool = True) -> dict:
    """Images/s of both evaluations (one warm-up run each, then one timed run)."""
    model = _model(model_name, device)
    g = torch.Generator().manual_seed(0)
    images = [torch.randint(0, 256, (3, *image_hw), generator=g, dtype=torch.uint8) for _ in range(num_images)]
    ours, ref = seg_runners(model, images, crop_batch_size)
    ours()  # warm-up (threads, allocator, kernel caches)
    result = {"model": model_name, "device": device, "num_images": num_images, "image_hw": list(image_hw),
              "crop_batch_size": crop_batch_size}
    t = _timed(ours, device)
    result["seg_ours_images_per_s"] = num_images / t
    if reference:
        # the reference is several times slower: its rate is measured on the first image alone
        _, ref = seg_runners(model, images[:1], crop_batch_size)
        ref()
        t_ref = _timed(ref, device)
        result["seg_reference_images_per_s"] = 1 / t_ref
        result["seg_speedup"] = result["seg_ours_images_per_s"] / result["seg_reference_images_per_s"]
    run = cls_runner(model, cls_batch, device=device)
    run()
    t_cls = sum(_timed(run, device) for _ in range(cls_batches))
    result["cls_images_per_s"] = cls_batch * cls_batches / t_cls
    return result


def _report(result: dict) -> str:
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                                check=False).stdout.strip() or "unknown"
    except OSError:
        commit = "unknown"
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    except OSError:
        pass
    lines = [
        f"# eval throughput ({result['device']}, {result['model']}, random weights)", "",
        f"Date {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC, commit {commit}, torch "
        f"{torch.__version__}, {torch.get_num_threads()} threads, CPU {cpu}.", "",
        f"`python -m groupvit_fast.evaluation.speed --model {result['model']} --images {result['num_images']}`", "",
        "| what | images/s |", "| --- | ---: |",
        f"| eval seg, ours (VOC protocol, {result['image_hw'][0]}x{result['image_hw'][1]}, crops batched "
        f"{result['crop_batch_size']}) | {result['seg_ours_images_per_s']:.3f} |",
    ]
    if "seg_reference_images_per_s" in result:
        lines.append(f"| eval seg, step-by-step reference (one crop at a time, encoder twice; first image) | "
                     f"{result['seg_reference_images_per_s']:.3f} |")
        lines.append(f"| speed-up | {result['seg_speedup']:.2f}x |")
    lines.append(f"| eval cls (224x224, 1000 classes, model only) | {result['cls_images_per_s']:.2f} |")
    return "\n".join(lines + ["", "```json", json.dumps(result, indent=2), "```", ""])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m groupvit_fast.evaluation.speed",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("--model", choices=("groupvit-s", "tiny"), default="groupvit-s")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--images", type=int, default=4)
    parser.add_argument("--crop-batch-size", type=int, default=8)
    parser.add_argument("--cls-batch", type=int, default=32)
    parser.add_argument("--out", help="write the markdown report here")
    args = parser.parse_args(argv)
    result = measure_eval_speed(args.model, device=args.device, num_images=args.images,
                                crop_batch_size=args.crop_batch_size, cls_batch=args.cls_batch)
    text = _report(result)
    print(text)
    if args.out:
        with open(args.out, "w", encoding="utf-8") as f:
            f.write(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
