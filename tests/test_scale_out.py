"""Scaling out over a real redis-server, every part a process of its own: three receivers
(``addvocals serve --redis``) behind a round-robin proxy, worker processes awaiting tasks
(``examples/scale_out``), the simulator sending its fault mix. What must hold: each task
resolves exactly once, in the process that awaits it, stages in order, by callback; a
worker killed mid-flight finds every task again; and nothing is left in Redis without a
TTL, nor any registration, once everything has ended."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
from helpers import CHILD_TESTING, NO_DETAILS_LIMIT, SECRET

from addvocals_async import Stage
from addvocals_async.testing import Simulator, StageTimes
from addvocals_async.testing.redis_server import RedisServer

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "scale_out"
FAULT_MIX = {"duplicates": 0.15, "out_of_order": 0.15, "early_callback": 0.15, "skip_text": 0.15}
RANK = {stage.value: stage.rank for stage in Stage}


class Cluster:
    """The receiver tier and its proxy, started for one test, on one Redis prefix."""

    def __init__(self, redis_url: str, prefix: str, tmp: Path) -> None:
        self.redis_url, self.prefix, self.tmp = redis_url, prefix, tmp
        self.processes: list[asyncio.subprocess.Process] = []
        self.public_url = ""

    def env(self, sim: Simulator) -> dict[str, str]:
        return {
            **os.environ,
            **CHILD_TESTING,
            "ADDVOCALS_BASE_URL": sim.base_url,
            "ADDVOCALS_API_KEY": sim.api_key,
            "ADDVOCALS_PROVIDER": sim.provider,
            "ADDVOCALS_RECEIVER_SECRET": SECRET,
        }

    async def start(self, sim: Simulator, receivers: int = 3) -> None:
        urls = await asyncio.gather(*(self._receiver(sim, n) for n in range(receivers)))
        proxy = await asyncio.create_subprocess_exec(
            sys.executable, str(EXAMPLE / "proxy.py"), "0", *urls,
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        )  # fmt: skip
        self.processes.append(proxy)
        assert proxy.stdout is not None
        base = (await asyncio.wait_for(proxy.stdout.readline(), 10)).decode().strip()
        self.public_url = f"{base}/addvocals"

    async def _receiver(self, sim: Simulator, n: int) -> str:
        log = self.tmp / f"receiver-{n}.err"
        with (self.tmp / f"receiver-{n}.out").open("wb") as out, log.open("wb") as err:
            process = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "addvocals_async", "serve", "--port", "0",
                "--redis", self.redis_url, "--redis-prefix", self.prefix,
                env=self.env(sim), stdout=out, stderr=err, stdin=asyncio.subprocess.DEVNULL,
            )  # fmt: skip
        self.processes.append(process)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            for line in log.read_text().splitlines():
                if line.startswith("receiving callbacks at "):
                    return line.split()[3].removesuffix("/cb/<token>").rsplit("/", 1)[0]
            assert process.returncode is None, log.read_text()
            await asyncio.sleep(0.05)
        raise AssertionError(f"receiver {n} did not start: {log.read_text()}")

    async def worker(self, sim: Simulator, name: str, *args: str) -> asyncio.subprocess.Process:
        process = await asyncio.create_subprocess_exec(
            sys.executable, str(EXAMPLE / "worker.py"), self.redis_url, self.public_url,
            "--name", name, "--prefix", self.prefix, "--grace", "3000", *args,
            env=self.env(sim), stdout=asyncio.subprocess.PIPE,
            stderr=self.tmp.joinpath(f"worker-{name}.err").open("ab"),
        )  # fmt: skip
        self.processes.append(process)
        return process

    async def stop(self) -> None:
        for process in self.processes:
            if process.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    process.terminate()
        for process in self.processes:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(process.wait(), 5)
            if process.returncode is None:
                process.kill()
                await process.wait()


@pytest.fixture
async def cluster(
    redis_server: RedisServer, redis_prefix: str, tmp_path: Path
) -> AsyncIterator[Cluster]:
    made = Cluster(redis_server.url, redis_prefix, tmp_path)
    yield made
    await made.stop()


async def lines_of(process: asyncio.subprocess.Process, timeout: float) -> list[dict[str, Any]]:
    stdout, _ = await asyncio.wait_for(process.communicate(), timeout)
    assert process.returncode == 0, stdout.decode()
    return [json.loads(line) for line in stdout.decode().splitlines() if line.strip()]


def check_resolved(results: list[dict[str, Any]]) -> None:
    for result in results:
        ranks = [RANK[stage] for stage in result["stages"]]
        assert ranks == sorted(set(ranks)), result  # in order, each stage once
        assert result["stages"][-1] == "complete", result
        assert result["source"] == "callback", result


async def nothing_left(redis_url: str, prefix: str, *, killed: bool = False) -> None:
    """Every key under ``prefix`` expires, and no process is registered as awaiting (but
    one ``killed``: its registrations end with their lease, two minutes at most)."""
    async with aioredis.Redis.from_url(redis_url) as raw:
        keys = [key.decode() async for key in raw.scan_iter(match=f"{prefix}*", count=1000)]
        ttls = {key: await raw.pttl(key) for key in keys}
    # -1: a key without expiry (-2: it expired between SCAN and PTTL, as it should).
    assert all(ttl != -1 for ttl in ttls.values()), {k: t for k, t in ttls.items() if t == -1}
    kinds = {key.removeprefix(prefix).split(":")[0] for key in keys}
    assert kinds <= {"claim", "home", "events", "feed", "seq", "throttle", "watch"}, kinds
    leased = [ttl for key, ttl in ttls.items() if key.startswith(f"{prefix}watch:")]
    assert not leased if not killed else max(leased) <= 120_000, leased


async def run_cluster(cluster: Cluster, tasks: int, workers: int, timeout: float) -> None:
    async with Simulator(
        speed=1000, seed=11, mix=FAULT_MIX, rate_limit=None, details_rate_limit=NO_DETAILS_LIMIT,
        credits=100_000, min_callback_timeout=5.0,  # a shared machine: a patient sender
    ) as sim:  # fmt: skip
        await cluster.start(sim)
        share = tasks // workers
        running = [
            await cluster.worker(sim, f"w{n}", "--tasks", str(share)) for n in range(workers)
        ]
        outputs = await asyncio.gather(*(lines_of(w, timeout) for w in running))
        results = [[r for r in out if "task_id" in r] for out in outputs]
        seen = [r["task_id"] for out in results for r in out]
        assert len(seen) == len(set(seen)) == share * workers  # each exactly once
        assert set(seen) == set(sim.tasks)
        for out, process in zip(results, running, strict=True):
            assert {r["pid"] for r in out} == {process.pid}  # where it was awaited
        check_resolved([r for out in results for r in out])
        # The fault mix forces no poll: every stage came by callback, through the tier.
        assert sim.count(path=sim.profile.details_path) == 0
        assert {d.status for d in sim.deliveries} == {200}
    await nothing_left(cluster.redis_url, cluster.prefix)


async def test_three_receivers_two_workers_every_task_once_in_its_own_process(
    cluster: Cluster,
) -> None:
    await run_cluster(cluster, tasks=200, workers=2, timeout=60)


@pytest.mark.slow
async def test_three_receivers_two_workers_a_thousand_tasks(cluster: Cluster) -> None:
    await run_cluster(cluster, tasks=1000, workers=2, timeout=180)


async def test_a_worker_killed_mid_flight_resumes_every_task(cluster: Cluster) -> None:
    """SIGKILL after its submits, two of whose answers were lost: the restarted worker's
    resume() finds all of them (the ambiguous two through their callbacks) and each
    completes, with nothing submitted twice."""
    slow = StageTimes(text=600.0, first=1200.0, complete=1800.0)
    async with Simulator(
        speed=1000, seed=12, stage_times=slow, rate_limit=None,
        details_rate_limit=NO_DETAILS_LIMIT, retry_delays=(20.0, 40.0, 60.0),
    ) as sim:  # fmt: skip
        await cluster.start(sim)
        sim.script("server_error_after_create", count=1)
        sim.script("drop_after_create", count=1)
        first = await cluster.worker(sim, "w1", "--tasks", "12")
        assert first.stdout is not None
        ambiguous = 0
        while True:
            record = json.loads(await asyncio.wait_for(first.stdout.readline(), 20))
            if "ambiguous" in record:
                ambiguous += 1
            if "submitted" in record:
                break
        first.send_signal(signal.SIGKILL)
        await first.wait()
        assert ambiguous == 2
        assert record["submitted"] == 10
        assert len(sim.tasks) == 12
        again = await cluster.worker(sim, "w1", "--resume")
        out = await lines_of(again, 30)
        assert out[0]["resumed"] == 12
        results = [r for r in out if "task_id" in r]
        assert sorted(r["task_id"] for r in results) == sorted(sim.tasks)
        check_resolved(results)
        assert len(sim.submits()) == 12  # found, not paid for twice
    await nothing_left(cluster.redis_url, cluster.prefix, killed=True)


@pytest.mark.slow
async def test_redis_stopped_and_restarted_under_the_whole_cluster(tmp_path: Path) -> None:
    """Redis away for 10 s while two workers await 20 tasks through three receivers: the
    receivers answer 503 and the sender retries, the workers poll meanwhile, every task
    completes once, and each process says "lost" and "back" once."""
    with RedisServer() as server:
        cluster = Cluster(server.url, "outage:", tmp_path)
        # The outage spans the first and the last stage of every task (at speed 1000).
        times = StageTimes(text=300.0, first=5000.0, complete=12000.0)
        try:
            async with Simulator(
                speed=1000, seed=13, stage_times=times, rate_limit=None,
                details_rate_limit=NO_DETAILS_LIMIT, retry_delays=(300.0, 600.0, 1200.0, 2400.0),
                min_callback_timeout=2.0,
            ) as sim:  # fmt: skip
                await cluster.start(sim)
                workers = [await cluster.worker(sim, f"w{n}", "--tasks", "10") for n in range(2)]
                for worker in workers:
                    assert worker.stdout is not None
                    line = await asyncio.wait_for(worker.stdout.readline(), 20)
                    assert json.loads(line) == {"submitted": 10}
                server.stop()
                await asyncio.sleep(10.0)  # the outage, in real seconds
                server.start()
                outputs = await asyncio.gather(*(lines_of(w, 30) for w in workers))
                seen = sorted(r["task_id"] for out in outputs for r in out if "task_id" in r)
                assert seen == sorted(sim.tasks)
                assert {r["stages"][-1] for out in outputs for r in out} == {"complete"}
        finally:
            await cluster.stop()
    for n in range(2):
        text = (tmp_path / f"worker-w{n}.err").read_text()
        assert text.count("lost Redis") == 1, text
        # Once, or not at all when polling finished the worker's tasks before its reader's
        # next attempt (its backoff reaches 2 s).
        assert text.count("is back") <= 1, text
    receivers = [(tmp_path / f"receiver-{n}.err").read_text() for n in range(3)]
    assert sum(text.count("seam is unavailable") for text in receivers) >= 1
    for text in receivers:
        assert text.count("seam is unavailable") <= 1, text
        assert text.count("seam is back") == text.count("seam is unavailable"), text
