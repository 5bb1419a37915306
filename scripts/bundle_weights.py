"""Copy a trained run's weights into the package (nightflow/weights/<name>.safetensors) as float16.

Why float16: the bundled models must stay small together (about 30 MB for five); rounding the stored weights does not affect
invertibility (encode and decode use the same rounded weights, computed in float32). The run's training facts
(steps, wall time, hardware, recipe) go into the file's metadata for the model card.

    python scripts/bundle_weights.py runs/lolisrflow-x2-tiny lolisrflow-x2-tiny
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

from nightflow.data.io import list_images
from nightflow.data.layouts import split_dir
from nightflow.models.checkpoint import read_metadata
from nightflow.models.zoo import WEIGHTS_DIR, _resolve_checkpoint


def training_facts(run_dir: Path, step: int | None) -> dict:
    """Steps, wall time and last logged losses (up to ``step``) from the run's log.jsonl."""
    rows = [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines() if line.strip()]
    train = [r for r in rows if r.get("kind") == "train" and (step is None or r["step"] <= step)]
    last = train[-1]
    return {
        "steps": last["step"],
        "wall_time_s": round(last["elapsed_s"], 1),
        "final_losses": {
            k: round(v, 4) for k, v in last.items() if k in ("nll", "l1", "total", "color", "exposure")
        },
        "hardware": f"{platform.machine()} CPU, {torch.get_num_threads()} thread(s) per run, torch {torch.__version__}",
    }


def training_photo_count(run_cfg: dict) -> int | None:
    """How many photos the run's synthetic data drew from (its data.root, as seen from here), for the card;
    None for other data formats or when the folder is not here."""
    data = run_cfg.get("data", {})
    root = Path(str(data.get("root", "")))
    if data.get("format") != "synthetic" or not str(data.get("root", "")) or not root.is_dir():
        return None
    return len(list_images(split_dir(root, str(data.get("split", "train")), None), recursive=True))


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
    facts = training_facts(args.run_dir, args.step)
    facts["checkpoint"] = str(src.relative_to(args.run_dir))
    run_cfg = yaml.safe_load((args.run_dir / "config.yaml").read_text())
    facts["patch_size"] = run_cfg.get("data", {}).get("patch_size")
    facts["amp"] = run_cfg.get("train", {}).get("amp")
    photos = training_photo_count(run_cfg)
    if photos is not None:
        facts["train_photos"] = photos
    if args.recipe:
        facts["recipe"] = args.recipe
    meta["nightflow_training"] = json.dumps(facts)
    tensors = {k: (v.half() if v.is_floating_point() else v) for k, v in load_file(str(src)).items()}
    WEIGHTS_DIR.mkdir(parents=True, exist_ok=True)
    dst = WEIGHTS_DIR / f"{args.name}.safetensors"
    tmp = dst.with_name(f".{dst.name}.tmp")
    save_file(tensors, str(tmp), metadata=meta)
    os.replace(tmp, dst)
    print(
        f"{src} → {dst} ({dst.stat().st_size / 1e6:.1f} MB), {facts['steps']} steps, {facts['wall_time_s']} s"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
