"""Exhaustion: half-open connections and slow bodies against a receiver held to 1,024
descriptors, many waiters on one task, and orphaned callbacks with big bodies."""

from __future__ import annotations

import asyncio
import gc
import json
import random
import resource
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aiohttp

from addvocals_async import (
    CallbackReceiver,
    PollPolicy,
)
from addvocals_async.testing import Simulator, StageTimes

from ._common import Row, callback_json, dumps, percentile, rss_bytes, sim_client, track_json

SECRET = "reliability-exhaustion-secret-0123"
STALL_GOAL = 0.100
ORPHAN_BOUND = 256 * 1024 * 1024  # the receiver's RSS growth allowed for orphans


def _raise_own_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


@asynccontextmanager
async def _child_receiver(
    seen: dict[str, int] | None = None,
) -> AsyncIterator[tuple[asyncio.subprocess.Process, str]]:
    """A receiver in a child process; ``seen`` gets the counters it prints as it ends."""
    child = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "reliability._child",
        SECRET,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
    )
    assert child.stdout is not None
    assert child.stdin is not None
    try:
        line = await asyncio.wait_for(child.stdout.readline(), 20)
        yield child, line.decode().strip()
    finally:
        child.stdin.close()
        try:
            last = await asyncio.wait_for(child.stdout.readline(), 20)
            if seen is not None and last.strip():
                seen.update(json.loads(last))
            await asyncio.wait_for(child.wait(), 20)
        except asyncio.TimeoutError:
            child.kill()
            await child.wait()


def _minter(url: str) -> CallbackReceiver:
    """Genuine tokens for the child's receiver: same secret, its URL."""
    return CallbackReceiver(secret=SECRET, public_url=url)


async def connections(duration: float, *, half_open: int = 1100, slow: int = 2000) -> list[Row]:
    _raise_own_limit()
    seen: dict[str, int] = {}
    async with _child_receiver(seen) as (_child, url):
        # The attack runs in a process of its own, as a real one would: in this one, its
        # thousands of connections would slow the genuine sender this figure measures.
        attacker = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "reliability._attacker",
            url,
            SECRET,
            str(half_open),
            str(slow),
            str(duration),
            stdout=asyncio.subprocess.PIPE,
        )
        assert attacker.stdout is not None
        await asyncio.wait_for(attacker.stdout.readline(), 20)  # "ready"
        await asyncio.sleep(min(2.0, duration / 4))  # the attack takes hold
        # The genuine sender too, as the API's would be: this process carries what the
        # figures before this one left behind.
        sender = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "reliability._sender",
            url,
            SECRET,
            str(max(0.5, duration - min(2.0, duration / 4) - 1.0)),  # within the attack
            stdout=asyncio.subprocess.PIPE,
        )
        assert sender.stdout is not None
        report = json.loads(await asyncio.wait_for(sender.stdout.readline(), duration + 60))
        await sender.wait()
        sent: int = report["sent"]
        latencies: list[float] = report["latencies"]
        failures: dict[str, int] = report["failures"]
        last = await asyncio.wait_for(attacker.stdout.readline(), 30)
        opened: dict[str, int] = json.loads(last) if last.strip() else {}
        await attacker.wait()
    answered = len(latencies)
    share = answered / sent if sent else 0.0
    p99 = percentile(latencies, 0.99)
    return [
        Row(
            "Exhaustion",
            f"genuine callbacks during {half_open} half-open + {slow} slow-body connections "
            f"(child at 1,024 fds; {opened.get('half-open', 0)}+{opened.get('slow', 0)} "
            f"opened in {duration:.0f} s)",
            sent,
            f"answered {answered} ({share:.1%}), p99 {p99 * 1000:.0f} ms"
            + (f", failed {failures}" if failures else "")
            + (
                f"; receiver evicted {seen.get('evicted')}, refused {seen.get('refused')}, "
                f"timed out {seen.get('timed_out')}; accept errors "
                f"{seen.get('accept_errors')}, ERROR logs {seen.get('errors')}, "
                f"receiver CPU {seen.get('cpu_s')} s"
            ),
            "≥ 99 %, p99 < 1 s, 0 ERROR logs",
            sent > 0 and share >= 0.99 and p99 < 1.0 and seen.get("errors") == 0,
        )
    ]


