#!/usr/bin/env bash
# Train every bundled model and its same-budget learned baselines from their recipes, then bundle the flows.
# Usage: scripts/train_bundled.sh [STEP]   (STEP: which archived checkpoint to bundle; default: each run's last)
# Runs go to runs/<name>; each run uses one CPU thread so several can share a machine (or set OMP_NUM_THREADS).
set -euo pipefail
cd "$(dirname "$0")/.."
make photos
models="lolisrflow-x1-tiny lolisrflow-x2-tiny lolisrflow-x4-tiny regression-x2-tiny regression-x4-tiny sequential-x2-tiny sequential-x4-tiny"
for m in $models; do
  OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} .venv/bin/nightflow train "$m-synthetic" --set data.root=data/photos/train \
    --set val.root=data/photos/val --out "runs/$m" &
done
wait
for s in 1 2 4; do
  .venv/bin/python scripts/bundle_weights.py "runs/lolisrflow-x$s-tiny" "lolisrflow-x$s-tiny" ${1:+--step "$1"}
done
