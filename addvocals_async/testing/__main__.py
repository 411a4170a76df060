"""``python -m addvocals_async.testing``: run the simulator standalone until Ctrl-C.

Any client written for the real API can be pointed at it: it prints its base URL and API
key (``sim-key`` unless ``--api-key`` says otherwise), then serves until interrupted or
terminated. The options are those of ``addvocals simulate``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
from collections.abc import Sequence

from ._command import configure_parser, run

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m addvocals_async.testing",
        description="Run the Add Vocals API simulator until interrupted.",
    )
    configure_parser(parser)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    with contextlib.suppress(KeyboardInterrupt):
        try:
            return asyncio.run(run(args, sys.stdout))
        except argparse.ArgumentError as exc:
            parser.error(str(exc))
    return 0


if __name__ == "__main__":
    sys.exit(main())
