"""What the Redis backend brings besides delivery, over a real redis-server: refused
callbacks claim nothing, ``on_unclaimed`` fires for callbacks nobody awaits anywhere, the
Redis pending store, the submit throttle shared across processes, and the CLI's
``--redis`` options."""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
import redis.asyncio as aioredis
from helpers import CHILD_TESTING, OTHER_TASK, REQUEST, SECRET, TASK, callback_bytes, request_args
from seam_helpers import Recorder, settle

from addvocals_async import (
    AddVocalsClient,
    CallbackEvent,
    CallbackReceiver,
    DeliveryResult,
    DeliveryUnavailableError,
    PendingSubmit,
)
from addvocals_async.redis import RedisBackend, RedisPendingStore, RedisSubmitThrottle
from addvocals_async.testing import Simulator
from addvocals_async.testing.redis_server import RedisServer, free_port

PASSWORD = "pa55-w0rd-never-shown"


@pytest.fixture
async def backend(redis_server: RedisServer, redis_prefix: str) -> AsyncIterator[RedisBackend]:
    made = RedisBackend(redis_server.url, prefix=redis_prefix)
    yield made
    await made.aclose()


async def keys_under(url: str, prefix: str) -> dict[str, int]:
    async with aioredis.Redis.from_url(url) as raw:
        return {key.decode(): await raw.ttl(key) async for key in raw.scan_iter(match=f"{prefix}*")}


# ------------------------------------------------------------------------- claims


async def test_a_refused_callback_claims_nothing(
    redis_server: RedisServer, redis_prefix: str, backend: RedisBackend
) -> None:
    """Over real HTTP: a body naming a task through another task's URL, an unknown token,
    a bad signature, and a refusal only this process could make (its task takes callbacks
    through another URL Redis never heard of): none of them claims its URL."""
    async with (
        CallbackReceiver(secret=SECRET, backend=backend) as receiver,
        CallbackReceiver(
            secret=SECRET,
            webhook_hmac_key="hmac-key-for-tests-0123456789abcdef",
            backend=RedisBackend(redis_server.url, prefix=redis_prefix),
        ) as signed,
        aiohttp.ClientSession() as http,
    ):
        own = receiver.new_callback_url()
        await backend.claim(own.ref, TASK, authoritative=True)  # the submit's answer
        other = receiver.new_callback_url()
        async with http.post(other.url, data=callback_bytes(TASK, "text")) as answer:
            assert answer.status == 403
        async with http.post(f"{receiver.url}/cb/forged-token", data=b"{}") as answer:
            assert answer.status == 403
        unsigned = signed.new_callback_url()
        async with http.post(unsigned.url, data=callback_bytes(OTHER_TASK, "text")) as answer:
            assert answer.status == 401
        # Awaited here through a URL of its own that Redis does not know as its home.
        refusing = Recorder(answer=DeliveryResult.MISMATCH)
        backend.subscribe(refusing, task_id=OTHER_TASK)
        await settle()
        third = receiver.new_callback_url()
        async with http.post(third.url, data=callback_bytes(OTHER_TASK, "text")) as answer:
            assert answer.status == 403
        assert refusing.types == ["text"]
        for ref in (other.ref, unsigned.ref, third.ref):
            assert await backend.owner(ref) is None
        assert await backend.owner(own.ref) == TASK
        async with aioredis.Redis.from_url(redis_server.url) as raw:
            assert await raw.xlen(backend.events_key(OTHER_TASK)) == 0  # stored for nobody
            assert await raw.xlen(backend.events_key(TASK)) == 0
        backend.unsubscribe(refusing, task_id=OTHER_TASK)


async def test_on_unclaimed_fires_when_no_process_awaits_the_task(
    redis_server: RedisServer, redis_prefix: str, backend: RedisBackend
) -> None:
    unclaimed: list[CallbackEvent] = []
    accepted: list[CallbackEvent] = []
    elsewhere = RedisBackend(redis_server.url, prefix=redis_prefix)  # another process
    async with (
        CallbackReceiver(
            secret=SECRET, backend=backend, on_unclaimed=unclaimed.append, on_event=accepted.append
        ) as receiver,
        aiohttp.ClientSession() as http,
    ):
        url = receiver.new_callback_url().url
        async with http.post(url, data=callback_bytes(TASK, "text")) as answer:
            assert answer.status == 200
        awaiting = Recorder()
        elsewhere.subscribe(awaiting, task_id=OTHER_TASK)
        await settle(0.2)  # its registration is written by its reader
        url = receiver.new_callback_url().url
        async with http.post(url, data=callback_bytes(OTHER_TASK, "text")) as answer:
            assert answer.status == 200
        await awaiting.wait_for(1)
        elsewhere.unsubscribe(awaiting, task_id=OTHER_TASK)
        await settle(0.2)
        async with http.post(url, data=callback_bytes(OTHER_TASK, "first")) as answer:
            assert answer.status == 200
        await settle()
        assert [(e.task_id, e.callback_type) for e in unclaimed] == [
            (TASK, "text"),
            (OTHER_TASK, "first"),
        ]
        assert [(e.task_id, e.callback_type) for e in accepted] == [(OTHER_TASK, "text")]
        assert receiver.stats.orphaned == 2
    await elsewhere.aclose()
    left = await keys_under(redis_server.url, redis_prefix)
    assert not [key for key in left if ":watch:" in key]  # the registration went with it


