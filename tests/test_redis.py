"""``addvocals_async.redis`` over a real redis-server: what only Redis does (TTLs, the
stored layout, de-duplication, outages, the password kept secret), and the whole path
over real HTTP: a callback landing on one process resolves a wait in another."""

from __future__ import annotations

import asyncio
import logging
import secrets
import sys
import time
import traceback
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
from helpers import REQUEST, SECRET
from seam_helpers import Recorder, delivery, settle

from addvocals_async import (
    AddVocalsClient,
    CallbackReceiver,
    DeliveryResult,
    DeliveryUnavailableError,
    PollPolicy,
    RetryPolicy,
    Stage,
)
from addvocals_async.redis import RedisBackend, redact_url
from addvocals_async.testing import Simulator, StageTimes
from addvocals_async.testing.redis_server import RedisServer, free_port

PASSWORD = "pa55-w0rd-never-shown"
# Callbacks only: a grace period far beyond the test, so a poll would show.
CALLBACKS_ONLY = PollPolicy(grace=60.0, initial=10.0, maximum=30.0, default_timeout=30.0)


@pytest.fixture
async def backends(
    redis_server: RedisServer, redis_prefix: str
) -> AsyncIterator[list[RedisBackend]]:
    """Backends made by a test, closed after it."""
    made: list[RedisBackend] = []
    yield made
    for backend in made:
        await backend.aclose()


def new_backend(made: list[RedisBackend], url: str, prefix: str, **options: Any) -> RedisBackend:
    backend = RedisBackend(url, prefix=prefix, **options)
    made.append(backend)
    return backend


@pytest.fixture
def private_redis() -> Iterator[RedisServer]:
    """A server of this test's own (with a password), to stop and start at will."""
    server = RedisServer(password=PASSWORD)
    server.start()
    yield server
    server.close()


async def keys_and_ttls(url: str, prefix: str) -> dict[str, int]:
    async with aioredis.Redis.from_url(url) as raw:
        found = [key async for key in raw.scan_iter(match=f"{prefix}*")]
        return {key.decode(): await raw.ttl(key) for key in found}


# ------------------------------------------------------------------------- storage


async def test_every_key_expires_and_nothing_else_is_left(
    redis_server: RedisServer, redis_prefix: str, backends: list[RedisBackend]
) -> None:
    seam = new_backend(backends, redis_server.url, redis_prefix, ttl=600)
    waiting = Recorder()
    for n in range(5):
        ref, task = secrets.token_hex(8), f"task-{n}"
        await seam.claim(ref, task, authoritative=True)
        seam.subscribe(waiting, task_id=task)
        for kind in ("text", "first", "complete"):
            await seam.publish(delivery(ref, task, kind))
        seam.unsubscribe(waiting, task_id=task)
    await settle()
    assert len(seam) == 0
    found = await keys_and_ttls(redis_server.url, redis_prefix)
    kinds = {key.removeprefix(redis_prefix).split(":")[0] for key in found}
    assert kinds == {"claim", "home", "events", "feed", "seq"}
    # A claim, a home and a stream per task, the feed and its count; no registration.
    assert len(found) == 5 + 5 + 5 + 2
    assert all(0 < ttl <= 600 for ttl in found.values()), found


async def test_the_senders_retries_are_stored_once(
    redis_server: RedisServer, redis_prefix: str, backends: list[RedisBackend]
) -> None:
    seam = new_backend(backends, redis_server.url, redis_prefix, events_per_task=4)
    ref, task = secrets.token_hex(8), secrets.token_hex(16)
    # Nobody awaits the task anywhere: an orphan, stored for a later subscriber.
    assert await seam.publish(delivery(ref, task, "text")) is DeliveryResult.ORPHANED
    assert await seam.publish(delivery(ref, task, "text")) is DeliveryResult.IGNORED
    for kind in ("first", "complete", "x1", "x2", "x3"):
        await seam.publish(delivery(ref, task, kind))
    async with aioredis.Redis.from_url(redis_server.url) as raw:
        assert await raw.xlen(seam.events_key(task)) == 4  # capped


