"""Smoke test of the benchmark harness (``groupvit-fast bench``) on a tiny CPU case set: it must write
the markdown, JSON and PNG, with the fields the spec asks for (docs/benchmarks.md, "What a report
shows"); every case family (docs/benchmarks.md, "Case families") runs through the same loop and
report, selectable with ``--only``; the committed reports stay readable."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from paths import REPO_ROOT

pytest.importorskip("pytest_benchmark")  # the suites' harness; the report itself needs only torch

from groupvit_fast import bench
from groupvit_fast.bench import cases
from groupvit_fast.ops import AssignShape

# two stage-0 sizes (so the plot has a line), the train mode (saved bytes), the tiny model
SELECTION = (
    r"op/stage0-(224|448)/eval/fp32/|op/stage0-224/train/fp32/"
    r"|model/groupvit-tiny/eval/b2/fp32/(reference|ours)$"
)


@pytest.fixture(scope="module")
def report_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    assert bench.main(["--smoke", "--device", "cpu", "--filter", SELECTION, "--out", str(out), "--no-progress"]) == 0
    return out


def test_writes_markdown_json_png(report_dir):
    pytest.importorskip("matplotlib")  # without it the report says so and has no plot
    names = sorted(p.suffix for p in report_dir.iterdir())
    assert names == [".json", ".md", ".png"]
    png = next(report_dir.glob("*.png")).read_bytes()
    assert png.startswith(b"\x89PNG") and len(png) > 5000


def test_json_fields(report_dir):
    report = json.loads(next(report_dir.glob("*.json")).read_text())
    meta = report["meta"]
    assert meta["device"] == "cpu" and meta["tier"] == "smoke" and meta["families"] == ["op", "model"]
    assert meta["cpu_threads"] >= 1 and len(meta["loadavg_start"]) == len(meta["loadavg_end"]) == 3
    for key in ("torch", "triton", "cuda", "driver"):
        assert key in meta["versions"]
    assert meta["date"] and "git_commit" in meta and meta["copy_bandwidth_gbs"] > 0 and meta["matmul_gflops"] > 0
    assert any("GPU cases were NOT run" in note for note in report["notes"])

    ops = report["op"]
    measured = {(r["shape"], r["mode"], r["impl"]) for r in ops}
    skipped = {(s["case"], s["impl"]) for s in report["skipped"]}
    # every selected item is either measured or listed with its reason
    assert len(ops) + len(report["model"]) + len(skipped) == len(list(cases.TIERS["smoke"].items(SELECTION)))
    assert ("stage0-224", "train", "reference") in measured and ("stage0-448", "eval", "reference") in measured
    for r in ops:
        assert r["median_ms"] > 0 and r["q1_ms"] <= r["median_ms"] <= r["q3_ms"] and r["reps"] >= 2
        assert r["min_bytes"] > 0 and r["achieved_gbs"] > 0
        assert r["peak_mem_bytes"] is None or r["peak_mem_bytes"] > 0
        assert r["rel_error"] is not None and r["rel_error"] < 1e-4  # fp32 against the float64 reference
        if r["impl"] == "reference":
            assert r["speedup_vs_reference"] == pytest.approx(1.0)
        assert "speedup_vs_compiled" in r
        # CPU: the compute floor, the fused formulation's matmul FLOPs at the matmul rate of this run
        assert r["floor_kind"] == "compute" and r["fused_flops"] == cases.fused_flops(
            cases.SHAPES[r["shape"]].with_batch(r["B"]), cases.MODES[r["mode"]]
        )
        assert r["floor_ms"] == pytest.approx(r["fused_flops"] / (meta["matmul_gflops"] * 1e6))
        assert r["roofline_fraction"] == pytest.approx(r["floor_ms"] / r["median_ms"])
    train_ref = next(r for r in ops if r["mode"] == "train" and r["impl"] == "reference")
    assert train_ref["saved_bytes"] >= train_ref["saved_extra_bytes"] > 0

    models = {r["impl"]: r for r in report["model"]}
    assert set(models) == {"reference", "ours"}
    assert models["reference"]["backend"] == "reference" and models["reference"]["rel_error"] == 0.0
    assert models["ours"]["images_per_s"] > 0 and models["ours"]["rel_error"] < 1e-4


def test_markdown_and_render(report_dir, tmp_path):
    md = next(report_dir.glob("*.md")).read_text()
    for text in (
        "torch",
        "triton",
        "CUDA",
        "driver",
        "git commit",
        "median ms",
        "vs compiled",
        "images/s",
        "% floor",
        "GFLOP/s",
        "Speed-up ceilings",
    ):
        assert text in md
    # --render rewrites the markdown and the plot from the JSON alone
    json_path = next(report_dir.glob("*.json"))
    assert bench.main(["--render", str(json_path), "--out", str(tmp_path)]) == 0
    assert (tmp_path / f"{json_path.stem}.md").read_text() == md
    assert (tmp_path / f"{json_path.stem}.png").exists() == (f"{json_path.stem}.png" in md)


def test_measure_interleaved_alternates_and_isolates_failures():
    calls = []

    def make(name):
        return lambda: calls.append(name)

    def broken():
        raise RuntimeError("no kernel for this shape")

    result = bench.measure_interleaved(
        {"a": make("a"), "b": make("b"), "bad": broken}, "cpu", budget_s=0.0, min_reps=4, max_reps=4, warmup_s=0.0
    )
    assert isinstance(result["bad"], RuntimeError)
    assert result["a"]["reps"] == result["b"]["reps"] == 4
    timed = calls[4:]  # after two warm-up calls each
    assert timed == ["a", "b", "b", "a", "a", "b", "b", "a"]  # alternating, order rotated every round


@pytest.mark.parametrize(
    "mode, bgnc_total",
    [
        ("eval", 2),  # hard: z = q k^T only; merging is a segmented sum of v
        ("soft", 4),  # + R v
        ("train", 10),  # hard forward (2) + backward: z again, dR = dO v^T, dq, dk (dv is a gather)
    ],
)
def test_fused_flops_by_hand(mode, bgnc_total):
    shape = cases.SHAPES["stage0-224"].with_batch(3)
    bgnc = 3 * 64 * 196 * 384
    assert cases.fused_flops(shape, cases.MODES[mode]) == bgnc_total * bgnc
    # the dense reference formulation (the GFLOP column): 4 BGNC forward, 8 BGNC backward
    assert cases.flops(shape, cases.MODES[mode]) == (12 if mode == "train" else 4) * bgnc


def test_the_distribution_carries_the_cases(tmp_path):
    """``groupvit-fast bench`` needs no checkout: the package as setup.py ships it (its pure-Python
    part, built with ``build_py`` into a folder outside the checkout) holds the cases, and run from
    an empty folder with only that copy in front of the path it lists the CPU quick tier."""
    lib = tmp_path / "lib"
    env = {**os.environ, "GROUPVIT_FAST_SKIP_EXTENSION": "1"}  # no compile: the cases are Python
    subprocess.run(
        [sys.executable, "setup.py", "-q", "build_py", "--build-lib", str(lib)],
        cwd=REPO_ROOT,
        env=env,
        check=True,
        capture_output=True,
        timeout=300,
    )
    shipped = {p.name for p in (lib / "groupvit_fast" / "bench" / "cases").glob("*.py")}
    assert {"__init__.py", "family.py", "runner.py", "tiers.py"} | {f"{m}.py" for m in cases.FAMILY_MODULES} <= shipped
    assert not (lib / "benchmarks").exists()

    # what `python -m groupvit_fast.bench` does, after printing where the package came from
    main = (
        "import runpy, sys, groupvit_fast.bench.cases as c; print(c.__file__, flush=True); "
        "runpy.run_module('groupvit_fast.bench', run_name='__main__', alter_sys=True)"
    )
    env = {**os.environ, "PYTHONPATH": str(lib)}
    work = tmp_path / "elsewhere"
    work.mkdir()
    proc = subprocess.run(
        [sys.executable, "-c", main, "--quick", "--device", "cpu", "--list"],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    where, *listed = proc.stdout.splitlines()
    assert where == str(lib / "groupvit_fast" / "bench" / "cases" / "__init__.py")
    assert listed == [f"{case.id}/{impl}" for case, impl in cases.tier_for("cpu", quick=True).items()]
    assert {item.split("/")[0] for item in listed} == set(cases.families())  # the quick tier has every family


def test_the_cases_use_the_ops_shape_type():
    """One shape type for the op: the benchmark cases' shapes are ``groupvit_fast.ops.AssignShape``."""
    assert all(type(shape) is AssignShape for shape in cases.SHAPES.values())
    assert all(type(case.shape) is AssignShape for tier in cases.TIERS.values() for case in tier.cases["op"])
    assert str(cases.SHAPES["multihead"]) == "B128-G64-N196-C384-h6"
    assert cases.SHAPES["multihead"].dims() == "B=128 G=64 N=196 C=384 h=6"


