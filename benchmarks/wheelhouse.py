"""The wheelhouse of the GPU check: pure-Python packages an offline GPU machine lacks, carried as wheels.

The GPU machine this project is lent (Python 3.12, torch 2.11 + CUDA 13, no network) has no
open_clip_torch, omegaconf, ftfy, webdataset or nltk, so the tests that need them would skip there.
``benchmarks/fill_wheelhouse.sh`` downloads the wheels below into a folder (default ``.whl/``) on a
machine with a package index; ``benchmarks/gpu_check.sh --wheelhouse DIR`` installs, without
network, those whose module is not importable on the GPU machine. Standard library only: it runs
under the GPU machine's Python before anything is installed.

    python3 benchmarks/wheelhouse.py requirements     # what fill_wheelhouse.sh downloads
    python3 benchmarks/wheelhouse.py check DIR        # a compatible wheel for each, one version each
    python3 benchmarks/wheelhouse.py missing DIR      # the wheels of DIR whose module is not importable here
    python3 benchmarks/wheelhouse.py install DIR SITE # pip-install those, offline, into the folder SITE
"""

from __future__ import annotations

import argparse
import importlib.util
import re
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Package:
    requirement: str  # what pip download asks for (pinned: one version of each in the folder)
    module: str  # what the tests import: present means "not needed from the wheelhouse"

    @property
    def name(self) -> str:
        return self.requirement.split("==")[0]


#: The packages the GPU machine lacks and what they need that it lacks too (its package list:
#: /work/.library/device/KINDS.md); the rest of their requirements (torch, torchvision, timm,
#: huggingface_hub, safetensors, regex, tqdm, pyyaml, numpy, click, joblib) are there.
PACKAGES = (
    Package("open-clip-torch==3.3.0", "open_clip"),  # the CLIP BPE tokenizer (groupvit_fast.tokenizer)
    Package("ftfy==6.3.1", "ftfy"),  # needed by open_clip's tokenizer
    Package("wcwidth==0.2.14", "wcwidth"),  # needed by ftfy
    Package("omegaconf==2.3.0", "omegaconf"),  # NVlabs configs and checkpoints (groupvit_fast.checkpoint)
    Package("antlr4-python3-runtime==4.9.3", "antlr4"),  # needed by omegaconf 2.3 (sdist only: built here)
    Package("webdataset==1.0.2", "webdataset"),  # the training data pipeline's shards
    Package("braceexpand==0.1.7", "braceexpand"),  # needed by webdataset
    Package("nltk==3.9.2", "nltk"),  # the training pipeline's caption nouns
)

#: The target of the wheels: CPython 3.12 on x86-64 Linux (glibc 2.17 and newer).
PYTHON_TAGS = {"py3", "py312", "cp312"}
_MANYLINUX = re.compile(r"^(manylinux1|manylinux2010|manylinux2014|manylinux_2_\d+)_x86_64$")


def normalize(name: str) -> str:
    """A distribution name as wheel file names spell it (PEP 503 normalisation, ``_`` for runs)."""
    return re.sub(r"[-_.]+", "_", name).lower()


def wheel_tags(filename: str) -> tuple[str, str, set[str], set[str], set[str]]:
    """(name, version, python tags, abi tags, platform tags) of a wheel file name (PEP 427)."""
    stem = filename[: -len(".whl")] if filename.endswith(".whl") else filename
    parts = stem.split("-")
    if len(parts) not in (5, 6):
        raise ValueError(f"{filename}: not a wheel file name (name-version[-build]-python-abi-platform.whl)")
    name, version, python, abi, platform = parts[0], parts[1], parts[-3], parts[-2], parts[-1]
    return normalize(name), version, set(python.split(".")), set(abi.split(".")), set(platform.split("."))


def incompatibility(filename: str) -> str | None:
    """Why the wheel cannot install on CPython 3.12 / x86-64 Linux (None: it can)."""
    _, _, pythons, abis, platforms = wheel_tags(filename)
    abi3 = "abi3" in abis and any(re.fullmatch(r"cp3(\d+)", p) and int(p[3:]) <= 12 for p in pythons)
    if not (pythons & PYTHON_TAGS or abi3):
        return f"python tag {'.'.join(sorted(pythons))} is not for CPython 3.12"
    if not (abis & {"none", "cp312"} or abi3):
        return f"abi tag {'.'.join(sorted(abis))} is not CPython 3.12's"
    if not any(p == "any" or _MANYLINUX.match(p) for p in platforms):
        return f"platform tag {'.'.join(sorted(platforms))} is not x86-64 manylinux or any"
    return None