# ------------------------------------------------------------------------- pending store


async def test_the_redis_pending_store_keeps_records_apart_and_expiring(
    redis_server: RedisServer, redis_prefix: str, backend: RedisBackend
) -> None:
    store = backend.pending_store("w1", max_age=600)
    neighbour = backend.pending_store("w2", max_age=600)
    await store.record(PendingSubmit(ref="r1", request={"title": "one"}))
    await store.record(PendingSubmit(ref="r2", request={"title": "two"}))
    await store.record(PendingSubmit(ref="old", created_at=time.time() - 3600))
    await neighbour.record(PendingSubmit(ref="n1"))
    await store.bind("r1", "a" * 32)
    await store.bind("gone", "b" * 32)  # removed meanwhile: not brought back
    await store.remove("r2")
    records = await store.pending()
    assert [(r.ref, r.task_id, dict(r.request)) for r in records] == [
        ("r1", "a" * 32, {"title": "one"})
    ]
    assert [r.ref for r in await neighbour.pending()] == ["n1"]
    left = await keys_under(redis_server.url, redis_prefix)
    assert sorted(k.removeprefix(redis_prefix) for k in left) == [
        "pending:w1",
        "pending:w1:r1",
        "pending:w2",
        "pending:w2:n1",
    ]
    assert all(0 < ttl <= 600 for ttl in left.values())
    await store.remove("r1")
    await neighbour.remove("n1")
    assert await keys_under(redis_server.url, redis_prefix) == {}
    await store.aclose()
    with pytest.raises(RuntimeError, match="closed"):
        await store.pending()
    with pytest.raises(ValueError, match="name"):
        backend.pending_store("a:b")


async def test_an_unreachable_pending_store_fails_the_submit_before_sending() -> None:
    url = f"redis://:{PASSWORD}@127.0.0.1:{free_port()}/0"
    store = RedisPendingStore(url, name="w")
    assert PASSWORD not in repr(store)
    with pytest.raises(DeliveryUnavailableError) as caught:
        await store.record(PendingSubmit(ref="r"))
    assert PASSWORD not in str(caught.value)
    assert "127.0.0.1" in str(caught.value)
    await store.aclose()


# ------------------------------------------------------------------------- throttle


async def test_the_throttle_is_shared_between_processes(
    redis_server: RedisServer, redis_prefix: str
) -> None:
    """Two throttles (two processes) on one Redis: at most 4 submits in any window between
    them. Under the testing switch the 20 s window is 0.2 s."""
    one = RedisSubmitThrottle(redis_server.url, prefix=redis_prefix, limit=4, window=20)
    two = RedisSubmitThrottle(redis_server.url, prefix=redis_prefix, limit=4, window=20)
    times: list[float] = []

    async def submit(throttle: RedisSubmitThrottle) -> None:
        await throttle.acquire()
        times.append(time.monotonic())

    started = time.monotonic()
    await asyncio.gather(*(submit(one if n % 2 else two) for n in range(12)))
    times.sort()
    assert times[-1] - started >= 0.38  # three windows' worth: two full waits
    for earlier, later in zip(times, times[4:], strict=False):
        assert later - earlier >= 0.19, times  # never a fifth within one window
    async with aioredis.Redis.from_url(redis_server.url) as raw:
        assert await raw.pttl(f"{redis_prefix}throttle") > 0  # the window expires on its own
    await one.aclose()
    await two.aclose()


async def test_the_throttle_keeps_the_rate_alone_without_redis(
    caplog: pytest.LogCaptureFixture,
) -> None:
    url = f"redis://:{PASSWORD}@127.0.0.1:{free_port()}/0"
    throttle = RedisSubmitThrottle(url, limit=2, window=20)
    with caplog.at_level(logging.WARNING, logger="addvocals_async.redis"):
        started = time.monotonic()
        for _ in range(3):
            await throttle.acquire()
        assert time.monotonic() - started >= 0.19  # the third waited for the local window
    lines = [r.getMessage() for r in caplog.records]
    assert sum("lost Redis" in line for line in lines) == 1, lines
    assert all(PASSWORD not in line for line in lines)
    await throttle.aclose()


