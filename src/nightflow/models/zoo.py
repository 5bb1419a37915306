"""The model zoo: named configurations (YAML in nightflow/configs/) and bundled weights (nightflow/weights/).

A name resolves to ``configs/<name>.yaml``; short aliases (``lolisrflow-x2``) point at the bundled size. Weights
for a name live in ``weights/<name>.safetensors`` with a model card ``weights/<name>.md``; nothing is downloaded.

A *variant* is the same architecture with other weights (``lolisrflow-x2-tiny-jpeg``: trained on JPEG inputs). Its
YAML names its base (``variant_of: lolisrflow-x2-tiny``) and may set only ``name``, ``description`` and the facts that
were measured on its weights rather than chosen for the architecture (``WEIGHT_FACTS``: whether bf16 moves its output by
more than 1/255, how far a tile edge reaches, which temperature its samples are best drawn at), so the architecture
is written once and a variant can never drift from its base.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from ..config import from_dict, load_yaml, to_dict
from ..errors import ConfigError, ModelNotFoundError, UnknownModelError
from .checkpoint import load_model

if TYPE_CHECKING:
    from . import AnyModelConfig

PACKAGE = Path(__file__).resolve().parents[1]
CONFIG_DIR = PACKAGE / "configs"
WEIGHTS_DIR = PACKAGE / "weights"
ALIASES = (
    {f"lolisrflow-x{s}": f"lolisrflow-x{s}-tiny" for s in (1, 2, 4)}
    | {f"lolisrflow-x{s}-jpeg": f"lolisrflow-x{s}-tiny-jpeg" for s in (1, 2, 4)}
    | {"uptflow": "uptflow-tiny", "ssflow": "ssflow-tiny"}
)
# ModelConfig fields measured on trained weights (tests/test_precision.py, scripts/measure_tiling.py,
# benchmarks/suites/temperature.yaml): other weights
# of the same architecture may differ in them, so a variant may set them
WEIGHT_FACTS = frozenset({"bf16_inference", "tile_margin", "sample_temperature"})
VARIANT_KEYS = (
    frozenset({"variant_of", "name", "description"}) | WEIGHT_FACTS
)  # all a variant's YAML may hold


def config_names() -> list[str]:
    """Names of every model configuration shipped with nightflow."""
    return sorted(p.stem for p in CONFIG_DIR.glob("*.yaml"))


def canonical(name: str) -> str:
    return ALIASES.get(name, name)


def parse_model_config(data: dict[str, Any], path: str = "") -> AnyModelConfig:
    """A model config from plain data; its ``kind`` (default "flow") picks the dataclass, strictly."""
    from . import model_config_class

    return from_dict(model_config_class(data, path), data, path)


def variant_base(name: str) -> str | None:
    """The zoo config a variant's weights share their architecture with (None for a config of its own)."""
    path = CONFIG_DIR / f"{canonical(name)}.yaml"
    base = load_yaml(path).get("variant_of") if path.is_file() else None
    return None if base is None else str(base)


def with_weight_facts(stored: dict[str, Any], name: str, also: tuple[str, ...] = ()) -> dict[str, Any]:
    """``stored`` (a weights file's model config, as plain data) with ``name``'s weight facts (``WEIGHT_FACTS``,
    measured on the weights and written in the zoo YAML) and the keys in ``also`` taken from the zoo config. Any
    other key where the two differ is a ``ConfigError`` naming it: the file would not be the architecture the zoo
    says. Used when weights are bundled (``scripts/bundle_weights.py``) and when a fact measured afterwards is
    written into the bundled file (``scripts/store_weight_facts.py``)."""
    want = to_dict(get_config(name))
    stamped = {**stored, **{k: want[k] for k in (*also, *sorted(WEIGHT_FACTS))}}
    differ = sorted(k for k in set(want) | set(stamped) if want.get(k) != stamped.get(k))
    if differ:
        raise ConfigError(f"its model config differs from {canonical(name)}'s in {', '.join(differ)}")
    return stamped


