"""The Redis delivery seam (issue 9), against a redis-server this benchmark starts itself
(``addvocals_async.testing.redis_server``, as the tests do):

- receiver throughput with ``RedisBackend`` vs ``InMemoryBackend``, same load, the two
  receivers loaded in interleaved rounds as in ``http_load`` (requests per CPU-second of
  the receiver process; the redis-server's own CPU is reported apart). Goal >= 0.6x.
- cross-process latency: from a callback's arrival at a receiver process to the coroutine
  awaiting its task in another process resuming, at 1,000 callbacks/s. Goal p99 <= 5 ms.
- memory per pending task in Redis (``INFO memory`` before and after), at 100,000 pending:
  a submitted task (its callback URL's claim), and one whose ``text`` callback is stored.
"""

from __future__ import annotations

import asyncio
import gc
import json
import os
import secrets
import statistics
import sys
import tempfile
import time
from typing import Any

import redis.asyncio as aioredis

from addvocals_async import (
    CallbackReceiver,
    Delivery,
    DeliveryResult,
    PendingSubmit,
    TaskRegistry,
    TaskState,
)
from addvocals_async._convert import wire
from addvocals_async._providers import get_provider
from addvocals_async.redis import RedisBackend
from addvocals_async.testing.redis_server import RedisServer

from . import http_load
from ._server import callback_body

GOAL_THROUGHPUT = 0.6
GOAL_P99_MS = 5.0


def _cpu_seconds(pid: int) -> float:
    """User + system CPU of process ``pid`` so far (Linux ``/proc``)."""
    with open(f"/proc/{pid}/stat") as handle:
        fields = handle.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def throughput(server: RedisServer, n: int, rounds: int) -> dict[str, Any]:
    os.environ["ADDVOCALS_BENCH_REDIS"] = server.url
    kinds = ("receiver", "receiver_redis")
    results = []
    redis_cpu = []
    for _ in range(rounds):
        assert server.pid is not None
        before = _cpu_seconds(server.pid)
        rounds_of = await http_load._subprocess_rounds(kinds, "pending", n, 1, 0)
        results.append({kind: figures[0] for kind, figures in rounds_of.items()})
        redis_cpu.append(_cpu_seconds(server.pid) - before)
    ratios = [r["receiver"]["cpu_s"] / r["receiver_redis"]["cpu_s"] for r in results]
    return {
        "memory_rps_per_cpu_s": n / statistics.median(r["receiver"]["cpu_s"] for r in results),
        "redis_rps_per_cpu_s": n / statistics.median(r["receiver_redis"]["cpu_s"] for r in results),
        "ratio": statistics.median(ratios),
        "ratio_range": [min(ratios), max(ratios)],
        "redis_server_cpu_ms_per_callback": 1000 * statistics.median(redis_cpu) / n,
        "rounds": rounds,
        "goal": GOAL_THROUGHPUT,
    }


