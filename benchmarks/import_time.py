"""``import addvocals_async`` against ``import aiohttp``, bytecode cached: each a fresh
interpreter, interleaved, the median of the rounds' wall times."""

from __future__ import annotations

import statistics
import subprocess
import sys
import time
from typing import Any

GOAL_EXTRA_MS = 25.0


def _once(module: str) -> float:
    started = time.perf_counter()
    subprocess.run([sys.executable, "-c", f"import {module}"], check=True)
    return time.perf_counter() - started


def run(rounds: int = 9) -> dict[str, Any]:
    _once("addvocals_async")  # the bytecode cached
    times: dict[str, list[float]] = {"aiohttp": [], "addvocals_async": []}
    for _ in range(rounds):
        for module in times:
            times[module].append(_once(module))
    base, ours = (statistics.median(times[m]) * 1000 for m in ("aiohttp", "addvocals_async"))
    return {
        "rounds": rounds,
        "aiohttp_ms": base,
        "addvocals_async_ms": ours,
        "extra_ms": ours - base,
        "goal_extra_ms": GOAL_EXTRA_MS,
    }
