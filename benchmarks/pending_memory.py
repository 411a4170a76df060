"""Goal: 100,000 pending tasks cost at most half the memory of the naive design, and
dispatch stays O(1).

The naive design gives every pending task a waiting ``asyncio.Task`` around a future (what
``asyncio.create_task(wait_for_callback(...))`` per submit amounts to). Ours holds a
``TaskState``, its registry entry and its seam subscription: no task, no future, until
somebody waits. Memory is
measured with tracemalloc in this process; dispatch time per callback is compared between
1,000 and 100,000 registered tasks (the ratio should stay near 1).
"""

from __future__ import annotations

import asyncio
import gc
import json
import secrets
import statistics
import time
import tracemalloc
from collections.abc import Awaitable, Callable
from typing import Any

from addvocals_async import CallbackReceiver, TaskRegistry
from addvocals_async._providers import get_provider

GOAL_MEMORY_RATIO = 0.5
GOAL_DISPATCH_RATIO = 2.0


async def _measure(build: Callable[[], Awaitable[Any]]) -> tuple[int, Any]:
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    kept = await build()
    gc.collect()
    after = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    return after - before, kept


async def naive(n: int) -> int:
    """Bytes for n asyncio tasks, each awaiting a future of its own (kept by id)."""
    loop = asyncio.get_running_loop()

    async def wait_for_callback(future: asyncio.Future[None]) -> None:
        await future

    async def build() -> Any:
        futures = {secrets.token_hex(16): loop.create_future() for _ in range(n)}
        tasks = [asyncio.ensure_future(wait_for_callback(f)) for f in futures.values()]
        await asyncio.sleep(0)  # every task is waiting now
        return futures, tasks

    size, (futures, tasks) = await _measure(build)
    for future in futures.values():
        future.set_result(None)
    await asyncio.gather(*tasks)
    return size


async def register(rx: CallbackReceiver, registry: TaskRegistry, task_id: str) -> str:
    """What a submit does at the receiver's side; returns the callback URL's token."""
    fresh = rx.new_callback_url()
    await registry.bind(registry.expect(fresh.ref), task_id)
    return fresh.url.rsplit("/", 1)[1]


async def ours(n: int) -> tuple[int, CallbackReceiver]:
    rx = CallbackReceiver(public_url="https://hooks.example.org/addvocals",
                          secret=secrets.token_bytes(32))  # fmt: skip
    registry = TaskRegistry(rx.backend, get_provider("apibox"))

    async def build() -> Any:
        for _ in range(n):
            await register(rx, registry, secrets.token_hex(16))
        return registry

    size, _ = await _measure(build)
    return size, rx


async def dispatch_time(registered: int, sample: int = 1000) -> float:
    sample = min(sample, registered)
    rx = CallbackReceiver(public_url="https://hooks.example.org/addvocals",
                          secret=secrets.token_bytes(32))  # fmt: skip
    registry = TaskRegistry(rx.backend, get_provider("apibox"))
    targets = []
    for i in range(registered):
        task_id = secrets.token_hex(16)
        token = await register(rx, registry, task_id)
        if i < sample:
            text = {"code": 200, "msg": "ok", "data": {"callbackType": "text", "task_id": task_id}}
            targets.append((token, json.dumps(text).encode()))
    start = time.perf_counter()
    for token, body in targets:
        await rx.handle_token(token, {}, body)
    elapsed = time.perf_counter() - start
    assert rx.stats.accepted == sample
    await rx.aclose()
    return elapsed / sample


async def run(n: int = 100_000) -> dict[str, Any]:
    naive_bytes = await naive(n)
    our_bytes, rx = await ours(n)
    await rx.aclose()
    small = await dispatch_time(1000)
    large = await dispatch_time(n)
    return {
        "tasks": n,
        "naive_bytes_per_task": naive_bytes / n,
        "our_bytes_per_task": our_bytes / n,
        "memory_ratio": our_bytes / naive_bytes,
        "memory_goal": GOAL_MEMORY_RATIO,
        "dispatch_us_1k": small * 1e6,
        "dispatch_us_large": large * 1e6,
        "dispatch_ratio": large / small,
        "dispatch_goal": GOAL_DISPATCH_RATIO,
    }


async def awaited_memory(n: int, rounds: int = 3) -> dict[str, Any]:
    """Memory per task once a coroutine awaits it, against one asyncio task awaiting a
    future per task (the naive design, every task awaited): ``await task.complete()`` on
    a task registered with a receiver, by a task of its own.

    ``rounds`` rounds, the two designs interleaved; the median of each and of the per-round
    ratios, with their range. A single round is not a fair figure: what asyncio keeps
    between rounds (the table of its set of live tasks, which only grows) makes the first
    design measured pay for growing it, the next not, about 40 B a task either way."""
    naive_runs: list[float] = []
    ours_runs: list[float] = []
    for _ in range(rounds):
        naive_runs.append(await naive(n) / n)
        ours_runs.append(await _awaited_once(n) / n)
    ratios = [o / b for o, b in zip(ours_runs, naive_runs, strict=True)]
    return {
        "tasks": n,
        "rounds": rounds,
        "naive_bytes_per_task": statistics.median(naive_runs),
        "our_bytes_per_task": statistics.median(ours_runs),
        "ratio": statistics.median(ratios),
        "ratio_range": [min(ratios), max(ratios)],
    }


async def _awaited_once(n: int) -> int:
    from addvocals_async import PollPolicy, VocalTask

    from ._server import _NoPolls

    rx = CallbackReceiver(public_url="https://hooks.example.org/addvocals",
                          secret=secrets.token_bytes(32))  # fmt: skip
    registry = TaskRegistry(rx.backend, get_provider("apibox"))
    policy, source = PollPolicy(grace=86_400.0, default_timeout=86_400.0), _NoPolls()
    waits: list[asyncio.Task[Any]] = []

    async def build() -> Any:
        for _ in range(n):
            fresh = rx.new_callback_url()
            state = await registry.bind(registry.expect(fresh.ref), secrets.token_hex(16))
            task = VocalTask(state, source, policy)
            waits.append(asyncio.ensure_future(task.complete()))
        await asyncio.sleep(0)  # every coroutine is waiting now
        return registry

    ours_bytes, _ = await _measure(build)
    for wait in waits:
        wait.cancel()
    await asyncio.gather(*waits, return_exceptions=True)
    await rx.aclose()
    return ours_bytes
