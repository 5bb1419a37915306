"""Run a planned suite cell by cell; each finished cell is saved, so an interrupted benchmark resumes.

Why a cache per cell: a suite can take hours; a cell's file records a fingerprint of everything its numbers
depend on (model entry, weights file size and time, data config, metric options), and is reused only while
that fingerprint matches. Models are loaded once for all their cells.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from .. import __version__, ensemble
from ..config import to_dict
from ..errors import UserError
from .engine import EvalOptions, evaluate
from .figure import CropBox, crop_box
from .outputs import write_json
from .spec import ResolvedModel, resolve_model
from .suite import Cell, Suite

CELLS = "cells"


@dataclass
class CellResult:
    cell: Cell
    result: dict[str, Any]  # EvalResult.to_dict()
    crops: dict[int, Path] = field(default_factory=dict)  # figure row → output crop PNG
    cached: bool = False


@dataclass
class FigureRows:
    """The images a dataset's figure shows: crop boxes plus the input and ground-truth crops."""

    names: list[str]
    boxes: list[CropBox]
    inputs: list[torch.Tensor]  # 3×c×c, input pixel-replicated to the target grid
    targets: list[torch.Tensor | None]  # 3×c×c, or None for unpaired data


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("._") or "x"


def cell_name(cell: Cell) -> str:
    """File stem of a cell: readable labels plus a short hash of them, so 'a+b' and 'a b' never collide."""
    key = hashlib.sha256(f"{cell.model.label}\0{cell.dataset.label}".encode()).hexdigest()[:6]
    return f"{slug(cell.model.label)}__{slug(cell.dataset.label)}_{key}"


def eval_options(suite: Suite, cell: Cell) -> EvalOptions:
    return EvalOptions(
        metrics=cell.metrics,
        temperature=cell.model.temperature,
        gt_mean=suite.gt_mean,
        gt_mean_variant=suite.gt_mean_variant,
        crop_border=cell.crop_border,
        seed=suite.seed,
        tile=suite.tile,
        limit=cell.dataset.limit,
        ensemble=cell.model.ensemble,
    )


def fingerprint(suite: Suite, cell: Cell) -> str:
    """Hash of everything a cell's numbers and crops depend on."""
    weights = cell.info.weights
    stamp = None
    if weights is not None and weights.is_file():
        st = weights.stat()
        stamp = [str(weights.resolve()), st.st_size, st.st_mtime_ns]
    model, options = to_dict(cell.model), to_dict(eval_options(suite, cell))
    for entry in (model, options):  # cells scored before the self-ensemble existed keep their fingerprints
        if entry.get("ensemble") == 1:
            del entry["ensemble"]
    payload = {
        "model": model,
        "spec": cell.info.spec,
        "weights": stamp,
        "data": to_dict(cell.data),
        "options": options,
        "figure": [suite.figure.images, suite.figure.crop],
        "nightflow": __version__,
    }
    if cell.model.ensemble != 1:  # which members were averaged: cells of another scheme are recomputed
        payload["ensemble_scheme"] = ensemble.SCHEME
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:16]


def figure_rows(dataset: Any, count: int, side: int, scale: int) -> FigureRows:
    """Crop boxes (one common size) and input/GT crops of the first ``count`` items of ``dataset``."""
    items = [dataset[i] for i in range(min(count, len(dataset)))]
    if not items:
        return FigureRows([], [], [], [])
    sizes = [(it["lq"].shape[-2] * scale, it["lq"].shape[-1] * scale) for it in items]
    common = min(side, *(min(h, w) for h, w in sizes))
    boxes = [crop_box(h, w, scale, common) for h, w in sizes]
    inputs, targets = [], []
    for it, box in zip(items, boxes):
        lq = it["lq"][
            :, box.y // scale : (box.y + box.size) // scale, box.x // scale : (box.x + box.size) // scale
        ]
        inputs.append(lq.repeat_interleave(scale, -2).repeat_interleave(scale, -1))
        targets.append(box.cut(it["hq"]) if "hq" in it else None)
    return FigureRows([str(it.get("name", i)) for i, it in enumerate(items)], boxes, inputs, targets)


