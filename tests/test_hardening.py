"""Regression tests for defects a review found: forged routes, unsafe file names, answers
that broke never-pay-twice, deadlines overshot, memory an attacker could pin, and more.

Where the simulator cannot misbehave the way a test needs (a Retry-After of "²", a callback
naming another task before the submit answers, nested JSON), a small aiohttp app on
127.0.0.1 plays the API."""

from __future__ import annotations

import asyncio
import gzip
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from helpers import registered

from addvocals_async import (
    AddVocalsClient,
    APIConnectionError,
    APIError,
    CallbackEvent,
    CallbackReceiver,
    Delivery,
    DeliveryResult,
    InMemoryBackend,
    NotFoundError,
    PollPolicy,
    RetryPolicy,
    ServerError,
    Stage,
    TaskRegistry,
    TaskTimeoutError,
    Track,
)
from addvocals_async._convert import MAX_TRACKS, wire
from addvocals_async._http import parse_retry_after
from addvocals_async._providers import get_provider
from addvocals_async.testing import Simulator

SECRET = "hardening-secret-0123456789abcdef"
TASK = "a" * 32
OTHER = "b" * 32
REQUEST: dict[str, Any] = {
    "upload_url": "https://cdn.example.org/a.mp3",
    "prompt": "p",
    "title": "t",
    "style": "s",
    "negative_tags": "n",
}
SUBMIT = "/api/v1/generate/add-vocals"
DETAILS = "/api/v1/generate/record-info"
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@pytest.fixture
async def fake_api() -> AsyncIterator[Callable[..., Awaitable[str]]]:
    """Start a tiny API with the given routes; returns its base URL."""
    runners: list[web.AppRunner] = []

    async def start(routes: dict[tuple[str, str], Handler]) -> str:
        app = web.Application()
        for (method, path), handler in routes.items():
            app.router.add_route(method, path, handler)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        runners.append(runner)
        return f"http://127.0.0.1:{runner.addresses[0][1]}"

    yield start
    for runner in runners:
        await runner.cleanup()


def envelope(data: Any, code: int = 200) -> web.Response:
    return web.json_response({"code": code, "msg": "success" if code == 200 else "x", "data": data})


def callback(task_id: str, kind: str = "complete", **extra: Any) -> dict[str, Any]:
    data: list[dict[str, Any]] = [{"id": "x", "audio_url": "https://evil.example/x.mp3"}]
    body = {"callbackType": kind, "task_id": task_id, "data": data}
    return {"code": 200, "msg": "ok", "data": body, **extra}


def token_of(url: str) -> str:
    return url.rsplit("/", 1)[1]


# ---------------------------------------------------------------- routes and forgery


async def test_an_old_url_cannot_reach_another_registered_task() -> None:
    """A URL whose registration is gone (failed submit, restart, evicted memory) must not
    deliver to a task registered under its own URL."""
    receiver = CallbackReceiver(secret=SECRET, public_url="https://hooks.example.org/av")
    old = receiver.new_callback_url()  # registered nowhere: e.g. the submit that made it raised
    victim, _ = await registered(receiver, OTHER)
    answer = await receiver.handle_token(
        token_of(old.url), {}, json.dumps(callback(OTHER)).encode()
    )
    assert answer.status == 403
    assert victim.stage is Stage.PENDING
    assert receiver.stats.rejected_mismatch == 1
    await receiver.aclose()


async def test_a_reattached_task_takes_no_content_from_a_url_not_proven_its_own() -> None:
    """After a restart, client.task(id) has no URL of its own on record. A genuine token
    proves a URL is this receiver's, not this task's: another task's old URL (from a proxy
    log, or the callBackUrl record-info echoes) must not complete it with forged tracks.
    Such a callback only asks for a poll."""
    receiver = CallbackReceiver(secret=SECRET, public_url="https://hooks.example.org/av")
    first_url = receiver.new_callback_url()
    other_url = receiver.new_callback_url()
    attached = TaskRegistry(receiver.backend, get_provider("apibox")).attach(TASK)
    text = json.dumps(callback(TASK, "text")).encode()
    assert (await receiver.handle_token(token_of(first_url.url), {}, text)).status == 200
    forged = json.dumps(callback(TASK, "complete")).encode()
    assert (await receiver.handle_token(token_of(other_url.url), {}, forged)).status == 200
    assert attached.stage is Stage.PENDING  # nothing applied from either
    assert attached.poll_requested  # but the waiters ask the API now
    assert receiver.stats.accepted == 0
    await receiver.aclose()


