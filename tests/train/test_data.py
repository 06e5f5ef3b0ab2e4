"""The training data: shard split by rank and worker, resumable order, corrupt samples, refusals."""

from __future__ import annotations

import io
import json
import os

import pytest

pytest.importorskip("webdataset")
pytest.importorskip("timm")

from groupvit_fast.train.data import ShardSource, TrainData  # noqa: E402
from groupvit_fast.train.data.sources import expand_shards  # noqa: E402


def _keys(source, epoch, rank, world, worker, workers, n, start=0):
    out = []
    for _position, record in source.records(epoch, rank, world, worker, workers, start):
        out.append(record["__key__"])
        if len(out) == n:
            return out
    return out


@pytest.mark.parametrize("world, workers", [(1, 1), (2, 1), (2, 2), (4, 1)])
def test_one_pass_covers_every_sample_once(shards, world, workers):
    # buffer of 1: no mixing across passes, so the first pass is exactly the first 256 records
    source = ShardSource(expand_shards(shards, "synthetic-{000000..000003}.tar"), seed=0, buffer_size=1)
    per = 256 // (world * workers)  # 4 shards of 64 split evenly
    seen = [k for r in range(world) for w in range(workers) for k in _keys(source, 0, r, world, w, workers, per)]
    assert sorted(seen) == [f"{i:09d}" for i in range(256)]


def test_order_is_deterministic_resumable_and_changes_by_epoch(shards):
    source = ShardSource(expand_shards(shards, "synthetic-{000000..000003}.tar"), seed=3, buffer_size=32)
    first = _keys(source, 0, 0, 1, 0, 1, 100)
    assert first == _keys(source, 0, 0, 1, 0, 1, 100)
    assert _keys(source, 0, 0, 1, 0, 1, 60, start=40) == first[40:]
    assert _keys(source, 1, 0, 1, 0, 1, 100) != first


def _write_shard(path, samples):
    from webdataset import TarWriter

    with TarWriter(path) as sink:
        for sample in samples:
            sink.write(sample)


def _jpeg(colour=(200, 10, 10)):
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (32, 32), colour).save(buffer, format="JPEG")
    return buffer.getvalue()


def test_corrupt_jpeg_and_empty_caption_are_skipped_and_counted(tmp_path, make_config, text_transform):
    good = _jpeg()
    samples = [{"__key__": f"{i:04d}", "jpg": good, "txt": "a photo of a red square"} for i in range(40)]
    samples[3]["jpg"] = good[: len(good) // 3]  # truncated JPEG
    samples[7]["jpg"] = b"not an image at all"
    samples[11]["txt"] = "   "
    _write_shard(str(tmp_path / "synthetic-000000.tar"), samples)
    cfg = make_config(str(tmp_path), num_shards=1, length=32, **{"data.batch_size": 8, "data.shuffle_buffer": 1})
    data = TrainData(cfg, 0, 1, text_transform=text_transform)
    batches = iter(data.loader(0))
    got = [next(batches) for _ in range(4)]
    assert all(b["image"].shape == (8, 3, 32, 32) and b["text"].shape == (8, 1, 8) for b in got)
    assert sum(b["skipped"] for b in got) == 3
    assert got[-1]["position"] == 35  # 32 good ones need 35 records


@pytest.mark.parametrize(
    "opts, message",
    [
        ({"data.dataset.meta.synthetic.prefix": "synthetic-{000000..000009}.tar"}, "6 of 10 shards missing"),
        ({"data.num_workers": 3, "data.dataset.meta.synthetic.length": 256}, None),  # 4 shards >= 3 workers: fine
        ({"data.num_workers": 5}, "4 shards cannot feed 1 process(es) x 5 loader worker(s)"),
        ({"data.batch_size": 300}, "256 samples make no full global batch of 300"),
        ({"data.dataset.train": "[nothere]"}, "data.dataset.train names 'nothere'"),
        ({"data.dataset.meta.synthetic.path": "/no/such/folder"}, "no such folder"),
    ],
)
def test_bad_data_is_refused_before_training(shards, make_config, text_transform, opts, message):
    cfg = make_config(shards, **opts)
    cfg.data.dataset.meta.synthetic.type = "img_txt_pair"  # read the shards, never write missing ones
    if message is None:
        TrainData(cfg, 0, 1, text_transform=text_transform)
        return
    with pytest.raises(ValueError) as err:
        TrainData(cfg, 0, 1, text_transform=text_transform)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_world_size_too_large_for_the_shards(shards, make_config, text_transform):
    with pytest.raises(ValueError, match="4 shards cannot feed 8 process"):
        TrainData(make_config(shards), 3, 8, text_transform=text_transform)


def test_empty_shard_is_an_error(tmp_path, make_config, text_transform):
    _write_shard(str(tmp_path / "synthetic-000000.tar"), [])
    with pytest.raises(ValueError, match="holds no samples"):
        TrainData(make_config(str(tmp_path), num_shards=1, length=32), 0, 1, text_transform=text_transform)


@pytest.mark.parametrize("ext", [".csv", ".tsv", ".jsonl"])
def test_manifest_dataset(tmp_path, make_config, text_transform, ext):
    (tmp_path / "img").mkdir()
    rows = []
    for i in range(20):
        (tmp_path / "img" / f"{i}.jpg").write_bytes(_jpeg((10 * i, 0, 0)))
        rows.append({"path": f"img/{i}.jpg", "caption": f"a photo of a red square {i}"})
    manifest = tmp_path / f"list{ext}"
    if ext == ".jsonl":
        manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))
    else:
        sep = "\t" if ext == ".tsv" else ","
        manifest.write_text("path" + sep + "caption\n" + "".join(f"{r['path']}{sep}{r['caption']}\n" for r in rows))
    cfg = make_config(str(tmp_path), **{"data.batch_size": 4})
    cfg.data.dataset.meta.synthetic.type = "manifest"
    cfg.data.dataset.meta.synthetic.path = str(manifest)
    cfg.data.dataset.meta.synthetic.length = 0
    data = TrainData(cfg, 0, 1, text_transform=text_transform)
    assert data.length == 20 and data.steps_per_epoch == 5
    batch = next(iter(data.loader(0)))
    assert batch["image"].shape == (4, 3, 32, 32)


def test_manifest_without_caption_column(tmp_path):
    from groupvit_fast.train.data import read_manifest

    (tmp_path / "m.csv").write_text("path,label\na.jpg,3\n")
    with pytest.raises(ValueError, match="caption column"):
        read_manifest(str(tmp_path / "m.csv"))
    assert os.path.exists(tmp_path / "m.csv")
