"""How bright are the training and the validation photos? Mean linear luminance of each photo, in log2 (EV).

Why: an exposure head fitted on the training photos learns how bright *those* scenes are. Where the validation
photos are darker scenes on average, the head's estimate is too bright on them by about that difference, and
no fixed offset fitted on the training photos can know it (``benchmarks/exposure_offset``). This measures the
difference, so that the head's bias in ``benchmarks/exposure_decomposition`` can be read against it.

    python -m benchmarks.photo_brightness

Writes results/photo_brightness.json. Not part of `make bench` (it reads data/photos, which `make photos` fetches).
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
from pathlib import Path

from nightflow.context import linear_luminance
from nightflow.data.io import read_image, to_tensor

from .common import ROOT, save

SPLITS = ("train", "val")


def photo_ev(path: Path) -> float:
    """log2 of the photo's mean Rec. 709 luminance in linear light (0 EV = a white frame)."""
    image = to_tensor(read_image(path)).float().unsqueeze(0)
    return math.log2(max(float(linear_luminance(image).mean()), 1e-6))


def split_summary(folder: Path) -> dict:
    """Per-photo EVs of one split and their mean and median."""
    photos = {p.name: round(photo_ev(p), 3) for p in sorted(folder.glob("*.png"))}
    if not photos:
        raise SystemExit(f"{folder}: no photos (run `make photos`)")
    values = list(photos.values())
    return {
        "photos": len(values),
        "mean_ev": round(statistics.fmean(values), 3),
        "median_ev": round(statistics.median(values), 3),
        "per_photo_ev": photos,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--photos", type=Path, default=ROOT / "data" / "photos", help="holds train/ and val/")
    args = parser.parse_args(argv)
    result = {split: split_summary(args.photos / split) for split in SPLITS}
    for split, row in result.items():
        print(
            f"{split}: {row['photos']} photos, mean {row['mean_ev']:+.2f} EV, median {row['median_ev']:+.2f} EV"
        )
    shift = result["val"]["mean_ev"] - result["train"]["mean_ev"]
    print(f"validation photos are {shift:+.2f} EV from the training photos on average")
    result["val_minus_train_mean_ev"] = round(shift, 3)
    save("photo_brightness", result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
