"""Run a benchmark suite: models and baselines on datasets → Markdown/CSV/JSON table and a crop figure.

A suite is a YAML file (strict: unknown keys are errors) listing models (spec, label, group, temperature),
datasets (nightflow DataConfig entries; synthetic ones from a photo folder with a fixed seed), metrics,
gt_mean, crop_border and the output folder. Each model runs on every dataset of its scale (baselines on all).
Writes OUT/results.md, results.csv, results.json and figure_<dataset>.png; finished cells are kept in
OUT/cells/, so an interrupted run picks up where it stopped. Shipped suites: benchmarks/suites/synthetic.yaml
and benchmarks/suites/rellisur.yaml (needs the dataset: --data-root DIR or NIGHTFLOW_DATA).

examples:
  nightflow benchmark benchmarks/suites/synthetic.yaml
  nightflow benchmark benchmarks/suites/rellisur.yaml --data-root ~/datasets --device cuda
  nightflow benchmark my_suite.yaml --dry-run          # check the suite and list its cells
  nightflow benchmark my_suite.yaml --skip-missing --limit 2 --out /tmp/quick
"""

from __future__ import annotations

import argparse
from pathlib import Path

REPORT_FILES = ("results.md", "results.csv", "results.json")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("suite", type=Path, metavar="SUITE.yaml", help="benchmark suite file")
    parser.add_argument("--out", type=Path, default=None, help="output folder (default: the suite's output)")
    parser.add_argument(
        "--data-root", type=Path, default=None, help="folder that relative dataset roots are under"
    )
    parser.add_argument(
        "--device", choices=("auto", "cpu", "cuda"), default=None, help="default: the suite's"
    )
    parser.add_argument(
        "--limit", type=int, default=None, help="score only the first N images of each dataset"
    )
    parser.add_argument("--skip-missing", action="store_true", help="leave out models without weights")
    parser.add_argument("--dry-run", action="store_true", help="check the suite, list its cells, run nothing")
    parser.add_argument(
        "--overwrite", action="store_true", help="replace existing results and redo every cell"
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bars")


def _dry_run(cells, out_dir: Path) -> int:
    print(f"{len(cells)} cell(s); results would go to {out_dir}")
    for c in cells:
        state = "ready" if c.info.available else f"NO WEIGHTS at {c.info.weights}"
        print(f"  {c.model.label} on {c.dataset.label} (×{c.scale}, T={c.model.temperature:g}): {state}")
    return 0


def run(args: argparse.Namespace) -> int:
    from ..data.io import write_image
    from ..errors import UserError
    from ..evaluation import device_description
    from ..evaluation.outputs import check_output, csv_text, write_json, write_text
    from ..evaluation.report import csv_rows, figure_grid, json_report, markdown
    from ..evaluation.runner import check_weights, run_cells, slug
    from ..evaluation.suite import load_suite, output_dir, plan_suite
    from ..inference import resolve_device

    if args.limit is not None and args.limit < 1:
        raise UserError(f"--limit must be >= 1, got {args.limit}")
    suite = load_suite(args.suite)
    cells = plan_suite(suite, args.suite, args.data_root)
    out_dir = output_dir(suite, args.out)
    if args.dry_run:
        return _dry_run(cells, out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise UserError(f"output {out_dir} is a file; give a folder with --out")
    figures = {d.label: out_dir / f"figure_{slug(d.label)}.png" for d in suite.datasets}
    for path in [*(out_dir / f for f in REPORT_FILES), *figures.values()]:
        check_output(path, args.overwrite)
    cells, skipped = check_weights(cells, args.skip_missing)
    if not cells:
        raise UserError("no model of the suite has weights; train them or point the suite at checkpoints")
    if args.limit is not None:
        for d in suite.datasets:
            d.limit = min(d.limit or args.limit, args.limit)
    device = resolve_device(args.device or suite.device)
    results, rows = run_cells(suite, cells, out_dir, device, fresh=args.overwrite, progress=not args.quiet)
    where = device_description(device)
    md = markdown(suite, results, where, skipped)
    table, columns = csv_rows(suite, results, where)
    write_text(out_dir / "results.md", md, overwrite=args.overwrite)
    write_text(out_dir / "results.csv", csv_text(table, columns), overwrite=args.overwrite)
    write_json(
        out_dir / "results.json", json_report(suite, results, where, skipped), overwrite=args.overwrite
    )
    written = [out_dir / f for f in REPORT_FILES]
    for label, path in figures.items():
        grid = figure_grid(suite, label, rows[label], results) if label in rows else None
        if grid is not None:
            write_image(path, grid, overwrite=args.overwrite)
            written.append(path)
    reused = sum(r.cached for r in results)
    note = f" ({reused} reused from {out_dir / 'cells'})" if reused else ""
    print(md)
    print(f"{len(results)} cell(s){note}; wrote {', '.join(str(p) for p in written)}")
    if skipped:
        print(f"left out (no weights): {', '.join(skipped)}")
    return 0
