"""Copy a trained run's weights into the package (nightflow/weights/<name>.safetensors) as float16.

Why float16: the bundled models must stay small together (about 6 MB each); rounding the stored weights does not affect
invertibility (encode and decode use the same rounded weights, computed in float32). The run's training facts
(steps, wall time, hardware, recipe) go into the file's metadata for the model card.

    python scripts/bundle_weights.py runs/lolisrflow-x2-tiny lolisrflow-x2-tiny

A run that trained on from other weights (``train.init_weights``) is one stage of a longer training: pass
``--continues WEIGHTS`` (the bundled file it started from, read before it is overwritten) so that the card counts
every stage's steps, time and photos, not just the last run's:

    python scripts/bundle_weights.py runs/x2-more lolisrflow-x2-tiny --continues src/nightflow/weights/lolisrflow-x2-tiny.safetensors
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
from pathlib import Path

import torch
import yaml
from safetensors.torch import load_file, save_file

from nightflow.config import to_dict
from nightflow.data.degrade import get_preset
from nightflow.data.io import list_images
from nightflow.data.layouts import split_dir
from nightflow.errors import ConfigError
from nightflow.models import zoo
from nightflow.models.checkpoint import CONFIG_KEY, load_config, read_metadata
from nightflow.models.zoo import WEIGHTS_DIR, _resolve_checkpoint

NOT_LOSSES = frozenset({"kind", "step", "epoch", "lr", "grad_norm", "samples_per_s", "elapsed_s"})


def training_facts(run_dir: Path, step: int | None) -> dict:
    """Steps, wall time and last logged losses (up to ``step``) from the run's log.jsonl."""
    rows = [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines() if line.strip()]
    train = [r for r in rows if r.get("kind") == "train" and (step is None or r["step"] <= step)]
    last = train[-1]
    return {
        "steps": last["step"],
        "wall_time_s": round(last["elapsed_s"], 1),
        # every logged loss term (a model's own, e.g. SSFlow's pseudo_nll or reblur), not the step's bookkeeping
        "final_losses": {k: round(v, 4) for k, v in last.items() if k not in NOT_LOSSES},
    }


def run_hardware(meta: dict[str, str], threads: int | None = None) -> str:
    """Where the run trained, for the card: the device and thread count its checkpoint recorded (``threads``
    overrides a count the checkpoint lacks; checkpoints before the trainer recorded it say "not recorded"),
    never the bundling machine's own settings."""
    facts = recorded(meta)
    device = str(facts.get("device") or "cpu")
    count = facts.get("threads")
    if threads is not None:
        if count is not None and int(count) != threads:
            raise ConfigError(f"--threads {threads}: the run's checkpoint recorded {count} thread(s)")
        count = threads
    where = f"{platform.machine()} CPU" if device == "cpu" else device.upper()
    per_run = f"{int(count)} thread(s) per run" if count is not None else "thread count not recorded"
    return f"{where}, {per_run}, torch {torch.__version__}"


def training_photo_count(run_cfg: dict) -> int | None:
    """How many photos the run's synthetic data drew from (its data.root, as seen from here), for the card;
    None for other data formats or when the folder is not here."""
    data = run_cfg.get("data", {})
    root = Path(str(data.get("root", "")))
    if data.get("format") != "synthetic" or not str(data.get("root", "")) or not root.is_dir():
        return None
    return len(list_images(split_dir(root, str(data.get("split", "train")), None), recursive=True))


def recorded(meta: dict[str, str]) -> dict:
    """What the trainer recorded in a checkpoint's metadata (``Trainer._metadata``): under ``nightflow`` in
    trainer checkpoints, as top-level keys in model weights files."""
    return {**json.loads(meta.get("nightflow", "{}") or "{}"), **meta}


def _checkpoint_step(meta: dict[str, str]) -> int | None:
    """The training step stored in a trainer checkpoint's metadata (None for files without one)."""
    step = str(recorded(meta).get("step", ""))
    return int(step) if step.isdigit() else None