async def test_the_submit_answer_beats_an_early_callback_naming_another_task(
    fake_api: Callable[..., Awaitable[str]],
) -> None:
    urls: list[str] = []

    async def submit(request: web.Request) -> web.Response:
        body = await request.json()
        urls.append(body["callBackUrl"])
        async with aiohttp.ClientSession() as session:  # someone holding the URL, early
            await session.post(body["callBackUrl"], json=callback("forged-id"))
        return envelope({"taskId": TASK})

    async def details(request: web.Request) -> web.Response:
        return envelope({"taskId": TASK, "status": "PENDING"})

    base = await fake_api({("POST", SUBMIT): submit, ("GET", DETAILS): details})
    async with (
        CallbackReceiver(secret=SECRET) as receiver,
        AddVocalsClient("k", base_url=base, receiver=receiver) as client,
        aiohttp.ClientSession() as session,
    ):
        task = await client.add_vocals(**REQUEST)
        assert task.task_id == TASK
        assert task.stage is Stage.PENDING  # the forged complete was set aside
        genuine = callback(TASK)
        genuine["data"]["data"] = [{"id": "real", "audio_url": "https://files.example.org/r.mp3"}]
        async with session.post(urls[0], json=genuine) as answer:
            assert answer.status == 200
        result = await task.complete(timeout=2)
        assert [t.id for t in result.tracks] == ["real"]
        async with session.post(urls[0], json=callback("forged-id")) as answer:
            assert answer.status == 403  # the URL now belongs to the real task alone


# ---------------------------------------------------------------- never pay twice


@pytest.mark.parametrize("value", ["²", "Wed, 21 Oct 2015 07:28:00 -0000", "9" * 400, "1e999"])
def test_retry_after_parsing_never_raises(value: str) -> None:
    result = parse_retry_after(value)
    assert result is None or result >= 0


async def test_an_odd_retry_after_on_a_created_task_keeps_its_id(
    fake_api: Callable[..., Awaitable[str]],
) -> None:
    async def submit(request: web.Request) -> web.Response:
        answer = envelope({"taskId": TASK})
        answer.headers["Retry-After"] = "²"
        return answer

    base = await fake_api({("POST", SUBMIT): submit})
    async with AddVocalsClient("k", base_url=base, callback_url="https://h.example.org/c") as c:
        task = await c.add_vocals(**REQUEST)
    assert task.task_id == TASK


async def test_maybe_submitted_holds_with_a_single_attempt() -> None:
    """Decided where the error is made, not by the retry loop a single attempt skips."""
    async with Simulator(speed=1000, seed=0) as sim:
        sim.script("server_error_after_create")
        client = AddVocalsClient(
            sim.api_key,
            base_url=sim.base_url,
            callback_url="https://h.example.org/c",
            retry=RetryPolicy(attempts=1),
        )
        async with client:
            with pytest.raises(ServerError) as caught:
                await client.add_vocals(**REQUEST)
    assert caught.value.maybe_submitted is True


async def test_an_ambiguous_submit_carries_the_task_id_a_callback_named(
    fake_api: Callable[..., Awaitable[str]],
) -> None:
    async def submit(request: web.Request) -> web.Response:
        body = await request.json()
        async with aiohttp.ClientSession() as session:
            await session.post(body["callBackUrl"], json=callback(TASK, "text"))
        return envelope(None, code=500)

    base = await fake_api({("POST", SUBMIT): submit})
    async with (
        CallbackReceiver(secret=SECRET) as receiver,
        AddVocalsClient("k", base_url=base, receiver=receiver) as client,
    ):
        with pytest.raises(ServerError) as caught:
            await client.add_vocals(**REQUEST)
    assert caught.value.maybe_submitted is True
    assert caught.value.task_id == TASK


