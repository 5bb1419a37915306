"""Make low-light (low-resolution) training pairs from a folder of photos, in the RELLISUR layout.

Every photo becomes normal-light targets OUT/NLHR/X{s}/ at each scale and low-light low-resolution inputs
OUT/LLLR/<scene>-<|EV|>.png (one per exposure), with copies of the targets under each input's name in
OUT/NLHR-Duplicates/X{s}/, so `format: rellisur` reads the result. OUT/manifest.json records every drawn
degradation value and seed. The same seed gives the same files; a rerun skips finished photos.

Presets: dfsr-lle (low light + sensor noise, x1/x2/x4; blur and decimation in linear light before the noise),
dfsr-lle-jpeg (the same, then each dark image saved as a JPEG of quality 60-95, as phones and messaging apps
store photos) and lol-blur (low light + noise + camera-shake motion blur, x1).

examples:
  nightflow synth data/photos/train data/synth-train --scales 2,4 --seed 1
  nightflow synth photos/ out/ --preset lol-blur --scales 1 --ev -4,-2 --per-image 3
"""

from __future__ import annotations

import argparse
import re

from ..data.degrade import PRESETS
from ..errors import UserError


def _scales(text: str) -> tuple[int, ...]:
    try:
        values = tuple(sorted({int(v) for v in text.split(",") if v.strip()}))
    except ValueError:
        raise UserError(f"--scales expects comma-separated integers such as 1,2,4, got '{text}'") from None
    if not values or any(v not in (1, 2, 4) for v in values):
        raise UserError(f"--scales must be drawn from 1, 2, 4 (e.g. --scales 2,4), got '{text}'")
    return values


def _ev(text: str) -> tuple[float, float]:
    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise UserError(f"--ev expects one EV or a range LOW,HIGH such as -4.5,-2.5, got '{text}'") from None
    if len(values) == 1:
        values = values * 2
    if len(values) != 2:
        raise UserError(f"--ev expects one EV or a range LOW,HIGH such as -4.5,-2.5, got '{text}'")
    if max(values) > 0:
        raise UserError(f"--ev values must be negative (darker than the photo), got '{text}'")
    return min(values), max(values)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    # let "--ev -4.5,-2.5" pass as a value rather than an unknown option
    if hasattr(parser, "_negative_number_matcher"):
        parser._negative_number_matcher = re.compile(r"^-\d+$|^-\d*\.\d+$|^-[\d.]+(,\s*-?[\d.]+)*$")
    parser.add_argument("src", metavar="SRC", help="folder of normal-light photos (PNG, JPEG, TIFF)")
    parser.add_argument("out", metavar="OUT", help="output folder (created; RELLISUR layout)")
    parser.add_argument(
        "--preset",
        default="dfsr-lle",
        choices=PRESETS.names(),
        help="degradation recipe (default dfsr-lle; dfsr-lle-jpeg also JPEG-compresses each dark image)",
    )
    parser.add_argument("--scales", default=None, help="comma-separated scales (default: 1,2,4; lol-blur: 1)")
    parser.add_argument(
        "--ev", default=None, help="exposure range LOW,HIGH in EV, or one EV (default -5,-2.5)"
    )
    parser.add_argument("--per-image", type=int, default=1, help="low-light exposures per photo (default 1)")
    parser.add_argument("--blur", action="store_true", help="add camera-shake motion blur to the preset")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--bit-depth", type=int, default=8, choices=[8, 16], help="PNG bit depth (default 8)")
    parser.add_argument("--recursive", action="store_true", help="also read photos in subfolders of SRC")
    parser.add_argument("--overwrite", action="store_true", help="redo everything, replacing existing files")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def run(args: argparse.Namespace) -> int:
    from ..data.synth import SynthOptions, synthesize_folder

    default_scales = "1" if args.preset == "lol-blur" else "1,2,4"
    opts = SynthOptions(
        preset=args.preset,
        scales=_scales(args.scales or default_scales),
        ev_range=_ev(args.ev) if args.ev is not None else None,
        per_image=args.per_image,
        seed=args.seed,
        blur=args.blur,
        bit_depth=args.bit_depth,
        recursive=args.recursive,
    )
    summary = synthesize_folder(
        args.src, args.out, opts, overwrite=args.overwrite, progress=not args.no_progress
    )
    print(
        f"{summary.photos} photos: {summary.written} files written, {summary.skipped} photos already done; "
        f"manifest {summary.manifest}"
    )
    return 0
