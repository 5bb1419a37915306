"""Benchmark reports: a Markdown table in the papers' layout, a long-format CSV and a complete JSON.

Why three: the Markdown table is for reading (rows = methods grouped like RELLISUR's Table 7, a column group
per dataset), the CSV for re-analysis (one row per model × dataset), the JSON for provenance (every per-image
value, the conventions, the device). Every metric column names its convention in the notes under the table;
published numbers from papers are marked as such.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from .. import __version__
from ..config import to_dict
from ..data.io import read_image
from .figure import compose
from .runner import CellResult, FigureRows
from .suite import Suite

COST_COLUMNS = ["params", "seconds_per_image"]


def metric_columns(suite: Suite, results: list[CellResult]) -> list[str]:
    """All metric columns in suite order (then extra per-model metrics), each followed by its GT-mean twin."""
    order: list[str] = []
    for name in [*suite.metrics, *(c for r in results for c in r.result["columns"])]:
        base = name.removesuffix("_gtmean")
        if base not in order:
            order.append(base)
    present = {c for r in results for c in r.result["columns"]}
    present |= {m for p in suite.published for values in p.values.values() for m in values}
    out = []
    for base in order:
        out += [c for c in (base, f"{base}_gtmean") if c in present]
    return out


def fmt(column: str, value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if isinstance(value, str):
        return value
    if column.startswith(("psnr", "lr_psnr")):
        return f"{value:.2f}"
    if column == "params":
        return f"{int(value):,}"
    if column == "seconds_per_image":
        return f"{value:.3g}"
    return f"{value:.4f}"


def _arrow(column: str) -> str:
    from ..metrics import METRICS

    name = column.removesuffix("_gtmean")
    if name not in METRICS:
        return ""
    metric = METRICS[name]
    return "↑" if metric.higher_is_better else "↓"


def _rows(suite: Suite, results: list[CellResult]) -> list[dict[str, Any]]:
    """Table rows (measured models, then published entries) ordered by group of first appearance."""
    by_label: dict[str, dict[str, Any]] = {}
    for r in results:
        m = r.cell.model
        row = by_label.setdefault(
            m.label,
            {
                "label": m.label,
                "group": m.group,
                "temperature": None if r.cell.info.kind == "baseline" else m.temperature,
                "params": r.result["model"]["params"],
                "measured": True,
                "cells": {},
            },
        )
        row["cells"][r.cell.dataset.label] = {**r.result["mean"]}
    rows = list(by_label.values())
    for p in suite.published:
        rows.append(
            {
                "label": f"{p.label} (published)",
                "group": p.group,
                "temperature": None,
                "params": None,
                "cells": {d: dict(v) for d, v in p.values.items()},
                "source": p.source,
            }
        )
    groups: list[str] = []
    for row in rows:
        if row["group"] not in groups:
            groups.append(row["group"])
    return sorted(rows, key=lambda row: groups.index(row["group"]))


def markdown(suite: Suite, results: list[CellResult], device: str, skipped: list[str]) -> str:
    """The report: main table, cost table, conventions and data notes."""
    from ..metrics import list_metrics

    datasets = [d.label for d in suite.datasets if any(r.cell.dataset.label == d.label for r in results)]
    columns = metric_columns(suite, results)
    rows = _rows(suite, results)
    shown = [(d, c) for d in datasets for c in columns if any(c in row["cells"].get(d, {}) for row in rows)]
    head = ["Group", "Model", "T"] + [f"{d} {c}{_arrow(c)}" for d, c in shown]
    lines = [f"# Benchmark: {suite.name}", ""]
    if suite.description:
        lines += [suite.description.strip(), ""]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in rows:
        temp = "–" if row["temperature"] is None else f"{row['temperature']:g}"
        cells = [fmt(c, row["cells"].get(d, {}).get(c)) for d, c in shown]
        lines.append("| " + " | ".join([row["group"] or "–", row["label"], temp, *cells]) + " |")
    lines += ["", f"## Cost (device: {device})", ""]
    cost_head = ["Model", "Params"] + [f"{d} s/image" for d in datasets]
    lines += ["| " + " | ".join(cost_head) + " |", "|" + "---|" * len(cost_head)]
    for row in rows:
        if not row.get("measured"):
            continue
        secs = [fmt("seconds_per_image", row["cells"].get(d, {}).get("seconds_per_image")) for d in datasets]
        lines.append("| " + " | ".join([row["label"], fmt("params", row["params"]), *secs]) + " |")
    info = list_metrics()
    lines += ["", "## Conventions", ""]
    for c in columns:
        base = c.removesuffix("_gtmean")
        extra = (
            f"; output rescaled to the GT's mean grey ({suite.gt_mean_variant} weights)" if c != base else ""
        )
        lines.append(f"- **{c}**: {info.get(base, base)}{extra}")
    lines.append(
        "- **T**: sampling temperature (0 = the flow's mean path; baselines are deterministic); sampled rows use "
        f"one sample per image with noise seeded by (seed {suite.seed}, image index)"
    )
    lines.append(f"- seconds per image: restoration only (no metrics), after one warm-up, on {device}")
    lines += ["", "## Data", ""]
    for d in suite.datasets:
        r = next((r for r in results if r.cell.dataset.label == d.label), None)
        if r is None:
            continue
        cfg = r.cell.data
        crop = f", centre crop {cfg.patch_size} px" if cfg.patch_size else ""
        crop += f", LQ cropped to {cfg.crop_lq} px" if cfg.crop_lq else ""
        seed = ""
        if cfg.format == "synthetic":
            seed = f", {cfg.preset} preset, seed {cfg.seed}"
            if cfg.jpeg_prob is not None:
                seed += f", JPEG share {cfg.jpeg_prob:g}"
            if cfg.jpeg_quality is not None:
                low, high = cfg.jpeg_quality
                seed += f", JPEG quality {low}" if low == high else f", JPEG quality {low}-{high}"
            if cfg.tone_curve_prob is not None:
                seed += f", tone-curve share {cfg.tone_curve_prob:g}"
            if cfg.power_curve_prob is not None:
                seed += f", power-curve share {cfg.power_curve_prob:g}"
        lines.append(
            f"- **{d.label}**: {cfg.format} `{cfg.root}` split {cfg.split}, ×{cfg.scale}, "
            f"{r.result['data']['images']} images{crop}{seed}, crop border {r.cell.crop_border}"
        )
    for p in suite.published:
        if p.source:
            lines.append(f"- {p.label} (published): {p.source}")
    if skipped:
        lines += ["", f"Left out (no weights): {', '.join(skipped)}"]
    lines += ["", f"nightflow {__version__}", ""]
    return "\n".join(lines)


def csv_rows(suite: Suite, results: list[CellResult], device: str) -> tuple[list[dict[str, Any]], list[str]]:
    """Long format: one row per (model, dataset), published entries included with kind 'published'."""
    columns = metric_columns(suite, results)
    head = [
        "model",
        "group",
        "spec",
        "kind",
        "temperature",
        "dataset",
        "scale",
        "images",
        *columns,
        *COST_COLUMNS,
        "device",
        "source",
    ]
    out = []
    for r in results:
        m, res = r.cell.model, r.result
        out.append({
            "model": m.label, "group": m.group, "spec": res["model"]["spec"], "kind": res["model"]["kind"],
            "temperature": m.temperature, "dataset": r.cell.dataset.label, "scale": r.cell.scale,
            "images": res["data"]["images"], **res["mean"], "params": res["model"]["params"], "device": device,
        })  # fmt: skip
    scales = {r.cell.dataset.label: r.cell.scale for r in results}
    for p in suite.published:
        for d, values in p.values.items():
            out.append({"model": p.label, "group": p.group, "kind": "published", "dataset": d,
                        "scale": scales.get(d), **values, "source": p.source})  # fmt: skip
    return out, head


def json_report(suite: Suite, results: list[CellResult], device: str, skipped: list[str]) -> dict[str, Any]:
    """Everything: settings, conventions, every cell with its per-image values, published entries."""
    from ..metrics import list_metrics

    info = list_metrics()
    columns = metric_columns(suite, results)
    return {
        "suite": suite.name,
        "description": suite.description,
        "nightflow": __version__,
        "device": device,
        "settings": {k: v for k, v in to_dict(suite).items() if k not in ("models", "datasets", "published")},
        "metric_descriptions": {c: info[c] for c in columns if c in info},
        "cells": [
            {
                "model": {**to_dict(r.cell.model), **r.result["model"]},
                "dataset": r.cell.dataset.label,
                "cached": r.cached,
                "result": r.result,
            }
            for r in results
        ],
        "published": to_dict(suite.published),
        "skipped": skipped,
    }


def figure_grid(suite: Suite, dataset: str, rows: FigureRows, results: list[CellResult]) -> np.ndarray | None:
    """The dataset's crop figure (input ×s, each model in suite order, GT), or None without rows or models."""
    wanted = suite.figure.models
    cells = [
        r
        for r in results
        if r.cell.dataset.label == dataset and (wanted is None or r.cell.model.label in wanted)
    ]
    if not rows.boxes or not cells:
        return None
    scale = cells[0].cell.scale
    headers = [f"input (x{scale}, pixel-replicated)"]
    headers += [r.cell.model.label + ("" if r.cell.info.kind == "baseline" else f" T={r.cell.model.temperature:g}")
                for r in cells]  # fmt: skip
    paired = rows.targets[0] is not None
    if paired:
        headers.append("ground truth")
    tiles: list[list[Any]] = []
    captions: list[list[str]] = []
    for i, name in enumerate(rows.names):
        row: list[Any] = [rows.inputs[i]]
        caps = [name]
        for r in cells:
            row.append(read_image(r.crops[i]) if i in r.crops and r.crops[i].is_file() else None)
            value = r.result["images"][i].get("psnr") if i < len(r.result["images"]) else None
            caps.append(f"{value:.2f} dB" if isinstance(value, float) else "")
        if paired:
            row.append(rows.targets[i])
            caps.append("")
        tiles.append(row)
        captions.append(caps)
    return compose(headers, tiles, captions)
