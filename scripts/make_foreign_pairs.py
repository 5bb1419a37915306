#!/usr/bin/env python3
"""Make the "foreign" test pairs: photos from a source nightflow never trains on, degraded by a pipeline written
apart from nightflow's own synthesis, into data/foreign/x{1,2,4}/{low,high}/ (benchmarks/suites/foreign.yaml).

Why: every other synthetic score in the project comes from nightflow's own degradation (nightflow.data.degrade)
applied to the validation photos of the same wallpaper packages that it trains on. A model can learn the
quirks of that pipeline and of those packages. This set changes both, as the issue that asked for quality "on
photos nobody trained on" measured it:

- **Photos**: OpenCV's sample photographs (Debian package opencv-doc, /usr/share/doc/opencv-doc/examples/data),
  the colour photographs of real scenes in it, one of each stereo or sequence pair (``PHOTOS``). They are
  older camera JPEGs: their own compression shows in the targets, as in users' photos.
- **Degradation**, deliberately unlike nightflow's (no unprocessing, no colour matrix, no white balance, no
  area downscaling, no row noise, no quantisation to 10–14 bits); it imports nothing from nightflow:
  1. 8-bit sRGB → linear with a pure 2.2 power (nightflow uses the piecewise sRGB curve);
  2. exposure ×2^EV, EV uniform in [−4.5, −2.5];
  3. at ×2 and ×4 a Gaussian blur of σ = 0.5·scale, then decimation by keeping every scale-th pixel (nightflow:
     Gaussian or elliptical blur, then box averaging);
  4. Poisson–Gaussian noise in linear light: photon count at white K log-uniform in [300, 3000], read-noise
     σ uniform in [0.0005, 0.003];
  5. clip to [0, 1], 2.2 power back, rounded to 8 bits, written as PNG.

Each photo is cut to a centre crop of 384×384 (after a 2× box downscale in linear light when its short side is
at least 768) and draws its EV and noise once from its own seed, so its ×1, ×2 and ×4 pairs share them.

    python scripts/make_foreign_pairs.py            # apt-get download opencv-doc (no root needed), then write
    python scripts/make_foreign_pairs.py --source DIR   # DIR already holds the photos (e.g. an unpacked opencv-doc)
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = "opencv-doc"
PACKAGE_DIR = "usr/share/doc/opencv-doc/examples/data"
# colour photographs of real scenes in opencv-doc's sample data, one per stereo/sequence pair; left out:
# renders (Blender_Suzanne), drawings and charts, a painting (starry_night), text and paper (sudoku,
# text_defocus), a motion-blurred target (licenseplate_motion) and images below 384 px
PHOTOS = (
    "aero1.jpg",
    "aloeL.jpg",
    "apple.jpg",
    "baboon.jpg",
    "board.jpg",
    "building.jpg",
    "ela_original.jpg",
    "fruits.jpg",
    "graf1.png",
    "home.jpg",
    "left.jpg",
    "leuvenA.jpg",
    "orange.jpg",
    "rubberwhale1.png",
    "squirrel_cls.jpg",
    "stuff.jpg",
)
SCALES = (1, 2, 4)
CROP = 384
GAMMA = 2.2
EV_RANGE = (-4.5, -2.5)
PHOTONS_RANGE = (300.0, 3000.0)
READ_RANGE = (0.0005, 0.003)


def load_photo(path: Path) -> np.ndarray:
    """The photo as linear-light float64 H×W×3, box-downscaled 2× when its short side is ≥ 2·CROP, centre-cropped
    to CROP×CROP."""
    srgb = np.asarray(Image.open(path).convert("RGB"), dtype=np.float64) / 255.0
    lin = srgb**GAMMA
    if min(lin.shape[:2]) >= 2 * CROP:
        h, w = (lin.shape[0] // 2) * 2, (lin.shape[1] // 2) * 2
        lin = lin[:h, :w].reshape(h // 2, 2, w // 2, 2, 3).mean(axis=(1, 3))
    h, w = lin.shape[:2]
    if min(h, w) < CROP:
        raise SystemExit(f"{path.name}: {w}×{h} is smaller than the {CROP} px crop")
    top, left = (h - CROP) // 2, (w - CROP) // 2
    return lin[top : top + CROP, left : left + CROP]


def gaussian_blur(lin: np.ndarray, sigma: float) -> np.ndarray:
    """Separable Gaussian blur (kernel radius 3σ, reflected borders) of an H×W×3 image."""
    radius = max(1, int(np.ceil(3 * sigma)))
    taps = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2)
    taps /= taps.sum()
    out = lin
    for axis in (0, 1):
        pad = [(0, 0)] * 3
        pad[axis] = (radius, radius)
        padded = np.pad(out, pad, mode="reflect")
        out = sum(
            t * np.take(padded, np.arange(i, i + out.shape[axis]), axis=axis) for i, t in enumerate(taps)
        )
    return out


def encode(lin: np.ndarray) -> np.ndarray:
    """Linear [0, 1] → 8-bit with the 2.2 power."""
    return np.round(np.clip(lin, 0.0, 1.0) ** (1.0 / GAMMA) * 255.0).astype(np.uint8)


def degrade(lin: np.ndarray, scale: int, draw: dict, rng: np.random.Generator) -> np.ndarray:
    """The dark low-resolution 8-bit input of one photo at ``scale`` with the photo's draws."""
    dark = lin * 2.0 ** draw["ev"]
    if scale > 1:
        dark = gaussian_blur(dark, 0.5 * scale)[scale // 2 :: scale, scale // 2 :: scale]
    photons = draw["photons"]
    noisy = rng.poisson(np.clip(dark, 0.0, None) * photons) / photons
    noisy = noisy + rng.normal(0.0, draw["read"], size=noisy.shape)
    return encode(noisy)


def draws(index: int) -> dict:
    """One photo's EV and noise levels, from its own seed (the same at every scale)."""
    rng = np.random.default_rng(1000 + index)
    return {
        "ev": float(rng.uniform(*EV_RANGE)),
        "photons": float(np.exp(rng.uniform(*np.log(PHOTONS_RANGE)))),
        "read": float(rng.uniform(*READ_RANGE)),
    }


def fetch_source(workdir: Path) -> Path:
    """Download and unpack opencv-doc (no installation, no root) and return its sample-data folder."""
    if subprocess.run(["apt-get", "download", PACKAGE], cwd=workdir).returncode != 0:
        raise SystemExit(f"apt-get download {PACKAGE} failed; pass --source DIR with the photos instead")
    deb = sorted(workdir.glob(f"{PACKAGE}_*.deb"))[-1]
    subprocess.run(["dpkg", "-x", str(deb), str(workdir / "root")], check=True)
    return workdir / "root" / PACKAGE_DIR


def write_pairs(source: Path, out: Path) -> list[dict]:
    """Write every photo's pairs at every scale under ``out``; returns one record per photo."""
    missing = [p for p in PHOTOS if not (source / p).is_file()]
    if missing:
        raise SystemExit(f"{source}: missing {', '.join(missing)}")
    records = []
    for index, name in enumerate(PHOTOS):
        lin = load_photo(source / name)
        draw = draws(index)
        stem = Path(name).stem
        for scale in SCALES:
            for sub in ("low", "high"):
                (out / f"x{scale}" / sub).mkdir(parents=True, exist_ok=True)
            rng = np.random.default_rng([1000 + index, scale])
            Image.fromarray(degrade(lin, scale, draw, rng)).save(out / f"x{scale}" / "low" / f"{stem}.png")
            Image.fromarray(encode(lin)).save(out / f"x{scale}" / "high" / f"{stem}.png")
        records.append({"name": stem, "file": name, **{k: round(v, 5) for k, v in draw.items()}})
        print(f"{stem}: EV {draw['ev']:+.2f}, photons {draw['photons']:.0f}, read {draw['read']:.4f}")
    return records


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=ROOT / "data" / "foreign")
    ap.add_argument("--source", type=Path, help="folder holding the photos (default: download opencv-doc)")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="nightflow-foreign-") as tmp:
        source = args.source or fetch_source(Path(tmp))
        records = write_pairs(source, args.out)
    meta = {
        "source": f"Debian package {PACKAGE}, {PACKAGE_DIR}",
        "pipeline": "scripts/make_foreign_pairs.py",
        "photos": records,
    }
    (args.out / "SOURCES.json").write_text(json.dumps(meta, indent=1))
    print(f"{len(records)} photos × {len(SCALES)} scales → {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
