"""The simulator, tested over real HTTP: every scenario does what it says.

The API side is driven with aiohttp's own client and callbacks land on a tiny aiohttp server
started here, so these tests check the wire itself and depend on nothing else in the SDK.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import gc
import hashlib
import hmac
import io
import json
import logging
import re
import sys
import time
import uuid
from collections.abc import AsyncIterator, Mapping
from typing import Any

import aiohttp
import attrs
import pytest
import pytest_asyncio
from aiohttp import web

from addvocals_async.testing import (
    SCENARIOS,
    Delivery,
    RecordedRequest,
    SimTask,
    Simulator,
    StageTimes,
    serve_forever,
)

FAST = 1000.0
TASK_ID = re.compile(r"^[0-9a-f]{32}$")
SNAKE_TRACK_KEYS = {"id", "title", "model_name", "audio_url", "stream_audio_url", "image_url"}
CAMEL_TRACK_KEYS = {"id", "title", "modelName", "audioUrl", "streamAudioUrl", "imageUrl"}
SOURCE_KEYS = {"source_audio_url", "source_stream_audio_url", "source_image_url", "tags"}


# --------------------------------------------------------------------------- helpers


@attrs.define
class Received:
    """One callback as the receiver saw it."""

    body: dict[str, Any]
    headers: dict[str, str]
    at: float
    submit_answered: bool

    @property
    def type(self) -> str:
        return str(self.body["data"]["callbackType"])


@attrs.define
class Receiver:
    """A callback endpoint on 127.0.0.1:0 that records what arrives and answers as told."""

    statuses: list[int] = attrs.field(factory=list)  # answered in turn; then `status`
    status: int = 200
    delays: list[float] = attrs.field(factory=list)  # seconds to stall, in turn
    received: list[Received] = attrs.field(factory=list)
    submit_answered: bool = False
    arrived: asyncio.Event = attrs.field(factory=asyncio.Event)
    closing: asyncio.Event = attrs.field(factory=asyncio.Event)
    _runner: web.AppRunner | None = None
    url: str = ""

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.received.append(
            Received(body, dict(request.headers), time.monotonic(), self.submit_answered)
        )
        self.arrived.set()
        if self.delays:
            # A stall the test's end cuts short: shutdown never waits on a sleeping handler.
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self.closing.wait(), self.delays.pop(0))
        status = self.statuses.pop(0) if self.statuses else self.status
        return web.json_response({"status": "received"}, status=status)

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/cb/{token}", self._handle)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.url = f"http://127.0.0.1:{self._runner.addresses[0][1]}/cb/t0k3n"

    async def close(self) -> None:
        self.closing.set()
        if self._runner is not None:
            await self._runner.cleanup()

    def types(self, task_id: str | None = None) -> list[str]:
        return [
            r.type for r in self.received if task_id is None or r.body["data"]["task_id"] == task_id
        ]

    async def wait_for(self, callback_type: str, timeout: float = 5.0) -> Received:
        async def find() -> Received:
            while True:
                for r in self.received:
                    if r.type == callback_type:
                        return r
                self.arrived.clear()
                await self.arrived.wait()

        return await asyncio.wait_for(find(), timeout)


@pytest_asyncio.fixture
async def receiver() -> AsyncIterator[Receiver]:
    rec = Receiver()
    await rec.start()
    yield rec
    await rec.close()


@pytest_asyncio.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


def request_body(callback_url: str, **changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "uploadUrl": "https://cdn.example.org/stems/harbour-instrumental.wav",
        "callBackUrl": callback_url,
        "prompt": "A warm, breathy female vocal about lanterns on a quiet harbour at night",
        "title": "Harbour Lanterns",
        "style": "Neo Soul",
        "negativeTags": "Screamo, Distorted Vocals, Autotune",
        "vocalGender": "f",
        "styleWeight": 0.55,
        "weirdnessConstraint": 0.3,
        "audioWeight": 0.8,
    }
    for key, value in changes.items():
        if value is _DROP:
            body.pop(key, None)
        else:
            body[key] = value
    return body


_DROP = object()


def auth(sim: Simulator) -> dict[str, str]:
    return {"Authorization": f"Bearer {sim.api_key}"}


async def submit(
    http: aiohttp.ClientSession, sim: Simulator, body: Any, *, raw: bytes | None = None
) -> tuple[int, dict[str, Any]]:
    kwargs: dict[str, Any] = {"data": raw} if raw is not None else {"json": body}
    async with http.post(sim.submit_url, headers=auth(sim), **kwargs) as resp:
        return resp.status, await resp.json()


async def create(
    http: aiohttp.ClientSession, sim: Simulator, callback_url: str, **changes: Any
) -> str:
    status, answer = await submit(http, sim, request_body(callback_url, **changes))
    assert (status, answer["code"], answer["msg"]) == (200, 200, "success"), answer
    task_id = answer["data"]["taskId"]
    assert TASK_ID.match(task_id)
    return str(task_id)


async def details(http: aiohttp.ClientSession, sim: Simulator, task_id: str) -> dict[str, Any]:
    async with http.get(sim.details_url(task_id), headers=auth(sim)) as resp:
        assert resp.status == 200
        answer: dict[str, Any] = await resp.json()
        return answer


def is_uuid4(value: str) -> bool:
    return uuid.UUID(value).version == 4 and str(uuid.UUID(value)) == value


def check_callback_track(track: Mapping[str, Any], *, partial: bool, sources: bool) -> None:
    assert track.keys() >= SNAKE_TRACK_KEYS
    assert not {"audioUrl", "modelName", "streamAudioUrl", "taskId"} & track.keys()
    assert is_uuid4(track["id"])
    assert "createTime" in track
    assert track["stream_audio_url"]
    assert track["image_url"]
    if partial:
        assert track["audio_url"] == ""
        assert "duration" not in track
        assert "source_audio_url" not in track
    else:
        assert track["audio_url"].endswith(".mp3")
        assert isinstance(track["duration"], float)
        assert ("source_audio_url" in track) is sources
    assert ("tags" in track) is sources
    assert ("source_image_url" in track) is sources


def check_callback(body: Mapping[str, Any], task_id: str, *, sources: bool) -> None:
    """A callback body has the documented shape for its type."""
    assert set(body) == {"code", "msg", "data"}
    data = body["data"]
    assert data["task_id"] == task_id
    assert set(data) == {"callbackType", "task_id", "data"}
    kind = data["callbackType"]
    if kind == "error":
        assert body["code"] != 200
        assert data["data"] is None
        return
    assert body["code"] == 200
    if kind == "text":
        assert data["data"] == []
        return
    tracks = data["data"]
    assert len(tracks) == 2
    check_callback_track(tracks[0], partial=False, sources=sources)
    check_callback_track(tracks[1], partial=kind == "first", sources=sources)
    assert tracks[0]["id"] != tracks[1]["id"]


def check_details(answer: Mapping[str, Any], task_id: str, request: Mapping[str, Any]) -> None:
    """record-info has the documented shape: camelCase tracks, ``param`` a JSON string."""
    assert answer["code"] == 200
    data = answer["data"]
    assert data["taskId"] == task_id
    assert isinstance(data["param"], str)
    assert json.loads(data["param"]) == request
    assert data["parentMusicId"] == ""
    response = data["response"]
    if data["status"] == "PENDING":
        assert response is None
        return
    assert response["taskId"] == task_id
    for track in response["sunoData"]:
        assert track.keys() >= CAMEL_TRACK_KEYS
        assert "audio_url" not in track


def mp3_frame_count(data: bytes) -> int:
    """Walk MPEG-1 Layer III frame headers; the frames must tile the file exactly."""
    bitrates = [0, 32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320]
    rates = [44100, 48000, 32000]
    offset = frames = 0
    while offset < len(data):
        header = data[offset : offset + 4]
        assert header[0] == 0xFF, f"no frame sync at {offset}"
        assert header[1] & 0xE0 == 0xE0, f"no frame sync at {offset}"
        assert (header[1] >> 3) & 0b11 == 0b11
        assert (header[1] >> 1) & 0b11 == 0b01
        bitrate = bitrates[header[2] >> 4] * 1000
        rate = rates[(header[2] >> 2) & 0b11]
        padding = (header[2] >> 1) & 1
        offset += 144 * bitrate // rate + padding
        frames += 1
    assert offset == len(data)
    return frames


def verify_kie_signature(
    headers: Mapping[str, str], body: Mapping[str, Any], key: bytes, *, now: float
) -> bool:
    """kie's callback signature check, written from the docs: case-insensitive headers, a
    ±300 s window, HMAC-SHA256 over ``taskId + "." + timestamp``, Base64, compared in
    constant time."""
    lowered = {k.lower(): v for k, v in headers.items()}
    timestamp, signature = lowered.get("x-webhook-timestamp"), lowered.get("x-webhook-signature")
    if timestamp is None or signature is None:
        return False
    try:
        seconds = int(timestamp)
    except ValueError:
        return False
    if abs(now - seconds) > 300:
        return False
    data = body.get("data") or {}
    task_id = data.get("task_id") or body.get("taskId") or data.get("taskId")
    mac = hmac.new(key, f"{task_id}.{seconds}".encode(), hashlib.sha256).digest()
    return hmac.compare_digest(base64.b64encode(mac).decode(), signature)


# ----------------------------------------------------------------- lifecycle scenarios

LIFECYCLES: dict[str, tuple[list[str], str]] = {
    "normal": (["text", "first", "complete"], "SUCCESS"),
    "complete_only": (["complete"], "SUCCESS"),
    "skip_text": (["first", "complete"], "SUCCESS"),
    "duplicates": (["text", "text", "first", "first", "complete", "complete"], "SUCCESS"),
    "out_of_order": (["complete", "first", "text"], "SUCCESS"),
    "early_callback": (["text", "first", "complete"], "SUCCESS"),
    "lost_all": ([], "SUCCESS"),
    "lost_complete": (["text", "first"], "SUCCESS"),
    "callback_exception": ([], "CALLBACK_EXCEPTION"),
    "error": (["error"], "SENSITIVE_WORD_ERROR"),
    "fail_after_first": (["text", "first", "error"], "SENSITIVE_WORD_ERROR"),
    "failed_status_only": ([], "SENSITIVE_WORD_ERROR"),
    "unknown_type": (["text", "progress", "first", "complete"], "SUCCESS"),
    "server_error_after_create": (["text", "first", "complete"], "SUCCESS"),
    "upload_unreachable": (["error"], "CREATE_TASK_FAILED"),
}


@pytest.mark.parametrize(
    ("scenario", "provider"),
    [
        (scenario, provider)
        for scenario in sorted(LIFECYCLES)
        for provider in ("apibox", "kie")
        # kie refuses an unreachable upload synchronously, tested on its own below
        if (scenario, provider) != ("upload_unreachable", "kie")
    ],
)
async def test_lifecycle_scenarios(
    scenario: str, provider: str, receiver: Receiver, http: aiohttp.ClientSession
) -> None:
    expected, final_status = LIFECYCLES[scenario]
    # A generous callback time-out: on a loaded machine the 0.2 s floor can expire, and
    # the retry it causes is not what this test is about (the retry tests are).
    async with Simulator(
        provider=provider, speed=3 * FAST, seed=0, min_callback_timeout=5.0
    ) as sim:
        sim.script(scenario)
        body = request_body(receiver.url)
        status, answer = await submit(http, sim, body)
        assert status == 200
        task_id = answer["data"]["taskId"] if answer["code"] == 200 else next(iter(sim.tasks))
        await sim.wait_idle()

        assert receiver.types(task_id) == expected
        assert sim.callback_types(task_id) == expected
        assert all(d.ok for d in sim.deliveries)
        for got in receiver.received:
            if got.type in ("text", "first", "complete", "error"):
                check_callback(got.body, task_id, sources=provider != "kie")
            assert got.headers["Content-Type"] == "application/json"

        info = await details(http, sim, task_id)
        check_details(info, task_id, body)
        data = info["data"]
        assert data["status"] == final_status == sim.tasks[task_id].status
        tracks = data["response"]["sunoData"]
        if final_status in ("SUCCESS", "CALLBACK_EXCEPTION"):
            assert data["errorCode"] is None
            assert data["errorMessage"] is None
            assert len(tracks) == 2
            assert all(t["audioUrl"] and t["duration"] for t in tracks)
            if "complete" in expected:
                complete = next(r for r in receiver.received if r.type == "complete")
                assert [t["id"] for t in tracks] == [t["id"] for t in complete.body["data"]["data"]]
        else:
            assert tracks == []
            assert data["errorCode"] == sim.tasks[task_id].error_code
            assert data["errorMessage"]
        assert sim.tasks[task_id].scenario == scenario
        assert sim.tasks[task_id].finished


@pytest.mark.parametrize(
    ("provider", "code", "status"),
    [
        ("apibox", 400, "SENSITIVE_WORD_ERROR"),
        ("apibox", 451, "CREATE_TASK_FAILED"),
        ("sunoapi", 500, "GENERATE_AUDIO_FAILED"),
        ("kie", 400, "SENSITIVE_WORD_ERROR"),
        ("kie", 408, "GENERATE_AUDIO_FAILED"),
        ("kie", 413, "SENSITIVE_WORD_ERROR"),
        ("kie", 500, "GENERATE_AUDIO_FAILED"),
        ("kie", 501, "GENERATE_AUDIO_FAILED"),
        ("kie", 531, "GENERATE_AUDIO_FAILED"),
    ],
)
async def test_error_callback_codes(
    provider: str, code: int, status: str, receiver: Receiver, http: aiohttp.ClientSession
) -> None:
    async with Simulator(provider=provider, speed=FAST, seed=0, error_data="empty_list") as sim:
        sim.script("error", error_code=code)
        task_id = await create(http, sim, receiver.url)
        await sim.wait_idle()
        (error,) = receiver.received
        assert error.body["code"] == code
        assert error.body["msg"] == sim.tasks[task_id].error_message
        assert error.body["data"] == {"callbackType": "error", "task_id": task_id, "data": []}
        data = (await details(http, sim, task_id))["data"]
        assert (data["status"], data["errorCode"]) == (status, code)
        assert data["errorMessage"] == error.body["msg"]
        if provider == "kie":  # kie's failure sample repeats the message inside `response`
            assert data["response"]["errorMessage"] == data["errorMessage"]
        refunded = provider == "kie" and code == 531
        assert sim.credits == (1000 if refunded else 990)


async def test_record_info_follows_the_clock(
    receiver: Receiver, http: aiohttp.ClientSession
) -> None:
    """PENDING → TEXT_SUCCESS → FIRST_SUCCESS (second track partial) → SUCCESS, each
    visible as soon as its callback arrives; files are served once handed out."""
    async with Simulator(speed=200.0, seed=1, details_rate_limit=None) as sim:
        task_id = await create(http, sim, receiver.url)
        data = (await details(http, sim, task_id))["data"]
        assert (data["status"], data["response"]) == ("PENDING", None)

        await receiver.wait_for("text")
        data = (await details(http, sim, task_id))["data"]
        assert data["status"] == "TEXT_SUCCESS"
        assert data["response"]["sunoData"] == []

        await receiver.wait_for("first")
        data = (await details(http, sim, task_id))["data"]
        assert data["status"] == "FIRST_SUCCESS"
        full, partial = data["response"]["sunoData"]
        assert full["audioUrl"]
        assert full["duration"]
        assert full["sourceAudioUrl"]
        assert partial["audioUrl"] == ""
        assert "duration" not in partial
        assert "sourceAudioUrl" not in partial
        first_tracks = (await receiver.wait_for("first")).body["data"]["data"]
        async with http.get(first_tracks[0]["audio_url"]) as resp:
            assert resp.status == 200
        track2 = sim.tasks[task_id].tracks[1]
        async with http.get(track2.audio_url) as resp:
            assert resp.status == 404  # handed out only by `complete`
        for url in (track2.stream_audio_url, track2.image_url):
            async with http.get(url) as resp:
                assert resp.status == 200

        await receiver.wait_for("complete")
        data = (await details(http, sim, task_id))["data"]
        assert data["status"] == "SUCCESS"
        async with http.get(track2.audio_url) as resp:
            assert resp.status == 200
        await sim.wait_idle()


@pytest.mark.parametrize("all_early", [False, True])
async def test_early_callback_beats_the_submit_answer(
    all_early: bool, receiver: Receiver, http: aiohttp.ClientSession
) -> None:
    async with Simulator(speed=FAST, seed=0) as sim:
        sim.script("early_callback", all_early=all_early)
        task_id = await create(http, sim, receiver.url)
        receiver.submit_answered = True
        answered_at = time.monotonic()
        await sim.wait_idle()
        early = ["text", "first", "complete"] if all_early else ["text"]
        assert [r.type for r in receiver.received if not r.submit_answered] == early
        assert all(r.at < answered_at for r in receiver.received[: len(early)])
        assert receiver.types(task_id) == ["text", "first", "complete"]
        assert len(sim.submits_for(task_id)) == 1
        assert all(d.answered_at is not None for d in sim.deliveries)


async def test_unknown_callback_type_carries_unknown_fields(
    receiver: Receiver, http: aiohttp.ClientSession
) -> None:
    async with Simulator(speed=FAST, seed=0) as sim:
        sim.script("unknown_type", callback_type="lyrics_ready")
        task_id = await create(http, sim, receiver.url)
        await sim.wait_idle()
        unknown = receiver.received[1].body
        assert unknown["data"]["callbackType"] == "lyrics_ready"
        assert unknown["code"] == 200
        assert "traceId" in unknown
        assert "progress" in unknown["data"]
        assert receiver.types(task_id) == ["text", "lyrics_ready", "first", "complete"]


async def test_duplicates_repeat_identical_bodies(
    receiver: Receiver, http: aiohttp.ClientSession
) -> None:
    async with Simulator(speed=FAST, seed=0) as sim:
        sim.script("duplicates", copies=3)
        await create(http, sim, receiver.url)
        await sim.wait_idle()
        assert receiver.types() == ["text"] * 3 + ["first"] * 3 + ["complete"] * 3
        completes = [r.body for r in receiver.received if r.type == "complete"]
        assert completes[0] == completes[1] == completes[2]


# --------------------------------------------------------------------- callback delivery


async def test_failed_deliveries_are_retried_three_times(
    receiver: Receiver, http: aiohttp.ClientSession
) -> None:
    receiver.status = 500
    speed = 10_000.0
    async with Simulator(speed=speed, seed=0, scenario="complete_only") as sim:
        task_id = await create(http, sim, receiver.url)
        await sim.wait_idle()
        attempts = sim.deliveries_for(task_id)
        assert [d.attempt for d in attempts] == [0, 1, 2, 3]
        assert [d.status for d in attempts] == [500] * 4
        assert len(receiver.received) == 4
        assert all(r.body == receiver.received[0].body for r in receiver.received)
        for previous, attempt, minutes in zip(attempts, attempts[1:], (1, 5, 15), strict=False):
            assert previous.answered_at is not None
            assert attempt.at - previous.answered_at >= minutes * 60 / speed * 0.9
        assert sim.tasks[task_id].status == "SUCCESS"


async def test_a_slow_receiver_times_out_and_gets_a_retry(
    receiver: Receiver, http: aiohttp.ClientSession
) -> None:
    receiver.delays = [0.4]
    async with Simulator(
        speed=10_000.0, seed=0, scenario="complete_only", min_callback_timeout=0.05
    ) as sim:
        task_id = await create(http, sim, receiver.url)
        await sim.wait_idle()
        first, second = sim.deliveries_for(task_id)
        assert first.status is None
        assert first.error is not None
        assert "timeout" in first.error
        assert (second.attempt, second.status) == (1, 200)


async def test_a_recovering_receiver_stops_the_retries(
    receiver: Receiver, http: aiohttp.ClientSession
) -> None:
    receiver.statuses = [503, 502]
    async with Simulator(speed=10_000.0, seed=0, scenario="complete_only") as sim:
        task_id = await create(http, sim, receiver.url)
        await sim.wait_idle()
        assert [(d.attempt, d.status) for d in sim.deliveries_for(task_id)] == [
            (0, 503),
            (1, 502),
            (2, 200),
        ]


async def test_non_loopback_callbacks_are_not_sent(http: aiohttp.ClientSession) -> None:
    async with Simulator(speed=10_000.0, seed=0, scenario="complete_only") as sim:
        task_id = await create(http, sim, "https://hooks.example.com/addvocals/cb/x")
        await sim.wait_idle()
        attempts = sim.deliveries_for(task_id)
        assert len(attempts) == 4
        assert all(d.status is None and d.error and "loopback" in d.error for d in attempts)


def test_the_spec_signature_vector() -> None:
    """Our verifier reproduces kie's documented signature vector, so the signing tests
    below mean something."""
    key = b"sim-webhook-key-7Qx2"
    body = {"data": {"callbackType": "text", "task_id": "4d8e0f3a91b27c65e0a4f1d9b3c87e52"}}
    good = {
        "X-Webhook-Timestamp": "1767268800",
        "X-Webhook-Signature": ("ZXCU94ahKyxK45GanYvklThR9geENSXhlBmTepGFjV4="),
    }
    assert verify_kie_signature(good, body, key, now=1767268800)
    lowered = {k.lower(): v for k, v in good.items()}
    assert verify_kie_signature(lowered, body, key, now=1767268900)
    shifted = {**good, "X-Webhook-Timestamp": "1767268801"}
    assert not verify_kie_signature(shifted, body, key, now=1767268800)
    assert not verify_kie_signature(good, body, key, now=1767268800 + 301)


async def test_kie_callbacks_are_signed(receiver: Receiver, http: aiohttp.ClientSession) -> None:
    key = "sim-webhook-key-7Qx2"
    async with Simulator(provider="kie", speed=FAST, seed=0, webhook_hmac_key=key) as sim:
        await create(http, sim, receiver.url)
        await sim.wait_idle()
        assert receiver.types() == ["text", "first", "complete"]
        for got in receiver.received:
            assert len(got.headers["X-Webhook-Signature"]) == 44
            assert verify_kie_signature(got.headers, got.body, key.encode(), now=time.time())
            assert not verify_kie_signature(got.headers, got.body, b"other", now=time.time())


@pytest.mark.parametrize("provider", ["kie", "apibox"])
async def test_no_signature_without_a_key(
    provider: str, receiver: Receiver, http: aiohttp.ClientSession
) -> None:
    async with Simulator(provider=provider, speed=FAST, seed=0, scenario="complete_only") as sim:
        await create(http, sim, receiver.url)
        await sim.wait_idle()
        (got,) = receiver.received
        assert "X-Webhook-Signature" not in got.headers


@pytest.mark.parametrize("scenario", ["bad_signature", "stale_signature"])
async def test_signature_faults(
    scenario: str, receiver: Receiver, http: aiohttp.ClientSession
) -> None:
    key = b"sim-webhook-key-7Qx2"
    async with Simulator(provider="kie", speed=FAST, seed=0, webhook_hmac_key=key) as sim:
        sim.script(scenario)
        await create(http, sim, receiver.url)
        await sim.wait_idle()
        assert receiver.types() == ["text", "first", "complete"]
        for got in receiver.received:
            assert not verify_kie_signature(got.headers, got.body, key, now=time.time())
            stamp = int(got.headers["X-Webhook-Timestamp"])
            if scenario == "stale_signature":
                assert time.time() - stamp >= 590
                # genuine, only too old: it verifies at the time it claims
                assert verify_kie_signature(got.headers, got.body, key, now=stamp)
            else:
                assert abs(time.time() - stamp) < 60


# --------------------------------------------------------------------------- submit faults


@pytest.mark.parametrize(("provider", "code"), [("apibox", 430), ("sunoapi", 430), ("kie", 429)])
async def test_account_rate_limit_trips_on_the_21st_create(
    provider: str, code: int, http: aiohttp.ClientSession
) -> None:
    async with Simulator(provider=provider, speed=FAST, seed=0, scenario="lost_all") as sim:
        codes = []
        for _ in range(21):
            _, answer = await submit(http, sim, request_body("http://127.0.0.1:9/cb"))
            codes.append(answer["code"])
        assert codes == [200] * 20 + [code]
        assert len(sim.tasks) == 20
        assert sim.credits == 1000 - 20 * 10


async def test_account_rate_limit_window_slides(http: aiohttp.ClientSession) -> None:
    async with Simulator(speed=FAST, seed=0, scenario="lost_all", rate_limit=(2, 0.3)) as sim:
        body = request_body("http://127.0.0.1:9/cb")
        codes = [(await submit(http, sim, body))[1]["code"] for _ in range(3)]
        assert codes == [200, 200, 430]
        await asyncio.sleep(0.35)
        assert (await submit(http, sim, body))[1]["code"] == 200


@pytest.mark.parametrize(("provider", "code"), [("apibox", 430), ("kie", 429)])
async def test_scripted_rate_limit_creates_nothing(
    provider: str, code: int, http: aiohttp.ClientSession
) -> None:
    async with Simulator(provider=provider, speed=FAST, seed=0, scenario="lost_all") as sim:
        sim.script("rate_limited", times=2)
        sim.script("maintenance")
        if provider == "apibox":
            sim.script("rate_limited", code=405)  # apibox's other rate-limit code
        body = request_body("http://127.0.0.1:9/cb")
        codes = [(await submit(http, sim, body))[1]["code"] for _ in range(5)]
        expected = [code, code, 455] + ([405, 200] if provider == "apibox" else [200, 200])
        assert codes == expected
        assert len(sim.tasks) == codes.count(200)
        assert [r.code for r in sim.submits()] == expected


async def test_server_error_after_create(receiver: Receiver, http: aiohttp.ClientSession) -> None:
    async with Simulator(speed=FAST, seed=0) as sim:
        sim.script("server_error_after_create")
        status, answer = await submit(http, sim, request_body(receiver.url))
        assert (status, answer["code"], answer["data"]) == (200, 500, None)
        (task_id,) = sim.tasks
        await sim.wait_idle()
        assert receiver.types(task_id) == ["text", "first", "complete"]


async def test_http_502_after_create(receiver: Receiver, http: aiohttp.ClientSession) -> None:
    async with Simulator(speed=FAST, seed=0) as sim:
        sim.script("http_502_after_create")
        async with http.post(
            sim.submit_url, json=request_body(receiver.url), headers=auth(sim)
        ) as r:
            assert r.status == 502
            assert r.content_type == "text/html"
            assert "502 Bad Gateway" in await r.text()
        assert len(sim.tasks) == 1
        assert (sim.requests[-1].status, sim.requests[-1].code) == (502, None)
        await sim.wait_idle()
        assert len(receiver.received) == 3


async def test_drop_after_create(receiver: Receiver, http: aiohttp.ClientSession) -> None:
    async with Simulator(speed=FAST, seed=0) as sim:
        sim.script("drop_after_create")
        with pytest.raises(aiohttp.ServerDisconnectedError):
            await submit(http, sim, request_body(receiver.url))
        (task_id,) = sim.tasks
        assert sim.submits_for(task_id)[0].status is None
        await sim.wait_idle()
        assert receiver.types(task_id) == ["text", "first", "complete"]


async def test_hang_after_create(receiver: Receiver, http: aiohttp.ClientSession) -> None:
    async with Simulator(speed=FAST, seed=0, hang_seconds=30.0) as sim:
        sim.script("hang_after_create")
        with pytest.raises(asyncio.TimeoutError):
            async with http.post(
                sim.submit_url,
                json=request_body(receiver.url),
                headers=auth(sim),
                timeout=aiohttp.ClientTimeout(total=0.3),
            ):
                pass
        (task_id,) = sim.tasks
        assert sim.submits_for(task_id)[0].status is None  # still hanging
        await sim.wait_idle()
        assert receiver.types(task_id) == ["text", "first", "complete"]
        closing = time.monotonic()
    assert time.monotonic() - closing < 2.0  # a hanging submit does not hold up close()


async def test_hang_after_create_answers_eventually(http: aiohttp.ClientSession) -> None:
    async with Simulator(speed=FAST, seed=0, scenario="lost_all") as sim:
        sim.script("hang_after_create", seconds=0.2)
        started = time.monotonic()
        status, answer = await submit(http, sim, request_body("http://127.0.0.1:9/cb"))
        assert time.monotonic() - started >= 0.2
        assert (status, answer["code"]) == (200, 200)


async def test_upload_unreachable_on_kie_is_a_sync_451(http: aiohttp.ClientSession) -> None:
    async with Simulator(provider="kie", speed=FAST, seed=0) as sim:
        sim.script("upload_unreachable")
        status, answer = await submit(http, sim, request_body("http://127.0.0.1:9/cb"))
        assert (status, answer["code"], answer["data"]) == (200, 451, None)
        assert sim.tasks == {}
        assert sim.credits == 1000


async def test_maintenance_switch(http: aiohttp.ClientSession) -> None:
    async with Simulator(speed=FAST, seed=0, scenario="lost_all") as sim:
        task_id = await create(http, sim, "http://127.0.0.1:9/cb")
        sim.maintenance = True
        assert (await submit(http, sim, request_body("http://127.0.0.1:9/cb")))[1]["code"] == 455
        assert (await details(http, sim, task_id))["code"] == 455
        async with http.get(sim.credits_url, headers=auth(sim)) as resp:
            assert (await resp.json())["code"] == 455
        sim.maintenance = False
        assert (await details(http, sim, task_id))["code"] == 200
        assert len(sim.tasks) == 1


# ----------------------------------------------------------------- endpoints and checks


@pytest.mark.parametrize(
    ("provider", "msg"),
    [("kie", "You do not have access permissions"), ("apibox", None), ("sunoapi", None)],
)
async def test_bad_or_missing_key_is_401(
    provider: str, msg: str | None, http: aiohttp.ClientSession
) -> None:
    async with Simulator(provider=provider, api_key="right", speed=FAST) as sim:
        urls = [("POST", sim.submit_url), ("GET", sim.details_url("x")), ("GET", sim.credits_url)]
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "right"}):
            for method, url in urls:
                async with http.request(method, url, headers=headers, json={}) as resp:
                    answer = await resp.json()
                assert (resp.status, answer["code"], answer["data"]) == (200, 401, None)
                if msg is not None:
                    assert answer["msg"] == msg
        assert sim.tasks == {}


async def test_error_status_mirror(http: aiohttp.ClientSession) -> None:
    async with Simulator(provider="kie", speed=FAST, error_status="mirror") as sim:
        url = sim.credits_url
        async with http.get(url) as resp:
            assert resp.status == 401
            assert (await resp.json())["code"] == 401


async def test_unknown_paths_and_methods_are_404(http: aiohttp.ClientSession) -> None:
    async with Simulator(speed=FAST) as sim:
        base = sim.base_url
        for method, path in [
            ("GET", "/api/v1/generate/add-vocals"),
            ("POST", "/api/v1/generate/record-info"),
            ("GET", "/api/v1/nothing"),
            ("GET", "/api/v1/chat/credit"),  # kie's path, not apibox's
            ("DELETE", "/"),
        ]:
            async with http.request(method, base + path, headers=auth(sim)) as resp:
                answer = await resp.json()
            assert answer["code"] == 404, (method, path)
            assert set(answer) == {"code", "msg", "data"}
        assert sim.count(code=404) == 5


async def test_details_errors(http: aiohttp.ClientSession) -> None:
    async with Simulator(provider="kie", speed=FAST) as sim:
        url = sim.base_url + sim.profile.details_path
        async with http.get(url, headers=auth(sim)) as resp:
            assert (await resp.json())["code"] == 422
        assert (await details(http, sim, "0" * 32))["code"] == 404


VALIDATION_CASES = [
    ("apibox", {"title": _DROP}, 400),
    ("kie", {"title": _DROP}, 422),
    ("apibox", {"prompt": "x" * 5001}, 413),
    ("sunoapi", {"prompt": "x" * 5001}, 413),
    ("kie", {"prompt": "x" * 5001}, 422),
    ("apibox", {"model": "V4", "prompt": "x" * 3001}, 413),
    ("apibox", {"model": "V4", "prompt": "x" * 3000}, 200),
    ("apibox", {"lyrics": "x" * 5001}, 413),
    ("apibox", {"styleWeight": 0.555}, 400),
    ("apibox", {"styleWeight": 0.57}, 200),
    ("apibox", {"audioWeight": True}, 400),
    ("kie", {"weirdnessConstraint": 1.01}, 422),
    ("apibox", {"vocalGender": "x"}, 400),
    ("apibox", {"variety": 5}, 400),
    ("apibox", {"variety": 4}, 200),
    ("apibox", {"model": "V7"}, 400),
    ("apibox", {"uploadUrl": "ftp://cdn.example.org/a.wav"}, 400),
    ("apibox", {"callBackUrl": "/relative/cb"}, 400),
    ("apibox", {"negativeTags": ""}, 400),
    ("apibox", {"style": "s" * 1001}, 400),
    ("apibox", {"title": "t" * 100}, 200),
    ("apibox", {"title": "t" * 101}, 400),
    ("kie", {"title": "t" * 80}, 200),
    ("kie", {"title": "t" * 81}, 422),
    ("apibox", {"prompt": _DROP}, 400),  # required on every provider (issue 11)
    ("kie", {"prompt": _DROP}, 422),
    ("sunoapi", {"prompt": _DROP}, 400),
    ("apibox", {"tags": "ignored", "somethingNew": {"a": 1}}, 200),
    ("apibox", {"vocalGender": None}, 200),
]


@pytest.mark.parametrize(("provider", "changes", "code"), VALIDATION_CASES)
async def test_validation(
    provider: str, changes: dict[str, Any], code: int, http: aiohttp.ClientSession
) -> None:
    async with Simulator(provider=provider, speed=FAST, scenario="lost_all") as sim:
        status, answer = await submit(http, sim, request_body("http://127.0.0.1:9/cb", **changes))
        assert status == 200
        assert answer["code"] == code, answer
        assert len(sim.tasks) == (1 if code == 200 else 0)
        if code != 200:
            assert answer["data"] is None
            assert answer["msg"]


@pytest.mark.parametrize(("provider", "code"), [("apibox", 400), ("kie", 422)])
async def test_non_json_body_is_rejected(
    provider: str, code: int, http: aiohttp.ClientSession
) -> None:
    async with Simulator(provider=provider, speed=FAST) as sim:
        _status, answer = await submit(http, sim, None, raw=b"uploadUrl=x")
        assert answer["code"] == code
        assert sim.requests[-1].json is None


@pytest.mark.parametrize(
    ("provider", "path", "empty_code"),
    [
        ("apibox", "/api/v1/generate/credit", 429),
        ("sunoapi", "/api/v1/generate/credit", 429),
        ("kie", "/api/v1/chat/credit", 402),
    ],
)
async def test_credits(
    provider: str, path: str, empty_code: int, http: aiohttp.ClientSession
) -> None:
    async with Simulator(
        provider=provider, speed=FAST, credits=25, task_cost=10, scenario="lost_all"
    ) as sim:
        assert sim.credits_url.endswith(path)

        async def balance() -> Any:
            async with http.get(sim.credits_url, headers=auth(sim)) as resp:
                answer = await resp.json()
            assert answer["code"] == 200
            assert answer["msg"] == "success"
            return answer["data"]

        assert await balance() == 25
        body = request_body("http://127.0.0.1:9/cb")
        codes = [(await submit(http, sim, body))[1]["code"] for _ in range(3)]
        assert codes == [200, 200, empty_code]
        assert await balance() == 5
        assert len(sim.tasks) == 2


async def test_details_rate_limit_per_task(http: aiohttp.ClientSession) -> None:
    async with Simulator(provider="kie", speed=FAST, scenario="lost_all") as sim:
        first = await create(http, sim, "http://127.0.0.1:9/cb")
        second = await create(http, sim, "http://127.0.0.1:9/cb")
        codes = [(await details(http, sim, first))["code"] for _ in range(4)]
        assert codes == [200, 200, 200, 429]
        assert (await details(http, sim, second))["code"] == 200  # per task


async def test_young_details_null_and_legacy_shape(
    receiver: Receiver, http: aiohttp.ClientSession
) -> None:
    async with Simulator(
        speed=FAST, seed=0, young_details_null=2, legacy_details=True, details_rate_limit=None
    ) as sim:
        task_id = await create(http, sim, receiver.url)
        assert (await details(http, sim, task_id))["data"] is None
        assert (await details(http, sim, task_id))["data"] is None
        await sim.wait_idle()
        response = (await details(http, sim, task_id))["data"]["response"]
        assert "sunoData" not in response
        assert all(t.keys() >= SNAKE_TRACK_KEYS for t in response["data"])


@pytest.mark.parametrize("mode", ["string", "epoch_ms", "alternate"])
async def test_create_time_forms(
    mode: Any, receiver: Receiver, http: aiohttp.ClientSession
) -> None:
    async with Simulator(speed=FAST, seed=0, create_time=mode) as sim:
        task_id = await create(http, sim, receiver.url)
        await sim.wait_idle()
        stamps = [r.body["data"]["data"][0]["createTime"] for r in receiver.received[1:]]
        stamps.append(
            (await details(http, sim, task_id))["data"]["response"]["sunoData"][0]["createTime"]
        )
        kinds = [type(s) for s in stamps]
        if mode == "string":
            assert kinds == [str, str, str]
            assert re.match(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d$", stamps[0])
        elif mode == "epoch_ms":
            assert kinds == [int, int, int]
            assert abs(stamps[0] / 1000 - time.time()) < 60
        else:
            assert kinds == [int, str, int]


# ------------------------------------------------------------------------------- files


async def test_downloads_are_real_files_until_retention_ends(
    receiver: Receiver, http: aiohttp.ClientSession
) -> None:
    retention_days = 0.005  # 432 s of API time, 0.43 s at speed 1000
    async with Simulator(speed=FAST, seed=0, retention_days=retention_days) as sim:
        await create(http, sim, receiver.url)
        await sim.wait_idle()
        tracks = (await receiver.wait_for("complete")).body["data"]["data"]
        audio = []
        for track in tracks:
            async with http.get(track["audio_url"]) as resp:
                assert resp.status == 200
                assert resp.content_type == "audio/mpeg"
                data = await resp.read()
                assert int(resp.headers["Content-Length"]) == len(data)
            assert data[:2] in (b"\xff\xfb", b"\xff\xfa") or data.startswith(b"ID3")
            assert mp3_frame_count(data) >= 3
            audio.append(data)
            async with http.get(track["image_url"]) as resp:
                assert resp.status == 200
                assert resp.content_type == "image/jpeg"
                image = await resp.read()
            assert image.startswith(b"\xff\xd8\xff")
            assert image.endswith(b"\xff\xd9")
            async with http.get(track["stream_audio_url"]) as resp:
                assert resp.status == 200
            async with http.get(track["source_audio_url"]) as resp:
                assert resp.status == 403  # the upstream CDN refuses, as in real traffic
        assert audio[0] != audio[1]
        assert mp3_frame_count(audio[0]) != mp3_frame_count(audio[1])

        await asyncio.sleep(retention_days * 86_400 / FAST + 0.05)
        for track in tracks:
            for url in (track["audio_url"], track["image_url"]):
                async with http.get(url) as resp:
                    assert resp.status == 404
        async with http.get(sim.base_url + "/files/nope/nope.mp3") as resp:
            assert resp.status == 404


# ----------------------------------------------------------------- scripting, seeding


async def test_script_is_first_in_first_out(http: aiohttp.ClientSession) -> None:
    async with Simulator(speed=FAST, seed=0, scenario="lost_all") as sim:
        sim.script("complete_only")
        sim.script("error", count=2, error_code=500)
        for _ in range(4):
            await create(http, sim, "http://127.0.0.1:9/cb")
        assert [t.scenario for t in sim.tasks.values()] == [
            "complete_only",
            "error",
            "error",
            "lost_all",
        ]


def test_script_rejects_typos() -> None:
    sim = Simulator()
    with pytest.raises(ValueError, match="unknown scenario"):
        sim.script("duplicate")
    with pytest.raises(TypeError, match="takes"):
        sim.script("error", code=500)
    with pytest.raises(ValueError, match="unknown scenario"):
        sim.default_scenario = "nope"
    with pytest.raises(ValueError, match="unknown scenario"):
        Simulator(mix={"nope": 0.5})
    assert "normal" in SCENARIOS
    assert "hang_after_create" in SCENARIOS
    assert len(set(SCENARIOS)) == len(SCENARIOS) == 22


async def test_seed_makes_runs_reproducible(http: aiohttp.ClientSession) -> None:
    async def run() -> tuple[list[str], list[str], list[str]]:
        mix = {"lost_all": 0.4, "complete_only": 0.4, "rate_limited": 0.1}
        async with Simulator(speed=FAST, seed=42, mix=mix, scenario="callback_exception") as sim:
            for _ in range(12):
                await submit(http, sim, request_body("http://127.0.0.1:9/cb"))
            tasks = list(sim.tasks.values())
            return (
                [t.task_id for t in tasks],
                [t.tracks[1].id for t in tasks],
                [t.scenario for t in tasks],
            )

    first, second = await run(), await run()
    assert first == second
    assert len(set(first[2])) >= 2


async def test_wait_idle_times_out_and_close_cancels(
    http: aiohttp.ClientSession, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    async with Simulator(speed=1.0, seed=0, scenario="lost_all") as sim:
        await create(http, sim, "http://127.0.0.1:9/cb")
        with pytest.raises(TimeoutError):
            await sim.wait_idle(timeout=0.05)
        assert not sim.tasks[next(iter(sim.tasks))].finished
    gc.collect()
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


async def test_secrets_stay_out_of_reprs(http: aiohttp.ClientSession) -> None:
    async with Simulator(
        provider="kie", api_key="sim-secret-key", webhook_hmac_key="hmac-secret", speed=FAST
    ) as sim:
        await create(http, sim, "http://127.0.0.1:9/cb")
        for text in (repr(sim), repr(sim.requests), repr(sim.tasks)):
            assert "sim-secret-key" not in text
            assert "hmac-secret" not in text
        assert sim.base_url.startswith("http://127.0.0.1:")


def test_public_surface() -> None:
    import addvocals_async.testing as testing

    assert set(testing.__all__) == {
        "SCENARIOS",
        "Delivery",
        "RecordedRequest",
        "SimTask",
        "SimTrack",
        "Simulator",
        "StageTimes",
        "UploadedRecord",
        "oracle_signature",
        "serve_forever",
    }
    assert (
        testing.oracle_signature(
            b"sim-webhook-key-7Qx2", "4d8e0f3a91b27c65e0a4f1d9b3c87e52", 1767268800
        )
        == "ZXCU94ahKyxK45GanYvklThR9geENSXhlBmTepGFjV4="
    )
    assert {RecordedRequest, Delivery, SimTask} <= {getattr(testing, n) for n in testing.__all__}
    with pytest.raises(ValueError, match="speed"):
        Simulator(speed=0)
    assert StageTimes().complete == 180.0


# ----------------------------------------------------------------- plugin, standalone


async def test_fixture_defaults(addvocals_simulator: Simulator) -> None:
    assert addvocals_simulator.speed == 1000.0
    assert addvocals_simulator.provider == "apibox"
    assert addvocals_simulator.base_url.startswith("http://127.0.0.1:")


@pytest.mark.addvocals_simulator(provider="kie", credits=7, scenario="complete_only")
async def test_fixture_marker(
    addvocals_simulator: Simulator, receiver: Receiver, http: aiohttp.ClientSession
) -> None:
    sim = addvocals_simulator
    assert (sim.provider, sim.credits, sim.default_scenario) == ("kie", 7, "complete_only")
    sim.credits = 100
    await create(http, sim, receiver.url)
    await sim.wait_idle()
    assert receiver.types() == ["complete"]


async def test_serve_forever_in_process(http: aiohttp.ClientSession) -> None:
    out = io.StringIO()
    serving = asyncio.ensure_future(serve_forever(port=0, speed=FAST, out=out))
    try:
        for _ in range(100):
            if "\n" in out.getvalue():
                break
            await asyncio.sleep(0.01)
        match = re.search(r"(http://\S+) - api key: (\S+)", out.getvalue())
        assert match is not None, out.getvalue()
        async with http.get(
            match.group(1) + "/api/v1/generate/credit",
            headers={"Authorization": f"Bearer {match.group(2)}"},
        ) as resp:
            assert (await resp.json())["data"] == 1000
    finally:
        serving.cancel()
        with pytest.raises(asyncio.CancelledError):
            await serving


async def test_standalone_process_serves_a_real_client(http: aiohttp.ClientSession) -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "addvocals_async.testing",
        "--host",
        "127.0.0.1",
        "--port",
        "0",
        "--api-key",
        "standalone-key",
        "--speed",
        "600",
        "--seed",
        "3",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        assert process.stdout is not None
        line = (await asyncio.wait_for(process.stdout.readline(), 15)).decode()
        match = re.search(r"http://127\.0\.0\.1:\d+", line)
        assert match is not None, line
        assert line.rstrip().endswith("api key: standalone-key")
        base = match.group(0)
        headers = {"Authorization": "Bearer standalone-key"}
        body = request_body("https://hooks.example.com/addvocals/cb/x")
        async with http.post(base + "/api/v1/generate/add-vocals", json=body, headers=headers) as r:
            task_id = (await r.json())["data"]["taskId"]
        status = "PENDING"
        for _ in range(20):
            await asyncio.sleep(0.4)  # well inside 3 requests per second per task
            async with http.get(
                base + "/api/v1/generate/record-info", params={"taskId": task_id}, headers=headers
            ) as r:
                data = (await r.json())["data"]
            status = data["status"]
            if status == "SUCCESS":
                break
        assert status == "SUCCESS"
        assert len(data["response"]["sunoData"]) == 2
    finally:
        process.terminate()
        _, stderr = await asyncio.wait_for(process.communicate(), 10)
    assert process.returncode == 0, stderr.decode()
    assert b"Traceback" not in stderr


async def test_command_checks_scenario_and_speed_before_serving() -> None:
    """The one simulator command line: every option on one parser, bad values refused
    before anything is bound, as a usage error the caller reports in its own way."""
    from addvocals_async.testing._command import configure_parser, run

    parser = argparse.ArgumentParser(prog="sim")
    configure_parser(parser)
    assert "lost_all" in parser.format_help()  # --scenario's help lists the names
    args = parser.parse_args(["--port", "0"])
    assert (args.api_key, args.speed, args.scenario, args.allow_remote_callbacks) == (
        "sim-key",
        60.0,
        "normal",
        False,
    )
    out = io.StringIO()
    for argv, needles in (
        (["--scenario", "bogus"], ("--scenario", "bogus", "lost_all")),
        (["--speed", "0"], ("--speed",)),
    ):
        with pytest.raises(argparse.ArgumentError) as refused:
            await run(parser.parse_args(["--port", "0", *argv]), out)
        for needle in needles:
            assert needle in str(refused.value)
    assert out.getvalue() == ""


def test_recorded_types_are_plain_records() -> None:
    rec = RecordedRequest(method="GET", path="/", query={}, headers={}, json=None, at=0.0)
    delivery = Delivery(
        task_id="t", callback_type="text", attempt=0, url="u", body={}, headers={}, at=0.0
    )
    assert rec.status is None
    assert not delivery.ok