async def test_a_local_subscriber_gets_its_callback_at_once(
    redis_server: RedisServer, redis_prefix: str, backends: list[RedisBackend]
) -> None:
    seam = new_backend(backends, redis_server.url, redis_prefix)
    ref, task = secrets.token_hex(8), secrets.token_hex(16)
    here = Recorder(answer=DeliveryResult.IGNORED)
    seam.subscribe(here, task_id=task)
    await settle()
    # The subscriber's own answer, before publish returns; the feed does not repeat it.
    assert await seam.publish(delivery(ref, task, "text")) is DeliveryResult.IGNORED
    assert here.types == ["text"]
    await settle()
    assert here.types == ["text"]


# ------------------------------------------------------------------------- faults


async def test_unreachable_redis_names_the_url_without_its_password(
    caplog: pytest.LogCaptureFixture,
) -> None:
    url = f"redis://:{PASSWORD}@127.0.0.1:{free_port()}/0"
    seam = RedisBackend(url)
    assert PASSWORD not in repr(seam)
    with pytest.raises(DeliveryUnavailableError) as caught:
        await seam.connect()
    text = str(caught.value)
    assert redact_url(url) in text
    assert "127.0.0.1" in text
    with pytest.raises(DeliveryUnavailableError) as again:
        await seam.publish(delivery("ref", "task"))
    shown = "".join(traceback.format_exception(again.value)) + caplog.text
    assert PASSWORD not in shown
    assert PASSWORD not in text
    await seam.aclose()


async def test_a_receiver_or_client_on_unreachable_redis_fails_at_start() -> None:
    url = f"redis://:{PASSWORD}@127.0.0.1:{free_port()}/0"
    receiver = CallbackReceiver(secret=SECRET, backend=RedisBackend(url))
    with pytest.raises(DeliveryUnavailableError, match=r"127\.0\.0\.1") as caught:
        await receiver.start()
    assert PASSWORD not in str(caught.value)
    worker = CallbackReceiver(
        secret=SECRET, public_url="https://hooks.example.org/av", backend=RedisBackend(url)
    )  # never serves: a worker behind a receiver tier
    with pytest.raises(DeliveryUnavailableError, match=r"127\.0\.0\.1"):
        async with AddVocalsClient("k", base_url="http://127.0.0.1:9", receiver=worker):
            pass
    await receiver.aclose()
    await worker.aclose()


