"""``python -m reliability [--quick] [--only NAME[,NAME...]]``: run every figure (or only
the named ones), print one table, exit 1 when any figure misses its goal."""

from __future__ import annotations

import argparse
import asyncio
import sys
import time

from ._run import FULL, QUICK, figures, render, run_all


def main(argv: list[str] | None = None) -> int:
    names = list(figures(FULL))
    parser = argparse.ArgumentParser(prog="python -m reliability", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="the short counts CI runs")
    parser.add_argument(
        "--only",
        metavar="NAME[,NAME...]",
        help=f"run only these figures, any of: {', '.join(names)}",
    )
    args = parser.parse_args(argv)
    only = None
    if args.only:
        only = [name.strip() for name in args.only.split(",") if name.strip()]
        unknown = [name for name in only if name not in names]
        if unknown:
            parser.error(f"unknown figure {', '.join(unknown)}; known: {', '.join(names)}")
    started = time.monotonic()
    rows = asyncio.run(run_all(QUICK if args.quick else FULL, only=only))
    print()
    print(render(rows))
    missed = [r for r in rows if not r.met]
    print(f"\n{len(rows) - len(missed)} of {len(rows)} met; {time.monotonic() - started:.0f} s")
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
