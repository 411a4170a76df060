"""``python -m benchmarks [--quick] [--json]``: every figure of the performance goals as
one table (the SDK, its baseline measured in the same run, the ratio: median and range
of interleaved rounds), and exit 1 when a goal is missed.

``--quick`` is the smoke run the test suite makes (a few seconds): tiny inputs, every
server in this process, no wrk, no Redis; it checks that the benchmarks run, never a
figure. ``--json`` also prints every figure as JSON.
"""

from __future__ import annotations

import asyncio
import datetime
import json
import os
import platform
import sys
from collections.abc import Awaitable, Callable
from typing import Any

from . import http_load, import_time, pending_memory, poll_timing, redis_seam, submit
from ._load import cores, have_wrk

RECEIVERS = ("bare", "receiver", "receiver_speed")


def _speed_extra() -> bool:
    try:
        import orjson  # noqa: F401
        import uvloop  # noqa: F401
    except ImportError:
        return False
    return True


async def measure(quick: bool) -> dict[str, Any]:
    kinds = RECEIVERS if _speed_extra() else RECEIVERS[:2]
    figures: dict[str, Any] = {}
    figures["import"] = import_time.run(rounds=1 if quick else 9)
    if quick:
        figures["receiver"] = await http_load.run("pending", kinds, n=60, rounds=1, quick=True)
        figures["awaited"] = await http_load.run("awaited", kinds, n=30, rounds=1, quick=True)
        figures["submit"] = await submit.run_quick(40)
        figures["awaited_memory"] = await pending_memory.awaited_memory(300)
        figures["pending_memory"] = await pending_memory.run(n=300)
        figures["poll_timing"] = await poll_timing.run(n=1, rounds=1, speed=500.0)
        return figures
    steps: list[tuple[str, Callable[[], Awaitable[dict[str, Any]]]]] = [
        # 10,000 callbacks per server and round, 100,000 more tasks pending (a live heap)
        ("receiver", lambda: http_load.run("pending", kinds, n=10_000, rounds=5, pending=100_000)),
        # 5,000 awaited tasks per server and round, 3 callbacks each
        ("awaited", lambda: http_load.run("awaited", kinds, n=5000, rounds=5)),
        ("submit", lambda: submit.run(n=5000, rounds=5)),
        ("awaited_memory", lambda: pending_memory.awaited_memory(100_000)),
        ("pending_memory", lambda: pending_memory.run(n=100_000)),
        ("redis_seam", redis_seam.run),
        # 150 tasks at the real stage timings ± 20 %, 10 times faster: about 80 s
        ("poll_timing", poll_timing.run),
    ]
    for name, step in steps:  # progress on stderr: a full run takes minutes
        print(f"measuring {name}...", file=sys.stderr, flush=True)
        figures[name] = await step()
        print(json.dumps({name: figures[name]}), file=sys.stderr, flush=True)
    return figures


def _rate(figures: dict[str, Any]) -> str:
    p99 = figures.get("p99_ms")
    return f"{figures['per_s']:,.0f}/s" + (f", p99 {p99:.1f} ms" if p99 is not None else "")


def _range(values: list[float], fmt: str = "{:.2f}") -> str:
    return f"{fmt.format(values[0])}–{fmt.format(values[1])}"