@pytest.mark.parametrize(
    "sizes, message",
    [
        ((2, 3, 7, 8, 3), "channels=8 is not a multiple of heads=3"),
        ((0, 3, 7, 8, 1), "batch must be a positive int, got 0"),
        ((2, 3, 7.0, 8, 1), "tokens must be a positive int, got 7.0"),
    ],
)
def test_assign_shape_rejects_bad_sizes(sizes, message):
    with pytest.raises(ValueError, match=message):
        AssignShape(*sizes)


# --- the case families ------------------------------------------------------------------------


def test_every_case_id_starts_with_its_family_and_is_unique():
    """The harness, ``--only`` and the pytest suites find a case's family from its id's first part."""
    for tier in cases.TIERS.values():
        for name, family_cases in tier.cases.items():
            ids = [case.id for case in family_cases]
            assert len(set(ids)) == len(ids), f"{tier.name}/{name}: duplicate case ids"
            for case in family_cases:
                assert case.id.split("/")[0] == name and cases.family_of(case).name == name
                assert case.group.split("/")[0] == name  # a comparison group never mixes families


@pytest.mark.parametrize("tier", sorted(cases.TIERS))
def test_only_selects_whole_families(tier):
    tier = cases.TIERS[tier]
    per_family = {name: list(tier.items(only=(name,))) for name in cases.families()}
    for name, items in per_family.items():
        assert {case.id.split("/")[0] for case, _ in items} <= {name}
        assert len(items) == sum(len(case.impls) for case in tier.cases.get(name, ()))
    assert list(tier.items(only=("train", "eval"))) == per_family["train"] + per_family["eval"]
    assert list(tier.items()) == [item for items in per_family.values() for item in items]


