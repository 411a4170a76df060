"""``import addvocals_async`` against ``import aiohttp``, bytecode cached: each in a fresh
interpreter, interleaved, the median of the rounds. The figure is the interpreter's CPU
time (user + system), which a loaded machine disturbs far less than the wall time."""

from __future__ import annotations

import os
import resource
import statistics
import subprocess
import sys
from typing import Any

GOAL_EXTRA_MS = 25.0


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


# Bytecode cached: written by the warm-up run even where PYTHONDONTWRITEBYTECODE is set.
_ENV = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}


def _once(module: str) -> float:
    started = _cpu()
    subprocess.run([sys.executable, "-c", f"import {module}"], check=True, env=_ENV)
    return _cpu() - started


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
