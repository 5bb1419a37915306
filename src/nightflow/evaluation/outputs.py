"""Result files: JSON, CSV and Markdown written atomically, kept unless asked to overwrite.

Why: an interrupted evaluation must not leave a half-written table that looks complete, and a result someone
already has must not be replaced by accident.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from ..atomic import write_text_atomic
from ..errors import UserError


def check_output(path: Path, overwrite: bool, inputs: Iterable[Path] = ()) -> None:
    """Refuse an output that is an input, is a folder, or exists without ``overwrite`` (before any work)."""
    resolved = path.expanduser().resolve()
    if any(resolved == Path(p).resolve() for p in inputs):
        raise UserError(f"output {path} is one of the input images; choose another file name")
    if path.is_dir():
        raise UserError(f"output {path} is a folder; give a file name")
    if path.exists() and not overwrite:
        raise UserError(f"{path} already exists; pass --overwrite to replace it")


def write_text(path: Path, text: str, overwrite: bool = False) -> Path:
    """Write ``text`` to a temporary name in the same folder, then rename it over ``path``."""
    if path.exists() and not overwrite:
        raise UserError(f"{path} already exists; pass --overwrite to replace it")
    return write_text_atomic(path, text)


def _jsonable(value: Any) -> Any:
    """NaN/inf (e.g. PSNR of identical images) become strings so the file stays valid JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


def write_json(path: Path, data: Any, overwrite: bool = False) -> Path:
    return write_text(path, json.dumps(_jsonable(data), indent=1) + "\n", overwrite)


def csv_text(rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> str:
    """CSV with a header; floats at full precision so the file can be re-analysed, missing cells empty."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(columns), extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({c: ("" if row.get(c) is None else row.get(c)) for c in columns})
    return buf.getvalue()


def write_csv(
    path: Path, rows: Sequence[dict[str, Any]], columns: Sequence[str], overwrite: bool = False
) -> Path:
    return write_text(path, csv_text(rows, columns), overwrite)
