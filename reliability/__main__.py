"""``python -m reliability [--quick]``: run every figure, print one table, exit 1 when any
figure misses its goal."""

from __future__ import annotations

import asyncio
import sys
import time

from ._run import FULL, QUICK, render, run_all


def main() -> int:
    quick = "--quick" in sys.argv
    started = time.monotonic()
    rows = asyncio.run(run_all(QUICK if quick else FULL))
    print()
    print(render(rows))
    missed = [r for r in rows if not r.met]
    print(f"\n{len(rows) - len(missed)} of {len(rows)} met; {time.monotonic() - started:.0f} s")
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