async def test_a_deeply_nested_answer_to_a_submit_is_ambiguous_not_a_crash(
    fake_api: Callable[..., Awaitable[str]],
) -> None:
    async def submit(request: web.Request) -> web.Response:
        return web.Response(text="[" * 100_000 + "]" * 100_000, content_type="application/json")

    base = await fake_api({("POST", SUBMIT): submit})
    async with AddVocalsClient("k", base_url=base, callback_url="https://h.example.org/c") as c:
        with pytest.raises(APIConnectionError) as caught:
            await c.add_vocals(**REQUEST)
    assert caught.value.maybe_submitted is True


# ---------------------------------------------------------------- deadlines and timeouts


async def test_a_short_wait_does_not_overshoot_while_another_waiter_polls(
    fake_api: Callable[..., Awaitable[str]],
) -> None:
    async def submit(request: web.Request) -> web.Response:
        return envelope({"taskId": TASK})

    async def slow_details(request: web.Request) -> web.Response:
        await asyncio.sleep(3)
        return envelope({"taskId": TASK, "status": "PENDING"})

    base = await fake_api({("POST", SUBMIT): submit, ("GET", DETAILS): slow_details})
    policy = PollPolicy(grace=0, initial=0.05, maximum=0.05, min_interval=0.05,
                        final_poll_timeout=0.3)  # fmt: skip
    client = AddVocalsClient("k", base_url=base, callback_url="https://h.example.org/c",
                             poll=policy, request_timeout=10)  # fmt: skip
    async with client:
        task = await client.add_vocals(**REQUEST)
        long_wait = asyncio.ensure_future(task.complete(timeout=30))
        await asyncio.sleep(0.1)  # its poll is now in flight, holding the lock
        started = time.monotonic()
        with pytest.raises(TaskTimeoutError):
            await task.text(timeout=0.3)
        took = time.monotonic() - started
        long_wait.cancel()
    assert took < 0.3 + 0.3 + 0.3  # deadline + bounded last chance + slack


async def test_request_timeout_holds_on_a_session_the_caller_gave(
    fake_api: Callable[..., Awaitable[str]],
) -> None:
    async def slow(request: web.Request) -> web.Response:
        await asyncio.sleep(5)
        return envelope(1)

    base = await fake_api({("GET", "/api/v1/generate/credit"): slow})
    async with aiohttp.ClientSession() as session:
        client = AddVocalsClient("k", base_url=base, session=session, request_timeout=0.5,
                                 retry=RetryPolicy.no_wait(attempts=1))  # fmt: skip
        started = time.monotonic()
        with pytest.raises(APIConnectionError):
            await client.get_credits()
    assert time.monotonic() - started < 2.0


async def test_a_nan_timeout_is_refused() -> None:
    client = AddVocalsClient("k", callback_url="https://h.example.org/c")
    await client.aclose()
    task = client.task(TASK)
    with pytest.raises(ValueError, match="seconds"):
        await task.complete(timeout=float("nan"))


async def test_a_reattached_unknown_task_fails_fast() -> None:
    async with Simulator(speed=1000, seed=0) as sim:
        client = AddVocalsClient(sim.api_key, base_url=sim.base_url, poll=PollPolicy.fast())
        async with client:
            started = time.monotonic()
            with pytest.raises(NotFoundError):
                await client.task("0" * 32).complete(timeout=20)
    assert time.monotonic() - started < 2.0


# ---------------------------------------------------------------- memory an attacker could pin


def test_a_callback_keeps_at_most_a_few_tracks() -> None:
    body = callback(TASK)
    body["data"]["data"] = [{}] * 10_000
    event = wire.structure_callback(body)
    assert len(event.tracks) == MAX_TRACKS


