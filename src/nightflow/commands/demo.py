"""Run the demo: brighten and upscale the bundled dark sample photos (x2 and x4) with the bundled weights.

Writes <sample>_x2.png, <sample>_x4.png and before_after.png into demo_out/ in the current folder (or -o DIR).
The samples are package data, so this works from any folder once nightflow is installed; the same as
`python -m nightflow.demo`.

examples:
  nightflow demo
  nightflow demo -o /tmp/nightflow-demo
"""

from __future__ import annotations

import argparse
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "-o", "--out", type=Path, default=Path("demo_out"), help="output folder (default demo_out/)"
    )


def run(args: argparse.Namespace) -> int:
    from ..data.io import check_writable_folder
    from ..demo import run_demo

    check_writable_folder(args.out)  # a one-line error before any model work
    return run_demo(args.out)