def run_amp(run_cfg: dict, meta: dict[str, str]) -> str | None:
    """The autocast a run trained with: what its checkpoint recorded (``amp``, the trainer's decision, also for
    ``train.amp: auto``), else the recipe's ``train.amp`` (checkpoints written before the trainer recorded it)."""
    amp = recorded(meta).get("amp")
    if amp:
        return amp
    return (run_cfg.get("train") or {}).get("amp")  # "auto" stays "auto": what it chose was not recorded


def _run_preset_share(run_cfg: dict, field: str, otherwise: float) -> float:
    """A share of a run's synthesis (a ``DegradeConfig`` field): the run's ``data.<field>`` when set, else its
    preset's; ``otherwise`` for data that is not synthesised."""
    data = run_cfg.get("data") or {}
    if data.get("format") != "synthetic":
        return otherwise
    if data.get(field) is not None:
        return float(data[field])
    return float(getattr(get_preset(str(data.get("preset", "dfsr-lle"))), field))


def run_jpeg_share(run_cfg: dict) -> float:
    """The share of a run's synthetic training inputs that were saved as JPEGs (0 for data not synthesised)."""
    return _run_preset_share(run_cfg, "jpeg_prob", 0.0)


def run_tone_curve_share(run_cfg: dict) -> float:
    """The share of a run's synthetic scenes developed with the tone curve (``data.tone_curve_prob``; 1 for
    data not synthesised, which says nothing about it)."""
    return _run_preset_share(run_cfg, "tone_curve_prob", 1.0)


def run_power_curve_share(run_cfg: dict) -> float:
    """The share of a run's synthetic scenes encoded with a power law instead of the sRGB curve
    (``data.power_curve_prob``; 0 for data not synthesised)."""
    return _run_preset_share(run_cfg, "power_curve_prob", 0.0)


def variant_config(src: Path, name: str) -> str | None:
    """The model config to store for weights bundled as the zoo variant ``name`` (JSON), None when ``name`` is
    not a variant. The run trained them as the variant's base, so its config carries the base's name: they take
    the variant's name, description and measured facts (``zoo.WEIGHT_FACTS``, e.g. ``bf16_inference: false``),
    and any other difference from the zoo's config is an error (the file would not be the architecture the zoo
    says)."""
    base = zoo.variant_base(name)
    if base is None:
        return None
    try:
        renamed = zoo.with_weight_facts(to_dict(load_config(src)), name, also=("name", "description"))
    except ConfigError as exc:
        raise ConfigError(f"{src}: {exc}; a variant shares its base's ({base}) architecture") from None
    return json.dumps(renamed)


STAGE_KEYS = (
    "steps",
    "wall_time_s",
    "checkpoint",
    "recipe",
    "train_photos",
    "amp",
    "patch_size",
    "jpeg_share",
    "tone_curve_share",
    "power_curve_share",
)


