"""Folder rules of each dataset: which low-quality file goes with which high-quality file, and its name.

Why separate from the Dataset classes: the rules are where real layouts differ (RELLISUR's duplicates folders,
LOL-v2's low/normal prefixes and mixed-case folder names, LOL-Blur's sequence/frame tree); each function here
returns plain ``PairRecord`` lists that one dataset class loads, so each rule is testable on its own.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from ..errors import UserError
from .io import list_images


@dataclass
class PairRecord:
    """One low-quality file, its high-quality partner (None for unpaired data) and a display name."""

    lq: Path
    hq: Path | None
    name: str


# ---------------------------------------------------------------------------------------------------- folder rules


def find_dir(parent: Path, *names: str) -> Path | None:
    """The first subfolder of ``parent`` whose name equals one of ``names`` ignoring case, else None."""
    if not parent.is_dir():
        return None
    subdirs = {p.name.lower(): p for p in sorted(parent.iterdir()) if p.is_dir()}
    for n in names:
        if n.lower() in subdirs:
            return subdirs[n.lower()]
    return None


def _require_dir(parent: Path, names: tuple[str, ...], what: str) -> Path:
    found = find_dir(parent, *names)
    if found is None:
        raise UserError(f"{what}: no folder {' or '.join(names)} in {parent}; check data.root and data.split")
    return found


def require_root(root: str) -> Path:
    if not root:
        raise UserError("data.root is empty; set it to the dataset folder")
    p = Path(root).expanduser()
    if not p.is_dir():
        raise UserError(f"data.root {p} is not a folder; check the path")
    return p


_PREFIX = re.compile(r"^(low|normal|high)[_-]?(?=.)", re.IGNORECASE)


def pair_key(rel: Path) -> str:
    """Matching key of a file: relative path without extension, lower-case, with a leading 'low'/'normal'/'high'
    dropped from the file name (LOL-v2 pairs low00001.png with normal00001.png)."""
    stem = _PREFIX.sub("", rel.stem)
    return "/".join([*(p.lower() for p in rel.parent.parts), stem.lower()])


def pair_folders(lq_dir: Path, hq_dir: Path, recursive: bool = True, what: str = "pairs") -> list[PairRecord]:
    """Pair every image in ``lq_dir`` with the image of the same name in ``hq_dir`` (see ``pair_key``)."""
    lq_files = list_images(lq_dir, recursive=recursive)
    hq_files = list_images(hq_dir, recursive=recursive)
    hq_by_key: dict[str, Path] = {}
    for f in hq_files:
        hq_by_key.setdefault(pair_key(f.relative_to(hq_dir)), f)
    records, missing = [], []
    for f in lq_files:
        rel = f.relative_to(lq_dir)
        partner = hq_by_key.get(pair_key(rel))
        if partner is None:
            missing.append(rel)
        else:
            records.append(PairRecord(f, partner, rel.with_suffix("").as_posix()))
    if missing:
        raise UserError(
            f"{what}: {len(missing)} of {len(lq_files)} images in {lq_dir} have no partner of the same name in "
            f"{hq_dir} (first: {missing[0]}); add the missing files or remove the extras"
        )
    return records


def parse_rellisur_name(stem: str) -> tuple[str, str, float | None]:
    """Split a RELLISUR LLLR file stem into (scene id, exposure tag, EV or None), leniently.

    The scene id is the text before the first '-'. The exposure format is not documented, so the first number
    in the tag ('2.5', '-3.25', 'ev-3_5', …) is read as the magnitude of an exposure *below* normal.
    """
    scene, _, tag = stem.partition("-")
    m = re.search(r"(\d+(?:[._]\d+)?)", tag)
    ev = -abs(float(m.group(1).replace("_", "."))) if m else None
    return scene, tag, ev


def _split_names(split: str) -> tuple[str, ...]:
    s = split.lower()
    if s in ("val", "valid", "validation"):
        return ("val", "valid", "validation")
    if s in ("test", "eval", "testing"):
        return ("test", "testing", "eval")
    return (s,)


def rellisur_records(root: Path, split: str, scale: int) -> list[PairRecord]:
    """RELLISUR: {Train,Val,Test}/LLLR/<scene>-<exp>.png paired by identical name with
    NLHR-Duplicates/X{s}/, falling back to NLHR/X{s}/<scene>.png. ``root`` may also be a split folder."""
    base = root if find_dir(root, "LLLR") else _require_dir(root, _split_names(split), "RELLISUR")
    lllr = _require_dir(base, ("LLLR",), "RELLISUR")
    dup_parent = find_dir(base, "NLHR-Duplicates")
    dup = find_dir(dup_parent, f"X{scale}") if dup_parent else None
    nlhr_parent = find_dir(base, "NLHR")
    nlhr = find_dir(nlhr_parent, f"X{scale}") if nlhr_parent else None
    if dup is None and nlhr is None:
        raise UserError(f"RELLISUR: neither NLHR-Duplicates/X{scale} nor NLHR/X{scale} exists in {base}")
    dup_files = {f.name.lower(): f for f in list_images(dup)} if dup else {}
    by_scene = {f.stem.split("-")[0].lower(): f for f in list_images(nlhr)} if nlhr else {}
    records = []
    for f in list_images(lllr):
        scene = parse_rellisur_name(f.stem)[0]
        hq = dup_files.get(f.name.lower()) or by_scene.get(scene.lower())
        if hq is None:
            raise UserError(
                f"RELLISUR: no ×{scale} target for LLLR/{f.name} (looked in NLHR-Duplicates/X{scale} and "
                f"NLHR/X{scale}); is the download complete?"
            )
        records.append(PairRecord(f, hq, f.stem))
    return records


def lol_records(root: Path, split: str) -> list[PairRecord]:
    """LOL: our485/{low,high} (train) and eval15/{low,high} (test); ``root`` may also be one of those."""
    if find_dir(root, "low") and find_dir(root, "high"):
        base = root
    else:
        names = ("our485",) if split.lower() == "train" else ("eval15",)
        base = _require_dir(root, names, "LOL")
    return pair_folders(_require_dir(base, ("low",), "LOL"), _require_dir(base, ("high",), "LOL"), what="LOL")


def lolv2_records(root: Path, split: str, subset: str) -> list[PairRecord]:
    """LOL-v2: {Real_captured,Synthetic}/{Train,Test}/{Low,Normal}; folder names matched case-insensitively
    (some copies use low/high); ``root`` may be the LOL-v2, subset or split folder."""
    low_names, high_names = ("Low",), ("Normal", "High")
    base = root
    if not find_dir(base, *low_names):
        sub = find_dir(base, "Real_captured", "Real") if subset == "real" else find_dir(base, "Synthetic")
        base = sub or base
        if not find_dir(base, *low_names):
            base = _require_dir(base, ("Train",) if split.lower() == "train" else ("Test",), "LOL-v2")
    lq = _require_dir(base, low_names, "LOL-v2")
    hq = _require_dir(base, high_names, "LOL-v2")
    return pair_folders(lq, hq, what="LOL-v2")


def lolblur_records(root: Path, split: str, lq_dir: str | None, hq_dir: str | None) -> list[PairRecord]:
    """LOL-Blur: {train,test}/<lq_dir>/<sequence>/<frame>.png paired with <hq_dir>/<sequence>/<frame>.png."""
    lq_name, hq_name = lq_dir or "low_blur_noise", hq_dir or "high_sharp_scaled"
    base = root if find_dir(root, lq_name) else _require_dir(root, _split_names(split), "LOL-Blur")
    lq = _require_dir(base, (lq_name,), "LOL-Blur")
    hq = _require_dir(base, (hq_name,), "LOL-Blur")
    return pair_folders(lq, hq, recursive=True, what="LOL-Blur")


_LQ_NAMES = ("low", "lq", "input", "inputs", "dark", "lllr")
_HQ_NAMES = ("high", "hq", "gt", "target", "targets", "normal", "nlhr")


def paired_records(
    root: Path, split: str, lq_dir: str | None, hq_dir: str | None, recursive: bool
) -> list[PairRecord]:
    """Any two folders of same-named images; default names low/high (also lq/hq, input/gt, …), optionally
    under a split subfolder."""
    lq_names = (lq_dir,) if lq_dir else _LQ_NAMES
    base = root
    if not find_dir(base, *lq_names):
        base = find_dir(root, *_split_names(split)) or root
    lq = _require_dir(base, lq_names, "paired data")
    hq = _require_dir(base, (hq_dir,) if hq_dir else _HQ_NAMES, "paired data")
    return pair_folders(lq, hq, recursive=recursive, what="paired data")


_ALL_SPLITS = ("train", "val", "valid", "validation", "test", "testing", "eval")


def split_dir(root: Path, split: str, sub: str | None) -> Path:
    """``root/<split>`` when it exists; ``root`` itself when it has no split folders at all (a flat folder)."""
    if sub:
        return _require_dir(root, (sub,), "data")
    found = find_dir(root, *_split_names(split))
    if found is not None:
        return found
    others = [p.name for p in sorted(root.iterdir()) if p.is_dir() and p.name.lower() in _ALL_SPLITS]
    if others:
        raise UserError(f"no '{split}' folder in {root} (it has {', '.join(others)}); check data.split")
    return root


def unpaired_records(root: Path, split: str, lq_dir: str | None, recursive: bool) -> list[PairRecord]:
    """A folder of low-light images without ground truth (LIME, MEF, DICM, NPE, your own photos)."""
    folder = split_dir(root, split, lq_dir)
    return [
        PairRecord(f, None, f.relative_to(folder).with_suffix("").as_posix())
        for f in list_images(folder, recursive=recursive)
    ]