def table(figures: dict[str, Any]) -> tuple[list[list[str]], list[str]]:
    """The rows (figure, SDK, baseline, ratio, goal) and the goals missed."""
    rows: list[list[str]] = []
    missed: list[str] = []

    def add(
        name: str, ours: str, base: str, ratio: str, goal: str, met: bool, cpu: str = "–"
    ) -> None:
        rows.append([name, ours, base, ratio, cpu, goal, "yes" if met else "NO"])
        if not met:
            missed.append(name)

    imp = figures["import"]
    add(
        "import addvocals_async (vs import aiohttp)",
        f"{imp['addvocals_async_ms']:.0f} ms",
        f"{imp['aiohttp_ms']:.0f} ms",
        f"+{imp['extra_ms']:.0f} ms",
        f"≤ +{imp['goal_extra_ms']:.0f} ms",
        imp["extra_ms"] <= imp["goal_extra_ms"],
    )
    for key, what in (("receiver", "receiver, 1.4 KB callbacks"),
                      ("awaited", "callbacks, every task awaited")):  # fmt: skip
        result, bare = figures[key], figures[key]["bare"]
        base = _rate(bare)
        for kind, goal in (("receiver", 0.95 if key == "receiver" else 0.9),
                           ("receiver_speed", 1.0)):  # fmt: skip
            if kind not in result:
                continue
            mine = result[kind]
            label = f"{what}{' (speed extra)' if kind == 'receiver_speed' else ''}"
            add(
                label,
                _rate(mine),
                base,
                f"{mine['ratio']:.2f} ({_range(mine['ratio_range'])})",
                f"≥ {goal}",
                mine["ratio"] >= goal,
                f"{mine['cpu_ratio']:.2f}",
            )
    sub = figures["submit"]
    for kind, label in (("sdk", "submits, 64 in flight"),
                        ("sdk_receiver", "submits with a receiver")):  # fmt: skip
        add(
            label,
            f"{sub[kind]['per_s']:,.0f}/s",
            f"{sub['raw']['per_s']:,.0f}/s raw POST",
            f"{sub[kind]['ratio']:.2f} ({_range(sub[kind]['ratio_range'])})",
            "≥ 0.85",
            sub[kind]["ratio"] >= 0.85,
            f"{sub[kind]['cpu_ratio']:.2f}",
        )
    mem = figures["awaited_memory"]
    add(
        f"memory per awaited task ({mem['tasks']:,})",
        f"{mem['our_bytes_per_task']:,.0f} B",
        f"{mem['naive_bytes_per_task']:,.0f} B task+future",
        f"{mem['ratio']:.2f} ({_range(mem['ratio_range'])})",
        "≤ 1.0",
        mem["ratio"] <= 1.0,
    )
    pend = figures["pending_memory"]
    add(
        f"memory per pending task ({pend['tasks']:,})",
        f"{pend['our_bytes_per_task']:,.0f} B",
        f"{pend['naive_bytes_per_task']:,.0f} B task+future",
        f"{pend['memory_ratio']:.2f}",
        f"≤ {pend['memory_goal']}",
        pend["memory_ratio"] <= pend["memory_goal"],
    )
    add(
        "dispatch time, 1k vs many pending",
        f"{pend['dispatch_us_large']:.1f} µs",
        f"{pend['dispatch_us_1k']:.1f} µs",
        f"{pend['dispatch_ratio']:.2f}",
        f"≤ {pend['dispatch_goal']}",
        pend["dispatch_ratio"] <= pend["dispatch_goal"],
    )
    polls = figures["poll_timing"]
    add(
        "API requests per task, receiver, callbacks on time",
        f"{polls['with_receiver_requests_mean']:.2f} (max {polls['with_receiver_requests_max']})",
        "–",
        "–",
        "exactly 1",
        polls["with_receiver_requests_max"] == poll_timing.GOAL_REQUESTS_WITH_RECEIVER,
    )
    rounds = polls["round_median_delays_s"]
    add(
        "notify delay without a receiver, real timings ± 20 %",
        f"{polls['median_delay_s']:.1f} s, {polls['requests_median']:.0f} requests "
        f"(max {polls['requests_max']}, {polls['refused']} refused)",
        "–",
        f"({min(rounds):.1f}–{max(rounds):.1f} s)",
        f"≤ {poll_timing.GOAL_MEDIAN_DELAY_S:.0f} s, "
        f"≤ {poll_timing.GOAL_REQUESTS_WITHOUT} requests",
        polls["met"],
    )
    seam = figures.get("redis_seam")
    if seam is not None and "skipped" not in seam:
        thr, lat = seam["throughput"], seam["latency"]
        add(
            "Redis receiver throughput",
            f"{thr['redis_rps_per_cpu_s']:,.0f}/CPU-s",
            f"{thr['memory_rps_per_cpu_s']:,.0f}/CPU-s in-memory",
            f"{thr['ratio']:.2f} ({_range(thr['ratio_range'])})",
            f"≥ {thr['goal']}",
            thr["ratio"] >= thr["goal"],
        )
        add(
            f"cross-process resume p99 (Redis), median of {lat.get('rounds', 1)}",
            f"{lat['p99_ms']:.1f} ms (p50 {lat['p50_ms']:.1f})",
            "–",
            "({:.1f}–{:.1f} ms)".format(*lat.get("p99_range_ms", [lat["p99_ms"]] * 2)),
            f"≤ {lat['goal_p99_ms']} ms",
            lat["p99_ms"] <= lat["goal_p99_ms"],
        )
    return rows, missed


def render(rows: list[list[str]]) -> str:
    header = ["figure", "SDK", "baseline, same run", "ratio (range)", "per CPU-s", "goal", "met"]
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = ["| " + " | ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)) + " |"]
    lines.append("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    lines += ["| " + " | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) + " |"
              for r in rows]  # fmt: skip
    return "\n".join(lines)


def describe(quick: bool) -> str:
    if quick:
        load = "in-process aiohttp sender (smoke run)"
    else:
        load = "wrk" if have_wrk() else "in-process aiohttp sender (wrk missing)"
    return (
        f"{datetime.date.today()}, {platform.machine()}, {len(cores())} cores "
        f"(load average {os.getloadavg()[0]:.1f}), Python {platform.python_version()}, "
        f"load by {load}, speed extra {'installed' if _speed_extra() else 'missing'}"
    )


async def main(quick: bool, as_json: bool) -> int:
    figures = await measure(quick)
    rows, missed = table(figures)
    if as_json:
        print(json.dumps(figures, indent=2))
    print(describe(quick))
    print(render(rows))
    if quick:
        return 0  # a smoke run: too small to judge
    for name in missed:
        print(f"goal missed: {name}", file=sys.stderr)
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main("--quick" in sys.argv, "--json" in sys.argv)))
