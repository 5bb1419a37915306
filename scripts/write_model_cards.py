"""Write the model card (nightflow/weights/<name>.md) of each bundled weights file.

The card states what the weights are, how they were trained (from the training facts that
scripts/bundle_weights.py stored in the file's metadata) and what they score on the shipped synthetic suite (from
the results.json of `nightflow benchmark benchmarks/suites/synthetic.yaml`), then on any other suite whose
results are given and that scores them (the JPEG variants: benchmarks/suites/jpeg-variants.yaml).

    python scripts/write_model_cards.py runs/benchmarks/synthetic/results.json \
        runs/benchmarks/jpeg-variants/results.json
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path

from nightflow.config import load_yaml
from nightflow.models.base import SAMPLE_TEMPERATURE
from nightflow.models.checkpoint import load_config, load_model, read_metadata
from nightflow.models.zoo import CONFIG_DIR, WEIGHTS_DIR, canonical, variant_base

SUITE = "benchmarks/suites/synthetic.yaml"
SPLIT = Path(__file__).resolve().parent / "photo_split.json"


def _train_photo_count() -> int:
    return sum(p["split"] == "train" for p in json.loads(SPLIT.read_text())["photos"])


def _photos_phrase(facts: dict) -> str:
    """Which training photos the weights' runs drew from (the counts bundle_weights.py recorded), stage by stage
    for weights trained in several runs."""
    total = _train_photo_count()
    stages = facts.get("stages") or [facts]
    counts = [int(s.get("train_photos", FIRST_TRAIN_PHOTOS)) for s in stages]
    if all(c == total for c in counts):
        return f"the {total} training photos"
    if len(stages) == 1:
        return f"{counts[0]} of today's {total} training photos (the photos added later were not in its run)"
    parts = [f"{c} photos for {s['steps']} steps" for c, s in zip(counts, stages)]
    return f"today's {total} training photos ({', then '.join(parts)})"


# cards this template cannot describe, kept as they are
HANDWRITTEN = {"ssflow-tiny": "self-supervised training, with its own losses and scores"}

# weights bundled before bundle_weights.py recorded the count were trained on the first 24 training photos
FIRST_TRAIN_PHOTOS = 24


def _scores(results: dict, scale: int, name: str, name_datasets: bool = False) -> list[str]:
    """The suite's rows for the bundled model ``name`` (its spec, with {scale} filled in, resolves to it) on its
    scale's datasets; each line names its dataset when ``name_datasets`` or when it is not labelled ``x{scale}``."""
    lines = []
    for cell in results["cells"]:
        model, mean = cell["model"], cell["result"]["mean"]
        spec = str(model.get("spec", "")).replace("{scale}", str(scale))
        if int(cell["result"]["data"]["scale"]) != scale or canonical(spec) != name:
            continue
        temperature = model.get("temperature") or 0.0
        parts = [f"{k} {v:.4g}" for k, v in mean.items() if isinstance(v, (int, float))]
        named = name_datasets or cell["dataset"] != f"x{scale}"
        where = f"{cell['dataset']}, " if named else ""
        ensemble = int(model.get("ensemble") or 1)
        averaged = f", self-ensemble of {ensemble} (`--ensemble {ensemble}`)" if ensemble > 1 else ""
        lines.append(f"- {where}temperature {temperature}{averaged}: " + ", ".join(parts))
    return lines


def _other_suites(others: list[dict], scale: int, name: str) -> str:
    """A section per further suite that scores ``name`` (empty when none does)."""
    text = ""
    for results in others:
        rows = _scores(results, scale, name, name_datasets=True)
        if not rows:
            continue
        suite = results["suite"]
        text += (
            f"\n## Scores on the {suite} suite\n`nightflow benchmark benchmarks/suites/{suite}.yaml`: "
            f"{results['description'].strip()}\n" + "\n".join(rows) + "\n"
        )
    return text


def _exposure_line(fit: dict | None, interpolated: bool = False) -> str:
    if not fit and interpolated:
        return 'the mix of the two files\' heads ("Interpolated" below), not refitted afterwards.'
    if not fit:
        return "trained jointly with the model (squared EV error against the oracle gain, weight 0.1)."
    photos = f"{fit['photos']} training photos" if "photos" in fit else "training photos"
    cv = fit.get("cross_validation")
    cv_note = (
        f" A {cv['folds']}-fold cross-validation that held whole training photos out gave "
        f"{cv['median_abs_ev']} EV median, {cv['rms_ev']} RMS."
        if cv
        else ""
    )
    return (
        f"trained jointly, then refitted alone on {fit['scenes']} synthetic scenes of the {photos} "
        f"({fit['steps']} Adam steps, `scripts/fit_exposure_head.py`); on {fit['validation_scenes']} scenes of "
        f"the validation photos its error went from {fit['before']['median_abs_ev']} to "
        f"{fit['after']['median_abs_ev']} EV (median |error|), RMS {fit['before']['rms_ev']} → "
        f"{fit['after']['rms_ev']} EV.{cv_note}"
    )


