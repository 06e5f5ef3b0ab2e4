"""What a case family is, and the registry of families (docs/benchmarks.md, "Case families").

A family is one kind of thing the harness measures: ``op`` (the assignment-attention op),
``model`` (GroupViT's forward and a plain training step), ``segment`` (zero-shot segmentation),
``train`` (the training pipeline's step and its data loader), ``eval`` (the evaluation
pipelines). Each family is one module of this package that defines ``FAMILY``, a ``Family``:
its cases per tier, how one (case, implementation) becomes a ``Runner``, and how a measurement
becomes a report record. Every case id starts with its family's name (``train/...``), which is
how the harness, ``--only`` and the pytest suites find a case's family.

Adding a family is its module plus its name in ``FAMILY_MODULES`` below.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .runner import Runner

__all__ = ["FAMILY_MODULES", "BuildContext", "Family", "families", "family_of", "throughput_record"]

#: The family modules of this package, in run and report order.
FAMILY_MODULES = ("op", "model", "segment", "train", "eval", "export")


@dataclass(frozen=True)
class Family:
    """One kind of case: what the harness and the pytest suites need to run and report it."""

    #: the first part of each case id; ``--only NAME``; the report's JSON key for its records
    name: str
    #: the heading of its section in the markdown report
    title: str
    #: ``tier name -> the family's cases in that tier`` (a tier it does not name: none)
    cases: dict[str, tuple[Any, ...]]
    #: ``(case, impl, context) -> Runner``
    build: Callable[[Any, str, BuildContext], Runner]
    #: ``(case, impl, timing and memory stats, runner, context) -> the report's record``
    record: Callable[[Any, str, dict[str, Any], Runner, BuildContext], dict[str, Any]]
    #: what each implementation name means (printed under the section)
    impl_info: dict[str, str]
    #: the record fields that name one problem: speed-ups are ratios between records equal in them
    ratio_keys: tuple[str, ...] = ("config", "task", "batch", "dtype")
    #: the implementations the ``vs ref`` and ``vs compiled`` columns divide by
    reference_impl: str = "reference"
    compiled_impl: str = "reference-compiled"
    #: the text under the section's table
    note: str = ""
    #: ``records -> markdown lines`` after the note (e.g. the op's speed-up ceilings)
    summary: Callable[[list[dict[str, Any]]], list[str]] | None = None
    #: ``op``: the op table; ``throughput``: the images/s table of models and pipelines
    table: str = "throughput"


class BuildContext:
    """What the runners of one run share: the device, the report's header (measured rates) and a
    cache of expensive objects (a ``ModelBank`` per model configuration, a ``SegmentBank`` per
    case, the loader's shards), built on first use and kept for the whole run."""

    def __init__(self, device: str, meta: dict[str, Any] | None = None):
        self.device = device
        self.meta = meta or {}
        self._cache: dict[Any, Any] = {}

    def shared(self, key: Any, make: Callable[[], Any]) -> Any:
        """The object cached under ``key``, made by ``make()`` the first time."""
        if key not in self._cache:
            self._cache[key] = make()
        return self._cache[key]


def families() -> dict[str, Family]:
    """``name -> Family`` for every module of ``FAMILY_MODULES``, in that order."""
    found = {}
    for module in FAMILY_MODULES:
        family = importlib.import_module(f"{__package__}.{module}").FAMILY
        found[family.name] = family
    return found


def family_of(case: Any) -> Family:
    """The family of ``case``: the first part of its id."""
    name = case.id.split("/", 1)[0]
    known = families()
    if name not in known:
        raise ValueError(f"case {case.id!r}: no family named {name!r} (known: {', '.join(known)})")
    return known[name]


def throughput_record(case: Any, impl: str, stats: dict[str, Any], runner: Runner, **fields: Any) -> dict[str, Any]:
    """The record of a model or pipeline case: what ran (``config``, ``task``, ``batch`` images per
    call, ``dtype``), its timing and memory ``stats``, images/s and the runner's error column."""
    record = {
        "kind": case.id.split("/", 1)[0],
        "case": case.id,
        "config": case.config,
        "task": case.task,
        "batch": case.batch,
        "dtype": case.dtype,
        "impl": impl,
        "backend": runner.backend,
        **fields,
        **stats,
    }
    record["images_per_s"] = case.batch / (stats["median_ms"] / 1e3)
    record["rel_error"] = None
    if runner.error is not None:
        record["rel_error"] = runner.error()
        record["error_vs"] = runner.error_vs
    return record