async def test_a_lost_redis_is_told_once_each_way_and_nothing_is_missed(
    private_redis: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    url, prefix = private_redis.url, "outage:"
    receiving = RedisBackend(url, prefix=prefix, reconnect_max=0.1)
    awaiting = RedisBackend(url, prefix=prefix, reconnect_max=0.1, block=0.2)
    ref, task = secrets.token_hex(8), secrets.token_hex(16)
    waiting = Recorder()
    with caplog.at_level(logging.INFO, logger="addvocals_async.redis"):
        awaiting.subscribe(waiting, task_id=task)
        await receiving.publish(delivery(ref, task, "text"))
        await waiting.wait_for(1)
        private_redis.stop()
        with pytest.raises(DeliveryUnavailableError) as caught:
            await receiving.publish(delivery(ref, task, "first"))
        await _until(lambda: waiting.availability == [False])
        await asyncio.sleep(0.5)  # several reconnection attempts
        private_redis.start()
        await _until(lambda: waiting.availability == [False, True])
        # A fresh server (no persistence): the callback stored after it came back arrives.
        await receiving.publish(delivery(ref, task, "complete"))
        await waiting.wait_for(2)
    await receiving.aclose()
    await awaiting.aclose()
    assert waiting.types == ["text", "complete"]
    assert waiting.availability == [False, True]
    lines = [r.getMessage() for r in caplog.records]
    assert sum("lost Redis" in line for line in lines) == 1
    assert sum("is back" in line for line in lines) == 1
    for shown in (*lines, str(caught.value), repr(receiving), repr(awaiting)):
        assert PASSWORD not in shown


async def test_a_subscription_made_while_redis_is_away_is_told_so(
    private_redis: RedisServer,
) -> None:
    seam = RedisBackend(private_redis.url, prefix="away:", reconnect_max=0.1)
    first = Recorder()
    seam.subscribe(first, task_id="a")
    await settle()
    private_redis.stop()
    await _until(lambda: first.availability == [False])
    second = Recorder()
    seam.subscribe(second, task_id="b")
    assert second.availability == [False]
    private_redis.start()
    await _until(lambda: second.availability == [False, True])
    assert first.availability == [False, True]
    await seam.aclose()


async def _until(condition: Any, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached")
        await asyncio.sleep(0.01)


# ------------------------------------------------------------------------- over HTTP


def client_for(sim: Simulator, receiver: CallbackReceiver, poll: PollPolicy) -> AddVocalsClient:
    return AddVocalsClient(
        sim.api_key,
        base_url=sim.base_url,
        provider=sim.provider,
        receiver=receiver,
        poll=poll,
        retry=RetryPolicy.no_wait(),
    )


async def test_a_callback_on_another_process_resolves_the_wait_here(
    redis_server: RedisServer, redis_prefix: str
) -> None:
    """Receiver A is another process; this one's receiver B never serves: it only names
    A's URL. Every task resolves by callback through Redis, none by polling."""
    script = Path(__file__).with_name("redis_receiver.py")
    other = await asyncio.create_subprocess_exec(
        sys.executable, str(script), redis_server.url, redis_prefix, SECRET,
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert other.stdout is not None
    assert other.stdin is not None
    try:
        a_url = (await asyncio.wait_for(other.stdout.readline(), 10)).decode().strip()
        assert a_url.startswith("http://127.0.0.1:"), a_url
        backend = RedisBackend(redis_server.url, prefix=redis_prefix)
        await backend.connect()
        receiver_b = CallbackReceiver(secret=SECRET, public_url=a_url, backend=backend)
        async with (
            Simulator(speed=1000, seed=1) as sim,
            client_for(sim, receiver_b, CALLBACKS_ONLY) as client,
        ):
            tasks = [await client.add_vocals(**REQUEST) for _ in range(10)]
            results = await asyncio.wait_for(
                asyncio.gather(*(task.complete() for task in tasks)), 10
            )
            assert all(result.stage is Stage.COMPLETE for result in results)
            assert all(result.source == "callback" for result in results)
            assert sim.count(path=sim.profile.details_path) == 0
            assert len(client.tasks) == 0
            await receiver_b.aclose()
        other.stdin.close()
        accepted = await asyncio.wait_for(other.stdout.readline(), 10)
        assert int(accepted) >= 30  # text, first and complete of each, in process A
    finally:
        if other.returncode is None:
            other.kill()
        await other.wait()


@pytest.mark.slow
async def test_redis_stopped_mid_run_no_wait_hangs_or_fails(
    private_redis: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    """Redis away for 2 s while tasks run: callbacks get 503 and come again, waiters poll
    meanwhile, everything completes, and each side says what happened once."""
    prefix = "outage-http:"
    receiving = RedisBackend(private_redis.url, prefix=prefix, reconnect_max=0.2)
    awaiting = RedisBackend(private_redis.url, prefix=prefix, reconnect_max=0.2, block=0.2)
    # The complete stage 2.5 s in, callbacks retried 0.3, 0.6 and 1.2 s after a failure.
    times = StageTimes(text=30.0, first=800.0, complete=2500.0)
    fast = PollPolicy(grace=0.5, initial=0.2, maximum=0.4, min_interval=0.1, default_timeout=20)
    with caplog.at_level(logging.INFO):
        async with (
            Simulator(speed=1000, seed=2, stage_times=times, retry_delays=(300, 600, 1200)) as sim,
            CallbackReceiver(secret=SECRET, backend=receiving) as receiver_a,
            client_for(
                sim,
                CallbackReceiver(secret=SECRET, public_url=receiver_a.url, backend=awaiting),
                fast,
            ) as client,
        ):
            tasks = [await client.add_vocals(**REQUEST) for _ in range(5)]
            await asyncio.gather(*(task.text(timeout=5) for task in tasks))
            private_redis.stop()
            await asyncio.sleep(2.0)
            private_redis.start()
            results = await asyncio.wait_for(
                asyncio.gather(*(task.complete() for task in tasks)), 15
            )
            assert all(result.stage is Stage.COMPLETE for result in results)
            assert receiver_a.stats.unavailable >= 1
            await awaiting.aclose()
    lines = [r.getMessage() for r in caplog.records]
    assert sum("lost Redis" in line for line in lines) == 1, lines
    assert sum("Redis at" in line and "is back" in line for line in lines) == 1, lines
    assert sum("seam is unavailable" in line for line in lines) == 1, lines
    assert all(PASSWORD not in line for line in lines)