def chain_facts(base: dict, run: dict) -> dict:
    """Training facts of weights made by ``base``'s training and then ``run`` on top of it: summed steps and
    wall time, the last run's losses and hardware, and every stage listed in order under ``stages`` (a stage whose
    weights were interpolated keeps its ``interpolation`` record)."""
    stages = base.get("stages") or [{k: base[k] for k in STAGE_KEYS if k in base}]
    if "interpolation" in base:
        # the base's last stage was mixed with the weights before it (scripts/interpolate_weights.py): that stays
        # on the stage it describes, so the card can still say so once later stages train on from it
        stages = [*stages[:-1], {**stages[-1], "interpolation": base["interpolation"]}]
    stages = [*stages, {k: run[k] for k in STAGE_KEYS if k in run}]
    facts = dict(run)
    facts["steps"] = sum(int(s["steps"]) for s in stages)
    facts["wall_time_s"] = round(sum(float(s.get("wall_time_s", 0.0)) for s in stages), 1)
    facts["stages"] = stages
    return facts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("name", help="zoo name, e.g. lolisrflow-x2-tiny")
    parser.add_argument("--recipe", help="training command to record in the metadata")
    parser.add_argument(
        "--step", type=int, help="use the checkpoint of this step (default: the run's best/latest)"
    )
    parser.add_argument(
        "--threads",
        type=int,
        help="CPU threads the run trained with, for checkpoints written before the trainer recorded it",
    )
    parser.add_argument(
        "--continues",
        type=Path,
        metavar="WEIGHTS",
        help="weights file this run was initialised from (train.init_weights); its training facts become the "
        "earlier stages of these weights' (required for runs with train.init_weights)",
    )
    args = parser.parse_args(argv)
    if args.step is not None:
        name = f"step_{args.step:07d}"
        candidates = [
            args.run_dir / "checkpoints" / name / "model.safetensors",
            args.run_dir / "archive" / f"{name}.safetensors",
        ]
        src = next((c for c in candidates if c.is_file()), None)
        if src is None:
            print(f"no checkpoint of step {args.step} in {args.run_dir}", file=sys.stderr)
            return 2
    else:
        src = _resolve_checkpoint(args.run_dir)
    meta = read_metadata(src)
    # the step the chosen checkpoint holds (the best one may be earlier than the run's last logged step)
    step = args.step if args.step is not None else _checkpoint_step(meta)
    facts = training_facts(args.run_dir, step)
    facts["checkpoint"] = str(src.relative_to(args.run_dir))
    if step is not None and f"{step:07d}" not in facts["checkpoint"]:  # best/: say which step it holds
        facts["checkpoint"] += f" (step {step})"
    run_cfg = yaml.safe_load((args.run_dir / "config.yaml").read_text())
    facts["patch_size"] = run_cfg.get("data", {}).get("patch_size")
    facts["amp"] = run_amp(run_cfg, meta)
    try:
        facts["hardware"] = run_hardware(meta, args.threads)
    except ConfigError as e:
        print(e, file=sys.stderr)
        return 2
    facts["jpeg_share"] = run_jpeg_share(run_cfg)
    facts["tone_curve_share"] = run_tone_curve_share(run_cfg)
    facts["power_curve_share"] = run_power_curve_share(run_cfg)
    photos = training_photo_count(run_cfg)
    if photos is not None:
        facts["train_photos"] = photos
    if args.recipe:
        facts["recipe"] = args.recipe
    init = (run_cfg.get("train") or {}).get("init_weights")
    if init and args.continues is None:
        print(
            f"{args.run_dir} was initialised from {init}: pass --continues WEIGHTS (the file it started from) "
            "so that the card counts the earlier training too",
            file=sys.stderr,
        )
        return 2
    if args.continues is not None:
        if not init:
            print(f"{args.run_dir} has no train.init_weights: it continues nothing", file=sys.stderr)
            return 2
        base = json.loads(read_metadata(args.continues).get("nightflow_training", "null") or "null")
        if not base:
            print(f"{args.continues}: no training facts (nightflow_training) to continue", file=sys.stderr)
            return 2
        facts = chain_facts(base, facts)
    meta["nightflow_training"] = json.dumps(facts)
    try:
        renamed = variant_config(src, args.name)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 2
    if renamed is not None:
        meta[CONFIG_KEY] = renamed
    tensors = {k: (v.half() if v.is_floating_point() else v) for k, v in load_file(str(src)).items()}
    WEIGHTS_DIR.mkdir(parents=True, exist_ok=True)
    dst = WEIGHTS_DIR / f"{args.name}.safetensors"
    tmp = dst.with_name(f".{dst.name}.tmp")
    save_file(tensors, str(tmp), metadata=meta)
    os.replace(tmp, dst)
    print(
        f"{src} → {dst} ({dst.stat().st_size / 1e6:.1f} MB), {facts['steps']} steps, {facts['wall_time_s']} s"
        + (f" in {len(facts['stages'])} stages" if "stages" in facts else "")
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
