"""Make the bundled demo inputs in src/nightflow/examples/ from *validation* photos (never training ones).

Each example is a validation photo degraded with the DFSR-LLE preset at ×4 (a dark, noisy, 4× smaller image)
with a fixed seed and exposure; the clean photo is kept beside it as the reference. Run after `make photos`:

    python scripts/make_examples.py
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

from nightflow.data.degrade import degrade
from nightflow.data.io import read_image, to_tensor, write_image

ROOT = Path(__file__).resolve().parents[1]
VAL = ROOT / "data" / "photos" / "val"
OUT = ROOT / "src" / "nightflow" / "examples"  # package data: `nightflow demo` finds them when installed
PICKS = {"plasma-path": -3.5, "mate-ladybird": -4.0}  # photo → exposure change in EV
SEED = 2026


def main() -> int:
    split = json.loads((ROOT / "scripts" / "photo_split.json").read_text())
    val_names = {p["name"] for p in split["photos"] if p["split"] == "val"}
    OUT.mkdir(exist_ok=True)
    for i, (stem, ev) in enumerate(PICKS.items()):
        if stem not in val_names:
            print(f"{stem} is not a validation photo", file=sys.stderr)
            return 2
        hq = to_tensor(read_image(VAL / f"{stem}.png"))
        h, w = (hq.shape[1] // 8) * 8, (hq.shape[2] // 8) * 8
        hq = hq[:, :h, :w]
        lq, params = degrade(hq, 4, "dfsr-lle", torch.Generator().manual_seed(SEED + i), ev=ev, seed=SEED + i)
        write_image(OUT / f"{stem}_dark.png", lq, bit_depth=8, overwrite=True)
        write_image(OUT / f"{stem}_reference.png", hq, bit_depth=8, overwrite=True)
        print(f"{stem}: dark input {tuple(lq.shape[1:])}, reference {tuple(hq.shape[1:])}, EV {ev}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
