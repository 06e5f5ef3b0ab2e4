"""``groupvit-fast convert SRC DST [--to nvlabs|hf] [--force]``: NVlabs ``.pth`` <-> Hugging Face weights <->
safetensors (core install; docs/groupvit.md). An existing DST is never replaced without ``--force``."""

from __future__ import annotations

import argparse
import os

from ..cli_support import CliError


def run(args: argparse.Namespace) -> int:
    from ..checkpoint import complete_from_hf, infer_config, read_checkpoint, save_checkpoint, save_safetensors

    src, dst = args.src, args.dst
    if not os.path.exists(src):
        raise CliError(f"{src}: no such file")
    if os.path.abspath(src) == os.path.abspath(dst):
        raise CliError("SRC and DST are the same file")
    if os.path.isdir(dst):
        raise CliError(f"{dst}: is a folder; give a file name ending in .safetensors, .pth, .pt or .bin")
    if os.path.exists(dst) and not args.force:
        raise CliError(f"{dst}: exists (use --force to replace it)")
    ext = os.path.splitext(dst)[1].lower()
    if ext not in (".safetensors", ".pth", ".pt", ".bin"):
        raise CliError(f"{dst}: unknown output format {ext or '(none)'}; use .safetensors, .pth, .pt or .bin")
    out_dir = os.path.dirname(os.path.abspath(dst))
    if not os.path.isdir(out_dir):
        raise CliError(f"{out_dir}: no such folder")
    try:
        ckpt = read_checkpoint(src, trust_pickle=args.trust_pickle)
        config = ckpt.config
        if config is None:
            config = infer_config(ckpt.state_dict)
    except ValueError as err:
        raise CliError(str(err)) from None
    hf = args.to == "hf"
    added = [] if hf or ckpt.source_format != "hf" else complete_from_hf(ckpt.state_dict, config)
    from ..common.files import atomic_write

    def write(tmp: str) -> None:
        if ext == ".safetensors":
            save_safetensors(ckpt.state_dict, tmp, hf=hf, config=config)
        else:
            save_checkpoint(ckpt.state_dict, tmp, hf=hf, config=config)

    try:
        atomic_write(dst, write)
    except ValueError as err:
        raise CliError(str(err)) from None
    notes = ""
    if hf and "multi_label_logit_scale" in ckpt.state_dict:
        notes = "; multi_label_logit_scale dropped (no HF counterpart)"
    elif added:
        notes = f"; {', '.join(added)} set to its initial value (HF weights have none)"
    print(f"{src} ({ckpt.source_format}, {ckpt.kind}) -> {dst} ({args.to} keys, {len(ckpt.state_dict)} tensors{notes})")
    return 0


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser("convert", help="convert weights: NVlabs .pth <-> HF <-> safetensors")
    parser.add_argument("src", metavar="SRC")
    parser.add_argument("dst", metavar="DST", help="output file: .safetensors, or .pth/.pt/.bin (torch.save)")
    parser.add_argument(
        "--to", choices=("nvlabs", "hf"), default="nvlabs", help="key names to write (default: %(default)s)"
    )
    parser.add_argument("--force", action="store_true", help="replace DST if it exists")
    parser.add_argument(
        "--trust-pickle", action="store_true", help="allow full unpickling of SRC (only for files you trust)"
    )
    parser.set_defaults(func=run)
    return parser