def wheels_by_name(folder: Path) -> dict[str, list[Path]]:
    out: dict[str, list[Path]] = {}
    for path in sorted(folder.glob("*.whl")):
        out.setdefault(wheel_tags(path.name)[0], []).append(path)
    return out


def problems(folder: Path, packages: tuple[Package, ...] = PACKAGES) -> list[str]:
    """One line per package without exactly one installable wheel in ``folder`` (empty: all good)."""
    if not folder.is_dir():
        return [f"wheelhouse {folder}: no such folder"]
    try:
        found = wheels_by_name(folder)
    except ValueError as err:
        return [f"wheelhouse {folder}: {err}"]
    lines = []
    for package in packages:
        wheels = found.get(normalize(package.name), [])
        if not wheels:
            lines.append(f"wheelhouse {folder}: no wheel of {package.requirement} (run benchmarks/fill_wheelhouse.sh)")
            continue
        if len(wheels) > 1:
            lines.append(
                f"wheelhouse {folder}: {len(wheels)} wheels of {package.name} "
                f"({', '.join(w.name for w in wheels)}): keep one, two stop the install"
            )
            continue
        wheel = wheels[0]
        why = incompatibility(wheel.name)
        if why:
            lines.append(f"wheelhouse {folder}: {wheel.name}: {why}")
        elif not zipfile.is_zipfile(wheel):
            lines.append(f"wheelhouse {folder}: {wheel.name}: not a zip archive (a truncated download?)")
    return lines


def missing_wheels(folder: Path, packages: tuple[Package, ...] = PACKAGES) -> list[Path]:
    """The wheels of ``folder`` whose package's module this interpreter cannot import."""
    found = wheels_by_name(folder)
    return [
        found[normalize(p.name)][0]
        for p in packages
        if importlib.util.find_spec(p.module) is None and found.get(normalize(p.name))
    ]


def install(folder: Path, site: Path) -> int:
    """Installs the missing packages' wheels into ``site`` (for PYTHONPATH) without network; pip's status.

    ``--no-deps``: the list names every package the machine lacks, and pip, not seeing the machine's
    own packages from a ``--target`` install, would otherwise go looking for torch on an index.
    """
    wheels = missing_wheels(folder)
    if not wheels:
        print(f"wheelhouse: every package of {folder} is importable already")
        return 0
    print("wheelhouse: installing " + " ".join(w.name for w in wheels), flush=True)
    command = [
        sys.executable,
        "-m",
        "pip",
        "install",
        "--no-index",
        "--no-deps",
        "--no-compile",
        "--no-cache-dir",
        "--disable-pip-version-check",
        "--upgrade",
        "--target",
        str(site),
        *map(str, wheels),
    ]
    return subprocess.run(command, check=False).returncode


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("requirements", help="print the pinned requirements, one a line")
    for name, text in (
        ("check", "check that DIR holds one installable wheel of each package"),
        ("missing", "print the wheels of DIR whose module is not importable here"),
    ):
        sub.add_parser(name, help=text).add_argument("folder", type=Path, metavar="DIR")
    installer = sub.add_parser("install", help="pip-install the missing packages' wheels of DIR into SITE, offline")
    installer.add_argument("folder", type=Path, metavar="DIR")
    installer.add_argument("site", type=Path, metavar="SITE")
    args = parser.parse_args(argv)
    if args.command == "requirements":
        print("\n".join(p.requirement for p in PACKAGES))
        return 0
    lines = problems(args.folder)
    if args.command == "check" or lines:
        print(
            "\n".join(lines) if lines else f"wheelhouse {args.folder}: {len(PACKAGES)} wheels, all installable",
            file=sys.stderr if lines else sys.stdout,
        )
        return 1 if lines else 0
    if args.command == "install":
        return install(args.folder, args.site)
    print("\n".join(str(p) for p in missing_wheels(args.folder)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
