#!/usr/bin/env python3
"""Fetch the freely licensed photos nightflow trains its shipped weights on, into data/photos/{train,val}.

Why: the public low-light datasets cannot be downloaded here, but Debian's wallpaper packages and
scikit-image's sample data contain real photographs. This script takes exactly the photos listed in
scripts/photo_split.json (renders and paintings in the same packages are left out), downscales each by its
listed factor with area averaging in linear light (which removes the wallpapers' JPEG artefacts), and writes
PNGs to data/photos/<split>/<name>.png plus data/photos/SOURCES.json (origin, author, licence).

Idempotent: photos already written are kept, and nothing is downloaded when all are there.
Needs: apt-get and dpkg (Debian/Ubuntu; `apt-get download` needs no root, `apt-get update` does) and the
installed scikit-image.

usage: python scripts/fetch_photos.py [--out data/photos] [--split scripts/photo_split.json]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

from nightflow.data import degrade as deg  # noqa: E402
from nightflow.data.io import read_image, to_tensor, write_image  # noqa: E402

DEBIAN_SOURCES = (
    "mate-backgrounds",
    "plasma-workspace-wallpapers",
    "lomiri-wallpapers-16.04",
    "lomiri-wallpapers-20.04",
)


def load_split(path: Path) -> list[dict]:
    """The photo list, checked: unique names, split train/val, integer factor 1–4, known source."""
    photos = json.loads(path.read_text())["photos"]
    names = [p["name"] for p in photos]
    if len(set(names)) != len(names):
        raise SystemExit(f"{path}: duplicate photo names")
    for p in photos:
        if p["split"] not in ("train", "val") or p["factor"] not in (1, 2, 3, 4):
            raise SystemExit(f"{path}: bad entry {p}")
        if p["source"] not in (*DEBIAN_SOURCES, "scikit-image"):
            raise SystemExit(f"{path}: unknown source {p['source']}")
    return photos


def downscale_photo(srgb: torch.Tensor, factor: int) -> torch.Tensor:
    """Centre-crop to a multiple of ``factor`` and area-downscale in linear light (3×H×W sRGB in, sRGB out)."""
    if factor == 1:
        return srgb
    h, w = srgb.shape[-2:]
    dh, dw = h % factor, w % factor
    crop = srgb[:, dh // 2 : h - (dh - dh // 2), dw // 2 : w - (dw - dw // 2)]
    return deg.linear_to_srgb(deg.downscale(deg.srgb_to_linear(crop), factor)).clamp(0.0, 1.0)


def _apt_download(packages: list[str], workdir: Path) -> None:
    cmd = ["apt-get", "download", *packages]
    if subprocess.run(cmd, cwd=workdir).returncode == 0:
        return
    print("apt-get download failed; running apt-get update once and retrying", file=sys.stderr)
    subprocess.run(["apt-get", "update"], check=True)
    subprocess.run(cmd, cwd=workdir, check=True)


def extract_debian(packages: list[str], workdir: Path) -> Path:
    """Download the .deb files and unpack them (no installation) under ``workdir``/root."""
    _apt_download(packages, workdir)
    root = workdir / "root"
    root.mkdir()
    for pkg in packages:
        debs = sorted(workdir.glob(f"{pkg}_*.deb"))
        if not debs:
            raise SystemExit(f"apt-get download produced no .deb for {pkg}")
        subprocess.run(["dpkg", "-x", str(debs[-1]), str(root)], check=True)
    return root


def _skimage_data_dir() -> Path:
    spec = importlib.util.find_spec("skimage")
    if spec is None or spec.origin is None:
        raise SystemExit("scikit-image is not installed (pip install scikit-image)")
    return Path(spec.origin).parent / "data"


def _credit(photo: dict, root: Path | None) -> dict:
    """Origin, author and licence of one photo, for SOURCES.json."""
    info = {k: photo[k] for k in ("source", "path", "split", "factor")}
    if photo.get("license_note"):
        info["license_note"] = photo["license_note"]
    if photo["source"] == "plasma-workspace-wallpapers" and root is not None:
        meta_path = root / Path(photo["path"]).parents[2] / "metadata.json"
        if meta_path.is_file():
            meta = json.loads(meta_path.read_text()).get("KPlugin", {})
            info["license"] = meta.get("License")
            info["author"] = ", ".join(a.get("Name", "") for a in meta.get("Authors", []))
    elif photo["source"] == "mate-backgrounds":
        info["license"] = "GPL-2+"
    elif photo["source"].startswith("lomiri-wallpapers") and root is not None:
        copyright_file = root / "usr/share/doc" / photo["source"] / "copyright"
        if copyright_file.is_file():
            info.update(debian_file_credit(copyright_file.read_text(), Path(photo["path"]).name))
    return info


def debian_file_credit(copyright_text: str, filename: str) -> dict:
    """Author and licence of ``filename`` from a machine-readable Debian copyright file (its ``Files:`` stanza
    that names the file, with or without a folder), or {} when no stanza names it."""
    for stanza in copyright_text.split("\n\n"):
        fields: dict[str, str] = {}
        for line in stanza.splitlines():
            key, sep, value = line.partition(":")
            if sep and not line.startswith(" "):
                fields[key.strip()] = value.strip()
        if any(Path(f).name == filename for f in fields.get("Files", "").split()):
            return {"author": fields.get("Copyright", ""), "license": fields.get("License", "")}
    return {}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    ap.add_argument("--out", type=Path, default=ROOT / "data" / "photos")
    ap.add_argument("--split", type=Path, default=ROOT / "scripts" / "photo_split.json")
    args = ap.parse_args(argv)

    photos = load_split(args.split)
    todo = [p for p in photos if not (args.out / p["split"] / f"{p['name']}.png").is_file()]
    if not todo:
        print(f"all {len(photos)} photos already in {args.out}")
        return 0
    packages = sorted({p["source"] for p in todo if p["source"] in DEBIAN_SOURCES})
    with tempfile.TemporaryDirectory(prefix="nightflow-photos-") as tmp:
        deb_root = extract_debian(packages, Path(tmp)) if packages else None
        sk_dir = _skimage_data_dir()
        credits_path = args.out / "SOURCES.json"
        credits = json.loads(credits_path.read_text()) if credits_path.is_file() else {}
        for p in todo:
            src = (deb_root / p["path"]) if p["source"] in DEBIAN_SOURCES else (sk_dir / p["path"])
            img = downscale_photo(to_tensor(read_image(src)), p["factor"])
            dest = write_image(args.out / p["split"] / f"{p['name']}.png", img, bit_depth=8)
            credits[p["name"]] = _credit(p, deb_root)
            print(
                f"{dest.relative_to(args.out)}: {img.shape[-1]}x{img.shape[-2]} from {p['path']} (/{p['factor']})"
            )
        args.out.mkdir(parents=True, exist_ok=True)
        credits_path.write_text(json.dumps(credits, indent=1, sort_keys=True))
    counts: dict[tuple[str, str], int] = {}
    for p in photos:
        counts[p["source"], p["split"]] = counts.get((p["source"], p["split"]), 0) + 1
    for (source, split), n in sorted(counts.items()):
        print(f"{source:30s} {split:5s} {n}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