async def test_orphans_keep_one_event_of_each_type() -> None:
    backend = InMemoryBackend()
    for _ in range(10):
        event = CallbackEvent(task_id=TASK, callback_type="text", code=200)
        assert await backend.publish(Delivery("some-ref", event)) is DeliveryResult.ORPHANED
    replayed: list[Delivery] = []

    class Collect:
        def deliver(self, delivery: Delivery) -> DeliveryResult:
            replayed.append(delivery)
            return DeliveryResult.ACCEPTED

        def seam_closed(self) -> None:
            pass

        def seam_available(self, available: bool) -> None:
            pass

    backend.subscribe(Collect(), task_id=TASK)
    assert [d.event.callback_type for d in replayed] == ["text"]


def test_nested_values_read_as_empty_text_and_never_break_a_read() -> None:
    nested: Any = []
    for _ in range(50_000):
        nested = [nested]
    event = wire.structure_callback(callback(TASK, title=None))
    assert event.task_id == TASK
    track = wire.structure_track({"id": "t", "title": nested, "prompt": {"a": 1}})
    assert (track.title, track.prompt) == ("", "")
    details = wire.structure_details({"taskId": TASK, "param": "[" * 100_000}, TASK)
    assert details.param == "[" * 100_000  # kept as the raw text


async def test_registrations_silent_past_their_ttl_are_dropped() -> None:
    backend = InMemoryBackend()
    receiver = CallbackReceiver(secret=SECRET, public_url="https://h.example.org/av",
                                backend=backend)  # fmt: skip
    registry = TaskRegistry(backend, get_provider("apibox"), ttl=0.05)
    lost = [(await registered(receiver, registry=registry))[0] for _ in range(5)]
    await asyncio.sleep(0.1)
    fresh, _ = await registered(receiver, registry=registry)  # sweeps the expired ones
    assert len(backend) == 1
    assert len(registry) == 1
    assert all(not state.callbacks_expected for state in lost)  # their waiters poll instead
    assert fresh.callbacks_expected
    await receiver.aclose()


# ---------------------------------------------------------------- downloads


async def test_a_track_id_cannot_lead_a_download_out_of_its_folder(
    fake_api: Callable[..., Awaitable[str]], tmp_path: Path
) -> None:
    async def audio(request: web.Request) -> web.Response:
        return web.Response(body=b"ID3" + b"\0" * 64, content_type="audio/mpeg")

    base = await fake_api({("GET", "/f/{name}"): audio})
    folder = tmp_path / "downloads"
    folder.mkdir()
    async with AddVocalsClient("k", callback_url="https://h.example.org/c") as client:
        for bad_id in ("../escaped", "/etc/absolute", "a/b", ".hidden"):
            track = Track(id=bad_id, audio_url=f"{base}/f/x.sh")
            path = await client.download(track, folder)
            assert path.parent == folder
            assert path.name.startswith("track-")
            assert path.suffix == ".mp3"  # a URL's ".sh" is not kept (issue 10, item 10)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["downloads"]


async def test_downloads_check_plain_lengths_only_and_refuse_error_pages(
    fake_api: Callable[..., Awaitable[str]], tmp_path: Path
) -> None:
    payload = b"ID3" + bytes(range(256)) * 200

    async def gzipped(request: web.Request) -> web.Response:
        body = gzip.compress(payload)
        return web.Response(body=body, headers={"Content-Encoding": "gzip",
                                                "Content-Type": "audio/mpeg"})  # fmt: skip

    async def html(request: web.Request) -> web.Response:
        return web.Response(text="<html>link expired</html>", content_type="text/html")

    base = await fake_api({("GET", "/gz.mp3"): gzipped, ("GET", "/html.mp3"): html})
    async with AddVocalsClient("k", callback_url="https://h.example.org/c") as client:
        path = await client.download(Track(id="gz", audio_url=f"{base}/gz.mp3"), tmp_path)
        assert path.read_bytes() == payload
        with pytest.raises(APIError, match="text/html"):
            await client.download(Track(id="html", audio_url=f"{base}/html.mp3"), tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["gz.mp3"]