def _precision(amp: str | None) -> str:
    """How the run computed: the recipe's ``train.amp`` (or a note for runs made of segments)."""
    return {
        "bf16": "bf16 autocast on the CPU, flow arithmetic in float32",
        "none": "float32 throughout",
        None: "float32 throughout",
    }.get(amp, str(amp))


def _jpeg_phrase(facts: dict) -> str:
    """Which stages also saw JPEG-compressed inputs (``data.jpeg_prob``); empty when none did (stages bundled
    before the share was recorded had no JPEG step: it did not exist)."""
    return _share_phrase(
        facts,
        lambda s: float(s.get("jpeg_share", 0.0)),
        " Dark inputs saved as JPEGs of quality 60–95 (`data.jpeg_prob`)",
    )


def _share_phrase(facts: dict, share: Callable[[dict], float], what: str) -> str:
    """``what`` with the share of each training stage (``share(stage)``): "50%." for weights of one stage,
    "50% in the 1500 steps of stage 3, none before." for several; empty when every share is 0."""
    stages = facts.get("stages") or [facts]
    shares = [share(s) for s in stages]
    if not any(shares):
        return ""
    if len(stages) == 1:
        return f"{what}: {shares[0]:.0%}."
    parts = [
        f"{v:.0%} in the {s['steps']} steps of stage {i + 1}"
        for i, (v, s) in enumerate(zip(shares, stages))
        if v
    ]
    return f"{what}: {', '.join(parts)}, none before."


def _tone_curve_phrase(facts: dict) -> str:
    """Which stages also saw scenes developed without the tone curve (``data.tone_curve_prob`` < 1); empty when
    none did (stages bundled before the share was recorded always applied it: the option did not exist)."""
    return _share_phrase(
        facts,
        lambda s: 1.0 - float(s.get("tone_curve_share", 1.0)),
        " Scenes developed without the tone curve, so the dark input is the target darkened in linear light"
        " (`data.tone_curve_prob`)",
    )


def _power_curve_phrase(facts: dict) -> str:
    """Which stages also saw scenes encoded with a power law instead of the sRGB curve
    (``data.power_curve_prob``); empty when none did (stages bundled before the share was recorded had none)."""
    return _share_phrase(
        facts,
        lambda s: float(s.get("power_curve_share", 0.0)),
        " Scenes encoded with a power law (gamma 2.0–2.4) instead of the sRGB curve (`data.power_curve_prob`)",
    )


def _recipe(facts: dict, name: str) -> str:
    default = (
        f"nightflow train {name}-synthetic --set data.root=data/photos/train --set val.root=data/photos/val"
    )
    stages = facts.get("stages")
    if not stages:
        return f"`{facts.get('recipe', default)}`"
    return "; then ".join(f"`{s.get('recipe', default)}` ({s['steps']} steps)" for s in stages)


def _checkpoints(facts: dict) -> str:
    stages = facts.get("stages")
    if not stages:
        return f"`{facts.get('checkpoint', '?')}`"
    return ", then ".join(f"`{s.get('checkpoint', '?')}`" for s in stages)


def _mix_terms(mix: dict) -> tuple[str, str]:
    """How a recorded mix reads on the card: the share of the weights before it, and the rest of the sentence
    (the file it started from, the share of the checkpoint and the command that made it)."""
    alpha = float(mix["alpha"])
    return f"{1 - alpha:g}", (
        f"(`{mix['before']}`, sha256 {mix['before_sha256'][:12]}) + {alpha:g} × its checkpoint "
        f"(`python scripts/interpolate_weights.py BEFORE AFTER --alpha {alpha:g}`)"
    )


def _interpolation_line(facts: dict) -> str:
    """The card's lines for weights that are, or trained on from, a point between two files
    (``scripts/interpolate_weights.py``); empty for weights whose every stage is a training run's checkpoint."""
    lines = []
    if facts.get("interpolation"):
        before, rest = _mix_terms(facts["interpolation"])
        lines.append(
            f"\n- Interpolated: these weights (the exposure head's too) are {before} × the weights before the last "
            f"stage {rest}, so they have not trained all of the last stage's steps"
        )
    stages = facts.get("stages") or []
    for number, stage in enumerate(stages, 1):
        if stage.get("interpolation"):
            before, rest = _mix_terms(stage["interpolation"])
            lines.append(
                f"\n- Interpolated: stage {number} of {len(stages)} ended as {before} × the weights before it {rest}, "
                "and the stages after it trained on from that mix, so the iterations above count steps these "
                "weights have not fully trained"
            )
    return "".join(lines)


def _stage_precision(facts: dict) -> str:
    stages = facts.get("stages") or [facts]
    kinds = [_precision(s.get("amp")) for s in stages]
    if len(set(kinds)) == 1:
        return kinds[0]
    return "; then ".join(f"{k} ({s['steps']} steps)" for k, s in zip(kinds, stages))


