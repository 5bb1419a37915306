"""Export a flow's restore path to ONNX (encoder + flow decode, dynamic height and width) for onnxruntime.

The graph takes (lq, thumb[, exposure][, noise]) and returns hq: lq is the input padded (replicate) to the model's
pad multiple, thumb the 48x48 area thumbnail of the whole image (nightflow.context.thumbnail), exposure an EV
shift per image (models with an exposure head), noise standard normal noise at the output size (only when
--temperature > 0, which is fixed in the graph). `nightflow enhance --backend onnx --model FILE.onnx` runs it,
tiles included; the file's metadata holds scale, pad multiple, minimum tile and temperature. Needs the onnx
extra: pip install 'nightflow[onnx]'.

examples:
  nightflow export lolisrflow-x2 --onnx lolisrflow-x2.onnx
  nightflow export runs/my-run --onnx sample08.onnx --temperature 0.8 --opset 18
"""

from __future__ import annotations

import argparse
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from ..export import DEFAULT_OPSET, MAX_OPSET, MIN_OPSET

    parser.add_argument("model", metavar="MODEL", help="zoo name, weights file or training run folder")
    parser.add_argument("--onnx", type=Path, required=True, metavar="FILE", help="output .onnx file")
    parser.add_argument(
        "--opset",
        type=int,
        default=DEFAULT_OPSET,
        metavar="N",
        help=f"ONNX opset {MIN_OPSET}..{MAX_OPSET} (default {DEFAULT_OPSET})",
    )
    parser.add_argument(
        "--temperature",
        type=float,
        default=0.0,
        metavar="T",
        help="sampling temperature fixed in the graph (default 0: the mean path)",
    )
    parser.add_argument("--overwrite", action="store_true", help="replace an existing FILE")
    parser.add_argument("-q", "--quiet", action="store_true", help="print nothing but errors")


def run(args: argparse.Namespace) -> int:
    from ..data.io import check_writable_folder, file_sha256
    from ..errors import UserError
    from ..export import check_exportable, check_opset, export_onnx
    from ..models.zoo import load_restorer
    from ..pipeline import check_temperature

    target: Path = args.onnx
    if target.suffix.lower() != ".onnx":
        raise UserError(f"--onnx {target}: the file name must end in .onnx")
    if target.exists() and not args.overwrite:
        raise UserError(f"{target} already exists; pass --overwrite to replace it")
    check_opset(args.opset)
    check_temperature(args.temperature, "--temperature")
    check_writable_folder(target.parent)
    restorer, info = load_restorer(args.model, "cpu")
    check_exportable(restorer)
    weights = info.get("path")
    digest = file_sha256(weights) if weights and Path(weights).is_file() else None
    export_onnx(restorer, target, args.temperature, args.opset, {**info, "weights_sha256": digest})
    if not args.quiet:
        inputs = (
            "lq, thumb"
            + (", exposure" if restorer.has_exposure else "")
            + (", noise" if args.temperature > 0 else "")
        )
        print(f"wrote {target} ({target.stat().st_size / 1e6:.1f} MB, opset {args.opset}, inputs {inputs})")
    return 0
