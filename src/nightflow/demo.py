"""`make demo`: brighten and upscale the bundled dark sample photos (×2 and ×4) with the bundled weights.

Writes each restoration and a before/after figure to demo_out/ (the demo's own folder, refreshed on every run)
and prints where they are. The samples in examples/ were made from held-out validation photos
(scripts/make_examples.py), never from training photos.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

import nightflow
from nightflow.data.io import read_image, write_image
from nightflow.metrics import psnr

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
OUT = ROOT / "demo_out"
MODELS = ("lolisrflow-x2", "lolisrflow-x4")


def _panel(img: np.ndarray, size: tuple[int, int], label: str) -> Image.Image:
    panel = Image.fromarray(img).resize(
        size, Image.Resampling.NEAREST if img.shape[1] < size[0] else Image.BICUBIC
    )
    draw = ImageDraw.Draw(panel)
    draw.rectangle((0, 0, 8 + 6 * len(label), 16), fill=(0, 0, 0))
    draw.text((4, 3), label, fill=(255, 255, 255))
    return panel


def _figure(rows: list[list[Image.Image]]) -> Image.Image:
    w, h = rows[0][0].size
    fig = Image.new("RGB", (w * len(rows[0]), h * len(rows)), (255, 255, 255))
    for r, row in enumerate(rows):
        for c, panel in enumerate(row):
            fig.paste(panel, (c * w, r * h))
    return fig


def main() -> int:
    darks = sorted(EXAMPLES.glob("*_dark.png"))
    if not darks:
        print(f"no demo samples in {EXAMPLES}", file=sys.stderr)
        return 2
    OUT.mkdir(exist_ok=True)
    models = {name: nightflow.load(name, device="auto") for name in MODELS}
    rows = []
    for dark_path in darks:
        stem = dark_path.stem.removesuffix("_dark")
        dark = read_image(dark_path)
        ref_path = EXAMPLES / f"{stem}_reference.png"
        ref = read_image(ref_path) if ref_path.is_file() else None
        size = (dark.shape[1] * 4, dark.shape[0] * 4)
        row = [_panel(dark, size, "input (dark, 1/4 size)")]
        for name, model in models.items():
            start = time.perf_counter()
            out = model.restore(dark)
            seconds = time.perf_counter() - start
            path = write_image(OUT / f"{stem}_x{model.scale}.png", out, overwrite=True)
            note = ""
            if ref is not None and model.scale == 4:
                score = float(psnr(out.astype(np.float32) / 255, ref.astype(np.float32) / 255).mean())
                note = f", PSNR {score:.2f} dB vs reference"
            print(
                f"{dark_path.name} → {path.relative_to(ROOT)} ({out.shape[1]}×{out.shape[0]}, {seconds:.1f} s{note})"
            )
            row.append(_panel(out, size, f"{name}"))
        if ref is not None:
            row.append(_panel(ref, size, "reference (normal light)"))
        rows.append(row)
    fig_path = OUT / "before_after.png"
    write_image(fig_path, np.asarray(_figure(rows)), overwrite=True)
    print(f"\nbefore/after figure: {fig_path.relative_to(ROOT)}")
    print(f"try it on your photos: .venv/bin/nightflow enhance PHOTO.jpg --model {MODELS[0]} -o out/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
