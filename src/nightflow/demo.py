"""`nightflow demo` / `python -m nightflow.demo` / `make demo`: brighten and upscale the bundled dark sample
photos (×2 and ×4) with the bundled weights.

Writes each restoration and a before/after figure to demo_out/ in the current folder (the demo's own folder,
refreshed on every run; ``--out`` picks another) and prints where they are. The samples ship inside the package
(``nightflow/examples/``, so an installed nightflow finds them from anywhere); they were made from held-out
validation photos (scripts/make_examples.py), never from training photos.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

import nightflow
from nightflow.data.io import read_image, write_image
from nightflow.metrics import psnr

EXAMPLES = Path(__file__).resolve().parent / "examples"  # package data
OUT = Path("demo_out")
MODELS = ("lolisrflow-x2", "lolisrflow-x4")


def samples() -> list[Path]:
    """The bundled dark sample photos (``*_dark.png``; a ``*_reference.png`` beside each is its target)."""
    return sorted(EXAMPLES.glob("*_dark.png"))


def _shown(path: Path) -> str:
    """``path`` relative to the current folder when it lies below it (shorter lines), else as it is."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m nightflow.demo", description=__doc__.splitlines()[0])
    parser.add_argument("-o", "--out", type=Path, default=OUT, help="output folder (default demo_out/)")
    return run_demo(parser.parse_args(argv).out)


def run_demo(out: Path = OUT) -> int:
    """Restore every bundled sample with each of MODELS into ``out``; 2 when no samples are installed."""
    darks = samples()
    if not darks:
        print(f"no demo samples in {EXAMPLES}", file=sys.stderr)
        return 2
    out.mkdir(parents=True, exist_ok=True)
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
            restored = model.restore(dark)
            seconds = time.perf_counter() - start
            path = write_image(out / f"{stem}_x{model.scale}.png", restored, overwrite=True)
            note = ""
            if ref is not None and model.scale == 4:
                score = float(psnr(restored.astype(np.float32) / 255, ref.astype(np.float32) / 255).mean())
                note = f", PSNR {score:.2f} dB vs reference"
            print(
                f"{dark_path.name} → {_shown(path)} ({restored.shape[1]}×{restored.shape[0]}, {seconds:.1f} s{note})"
            )
            row.append(_panel(restored, size, f"{name}"))
        if ref is not None:
            row.append(_panel(ref, size, "reference (normal light)"))
        rows.append(row)
    fig_path = out / "before_after.png"
    write_image(fig_path, np.asarray(_figure(rows)), overwrite=True)
    print(f"\nbefore/after figure: {_shown(fig_path)}")
    # no --model: enhance then picks lolisrflow-x2-jpeg for a JPEG file, which scores higher on JPEGs
    print("try it on your photos: nightflow enhance PHOTO.jpg -o PHOTO_x2.png   (--scale 4 for ×4)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