async def test_a_client_over_redis_shares_its_throttle_by_default(backend: RedisBackend) -> None:
    receiver = CallbackReceiver(
        secret=SECRET, public_url="https://hooks.example.org/av", backend=backend
    )
    client = AddVocalsClient("k", base_url="http://127.0.0.1:9", receiver=receiver)
    assert isinstance(client._throttle, RedisSubmitThrottle)
    assert client._throttle.key == f"{backend.prefix}throttle"
    plain = AddVocalsClient("k", base_url="http://127.0.0.1:9", throttle=False, receiver=receiver)
    assert plain._throttle is None
    await client.aclose()
    await plain.aclose()


# ------------------------------------------------------------------------- CLI


async def addvocals(*args: str, timeout: float = 30) -> tuple[int, str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ADDVOCALS_")}
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "addvocals_async", *args,
        env={**env, **CHILD_TESTING},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(process.communicate(), timeout)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def test_cli_submit_wait_through_a_receiver_tier(
    redis_server: RedisServer, redis_prefix: str, backend: RedisBackend
) -> None:
    """The tier is a receiver here; ``submit --redis --wait`` in another process hears its
    task's callbacks through Redis, and never polls."""
    async with (
        Simulator(speed=1000, seed=4) as sim,
        CallbackReceiver(secret=SECRET, backend=backend) as tier,
    ):
        code, out, err = await addvocals(
            "submit", *request_args(REQUEST), "--wait", "--json",
            "--base-url", sim.base_url, "--api-key", sim.api_key,
            "--redis", redis_server.url, "--redis-prefix", redis_prefix,
            "--public-url", tier.url, "--receiver-secret", SECRET,
        )  # fmt: skip
        assert code == 0, err
        (task_id,) = sim.tasks
        assert task_id in out
        assert '"complete"' in out
        assert tier.stats.accepted >= 1
        assert sim.count(path=sim.profile.details_path) == 0


async def test_cli_serve_redis_says_where_it_publishes_without_the_password(
    redis_server: RedisServer,
) -> None:
    """The tier's first lines say it publishes to Redis, and where (the password masked)."""
    url = f"redis://default:{PASSWORD}@127.0.0.1:{redis_server.port}/0"  # nopass: any works
    env = {k: v for k, v in os.environ.items() if not k.startswith("ADDVOCALS_")}
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "addvocals_async", "serve", "--port", "0", "--secret", SECRET,
        "--redis", url, env={**env, **CHILD_TESTING}, stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert process.stderr is not None
    lines: list[str] = []
    try:
        while not lines or not lines[-1].startswith("receiving callbacks at "):
            line = await asyncio.wait_for(process.stderr.readline(), 15)
            assert line, lines
            lines.append(line.decode())
    finally:
        process.terminate()
        await process.wait()
    (publishing,) = [line for line in lines if "Redis" in line]
    assert f"127.0.0.1:{redis_server.port}" in publishing
    assert PASSWORD not in "".join(lines)


async def test_cli_redis_unreachable_exits_6_without_the_password() -> None:
    url = f"redis://:{PASSWORD}@127.0.0.1:{free_port()}/0"
    secret = secrets.token_urlsafe(24)
    code, _, err = await addvocals("serve", "--port", "0", "--secret", secret, "--redis", url)
    assert code == 6, err
    assert "127.0.0.1" in err
    assert PASSWORD not in err
    code, _, err = await addvocals(
        "submit", *request_args(REQUEST), "--api-key", "k", "--base-url", "http://127.0.0.1:9",
        "--redis", url, "--public-url", "https://hooks.example.org/av",
        "--receiver-secret", secret,
    )  # fmt: skip
    assert code == 6, err
    assert PASSWORD not in err


# ------------------------------------------------------------------------- CI


@pytest.mark.slow
async def test_under_ci_the_redis_tests_fail_rather_than_skip(tmp_path: Path) -> None:
    """Without a redis-server on PATH, a Redis test skips on a laptop but fails under CI."""
    tests = Path(__file__).resolve().parent
    test = f"{tests / 'test_redis.py'}::test_the_senders_retries_are_stored_once"
    no_redis = {**os.environ, "PATH": str(Path(sys.executable).parent)}
    no_redis.pop("CI", None)
    for ci, expected in ((None, 0), ("1", 1)):
        env = {**no_redis, **({"CI": ci} if ci else {})}
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "pytest", "-q", "-p", "no:randomly", "-p", "no:cacheprovider",
            "--rootdir", str(tests.parent), test,
            env=env, cwd=tmp_path, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        )  # fmt: skip
        out, _ = await asyncio.wait_for(process.communicate(), 60)
        assert process.returncode == expected, out.decode()
        assert ("CI is set" in out.decode()) == bool(ci), out.decode()
