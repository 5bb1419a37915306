"""Serve the web UI: upload a dark photo, pick a model and scale, set exposure and temperature, compare and download.

A local gradio app over the same pipeline as `nightflow enhance` (same files, same errors, 16-bit kept). It
listens on 127.0.0.1 only unless --host says otherwise; jobs run one at a time in a queue. Needs the ui extra:
pip install 'nightflow[ui]'.

examples:
  nightflow ui                      # http://127.0.0.1:7860
  nightflow ui --port 8080
  nightflow ui --host 0.0.0.0       # reachable from other machines: only on a network you trust
"""

from __future__ import annotations

import argparse


def _port(value: str) -> int:
    try:
        port = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a port number, got '{value}'") from None
    if not 1 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"port must be in 1..65535, got {port}")
    return port


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from ..ui import DEFAULT_HOST, DEFAULT_PORT

    parser.add_argument(
        "--port", type=_port, default=DEFAULT_PORT, metavar="P", help=f"port (default {DEFAULT_PORT})"
    )
    parser.add_argument(
        "--host",
        default=DEFAULT_HOST,
        help=f"address to listen on (default {DEFAULT_HOST}: this machine only)",
    )


def run(args: argparse.Namespace) -> int:
    from ..ui import launch

    launch(args.host, args.port, block=True)
    return 0