async def _stall(n: int, cancel_share: float, *, freeze: bool) -> tuple[float, str, int, int]:
    """Max gap of a 10 ms ticker while ``n`` waiters on one task are partly cancelled and
    the rest woken by its complete callback."""
    async with (
        Simulator(
            speed=1, seed=1, rate_limit=None, stage_times=StageTimes(3600, 3600, 3600)
        ) as sim,
        CallbackReceiver(secret=SECRET) as receiver,
        sim_client(
            sim,
            receiver,
            poll=PollPolicy(grace=600, initial=600, maximum=600, min_interval=600),
        ) as client,
    ):
        task = await client.add_vocals(
            upload_url="https://cdn.example.org/i.mp3",
            prompt="p",
            title="t",
            style="s",
            negative_tags="n",
        )
        callback_url = sim.tasks[task.task_id].callback_url
        waiters = [asyncio.create_task(task.complete(timeout=120)) for _ in range(n)]
        await asyncio.sleep(0.5)  # every waiter is waiting
        # Gathered before the ticker starts: gather() itself walks every waiter once, a
        # cost of the test harness, not of the waits it measures. And before the set-up's
        # collection: its 100,000 callback contexts are the harness's long-lived objects,
        # not new ones that would set off a full collection inside the measured window.
        gathered = asyncio.gather(*waiters, return_exceptions=True)
        gc.collect()
        if freeze:
            gc.freeze()
        gaps = {"cancel": 0.0, "wake": 0.0}
        phase = "cancel"
        running = True

        async def ticker() -> None:
            last = time.perf_counter()
            while running:
                await asyncio.sleep(0.01)
                now = time.perf_counter()
                gaps[phase] = max(gaps[phase], now - last - 0.01)
                last = now

        ticking = asyncio.create_task(ticker())
        await asyncio.sleep(0.05)
        try:
            for waiter in waiters[: int(n * cancel_share)]:
                waiter.cancel()
            await asyncio.sleep(0.2)
            phase = "wake"
            async with (
                aiohttp.ClientSession() as session,
                session.post(callback_url, json=callback_json(task.task_id)) as answer,
            ):
                await answer.read()
            results = await gathered
            await asyncio.sleep(0.05)
        finally:
            running = False
            await ticking
            if freeze:
                gc.unfreeze()
        done = sum(1 for r in results if not isinstance(r, BaseException))
        cancelled = sum(1 for r in results if isinstance(r, asyncio.CancelledError))
        split = f"cancel {gaps['cancel'] * 1000:.0f} ms, wake {gaps['wake'] * 1000:.0f} ms"
        return max(gaps.values()), split, done, cancelled


async def waiters(n: int = 100_000) -> list[Row]:
    gap, split, done, cancelled = await _stall(n, 0.10, freeze=False)
    ok = done + cancelled == n and cancelled == n // 10
    rows = [
        Row(
            "Exhaustion",
            "waiters on one task, 10 % cancelled, then woken (gc as normal)",
            n,
            f"max loop stall {gap * 1000:.0f} ms ({split}); resolved {done}, cancelled {cancelled}",
            f"stall < {STALL_GOAL * 1000:.0f} ms",
            ok and gap < STALL_GOAL,
        )
    ]
    if gap >= STALL_GOAL:
        frozen, split, done, cancelled = await _stall(n, 0.10, freeze=True)
        rows.append(
            Row(
                "Exhaustion",
                "the same with gc.freeze() after set-up (to see the collector's share; "
                "the row above is the figure)",
                n,
                f"max loop stall {frozen * 1000:.0f} ms ({split}); resolved {done}, "
                f"cancelled {cancelled}",
                "information only",
                True,
            )
        )
    return rows


def _big_body(task_id: str, callback_type: str, size: int) -> bytes:
    body: dict[str, Any] = callback_json(task_id, callback_type)
    if callback_type in ("text", "progress"):
        body["data"]["data"] = [track_json(task_id, 0)]
    tracks = body["data"]["data"]
    assert isinstance(tracks, list)
    for track in tracks:
        track["prompt"] = "la " * (size // (3 * len(tracks)))
    return dumps(body)


async def orphans(tasks: int = 750, *, size: int = 900 * 1024) -> list[Row]:
    async with _child_receiver() as (child, url):
        minter = _minter(url)
        baseline = rss_bytes(child.pid)
        peak = baseline
        sent = answered = 0
        async with aiohttp.ClientSession() as session:

            async def one(k: int) -> None:
                nonlocal sent, answered, peak
                task_id = f"{k:08d}{random.getrandbits(96):024x}"
                target = minter.new_callback_url().url
                for callback_type in ("text", "first", "complete", "progress"):
                    sent += 1
                    data = _big_body(task_id, callback_type, size)
                    async with session.post(
                        target, data=data, headers={"Content-Type": "application/json"}
                    ) as response:
                        await response.read()
                        answered += response.status < 300
                peak = max(peak, rss_bytes(child.pid))

            queue = iter(range(tasks))

            async def worker() -> None:
                for k in queue:
                    await one(k)

            await asyncio.gather(*(worker() for _ in range(4)))
        end = rss_bytes(child.pid)
    growth = max(peak, end) - baseline
    return [
        Row(
            "Exhaustion",
            f"orphaned callbacks, {size // 1024} KiB bodies, 4 types × {tasks} unknown tasks",
            sent,
            f"answered {answered}; receiver RSS {baseline / 2**20:.0f} → peak "
            f"{max(peak, end) / 2**20:.0f} MiB ({growth / 2**20:+.0f})",
            f"growth ≤ {ORPHAN_BOUND // 2**20} MiB",
            growth <= ORPHAN_BOUND and answered == sent,
        )
    ]
