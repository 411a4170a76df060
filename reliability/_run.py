"""The counts of a full and a quick run, running every figure, and the table."""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable

import attrs

from . import exhaustion, forgery, fuzz, restart, soak
from ._common import Row


@attrs.frozen
class Counts:
    soak: int
    fuzz: int
    garbage: int
    forgery: int
    attack_seconds: float
    half_open: int
    slow: int
    waiters: int
    orphan_tasks: int
    restart: int


FULL = Counts(
    soak=10_000,
    fuzz=100_000,
    garbage=25_000,
    forgery=40_000,
    attack_seconds=20.0,
    half_open=1100,
    slow=2000,
    waiters=100_000,
    orphan_tasks=750,
    restart=300,
)
QUICK = Counts(
    soak=100,
    fuzz=1500,
    garbage=500,
    forgery=400,
    attack_seconds=3.0,
    half_open=150,
    slow=150,
    waiters=10_000,
    orphan_tasks=20,
    restart=12,
)


def figures(counts: Counts) -> dict[str, Callable[[], Awaitable[list[Row]]]]:
    return {
        "soak": lambda: soak.run(counts.soak),
        "fuzz": lambda: fuzz.fuzz_receiver(counts.fuzz),
        "garbage": lambda: fuzz.garbage_answers(counts.garbage),
        "forgery": lambda: forgery.run(counts.forgery),
        "connections": lambda: exhaustion.connections(
            counts.attack_seconds, half_open=counts.half_open, slow=counts.slow
        ),
        "waiters": lambda: exhaustion.waiters(counts.waiters),
        "orphans": lambda: exhaustion.orphans(counts.orphan_tasks),
        "restart": lambda: restart.run(counts.restart),
    }


async def run_all(counts: Counts, *, echo: bool = True, only: list[str] | None = None) -> list[Row]:
    # The SDK's warnings (ambiguous submits, refused callbacks) are part of what is tried;
    # ERROR records are still counted by the fuzz figure's own handler.
    logging.getLogger("addvocals_async").setLevel(logging.ERROR)
    rows: list[Row] = []
    for name, figure in figures(counts).items():
        if only is not None and name not in only:
            continue
        began = time.monotonic()
        got = await figure()
        rows.extend(got)
        if echo:
            print(f"  {name}: {time.monotonic() - began:.1f} s", flush=True)
    return rows


def render(rows: list[Row]) -> str:
    header = ("figure", "what was tried", "how many", "outcome", "goal", "met?")
    cells = [header] + [
        (r.figure, r.tried, f"{r.count:,}", r.outcome, r.goal, "yes" if r.met else "NO")
        for r in rows
    ]
    lines = []
    for cell in cells:
        lines.append(" | ".join(cell))
    return (
        "\n".join("| " + line + " |" for line in lines[:1])
        + "\n|"
        + "---|" * 6
        + "\n"
        + ("\n".join("| " + line + " |" for line in lines[1:]))
    )
