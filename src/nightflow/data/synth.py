"""Build a paired low-light low-resolution dataset from a folder of photos, in the RELLISUR folder layout.

Why RELLISUR's layout: one loader (``format: rellisur``) then reads real and synthetic data alike. As in
RELLISUR, one low-light low-resolution image (LLLR) serves every scale and the normal-light targets grow with the
scale: with scales {1, 2, 4} a photo cropped to a multiple of 4 is the ×4 target, the LLLR is degraded from it at
×4 (1/4 of its size), and the ×2 and ×1 targets are the photo area-downscaled in linear light by 2 and 4:

    OUT/LLLR/<scene>-<|EV|>.png          e.g. 00001-3.25.png = 3.25 EV below normal
    OUT/NLHR/X{s}/<scene>.png            the target at scale s (s × the LLLR size)
    OUT/NLHR-Duplicates/X{s}/<LLLR name> a copy of that target under each LLLR name
    OUT/manifest.json                    settings, sources, and every drawn degradation value and seed

Each LLLR image gets its own seed derived from (seed, photo index, exposure index), so the output is the same
for a seed and an interrupted run resumes where it stopped (finished files are kept, missing ones written).
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from ..atomic import write_text_atomic
from ..errors import UserError
from . import degrade as deg
from .io import list_images, read_image, to_tensor, write_image
from .transforms import crop_to_multiple

MANIFEST = "manifest.json"
MANIFEST_VERSION = 1


@dataclass
class SynthOptions:
    """What to synthesise; everything here is recorded in the manifest and must match on resume."""

    preset: str = "dfsr-lle"
    scales: tuple[int, ...] = (1, 2, 4)
    ev_range: tuple[float, float] | None = None  # None: the preset's range; equal ends: a fixed EV
    per_image: int = 1  # LLLR exposures per photo (RELLISUR has 5), EVs stratified over the range
    seed: int = 0
    blur: bool = False  # add camera-shake motion blur to the preset
    bit_depth: int = 8
    recursive: bool = False


@dataclass
class SynthSummary:
    photos: int
    written: int
    skipped: int
    manifest: Path


def item_seed(seed: int, photo_index: int, exposure_index: int) -> int:
    """The 63-bit seed of one LLLR image, independent of processing order."""
    state = np.random.SeedSequence([seed & 0xFFFFFFFF, photo_index, exposure_index]).generate_state(2)
    return (int(state[0]) << 32 | int(state[1])) & ((1 << 63) - 1)


def exposure_tag(ev: float) -> str:
    """File-name tag of an exposure: its magnitude below normal with two decimals (−3.25 EV → '3.25')."""
    return f"{abs(ev):.2f}"


def _degrade_config(opts: SynthOptions) -> deg.DegradeConfig:
    try:
        cfg = deg.get_preset(opts.preset)
    except ValueError as exc:
        raise UserError(str(exc)) from None
    changes: dict[str, Any] = {}
    if opts.ev_range is not None:
        changes["ev_range"] = (float(min(opts.ev_range)), float(max(opts.ev_range)))
    if opts.blur:
        changes["motion_blur_prob"] = 1.0
    cfg = dataclasses.replace(cfg, **changes)
    bad = [s for s in opts.scales if s not in cfg.scales]
    if bad or not opts.scales:
        raise UserError(f"preset '{cfg.name}' supports scales {list(cfg.scales)}; got {list(opts.scales)}")
    if opts.per_image < 1:
        raise UserError(f"--per-image must be at least 1, got {opts.per_image}")
    if opts.bit_depth not in (8, 16):
        raise UserError(f"--bit-depth must be 8 or 16, got {opts.bit_depth}")
    return cfg


def _settings(opts: SynthOptions, cfg: deg.DegradeConfig) -> dict[str, Any]:
    raw = {
        "preset": dataclasses.asdict(cfg),
        "scales": sorted(opts.scales),
        "per_image": opts.per_image,
        "seed": opts.seed,
        "bit_depth": opts.bit_depth,
    }
    return json.loads(json.dumps(raw))  # tuples → lists, so it compares equal to what a manifest holds


def _check_paths(src: Path, out: Path, recursive: bool) -> None:
    s, o = src.resolve(), out.resolve()
    if s == o or s.is_relative_to(o) or (recursive and o.is_relative_to(s)):
        raise UserError(
            f"output folder {out} must not be or contain the source folder {src} (nor lie inside it)"
        )


def _write_json(path: Path, data: dict[str, Any]) -> None:
    write_text_atomic(path, json.dumps(data, indent=1, sort_keys=True))


def _with_new_preset_defaults(settings: Any) -> Any:
    """An older manifest's settings with the preset fields added since (e.g. ``jpeg_prob``) at their defaults,
    which reproduce what that version made, so a folder made before a new field existed can still be resumed."""
    if not isinstance(settings, dict) or not isinstance(settings.get("preset"), dict):
        return settings
    defaults = json.loads(json.dumps(dataclasses.asdict(deg.DegradeConfig())))
    missing = {k: v for k, v in defaults.items() if k not in settings["preset"] and k != "name"}
    return {**settings, "preset": {**settings["preset"], **missing}}


def _load_manifest(path: Path, settings: dict[str, Any], overwrite: bool) -> dict[str, Any]:
    fresh = {
        "version": MANIFEST_VERSION,
        "layout": "rellisur",
        "settings": settings,
        "sources": {},
        "items": {},
    }
    if overwrite or not path.exists():
        return fresh
    try:
        old = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise UserError(f"{path} is unreadable ({exc}); remove it or pass --overwrite") from None
    if _with_new_preset_defaults(old.get("settings")) != settings:
        raise UserError(
            f"{path.parent} was made with different settings (preset, scales, EVs, seed or bit depth); "
            "use another output folder or pass --overwrite"
        )
    return old


def _targets(hr: torch.Tensor, scales: list[int]) -> dict[int, torch.Tensor]:
    """Targets for each scale from the largest-scale image, area-downscaled in linear light."""
    top = max(scales)
    linear = deg.srgb_to_linear(hr)
    return {
        s: hr if s == top else deg.linear_to_srgb(deg.downscale(linear, top // s)).clamp(0, 1) for s in scales
    }


def _stratified_ev(gen: torch.Generator, ev_range: tuple[float, float], k: int, n: int) -> float:
    lo, hi = ev_range
    u = float(torch.rand((), generator=gen, dtype=torch.float64))
    return round(lo + (hi - lo) * (k + u) / n, 2)


def synthesize_folder(
    src: str | os.PathLike[str],
    out: str | os.PathLike[str],
    opts: SynthOptions,
    *,
    overwrite: bool = False,
    progress: bool = True,
) -> SynthSummary:
    """Write the dataset; existing finished files are kept unless ``overwrite`` (then everything is redone)."""
    src_p, out_p = Path(src), Path(out)
    cfg = _degrade_config(opts)
    if not src_p.is_dir():
        raise UserError(f"source {src_p} is not a folder of photos; check the path")
    _check_paths(src_p, out_p, opts.recursive)
    sources = list_images(src_p, recursive=opts.recursive)
    scales = sorted(opts.scales)
    top = max(scales)
    out_p.mkdir(parents=True, exist_ok=True)
    manifest_path = out_p / MANIFEST
    manifest = _load_manifest(manifest_path, _settings(opts, cfg), overwrite)
    written = skipped = 0
    last_save = time.monotonic()
    try:
        for i, photo in enumerate(tqdm(sources, desc="synth", unit="photo", disable=not progress)):
            scene = f"{i + 1:05d}"
            rel = photo.relative_to(src_p).as_posix()
            known = manifest["sources"].get(scene)
            if known is not None and known != rel and not overwrite:
                raise UserError(
                    f"scene {scene} was made from {known} but the source folder now lists {rel} there; "
                    "use another output folder or pass --overwrite"
                )
            entry = manifest["items"].get(scene)
            if entry is not None and not overwrite and all((out_p / f).is_file() for f in entry["files"]):
                skipped += 1
                continue
            entry, files = _synth_photo(photo, scene, i, cfg, opts, scales, top)
            entry["source"] = rel
            for relpath, img in files.items():
                path = out_p / relpath
                if overwrite or not path.exists():
                    write_image(path, img, bit_depth=opts.bit_depth, overwrite=overwrite)
                    written += 1
            manifest["sources"][scene] = rel
            manifest["items"][scene] = entry
            if time.monotonic() - last_save > 10.0:
                _write_json(manifest_path, manifest)
                last_save = time.monotonic()
    finally:
        _write_json(manifest_path, manifest)
    return SynthSummary(photos=len(sources), written=written, skipped=skipped, manifest=manifest_path)


def _synth_photo(
    photo: Path,
    scene: str,
    index: int,
    cfg: deg.DegradeConfig,
    opts: SynthOptions,
    scales: list[int],
    top: int,
) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """All images of one photo (relative path → 3×H×W tensor) and its manifest entry."""
    hr = crop_to_multiple(to_tensor(read_image(photo)), top)
    if hr.shape[-1] < top or hr.shape[-2] < top:
        raise UserError(f"{photo} is smaller than {top}×{top} pixels; remove it or lower --scales")
    targets = _targets(hr, scales)
    files: dict[str, torch.Tensor] = {f"NLHR/X{s}/{scene}.png": t for s, t in targets.items()}
    exposures = []
    used: set[str] = set()
    for k in range(opts.per_image):
        seed = item_seed(opts.seed, index, k)
        gen = torch.Generator().manual_seed(seed)
        ev = _stratified_ev(gen, cfg.ev_range, k, opts.per_image)
        lq, params = deg.degrade(hr, top, cfg, gen, ev=ev, seed=seed)
        name = f"{scene}-{exposure_tag(ev)}"
        if name in used:  # two exposures rounded to the same tag (e.g. a fixed EV): keep both
            name = f"{name}_{k}"
        used.add(name)
        files[f"LLLR/{name}.png"] = lq
        for s, t in targets.items():
            files[f"NLHR-Duplicates/X{s}/{name}.png"] = t
        exposures.append({"name": f"{name}.png", "seed": seed, "params": params.to_dict()})
    entry = {
        "hr_size": [int(hr.shape[-2]), int(hr.shape[-1])],
        "lllr": exposures,
        "files": sorted(files),
    }
    return entry, files
