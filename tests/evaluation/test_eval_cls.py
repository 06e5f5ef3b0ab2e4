"""``eval cls``: the text classifier, top-1/top-5 against a direct computation, both data layouts, the cache."""

import io
import json
import os
import tarfile

import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from eval_data import CLASSES, write_imagefolder, write_rgb
from groupvit_fast.cli import main
from groupvit_fast.evaluation import build_classifier, evaluate_classification, imagenet_classes, resolve_templates
from groupvit_fast.evaluation.classification import imagenet_subset_classes
from groupvit_fast.evaluation.imagenet import val_transform

pytest.importorskip("open_clip", reason="the prompts need open_clip_torch's tokenizer")


def test_shipped_names_and_templates():
    names = imagenet_classes()
    assert len(names) == 1000 and names[0] == "tench" and names[-1] == "toilet paper"
    assert len(set(names)) == 998  # CLIP's list repeats 'missile' and 'sunglasses' (two classes each)
    assert len(resolve_templates("full")) == 80 and len(resolve_templates("subset")) == 7
    assert all("{}" in t for t in resolve_templates("full"))
    with pytest.raises(ValueError, match="unknown template set 'fancy'"):
        resolve_templates("fancy")


def test_classifier_averages_unnormalised_embeddings_then_normalises(eval_model):
    from groupvit_fast import tokenize

    temps = resolve_templates("subset")
    got = build_classifier(eval_model, CLASSES[:3], "subset")
    rows_nv, rows_clip = [], []
    with torch.no_grad():
        for name in CLASSES[:3]:
            emb = eval_model.encode_text(tokenize([t.format(name) for t in temps], context_length=77))
            rows_nv.append(F.normalize(emb.mean(0), dim=-1))
            rows_clip.append(F.normalize(F.normalize(emb, dim=-1).mean(0), dim=-1))
    nv, clip = torch.stack(rows_nv), torch.stack(rows_clip)
    assert torch.allclose(got, nv, atol=1e-6, rtol=0)  # fp32, same ops in another order: ~1e-7
    # the two constructions really differ here, so the check above tells them apart
    assert (got - clip).abs().max() > 1e-4


def _shards(images, folder, per_shard=5):
    os.makedirs(folder, exist_ok=True)
    for s in range(0, len(images), per_shard):
        with tarfile.open(os.path.join(folder, f"val-{s // per_shard:06d}.tar"), "w") as tar:
            for i, (path, label) in enumerate(images[s : s + per_shard]):
                key = f"sample{s + i:06d}"
                for ext, data in (("jpg", open(path, "rb").read()), ("cls", str(label).encode())):
                    info = tarfile.TarInfo(f"{key}.{ext}")
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))


def direct_accuracy(model, images, classes, templates="subset"):
    weight = build_classifier(model, classes, templates)
    hits1 = hits5 = 0
    with torch.no_grad():
        for path, label in images:
            x = val_transform(Image.open(path).convert("RGB"))[None]
            logits = (F.normalize(model.encode_image(x), dim=-1) @ weight.t())[0]
            order = logits.argsort(descending=True).tolist()
            hits1 += order[0] == label
            hits5 += label in order[:5]
    return 100 * hits1 / len(images), 100 * hits5 / len(images)


def test_imagefolder_and_shards_match_a_direct_computation(tmp_path, eval_model):
    images = write_imagefolder(str(tmp_path / "val"))
    _shards(images, str(tmp_path / "shards"))
    top1, top5 = direct_accuracy(eval_model, images, CLASSES)
    a = evaluate_classification(
        eval_model, str(tmp_path), class_names=CLASSES, num_workers=0, progress=False, batch_size=4
    )
    b = evaluate_classification(
        eval_model,
        str(tmp_path / "shards" / "val-{000000..000002}.tar"),
        class_names=CLASSES,
        num_workers=1,
        progress=False,
        batch_size=3,
    )
    for r in (a, b):
        assert (r["top1"], r["top5"]) == (pytest.approx(top1), pytest.approx(top5))
        assert r["num_images"] == len(images)
        assert sum(v["images"] for v in r["per_class"].values()) == len(images)
    assert a["per_class"] == b["per_class"]
    assert a["mean_per_class_top1"] == pytest.approx(sum(v["top1"] for v in a["per_class"].values()) / len(CLASSES))


def test_cli_report_and_classifier_cache(tmp_path, eval_checkpoint, eval_model, monkeypatch, capsys):
    images = write_imagefolder(str(tmp_path / "val"))
    names = tmp_path / "names.txt"
    names.write_text("\n".join(CLASSES) + "\n")
    argv = [
        "eval",
        "cls",
        "--data",
        str(tmp_path / "val"),
        "--checkpoint",
        eval_checkpoint,
        "--class-names",
        str(names),
        "--out",
        str(tmp_path / "out"),
        "--cache-dir",
        str(tmp_path / "cache"),
        "--quiet",
        "--workers",
        "0",
        "--device",
        "cpu",
    ]
    assert main(argv) == 0
    report = json.loads((tmp_path / "out" / "classification.json").read_text())
    top1, top5 = direct_accuracy(eval_model, images, CLASSES)
    assert (report["top1"], report["top5"]) == (pytest.approx(top1), pytest.approx(top5))
    assert "| cat |" in (tmp_path / "out" / "classification.md").read_text()
    assert len(os.listdir(tmp_path / "cache")) == 1
    # a second run reads the cached classifier: the text encoder is not called
    from groupvit_fast.evaluation import classification

    def no_text(*a, **k):
        raise AssertionError("text encoder called despite the cache")

    monkeypatch.setattr(classification, "class_text_embeddings", no_text)
    assert main(argv) == 0
    # other templates are another cache entry (and need the text encoder)
    with pytest.raises(AssertionError, match="despite the cache"):
        main(argv + ["--templates", "simple"])


