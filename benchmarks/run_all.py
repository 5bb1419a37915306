"""Run every benchmark module (benchmarks/bench_*.py) in one process; each saves its own JSON in results/.

``python -m benchmarks.run_all [--quick] [NAME ...]``
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("names", nargs="*", help="benchmark names (default: all), e.g. flow_core")
    parser.add_argument("--quick", action="store_true", help="fewer repeats (smoke run)")
    args = parser.parse_args(argv)
    here = Path(__file__).resolve().parent
    found = sorted(
        m.name[len("bench_") :] for m in pkgutil.iter_modules([str(here)]) if m.name.startswith("bench_")
    )
    names = args.names or found
    unknown = sorted(set(names) - set(found))
    if unknown:
        print(f"unknown benchmark(s): {', '.join(unknown)}; available: {', '.join(found)}", file=sys.stderr)
        return 2
    for name in names:
        importlib.import_module(f"benchmarks.bench_{name}").run(quick=args.quick)
    return 0


if __name__ == "__main__":
    sys.exit(main())