@pytest.fixture(scope="module")
def pipeline_report(tmp_path_factory):
    """The smoke tier's train and eval families, selected with --only, one timed call each."""
    out = tmp_path_factory.mktemp("bench-pipelines")
    argv = [
        "--smoke",
        "--device",
        "cpu",
        "--only",
        "train",
        "--only",
        "eval",
        "--filter",
        "step|cls",
        "--out",
        str(out),
        "--no-progress",
    ]
    assert bench.main(argv) == 0
    return out


def test_only_selects_families_and_names_the_report(pipeline_report):
    (json_path,) = pipeline_report.glob("*.json")
    assert json_path.name.startswith("cpu-smoke-train-eval-")
    assert sorted(p.suffix for p in pipeline_report.iterdir()) == [".json", ".md"]  # no op rows: no plot
    report = json.loads(json_path.read_text())
    assert report["schema_version"] == 2 and report["meta"]["families"] == ["train", "eval"]
    assert report["meta"]["only"] == ["train", "eval"] and "op" not in report and "model" not in report
    assert not report["skipped"]
    assert {(r["case"], r["impl"]) for r in report["train"] + report["eval"]} == {
        (case.id, impl) for case, impl in cases.TIERS["smoke"].items("step|cls", only=("train", "eval"))
    }


