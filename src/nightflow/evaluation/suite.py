"""Benchmark suites: a YAML list of models × datasets, parsed strictly, planned into cells before any work.

Why plan first: a misspelt model, a dataset label that does not exist or a ×4 model in a suite with only ×2
data must fail in the first second, not after an hour of evaluation. A cell is one (model, dataset) pair of
the same scale; baselines take every dataset's scale, trained models only their own. A spec may name one model
per scale with ``{scale}`` (``sequential-x{scale}-tiny``), so one table row spans ×2 and ×4 as in the papers.

Data roots: a relative ``data.root`` is taken under the data root, which is ``--data-root`` if given, else the
suite's ``data_root`` (relative to the suite file), else ``$NIGHTFLOW_DATA``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from ..config import from_dict, load_yaml
from ..ensemble import check as check_ensemble
from ..errors import ConfigError, UserError
from .spec import SpecInfo, inspect_spec

DATA_ROOT_ENV = "NIGHTFLOW_DATA"
DEFAULT_OUTPUT = "runs/benchmarks"
SCALE_FIELD = "{scale}"


@dataclass
class ModelEntry:
    """One row of the table: a model spec at a stated temperature."""

    spec: str  # zoo name, checkpoint path or baseline:NAME; "{scale}" is replaced by each dataset's scale
    label: str = ""  # default: the spec
    group: str = ""  # table section, e.g. "sequential", "joint", "classical"
    temperature: float = 0.0  # 0 = mean path (PSNR/SSIM); 0.8 = sampled (LPIPS), as flow papers report
    metrics: list[str] | None = None  # default: the suite's metrics
    datasets: list[str] | None = None  # dataset labels to run on (default: every dataset of a matching scale)
    # self-ensemble size of the mean path (nightflow.ensemble; 1 = none, temperature 0 only)
    ensemble: int = 1


@dataclass
class DatasetEntry:
    """One column group: a dataset (``data`` = ``nightflow.data.DataConfig`` keys, strictly)."""

    label: str
    data: dict[str, Any]
    crop_border: int | None = None  # default: the suite's
    limit: int | None = None  # first N images only


@dataclass
class FigureSpec:
    """Side-by-side centre crops: input (pixel-replicated to the target size), each model, ground truth."""

    enabled: bool = True
    images: int = 2  # first N images of each dataset, one row each
    crop: int = 128  # crop side in target pixels
    models: list[str] | None = None  # model labels to show (default: all)


@dataclass
class PublishedEntry:
    """Numbers copied from a paper, shown in the table for context and marked as published."""

    label: str
    values: dict[str, dict[str, float]]  # dataset label → metric → value
    group: str = ""
    source: str = ""


@dataclass
class Suite:
    name: str
    models: list[ModelEntry]
    datasets: list[DatasetEntry]
    description: str = ""
    data_root: str | None = None
    output: str | None = None  # default: runs/benchmarks/<name> (relative to the working directory)
    metrics: list[str] = field(default_factory=lambda: ["psnr", "ssim", "lpips"])
    gt_mean: bool = False
    gt_mean_variant: Literal["bt601", "llflow"] = "bt601"
    crop_border: int = 0
    seed: int = 0  # noise of sampled rows; synthetic data has its own data.seed
    tile: int | None = None  # None = tile only when memory needs it
    device: Literal["auto", "cpu", "cuda"] = "auto"
    figure: FigureSpec = field(default_factory=FigureSpec)
    published: list[PublishedEntry] = field(default_factory=list)


@dataclass
class Cell:
    """One evaluation of the plan."""

    model: ModelEntry
    info: SpecInfo
    dataset: DatasetEntry
    data: Any  # DataConfig with its root resolved
    scale: int
    metrics: list[str]
    crop_border: int


def _check_unique(labels: list[str], what: str) -> None:
    seen: set[str] = set()
    for label in labels:
        if not label.strip():
            raise ConfigError(f"{what}: empty label")
        if label in seen:
            raise ConfigError(f"{what}: label '{label}' is used twice; labels must be unique")
        seen.add(label)


def _check_metrics(names: list[str], where: str) -> None:
    from ..metrics import METRICS

    for name in names:
        if name not in METRICS:
            raise ConfigError(f"{where}: unknown metric '{name}'; choose from {', '.join(METRICS)}")
    if not names:
        raise ConfigError(f"{where}: no metric named")


def parse_suite(data: dict[str, Any]) -> Suite:
    """A Suite from plain data: unknown keys (also inside ``data:``) and dangling labels are errors."""
    from ..data.datasets import DataConfig

    suite = from_dict(Suite, data)
    for m in suite.models:
        m.label = m.label or m.spec
    _check_unique([m.label for m in suite.models], "models")
    _check_unique([d.label for d in suite.datasets], "datasets")
    if not suite.models or not suite.datasets:
        raise ConfigError("a suite needs at least one entry under 'models' and one under 'datasets'")
    _check_metrics(suite.metrics, "metrics")
    labels = {d.label for d in suite.datasets}
    for i, m in enumerate(suite.models):
        if m.metrics is not None:
            _check_metrics(m.metrics, f"models[{i}].metrics")
        if m.temperature < 0:
            raise ConfigError(f"models[{i}].temperature must be >= 0, got {m.temperature}")
        try:
            check_ensemble(m.ensemble, m.temperature, f"models[{i}].ensemble")
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        for name in m.datasets or []:
            if name not in labels:
                raise ConfigError(
                    f"models[{i}].datasets: no dataset labelled '{name}'; have {sorted(labels)}"
                )
    for i, d in enumerate(suite.datasets):
        from_dict(DataConfig, d.data, f"datasets[{i}].data")  # strict check now; built with the root later
        if d.crop_border is not None and d.crop_border < 0:
            raise ConfigError(f"datasets[{i}].crop_border must be >= 0")
    for i, p in enumerate(suite.published):
        for name in p.values:
            if name not in labels:
                raise ConfigError(
                    f"published[{i}].values: no dataset labelled '{name}'; have {sorted(labels)}"
                )
    if suite.figure.images < 0 or suite.figure.crop < 8:
        raise ConfigError("figure.images must be >= 0 and figure.crop >= 8")
    for name in suite.figure.models or []:
        if name not in {m.label for m in suite.models}:
            raise ConfigError(f"figure.models: no model labelled '{name}'")
    return suite


def load_suite(path: str | Path) -> Suite:
    """Read and check a suite YAML file (errors name the file and the key path)."""
    try:
        return parse_suite(load_yaml(path))
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from exc


def data_root(suite: Suite, suite_path: Path, override: str | Path | None) -> Path | None:
    """The folder relative ``data.root`` entries live under (see the module docstring), or None if unset."""
    if override:
        return Path(override).expanduser()
    if suite.data_root:
        root = Path(suite.data_root).expanduser()
        return root if root.is_absolute() else (suite_path.resolve().parent / root).resolve()
    env = os.environ.get(DATA_ROOT_ENV)
    return Path(env).expanduser() if env else None


def data_config(entry: DatasetEntry, index: int, root: Path | None) -> Any:
    """The entry's DataConfig for evaluation (split defaults to test) with its root resolved."""
    from ..data.datasets import DataConfig

    raw = {"split": "test", **entry.data, "augment": False}
    given = Path(str(raw.get("root", ""))).expanduser()
    if not raw.get("root"):
        raise ConfigError(f"datasets[{index}].data.root is empty; set it to the dataset folder")
    if not given.is_absolute():
        if root is None:
            raise UserError(
                f"dataset '{entry.label}' has a relative root '{given}'; pass --data-root DIR or set "
                f"{DATA_ROOT_ENV} to the folder that holds it"
            )
        given = root / given
    raw["root"] = str(given)
    return from_dict(DataConfig, raw, f"datasets[{index}].data")