@pytest.mark.parametrize(
    "make, needle",
    [
        (lambda p: None, "no such folder or shard"),
        (lambda p: os.makedirs(p), "no class folders"),
        (lambda p: open(p + ".tar", "wb").write(b"junk" * 200), "cannot read tar shard"),
    ],
)
def test_bad_data_is_one_line(tmp_path, eval_checkpoint, capsys, make, needle):
    target = str(tmp_path / "data")
    make(target)
    data = target + ".tar" if os.path.exists(target + ".tar") else target
    rc = main(
        [
            "eval",
            "cls",
            "--data",
            data,
            "--checkpoint",
            eval_checkpoint,
            "--out",
            str(tmp_path / "out"),
            "--quiet",
            "--workers",
            "0",
        ]
    )
    err = capsys.readouterr().err.strip()
    assert rc == 1 and needle in err and data in err and len(err.splitlines()) == 1
    assert not (tmp_path / "out").exists()


def test_shard_sample_without_label(tmp_path, eval_model):
    with tarfile.open(tmp_path / "a.tar", "w") as tar:
        info = tarfile.TarInfo("x.jpg")
        info.size = 3
        tar.addfile(info, io.BytesIO(b"abc"))
    with pytest.raises(ValueError, match="a.tar: sample 'x' has no cls"):
        evaluate_classification(eval_model, str(tmp_path / "a.tar"), class_names=CLASSES, progress=False)


def test_folder_count_must_match_class_names(tmp_path, eval_model):
    write_imagefolder(str(tmp_path / "val"))
    with pytest.raises(ValueError, match="7 class folders but 3 class names"):
        evaluate_classification(eval_model, str(tmp_path), class_names=CLASSES[:3], progress=False)


def test_folders_that_are_no_imagenet_wnids_need_class_names(tmp_path, eval_model):
    write_imagefolder(str(tmp_path / "val"))  # folders n00000000..n00000006: wnid-shaped, not ImageNet's
    with pytest.raises(ValueError, match=r"class folder 'n00000000' is no ImageNet WordNet id .* \(7 folders\)"):
        evaluate_classification(eval_model, str(tmp_path), progress=False)


# Imagenette's WordNet ids (tench, English springer, cassette player) and their CLIP names
SUBSET = {"n01440764": "tench", "n02102040": "English Springer Spaniel", "n02979186": "cassette player"}


def test_imagenet_subset_names_come_from_the_wnids():
    assert imagenet_subset_classes(list(SUBSET)) == tuple(SUBSET.values())
    assert imagenet_subset_classes(["n15075141"]) == ("toilet paper",)  # the last of the 1000
    assert imagenet_subset_classes(["n01440764", "n99999999"]) is None
    # all 1000 folders in sorted order are exactly the shipped list
    from timm.data import ImageNetInfo

    assert imagenet_subset_classes(ImageNetInfo().label_names()) == imagenet_classes()


def test_a_wnid_subset_is_classified_among_the_classes_present(tmp_path, eval_model, eval_checkpoint):
    """Imagenette-style folders: each wnid is mapped to its ImageNet name and the classifier holds only
    the classes present; the report says so."""
    images = []
    for label, wnid in enumerate(SUBSET):
        for j in range(2):
            path = str(tmp_path / "val" / wnid / f"img_{j}.JPEG")
            write_rgb(path, 64 + 5 * j, 56 + 9 * label, seed=100 + 10 * label + j, fmt="JPEG")
            images.append((path, label))
    top1, top5 = direct_accuracy(eval_model, images, list(SUBSET.values()))
    result = evaluate_classification(eval_model, str(tmp_path), num_workers=0, progress=False)
    assert (result["top1"], result["top5"]) == (pytest.approx(top1), pytest.approx(top5))
    assert result["class_names"] == list(SUBSET.values()) and list(result["per_class"]) == list(SUBSET.values())
    assert result["settings"]["class_set"] == "imagenet-subset" and result["settings"]["num_classes"] == 3
    assert top5 == 100.0  # 3 classes: every label is in the top 5

    rc = main(
        [
            "eval",
            "cls",
            "--data",
            str(tmp_path / "val"),
            "--checkpoint",
            eval_checkpoint,
            "--out",
            str(tmp_path / "out"),
            "--quiet",
            "--workers",
            "0",
            "--device",
            "cpu",
        ]
    )
    assert rc == 0
    markdown = (tmp_path / "out" / "classification.md").read_text()
    assert "among the 3 ImageNet classes present" in markdown and "| tench |" in markdown