def _load_cached(path: Path, fp: str) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    try:
        saved = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return saved if saved.get("fingerprint") == fp else None


def run_cells(
    suite: Suite,
    cells: list[Cell],
    out_dir: Path,
    device: torch.device,
    *,
    fresh: bool = False,
    progress: bool = True,
) -> tuple[list[CellResult], dict[str, FigureRows]]:
    """Evaluate every cell (reusing matching saved cells unless ``fresh``); also the figure rows per dataset."""
    from ..data.datasets import build_dataset
    from ..data.io import write_image

    cell_dir = out_dir / CELLS
    cell_dir.mkdir(parents=True, exist_ok=True)
    datasets: dict[str, Any] = {}
    rows: dict[str, FigureRows] = {}
    for cell in cells:  # build every dataset first: a bad root fails before any model runs
        label = cell.dataset.label
        if label not in datasets:
            datasets[label] = build_dataset(cell.data, train=False)
            n = suite.figure.images if suite.figure.enabled else 0
            n = min(n, cell.dataset.limit or n)  # only scored images have output crops
            rows[label] = figure_rows(datasets[label], n, suite.figure.crop, cell.scale)
    results: dict[int, CellResult] = {}
    loaded: tuple[str, ResolvedModel] | None = None
    model: ResolvedModel | None = None
    order = sorted(range(len(cells)), key=lambda k: cells[k].info.spec)  # each model is loaded once
    bar = tqdm(order, desc="benchmark", unit="cell", disable=not progress, dynamic_ncols=True)
    for k in bar:
        cell = cells[k]
        name = cell_name(cell)
        bar.set_postfix_str(name)
        fp = fingerprint(suite, cell)
        json_path = cell_dir / f"{name}.json"
        fig = rows[cell.dataset.label]
        crops = {i: cell_dir / f"{name}.crop{i}.png" for i in range(len(fig.boxes))}
        saved = None if fresh else _load_cached(json_path, fp)
        if saved is not None and all(p.is_file() for p in crops.values()):
            results[k] = CellResult(cell, saved["result"], crops, cached=True)
            continue
        if cell.info.kind == "baseline":
            model = resolve_model(cell.info.spec, cell.scale, device)
        else:
            if loaded is None or loaded[0] != cell.info.spec:
                model = loaded = None  # free the previous model before loading the next
                loaded = (cell.info.spec, resolve_model(cell.info.spec, cell.scale, device))
            model = loaded[1]

        def keep_crop(index: int, item: dict[str, Any], out: torch.Tensor, fig=fig, crops=crops) -> None:
            if index in crops:
                write_image(crops[index], fig.boxes[index].cut(out[0]), overwrite=True)

        options = eval_options(suite, cell)
        if not model.restorer.tiling.tileable:
            options.tile = (
                None  # the suite's tile size is for models that tile; whole-image methods run whole
            )
        result = evaluate(
            model,
            datasets[cell.dataset.label],
            options,
            data_info={"label": cell.dataset.label, **to_dict(cell.data)},
            device=device,
            progress=progress,
            desc=name,
            on_output=keep_crop,
        ).to_dict()
        write_json(json_path, {"fingerprint": fp, "result": result}, overwrite=True)
        results[k] = CellResult(cell, result, crops)
    bar.close()
    return [results[k] for k in range(len(cells))], rows


def check_weights(cells: list[Cell], skip_missing: bool) -> tuple[list[Cell], list[str]]:
    """Drop (``skip_missing``) or refuse cells whose model weights file does not exist, before any work."""
    missing = [c for c in cells if not c.info.available]
    if missing and not skip_missing:
        c = missing[0]
        raise UserError(
            f"model '{c.model.label}' ({c.info.spec}) has no weights at {c.info.weights}; train it and point the "
            f"suite at the checkpoint, or pass --skip-missing to leave out {len(missing)} such cell(s)"
        )
    names = list(dict.fromkeys(f"{c.model.label} ({c.info.spec})" for c in missing))
    return [c for c in cells if c.info.available], names
