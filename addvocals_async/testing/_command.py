"""The simulator's command line, shared by ``addvocals simulate`` and ``python -m
addvocals_async.testing`` so that the two cannot drift apart.

Each entry point makes its own parser (its own program name and description), adds these
options with ``configure_parser`` and hands the parsed arguments to ``run``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
from typing import TextIO

from .._providers import PROVIDERS
from ._scenarios import SCENARIOS

__all__ = ["configure_parser", "run"]

DEFAULT_API_KEY = "sim-key"
"""Known in advance, so that a client (and the README's examples) can be pointed at a
simulator without reading its banner; a simulator key opens nothing real."""


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Add every simulator option to ``parser``.

    ``--scenario`` and ``--speed`` are checked by ``run``, not here: a parse error makes
    argparse print its usage and exit, where a caller may want one error line instead.
    """
    parser.add_argument("--host", default="127.0.0.1", help="bind address (default: 127.0.0.1)")
    parser.add_argument(
        "--port", type=int, default=8181, help="bind port, 0 for any free one (default: 8181)"
    )
    parser.add_argument(
        "--api-key",
        default=DEFAULT_API_KEY,
        help=f"the Bearer key clients must send; printed at start (default: {DEFAULT_API_KEY})",
    )
    parser.add_argument(
        "--provider",
        choices=sorted(PROVIDERS),
        default="apibox",
        help="which provider to imitate (default: apibox)",
    )
    parser.add_argument(
        "--speed",
        type=float,
        default=60.0,
        help="time compression; 60 runs a 3-minute task in 3 s (default: 60)",
    )
    parser.add_argument(
        "--scenario",
        default="normal",
        metavar="NAME",
        help=f"the scenario every task follows (default: normal); one of: {', '.join(SCENARIOS)}",
    )
    parser.add_argument("--seed", type=int, default=None, help="seed for reproducible runs")
    parser.add_argument(
        "--webhook-hmac-key", default=None, help="kie: sign callbacks with this key"
    )
    parser.add_argument(
        "--allow-remote-callbacks",
        action="store_true",
        help="also deliver callbacks to hosts other than loopback (default: recorded, not sent)",
    )
    parser.add_argument(
        "--quiet",
        action="store_true",
        help="no activity log (default: a line on stderr per request and per callback)",
    )


def _check(args: argparse.Namespace) -> None:
    if args.scenario not in SCENARIOS:
        raise argparse.ArgumentError(
            None, f"unknown --scenario {args.scenario!r}; one of: {', '.join(SCENARIOS)}"
        )
    if not args.speed > 0:
        raise argparse.ArgumentError(None, f"--speed must be positive, got {args.speed:g}")


async def run(args: argparse.Namespace, out: TextIO) -> int:
    """Serve the simulator described by ``args`` (from ``configure_parser``) until SIGINT or
    SIGTERM, then close it cleanly and return 0.

    The banner with the base URL and API key goes to ``out``; the activity log (a line per
    request and per callback attempt) to stderr, unless ``--quiet``. An invalid ``--scenario`` or
    ``--speed`` raises ``argparse.ArgumentError`` before anything is bound, for the caller
    to report as a usage error.
    """
    _check(args)
    from ._simulator import serve_until  # the server only when one is run

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    handled: list[signal.Signals] = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        # Not on Windows, nor outside the main thread: there Ctrl-C stays KeyboardInterrupt.
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(sig, stop.set)
            handled.append(sig)
    try:
        await serve_until(
            stop,
            host=args.host,
            port=args.port,
            api_key=args.api_key,
            provider=args.provider,
            speed=args.speed,
            scenario=args.scenario,
            seed=args.seed,
            webhook_hmac_key=args.webhook_hmac_key,
            allow_remote_callbacks=args.allow_remote_callbacks,
            out=out,
            activity=None if args.quiet else sys.stderr,
        )
    finally:
        for sig in handled:
            loop.remove_signal_handler(sig)
    return 0
