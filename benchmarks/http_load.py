"""Callbacks under load, measured as users see them: wall-clock throughput and latency of
each server pinned to a core of its own, loaded by wrk pinned to the other.

Every server kind (see ``_server``) runs at the same time, each in a process of its own,
holding its tasks for every round; the rounds are interleaved (round 1 of every kind, then
round 2, ..., the order rotating), so that each kind meets the same moments of a shared,
noisy machine. A figure is the median of the rounds with their range; a ratio is taken
per round against the ``bare`` baseline of that round.
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import sys
import tempfile
from typing import Any

from ._load import CONNECTIONS, Wrk, have_wrk, pinned, send_in_process
from ._server import BenchServer


async def _subprocess_rounds(
    kinds: tuple[str, ...], scenario: str, n: int, rounds: int, pending: int
) -> dict[str, list[dict[str, Any]]]:
    results: dict[str, list[dict[str, Any]]] = {kind: [] for kind in kinds}
    with tempfile.TemporaryDirectory() as folder:
        servers: dict[str, asyncio.subprocess.Process] = {}
        urls: dict[str, str] = {}
        try:
            for kind in kinds:
                command = [
                    sys.executable, "-m", "benchmarks._server", kind, scenario,
                    str(n), str(rounds), str(pending), os.path.join(folder, kind),
                ]  # fmt: skip
                servers[kind] = await asyncio.create_subprocess_exec(
                    *pinned(command, "server"),
                    stdin=asyncio.subprocess.PIPE,
                    stdout=asyncio.subprocess.PIPE,
                    limit=2**24,
                )
            for kind, process in servers.items():
                assert process.stdout is not None
                word, url = (await process.stdout.readline()).decode().split()
                assert word == "ready", word
                urls[kind] = url
            use_wrk = have_wrk()
            for r in range(rounds):
                order = kinds[r % len(kinds) :] + kinds[: r % len(kinds)]
                for kind in order:
                    process = servers[kind]
                    assert process.stdin is not None
                    assert process.stdout is not None
                    jobs_file = os.path.join(folder, f"{kind}.{r}")
                    process.stdin.write(b"go\n")
                    await process.stdin.drain()
                    if use_wrk:
                        wrk = Wrk()
                        try:
                            await wrk.start(urls[kind], jobs_file)
                            figures = json.loads(await process.stdout.readline())
                            figures.update(await wrk.stop())
                        finally:
                            wrk.close()
                    else:  # from this process: the load shares the machine with servers
                        with open(jobs_file) as handle:
                            jobs = [tuple(line.rstrip("\n").split("\t", 1)) for line in handle]
                        sending = send_in_process(urls[kind], jobs, CONNECTIONS)  # type: ignore[arg-type]
                        figures, _ = await asyncio.gather(process.stdout.readline(), sending)
                        figures = json.loads(figures)
                    results[kind].append(figures)
            for process in servers.values():
                assert process.stdin is not None
                process.stdin.close()
                await asyncio.wait_for(process.wait(), 30)
        finally:
            for process in servers.values():
                if process.returncode is None:
                    process.kill()
                    await process.wait()
    return results


async def _in_process_rounds(
    kinds: tuple[str, ...], scenario: str, n: int, rounds: int, pending: int
) -> dict[str, list[dict[str, Any]]]:
    """The smoke run: every server in this process, loaded from this process."""
    results: dict[str, list[dict[str, Any]]] = {kind: [] for kind in kinds}
    for kind in kinds:
        server = BenchServer(kind, scenario, n, rounds, pending)
        await server.start()
        try:
            for r in range(rounds):
                load = send_in_process(server.url, server.jobs[r], 8)
                results[kind].append(await server.measure(r, load))
        finally:
            await server.aclose()
    return results


def summarize(results: dict[str, list[dict[str, Any]]], baseline: str = "bare") -> dict[str, Any]:
    """Per kind: median and range of the rounds' throughput, median p50/p99 latency, and
    the per-round ratio to the baseline (median and range), also in callbacks per
    CPU-second of the server (what a loaded machine disturbs least)."""
    summary: dict[str, Any] = {}
    for kind, rounds in results.items():
        rates = [r["per_s"] for r in rounds]
        entry: dict[str, Any] = {
            "per_s": statistics.median(rates),
            "per_s_range": [min(rates), max(rates)],
        }
        for key in ("p50_ms", "p99_ms"):
            if all(key in r for r in rounds):
                entry[key] = statistics.median(r[key] for r in rounds)
        if kind != baseline and baseline in results:
            ratios = [
                mine["per_s"] / base["per_s"]
                for mine, base in zip(rounds, results[baseline], strict=True)
            ]
            entry["ratio"] = statistics.median(ratios)
            entry["ratio_range"] = [min(ratios), max(ratios)]
            entry["cpu_ratio"] = statistics.median(
                base["cpu_s"] / mine["cpu_s"]
                for mine, base in zip(rounds, results[baseline], strict=True)
            )
        summary[kind] = entry
    return summary


async def run(
    scenario: str,
    kinds: tuple[str, ...],
    *,
    n: int,
    rounds: int,
    pending: int = 0,
    quick: bool = False,
) -> dict[str, Any]:
    rounds_of = _in_process_rounds if quick else _subprocess_rounds
    results = await rounds_of(kinds, scenario, n, rounds, pending)
    summary = summarize(results)
    summary["rounds"] = rounds
    summary["load"] = "in-process" if quick or not have_wrk() else f"wrk -c{CONNECTIONS}"
    return summary