def _inspect(entry: ModelEntry, index: int, scale: int) -> SpecInfo | None:
    """The spec for data of ``scale`` (``{scale}`` in a spec is replaced); None if a template has no such model."""
    templated = SCALE_FIELD in entry.spec
    spec = entry.spec.replace(SCALE_FIELD, str(scale))
    try:
        return inspect_spec(spec)
    except UserError as exc:
        if templated and entry.datasets is None:
            return None  # e.g. sequential-x{scale}-tiny has no x1 model: that dataset is not this row's
        raise UserError(f"models[{index}] '{entry.label}': {exc}") from exc


def plan_suite(suite: Suite, suite_path: Path, root_override: str | Path | None = None) -> list[Cell]:
    """Every (model, dataset) cell, models in suite order; model names are checked, weights are not loaded."""
    root = data_root(suite, suite_path, root_override)
    configs = [data_config(d, i, root) for i, d in enumerate(suite.datasets)]
    cells: list[Cell] = []
    for i, m in enumerate(suite.models):
        matched, scales = 0, set()
        for d, cfg in zip(suite.datasets, configs):
            if m.datasets is not None and d.label not in m.datasets:
                continue
            info = _inspect(m, i, cfg.scale)
            if info is not None and info.scale is not None:
                scales.add(info.scale)
            if info is None or (info.scale is not None and info.scale != cfg.scale):
                if m.datasets is not None and info is not None:
                    raise UserError(
                        f"model '{m.label}' restores ×{info.scale} but dataset '{d.label}' is ×{cfg.scale}; "
                        f"remove it from the model's datasets"
                    )
                continue
            border = suite.crop_border if d.crop_border is None else d.crop_border
            cells.append(Cell(m, info, d, cfg, cfg.scale, list(m.metrics or suite.metrics), border))
            matched += 1
        if matched == 0:
            have = ", ".join(f"×{s}" for s in sorted(scales)) or "no scale"
            raise UserError(
                f"model '{m.label}' ({m.spec}: {have}) matches no dataset of the suite; add a dataset of its "
                f"scale, or fix the spec"
            )
    return cells


def output_dir(suite: Suite, override: str | Path | None) -> Path:
    if override:
        return Path(override).expanduser()
    return Path(suite.output).expanduser() if suite.output else Path(DEFAULT_OUTPUT) / suite.name