def _inference_line(precisions: tuple[str, ...]) -> str:
    """How ``--precision auto`` runs these weights: bf16 only where measured within 1/255 of float32."""
    if "bf16" in precisions:
        return (
            "bf16 autocast where the hardware runs it faster (CUDA, AMX CPUs, AMD CPUs with avx512_bf16), within "
            "1/255 of float32 (`tests/test_precision.py`); float32 elsewhere"
        )
    return (
        "float32 everywhere: bf16 autocast moves these weights' output by more than 1/255 "
        "(`tests/test_precision.py`), so `--precision auto` never picks it"
    )


def _sampling_line(name: str, temperature: float) -> str:
    """The temperature of samples and heat-maps drawn without ``--temperature`` (``ModelConfig.sample_temperature``):
    measured where the model's own YAML sets it, its base's for a variant that does not, else nightflow's default."""
    if temperature == SAMPLE_TEMPERATURE:
        return f"temperature {temperature:g}, nightflow's default (`SAMPLE_TEMPERATURE`)"
    base = variant_base(name)
    if base is not None and "sample_temperature" not in load_yaml(CONFIG_DIR / f"{canonical(name)}.yaml"):
        return f"temperature {temperature:g}, its base's (measured on {base}'s weights; not swept on these)"
    return (
        f"temperature {temperature:g}, measured on these weights (the lowest LPIPS of one seeded sample in the "
        f"synthetic pairs' sweep, `benchmarks/suites/temperature.yaml`, and lower than at "
        f"{SAMPLE_TEMPERATURE:g} on the foreign pairs too, `temperature-foreign.yaml`)"
    )


def card(path: Path, results: dict, others: list[dict] | None = None) -> str:
    cfg = load_config(path)
    precisions = tuple(load_model(path).precisions)
    meta = read_metadata(path)
    facts = json.loads(meta.get("nightflow_training", "{}"))
    fit = json.loads(meta.get("nightflow_exposure_fit", "null"))
    patch = facts.get("patch_size", "?")
    scores = _scores(results, cfg.scale, cfg.name)
    further = _other_suites(others or [], cfg.scale, cfg.name)
    main_suite = (
        f"""
## Scores on the shipped synthetic suite
`nightflow benchmark {SUITE}` (validation photos, never seen in training, synthesised at ×{cfg.scale} with seed 0,
10 pairs, 384 px centre crops; PSNR on RGB, SSIM skimage convention, LPIPS AlexNet v0.1; `_gtmean` columns are
GT-mean rescaled, reported separately):
{chr(10).join(scores or ["- (not in the suite's results)"])}
"""
        if scores or not further
        else ""
    )
    steps, seconds = facts.get("steps", "?"), facts.get("wall_time_s", 0.0)
    return f"""# {cfg.name}

{cfg.description}. Task: {cfg.task}. Weights stored as float16 ({path.stat().st_size / 1e6:.1f} MB).
Inference (`--precision auto`): {_inference_line(precisions)}.
Samples and heat-maps without `--temperature`: {_sampling_line(cfg.name, cfg.sample_temperature)}.

## Training
- Data: low-light ×{cfg.scale} pairs synthesised on the fly (DFSR-LLE preset: unprocessing, −2.5 to −5 EV,
  Poisson–Gaussian noise, blur and decimation in linear light) from {_photos_phrase(facts)} of
  `scripts/photo_split.json` (Debian wallpaper packages and scikit-image photos, fetched by `make photos`);
  each {patch} px HR patch (batch 8) is cut from a 384 px scene that was degraded as a whole, and gets that
  scene's thumbnail and oracle exposure as its context (`docs/design.md`).{_jpeg_phrase(facts)}{_tone_curve_phrase(facts)}{_power_curve_phrase(facts)}
  {_stage_precision(facts)}.
  Nothing else: these weights have seen a few dozen photos and no real low-light capture.
- Exposure head: {_exposure_line(fit, "interpolation" in facts)}
- Recipe: {_recipe(facts, cfg.name)}
- Iterations: {steps} (checkpoint {_checkpoints(facts)}, EMA weights, decay 0.995), wall time
  {seconds / 60:.0f} min, on {facts.get("hardware", "?")}, sharing 2 cores with the other bundled models' runs.{_interpolation_line(facts)}
- Final logged losses: {facts.get("final_losses", {})}
{main_suite}{further}
## Limits
Trained briefly on synthetic degradations of a few dozen photos on a CPU: expect it to brighten and denoise
plausibly, not to match models trained on RELLISUR or LOL. Retrain with your data (README, "Train").
"""


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv:
        print(__doc__, file=sys.stderr)
        return 2
    results, *others = (json.loads(Path(a).read_text()) for a in argv)
    for path in sorted(WEIGHTS_DIR.glob("*.safetensors")):
        out = path.with_suffix(".md")
        if path.stem in HANDWRITTEN:
            print(f"kept {out} (written by hand: {HANDWRITTEN[path.stem]})")
            continue
        out.write_text(card(path, results, others))
        print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