def test_train_and_eval_records(pipeline_report):
    report = json.loads(next(pipeline_report.glob("*.json")).read_text())
    steps = {r["impl"]: r for r in report["train"]}
    assert set(steps) == {"reference", "ours"}
    for r in steps.values():
        assert (
            r["kind"] == "train"
            and r["task"] == "step"
            and r["images_per_s"] == pytest.approx(r["batch"] / r["median_ms"] * 1e3)
        )
        assert r["recipe_hours"] == pytest.approx(r["recipe_steps"] * r["median_ms"] / 3.6e6)
        assert r["saved_bytes"] >= r["saved_extra_bytes"] > 0  # the step's forward keeps activations
    assert steps["reference"]["backend"] == "reference" and steps["ours"]["backend"] != "reference"
    assert steps["ours"]["speedup_vs_reference"] == pytest.approx(
        steps["reference"]["median_ms"] / steps["ours"]["median_ms"]
    )
    cls = {r["impl"]: r for r in report["eval"]}
    assert cls["reference"]["rel_error"] == 0.0 and cls["ours"]["rel_error"] < 1e-4  # fp32 logits, same weights
    md = next(pipeline_report.glob("*.md")).read_text()
    for text in (
        "## Training pipeline",
        "## Evaluation pipelines",
        "Projection (ours)",
        "families train, eval",
        "torch threads of",
        "load average at start / end",
    ):
        assert text in md
    assert "## Assignment attention op" not in md


def test_an_unknown_family_is_refused_naming_it(capsys):
    with pytest.raises(SystemExit):
        bench.main(["--smoke", "--device", "cpu", "--only", "trian", "--list"])
    assert "argument --only: invalid choice: 'trian'" in capsys.readouterr().err


def test_threads_below_one_is_refused(capsys):
    assert bench.main(["--smoke", "--device", "cpu", "--threads", "0", "--list"]) == 2
    assert "--threads must be at least 1, got 0" in capsys.readouterr().err


COMMITTED = sorted(
    p for p in (REPO_ROOT / "benchmarks" / "results").rglob("*.json") if "schema_version" in json.loads(p.read_text())
)


@pytest.mark.parametrize("path", COMMITTED, ids=[str(p.relative_to(REPO_ROOT)) for p in COMMITTED])
def test_committed_reports_still_render(path: Path, tmp_path):
    """Every committed harness report (schema 1 and later) re-renders with this code, every row in it."""
    report = json.loads(path.read_text())
    assert bench.main(["--render", str(path), "--out", str(tmp_path)]) == 0
    md = (tmp_path / f"{path.stem}.md").read_text()
    for name in report["meta"].get("families") or ("op", "model"):
        for r in report[name]:
            assert f"| {r['impl']} |" in md and f"| {r['median_ms']:.4g} |" in md


def test_the_voc_segment_cases_prompt_with_the_evaluations_class_names_and_settings():
    # "zero-shot segmentation at VOC settings" measures what `eval seg --dataset voc` runs: its class
    # names (NVlabs' "table", "plant", "monitor"), threshold and windows
    from groupvit_fast.bench.cases.segment import SEGMENT_CASES
    from groupvit_fast.evaluation.datasets import DATASETS

    voc = DATASETS["voc"]
    cases = [c for tier in ("gpu", "gpu-quick", "cpu", "cpu-quick") for c in SEGMENT_CASES[tier]]
    assert cases
    for case in cases:
        assert case.classes == voc.class_names
        assert (case.crop, case.stride, case.bg_thresh) == (voc.crop, voc.stride, voc.bg_thresh)


def test_the_export_cases_time_the_segment_cases_problems():
    # the export family times, on the CPU tiers, exactly the problems the segment family times: its table is
    # derived from SEGMENT_CASES, so the two cannot drift apart
    from dataclasses import fields

    from groupvit_fast.bench.cases.export import EXPORT_CASES, EXPORT_IMPLS, EXPORT_TIERS
    from groupvit_fast.bench.cases.segment import SEGMENT_CASES, SegmentCase

    assert set(EXPORT_CASES) == set(EXPORT_TIERS) and {"cpu", "smoke"} <= set(EXPORT_TIERS)
    for tier in EXPORT_TIERS:
        assert len(EXPORT_CASES[tier]) == len(SEGMENT_CASES[tier]) > 0, tier
        for ours, theirs in zip(EXPORT_CASES[tier], SEGMENT_CASES[tier], strict=True):
            for f in fields(SegmentCase):
                if f.name not in ("impls", "task"):
                    assert getattr(ours, f.name) == getattr(theirs, f.name), (tier, f.name)
            assert ours.impls == EXPORT_IMPLS and ours.id.startswith("export/")
