"""Convert an authors' released checkpoint (LLFlow small and large, SSFlow, UPT-Flow) into a nightflow weights file.

Reads the PyTorch state dict with torch.load(weights_only=True) only (a file that needs pickled code is refused),
infers the configuration from the tensors, maps every tensor by name and shape onto nightflow's architecture
(one line naming the first tensor that does not fit; the release's dead weights are skipped by name), and
writes a safetensors file whose metadata records the source's SHA-256 and the mapping. The result works
everywhere a model does: nightflow.load(OUT), --model OUT, eval, export. Equivalence with the official code and
the checkpoints' published scores: docs/checkpoints.md.

examples:
  nightflow convert LOL_smallNet.pth --arch llflow-small -o llflow-small-lol.safetensors
  nightflow convert LOL.pth --arch llflow --config LOL-pc.yml -o llflow-lol.safetensors
  nightflow convert best_psnr_G.pth --arch ssflow -o ssflow-lolblur.safetensors
  nightflow convert LOLv2_real.pth --arch uptflow -o uptflow-lolv2-real.safetensors
"""

from __future__ import annotations

import argparse
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from ..convert import ARCHS

    parser.add_argument("checkpoint", type=Path, metavar="CHECKPOINT.pth", help="the authors' checkpoint")
    parser.add_argument(
        "--arch", required=True, choices=ARCHS, help="the released architecture it belongs to"
    )
    parser.add_argument(
        "--config",
        type=Path,
        metavar="OFFICIAL.yml",
        help="the release's YAML (only read for what the tensors cannot tell: LLFlow's stacked RRDB blocks; not used by ssflow or uptflow)",
    )
    parser.add_argument(
        "-o", "--output", type=Path, metavar="OUT.safetensors", help="default: CHECKPOINT with .safetensors"
    )
    parser.add_argument("--overwrite", action="store_true", help="replace an existing OUT")
    parser.add_argument("-q", "--quiet", action="store_true", help="print nothing but errors")


def run(args: argparse.Namespace) -> int:
    from ..convert import convert_checkpoint
    from ..data.io import check_writable_folder
    from ..errors import UserError

    out: Path = args.output or args.checkpoint.with_suffix(".safetensors")
    if out.suffix.lower() != ".safetensors":
        raise UserError(f"-o {out}: the file name must end in .safetensors")
    if out.resolve() == args.checkpoint.resolve():
        raise UserError(f"-o {out}: would overwrite the checkpoint itself")
    if out.exists() and not args.overwrite:
        raise UserError(f"{out} already exists; pass --overwrite to replace it")
    if args.config is not None and not args.config.is_file():
        raise UserError(f"--config {args.config}: file not found")
    check_writable_folder(out.parent)
    path, record = convert_checkpoint(args.checkpoint, args.arch, out, args.config)
    if not args.quiet:
        print(
            f"wrote {path} ({record['inferred']}; {record['tensors_mapped']} tensors mapped, "
            f"{len(record['dead_tensors_skipped'])} dead skipped; source sha256 {record['source_sha256'][:12]}…)"
        )
    return 0
