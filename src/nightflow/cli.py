"""The ``nightflow`` command: a thin dispatcher over one module per subcommand in ``nightflow.commands``.

Why: each subcommand owns its arguments and its work; this file only wires them up and turns user errors into
one-line messages with exit code 2.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from . import __version__
from .errors import UserError

# Printed under every --help: scripts rely on these.
EXIT_CODES = """exit codes:
  0    success
  2    user error: a bad argument, input, setting, model name or output (one line on stderr)
  1    internal error: a bug in nightflow (a traceback; please report it)
  130  interrupted (Ctrl-C); 143 terminated (SIGTERM); 128 + N for signal N"""

# subcommand name -> module in nightflow.commands exposing add_arguments(parser) and run(args) -> int
SUBCOMMANDS: dict[str, str] = {}


def _register() -> None:
    import pkgutil

    from . import commands

    for info in pkgutil.iter_modules(commands.__path__):
        if not info.name.startswith("_"):
            SUBCOMMANDS[info.name.replace("_", "-")] = info.name


def build_parser() -> argparse.ArgumentParser:
    if not SUBCOMMANDS:
        _register()
    parser = argparse.ArgumentParser(
        prog="nightflow",
        description="Restore photos taken in the dark with conditional normalizing flows "
        "(brighten, denoise, upscale x2/x4, deblur; sample and show uncertainty).",
        epilog=EXIT_CODES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"nightflow {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in sorted(SUBCOMMANDS):
        module = importlib.import_module(f"nightflow.commands.{SUBCOMMANDS[name]}")
        doc = (module.__doc__ or "").strip().splitlines()
        p = sub.add_parser(
            name,
            help=doc[0] if doc else None,
            description=(module.__doc__ or "").strip(),
            epilog=EXIT_CODES,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        module.add_arguments(p)
        p.set_defaults(_run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "_run", None):
        parser.print_help()
        return 2
    try:
        return int(args._run(args) or 0)
    except UserError as exc:
        print(f"nightflow {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as exc:
        return _interrupted(args.command, exc)


def _interrupted(command: str, exc: KeyboardInterrupt) -> int:
    """One line for Ctrl-C/SIGTERM (with what was saved, when the command says), exit code 128 + signal."""
    detail = " ".join(str(exc).split())
    print(f"nightflow {command}: interrupted{': ' + detail if detail else ''}", file=sys.stderr)
    return 128 + int(getattr(exc, "signum", 2))


if __name__ == "__main__":
    sys.exit(main())
