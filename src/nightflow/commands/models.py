"""List the model zoo: names, scales, tasks, parameter counts and whether weights are bundled.

Use a name with `nightflow enhance --model NAME` or `nightflow.load(NAME)`; models without bundled weights
must be trained first (`nightflow train`) and loaded from their checkpoint path.

examples:
  nightflow models
  nightflow models --json
"""

from __future__ import annotations

import argparse
import json

COLUMNS = ("name", "scale", "task", "params", "bundled", "description")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print the list as JSON instead of a table")


def human_count(n: int | float | None) -> str:
    """1234567 -> '1.23M': parameter counts a person can compare at a glance."""
    if n is None:
        return "?"
    n = float(n)
    for unit, size in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= size:
            return f"{n / size:.3g}{unit}"
    return f"{int(n)}"


def format_table(rows: list[dict]) -> str:
    """Plain-text table with aligned columns; the description column is last and not padded."""
    cells = [
        [
            str(r.get("name", "")) + "".join(f" ({a})" for a in r.get("aliases") or []),
            f"x{r['scale']}" if r.get("scale") is not None else "?",
            str(r.get("task", "")),
            human_count(r.get("params")),
            "yes" if r.get("bundled") else "no",
            str(r.get("description", "")),
        ]
        for r in rows
    ]
    header = [c.upper() for c in COLUMNS]
    widths = [max(len(row[i]) for row in [header, *cells]) for i in range(len(COLUMNS) - 1)]
    lines = []
    for row in [header, *cells]:
        lines.append("  ".join(c.ljust(w) for c, w in zip(row, widths)) + "  " + row[-1])
    return "\n".join(line.rstrip() for line in lines)


def run(args: argparse.Namespace) -> int:
    import nightflow

    rows = list(nightflow.list_models())
    if args.json:
        print(json.dumps(rows, indent=2, default=str))
    else:
        print(format_table(rows))
        if not any(r.get("bundled") for r in rows):
            print(
                "\nno weights are bundled yet: train with `nightflow train` and pass the checkpoint path to --model"
            )
    return 0