def _config_data(path: Path) -> dict[str, Any]:
    """A zoo YAML as plain data, a variant's merged onto its base's (strictly: see the module docstring)."""
    data = load_yaml(path)
    if "variant_of" not in data:
        return data
    extra = sorted(set(data) - VARIANT_KEYS)
    if extra:
        raise ConfigError(
            f"a variant (variant_of: {data['variant_of']}) may set only name, description and its weights' measured "
            f"facts ({', '.join(sorted(WEIGHT_FACTS))}), not {', '.join(extra)}"
        )
    base = CONFIG_DIR / f"{data['variant_of']}.yaml"
    if not base.is_file():
        raise ConfigError(f"variant_of: unknown model '{data['variant_of']}'")
    base_data = load_yaml(base)
    if "variant_of" in base_data:
        raise ConfigError(f"variant_of: '{data['variant_of']}' is itself a variant; name its base")
    return {**base_data, **{k: v for k, v in data.items() if k != "variant_of"}}


def get_config(name: str) -> AnyModelConfig:
    """The config of a zoo name or alias (strict: a misspelt key in the YAML is an error naming it)."""
    path = CONFIG_DIR / f"{canonical(name)}.yaml"
    if not path.is_file():
        raise ConfigError(f"unknown model '{name}'; known: {', '.join(config_names() + sorted(ALIASES))}")
    try:
        return parse_model_config(_config_data(path))
    except ConfigError as exc:
        raise ConfigError(f"{path.name}: {exc}") from exc


def weights_path(name: str) -> Path:
    return WEIGHTS_DIR / f"{canonical(name)}.safetensors"


@functools.cache
def _param_count(name: str) -> int:
    from . import build_any, count_params

    return count_params(build_any(get_config(name)))


def list_models(count_params: bool = True) -> list[dict[str, Any]]:
    """One dict per zoo model: name, aliases, scale, task, params, bundled (weights shipped), description."""
    rows = []
    for name in config_names():
        cfg = get_config(name)
        rows.append(
            {
                "name": name,
                "aliases": [a for a, target in ALIASES.items() if target == name],
                "scale": cfg.scale,
                "task": cfg.task,
                "params": _param_count(name) if count_params else None,
                "bundled": weights_path(name).is_file(),
                "description": cfg.description,
            }
        )
    return rows


def _resolve_checkpoint(path: Path) -> Path:
    """A weights file, a checkpoint folder holding model.safetensors, or a run folder (best, else latest)."""
    if path.is_file():
        return path
    if (path / "model.safetensors").is_file():
        return path / "model.safetensors"
    ckpts = path / "checkpoints"
    if ckpts.is_dir():
        if (ckpts / "best" / "model.safetensors").is_file():
            return ckpts / "best" / "model.safetensors"
        steps = sorted(ckpts.glob("step_*/model.safetensors"))
        if steps:
            return steps[-1]
    raise ModelNotFoundError(
        f"{path}: no model.safetensors found (expected a weights file, checkpoint or run folder)"
    )


def load_restorer(
    name_or_path: str | Path, device: str | torch.device = "cpu"
) -> tuple[torch.nn.Module, dict]:
    """(restorer, info) for a zoo name with bundled weights, a weights file, or a trainer run/checkpoint folder.

    A path or name that leads to no weights is a ``ModelNotFoundError`` (a FileNotFoundError); a name that is
    neither in the zoo nor a path an ``UnknownModelError`` (a ValueError); both are one-line ``UserError``s.
    """
    text = str(name_or_path)
    path = Path(text).expanduser()
    if path.exists():
        weights = _resolve_checkpoint(path)
        return load_model(weights, device), {"name": text, "path": str(weights)}
    if canonical(text) in config_names():
        weights = weights_path(text)
        if not weights.is_file():
            raise ModelNotFoundError(
                f"model '{text}' has no bundled weights; train it (`nightflow train CONFIG.yaml`) and pass the "
                f"checkpoint path, or pick a bundled model from `nightflow models`"
            )
        card = weights.with_suffix(".md")
        info = {"name": canonical(text), "path": str(weights), "card": str(card) if card.is_file() else None}
        return load_model(weights, device), info
    if any(sep in text for sep in ("/", "\\")) or text.endswith(".safetensors"):
        raise ModelNotFoundError(f"checkpoint not found: {text}")
    raise UnknownModelError(
        f"unknown model '{text}'; run `nightflow models` to list the zoo, or pass a checkpoint path"
    )


def load(name_or_path: str | Path, device: str | torch.device = "cpu"):
    """``nightflow.load``: a ready-to-use :class:`nightflow.api.Model` ("auto" device picks CUDA when present)."""
    from ..api import Model
    from ..inference import resolve_device

    restorer, info = load_restorer(name_or_path, resolve_device(device))
    return Model(restorer, info)
