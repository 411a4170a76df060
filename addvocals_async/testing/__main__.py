"""``python -m addvocals_async.testing``: run the simulator standalone until Ctrl-C.

Any client written for the real API can be pointed at it: it prints its base URL and API
key (made up when none is given), then serves until interrupted or terminated.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
from collections.abc import Sequence

from .._providers import PROVIDERS
from ._scenarios import SCENARIOS
from ._simulator import serve_forever

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m addvocals_async.testing",
        description="Run the Add Vocals API simulator until interrupted.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (127.0.0.1)")
    parser.add_argument("--port", type=int, default=8181, help="port to bind, 0 for any (8181)")
    parser.add_argument(
        "--api-key", help="the Bearer key to accept (default: a random one, printed)"
    )
    parser.add_argument("--provider", choices=sorted(PROVIDERS), default="apibox")
    parser.add_argument(
        "--speed", type=float, default=60.0, help="time scale; 60 completes a task in ~3 s"
    )
    parser.add_argument("--scenario", choices=SCENARIOS, default="normal")
    parser.add_argument("--seed", type=int, default=None, help="seed for reproducible runs")
    parser.add_argument("--webhook-hmac-key", help="kie: sign callbacks with this key")
    parser.add_argument(
        "--allow-remote-callbacks",
        action="store_true",
        help="also deliver callbacks to non-loopback hosts",
    )
    return parser


async def _run(args: argparse.Namespace) -> None:
    serving = asyncio.ensure_future(
        serve_forever(
            host=args.host,
            port=args.port,
            api_key=args.api_key,
            provider=args.provider,
            speed=args.speed,
            scenario=args.scenario,
            seed=args.seed,
            webhook_hmac_key=args.webhook_hmac_key,
            allow_remote_callbacks=args.allow_remote_callbacks,
        )
    )
    loop = asyncio.get_running_loop()
    # SIGTERM (and SIGINT) cancel the server, so it shuts down cleanly instead of dying.
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, serving.cancel)
    with contextlib.suppress(asyncio.CancelledError):
        await serving


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_run(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