async def latency(server: RedisServer, n: int, rate: float) -> dict[str, Any]:
    prefix, secret = f"lat-{secrets.token_hex(4)}:", secrets.token_hex(16)
    with tempfile.TemporaryDirectory() as folder:
        arrivals_file = os.path.join(folder, "arrivals.json")
        jobs_file = os.path.join(folder, "jobs.json")
        receiving = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "benchmarks._latency_receiver",
            server.url, prefix, secret, arrivals_file,
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        )  # fmt: skip
        assert receiving.stdout is not None
        assert receiving.stdin is not None
        try:
            url = (await receiving.stdout.readline()).decode().strip()
            backend = RedisBackend(server.url, prefix=prefix)
            await backend.connect()
            # This process awaits; its receiver never serves, it only signs URLs for A.
            here = CallbackReceiver(secret=secret, public_url=url, backend=backend)
            registry = TaskRegistry(backend, get_provider("apibox"))
            resumed: dict[str, float] = {}
            jobs: list[tuple[str, str]] = []
            waits = []

            async def await_change(state: TaskState, token: str) -> None:
                await state.wait_changed(60.0)  # woken by the callback, as a task's wait is
                resumed[token] = time.monotonic()

            for _ in range(n):
                task_id = secrets.token_hex(16)
                fresh = here.new_callback_url()
                state = await registry.bind(registry.expect(fresh.ref), task_id)
                token = fresh.url.rsplit("/", 1)[1]
                jobs.append((fresh.url, callback_body(task_id)))
                waits.append(asyncio.ensure_future(await_change(state, token)))
            await asyncio.sleep(0.5)  # every subscription's replay done
            # The set-up's 3,000 registrations collected now, as a long-running process
            # has long done, not in the middle of the measured callbacks.
            gc.collect()
            with open(jobs_file, "w") as handle:
                json.dump(jobs, handle)
            load = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "benchmarks._paced_load", str(rate), jobs_file,
                stdout=asyncio.subprocess.PIPE,
            )  # fmt: skip
            out, _ = await load.communicate()
            assert int(out) == n, "callbacks failed"
            await asyncio.wait_for(asyncio.gather(*waits), 10)
            receiving.stdin.close()
            await receiving.wait()
            with open(arrivals_file) as handle:
                arrivals: dict[str, float] = json.load(handle)
            await here.aclose()
        finally:
            if receiving.returncode is None:
                receiving.kill()
                await receiving.wait()
    ms = sorted(1000 * (resumed[token] - arrivals[token]) for token in resumed)
    return {
        "callbacks": n,
        "rate_per_s": rate,
        "p50_ms": ms[len(ms) // 2],
        "p99_ms": ms[min(len(ms) - 1, int(len(ms) * 0.99))],
        "max_ms": ms[-1],
        "goal_p99_ms": GOAL_P99_MS,
    }


async def latency_rounds(server: RedisServer, n: int, rounds: int) -> dict[str, Any]:
    """``latency`` at 1,000 callbacks/s, ``rounds`` times: the median round's p50 and p99,
    and the range of the p99s (one round's p99 is 30 callbacks of 3,000: noisy alone)."""
    runs = [await latency(server, n, 1000.0) for _ in range(rounds)]
    p99s = sorted(run["p99_ms"] for run in runs)
    p50s = sorted(run["p50_ms"] for run in runs)
    return {
        **runs[0],
        "rounds": rounds,
        "p50_ms": p50s[len(p50s) // 2],
        "p99_ms": p99s[len(p99s) // 2],
        "p99_range_ms": [p99s[0], p99s[-1]],
        "max_ms": max(run["max_ms"] for run in runs),
    }


def _text(ref: str, task_id: str) -> Delivery:
    body = {"code": 200, "msg": "ok", "data": {"callbackType": "text", "task_id": task_id}}
    return Delivery(ref, wire.structure_callback(body))


class _Idle:
    """A subscriber that only holds its subscription (what a pending task's wait does)."""

    def deliver(self, delivery: Delivery) -> DeliveryResult:
        return DeliveryResult.IGNORED

    def seam_closed(self) -> None:
        pass

    def seam_available(self, available: bool) -> None:
        pass


async def memory(server: RedisServer, n: int) -> dict[str, Any]:
    """Bytes per pending task: the submit's claim of its URL and the task's home URL; then
    the awaiting process's registration (leased); then its pending-store record; then a
    ``text`` callback stored."""
    prefix = f"mem-{secrets.token_hex(4)}:"
    backend = RedisBackend(server.url, prefix=prefix)
    store = backend.pending_store("bench")
    idle = _Idle()
    async with aioredis.Redis.from_url(server.url) as raw:

        async def used() -> int:
            return int((await raw.info("memory"))["used_memory"])

        tasks = [(secrets.token_hex(16), secrets.token_hex(16)) for _ in range(n)]
        request = {"uploadUrl": "https://cdn.example.org/a.mp3", "title": "t", "prompt": "p" * 80}
        before = await used()
        for i in range(0, n, 50):
            chunk = tasks[i : i + 50]
            await asyncio.gather(
                *(backend.claim(ref, task, authoritative=True) for ref, task in chunk)
            )
        claimed = await used()
        keys_before = await raw.dbsize()
        for _, task in tasks:
            backend.subscribe(idle, task_id=task)
        for _ in range(2400):  # the reader writes the registrations (2 min at most)
            if await raw.dbsize() >= keys_before + n:
                break
            await asyncio.sleep(0.05)
        registered = await used()
        for i in range(0, n, 50):
            chunk = tasks[i : i + 50]
            await asyncio.gather(
                *(store.record(PendingSubmit(ref=ref, request=request)) for ref, _ in chunk)
            )
        recorded = await used()
        for i in range(0, n, 50):
            chunk = tasks[i : i + 50]
            await asyncio.gather(*(backend.publish(_text(ref, task)) for ref, task in chunk))
        stored = await used()
        for _, task in tasks:
            backend.unsubscribe(idle, task_id=task)
        await backend.aclose()
        await raw.eval(
            "for _, k in ipairs(redis.call('KEYS', ARGV[1])) do redis.call('DEL', k) end",
            0,
            f"{prefix}*",
        )
    return {
        "pending": n,
        "bytes_per_pending_task": (claimed - before) / n,
        "bytes_with_registration": (registered - before) / n,
        "bytes_with_pending_record": (recorded - before) / n,
        "bytes_per_task_with_text_stored": (stored - before) / n,
    }


async def run(quick: bool = False) -> dict[str, Any]:
    """Every figure, or ``{"skipped": reason}`` when redis-server cannot start."""
    server = RedisServer()
    try:
        server.start()
    except Exception as exc:
        return {"skipped": str(exc)}
    try:
        return {
            "throughput": await throughput(server, 150 if quick else 3000, 1 if quick else 3),
            "latency": await latency_rounds(server, 100 if quick else 3000, 1 if quick else 5),
            "memory": await memory(server, 1000 if quick else 100_000),
        }
    finally:
        server.close()


if __name__ == "__main__":
    print(json.dumps(asyncio.run(run("--quick" in sys.argv)), indent=2))
