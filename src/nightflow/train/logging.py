"""Run logs: every logged training step and validation round as CSV rows and JSON lines, plus the progress
bar.

Why both formats: CSV opens in a spreadsheet or pandas at a glance; JSON lines keep every field (including
ones that appear later, e.g. validation metrics) without a fixed header.
"""

from __future__ import annotations

import csv
import json
import math
import sys
from pathlib import Path
from typing import Any

from tqdm import tqdm

from ..atomic import atomic_path, write_text_atomic


def _clean(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)  # JSON has no NaN/inf
    return value


class RunLogger:
    """Appends records to RUN_DIR/log.csv + log.jsonl (training) and RUN_DIR/val.csv (validation).

    Only the main rank writes; on other ranks every method is a no-op.
    """

    def __init__(self, run_dir: Path, enabled: bool = True) -> None:
        self.run_dir = Path(run_dir)
        self.enabled = enabled
        self.jsonl = self.run_dir / "log.jsonl"
        self.csv_paths = {"train": self.run_dir / "log.csv", "val": self.run_dir / "val.csv"}

    def truncate_after(self, step: int) -> None:
        """Drop records newer than ``step`` (written after the checkpoint a resume starts from)."""
        if not self.enabled:
            return
        if self.jsonl.is_file():
            keep = [
                ln
                for ln in self.jsonl.read_text().splitlines()
                if ln and json.loads(ln).get("step", 0) <= step
            ]
            write_text_atomic(self.jsonl, "".join(ln + "\n" for ln in keep))
        for path in self.csv_paths.values():
            if path.is_file():
                with path.open(newline="") as fh:
                    rows = list(csv.reader(fh))
                if rows:
                    col = rows[0].index("step")
                    kept = [rows[0]] + [r for r in rows[1:] if int(r[col]) <= step]
                    self._rewrite_csv(path, kept)

    def log(self, kind: str, record: dict[str, Any]) -> None:
        """Write one record of ``kind`` ("train", "val" or an event such as "ddp_sync")."""
        if not self.enabled:
            return
        rec = {"kind": kind, **{k: _clean(v) for k, v in record.items()}}
        with self.jsonl.open("a") as fh:
            fh.write(json.dumps(rec) + "\n")
        path = self.csv_paths.get(kind)
        if path is None:
            return
        new = not path.is_file() or path.stat().st_size == 0
        if new:
            header = list(record)
        else:
            with path.open(newline="") as fh:
                header = next(csv.reader(fh))
        with path.open("a", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=header, extrasaction="ignore")
            if new:
                writer.writeheader()
            writer.writerow({k: record.get(k, "") for k in header})

    def _rewrite_csv(self, path: Path, rows: list[list[str]]) -> None:
        with atomic_path(path) as tmp, tmp.open("w", newline="") as fh:
            csv.writer(fh).writerows(rows)


def read_log(run_dir: Path, kind: str = "train") -> list[dict[str, Any]]:
    """All JSON-lines records of ``kind`` in a run directory, oldest first."""
    path = Path(run_dir) / "log.jsonl"
    if not path.is_file():
        return []
    records = [json.loads(ln) for ln in path.read_text().splitlines() if ln.strip()]
    return [r for r in records if r.get("kind") == kind]


def progress_bar(total: int, initial: int, enabled: bool) -> tqdm:
    """tqdm over optimiser steps: shows steps/s and ETA itself; the trainer adds the loss as a postfix."""
    return tqdm(
        total=total,
        initial=initial,
        disable=not enabled,
        desc="train",
        unit="step",
        dynamic_ncols=True,
        file=sys.stderr,
        smoothing=0.1,
    )


def message(text: str, enabled: bool = True) -> None:
    """A one-line status message that does not break an active progress bar."""
    if enabled:
        tqdm.write(text, file=sys.stderr)
