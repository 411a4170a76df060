"""What the receiver refuses, and that a refusal never touches a task.

Forged and guessed URL tokens, a genuine body sent to another task's URL, oversized and
malformed bodies, kie's webhook signatures (the documented test vector, the two-sided window,
case-insensitive headers) and, across a whole run, that no secret ever shows in a repr,
an error message or a log line.
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
import logging
import secrets
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
import yarl
from aiohttp import web
from helpers import (
    DETAILS,
    OTHER_TASK,
    QUICK_RETRIES,
    REQUEST,
    SECRET,
    SUBMIT,
    TASK,
    FakeApi,
    backend_size,
    callback,
    callback_bytes,
    envelope,
    event_log,
    live,
    registered,
    token_of,
)

from addvocals_async import (
    AddVocalsClient,
    AddVocalsError,
    AuthenticationError,
    CallbackReceiver,
    PollPolicy,
    RetryPolicy,
    Stage,
    TaskFailedError,
    TaskRegistry,
    TaskTimeoutError,
    WebhookVerificationError,
    sign_webhook,
    verify_signature,
)
from addvocals_async._providers import get_provider
from addvocals_async._signing import Secret
from addvocals_async.testing import Simulator, StageTimes, oracle_signature

# Real poll timings throughout: a refused callback must leave its task pending until the
# genuine callbacks come, and the grace period before polling (0.5 s in PollPolicy.fast)
# is what keeps a poll from finishing the task first.
pytestmark = pytest.mark.real_timing

# Stages late enough (0.3 / 0.4 / 0.5 s at speed 1000) to attack a task still pending.
SLOW = StageTimes(text=300.0, first=400.0, complete=500.0)
GENUINE_EVENTS = [("text", "callback"), ("first", "callback"), ("complete", "callback")]

# kie's documented signature test vector.
VECTOR_KEY = "sim-webhook-key-7Qx2"
VECTOR_TASK = "4d8e0f3a91b27c65e0a4f1d9b3c87e52"
VECTOR_TS = 1767268800
VECTOR_SIG = "ZXCU94ahKyxK45GanYvklThR9geENSXhlBmTepGFjV4="
VECTOR_SIG_NEXT = "3ADERw2ZvUFI4lMeoB+QxmklPjtVlmyZXWOU/axvjbE="
VECTOR_BODY: dict[str, Any] = {
    "code": 200,
    "msg": "Text generation completed successfully.",
    "data": {"callbackType": "text", "task_id": VECTOR_TASK, "data": []},
}


def b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


# ------------------------------------------------------------------------ URL tokens


async def test_forged_tokens_are_refused_and_disturb_nothing() -> None:
    async with live(stage_times=SLOW) as env:
        task = await env.client.add_vocals(**REQUEST)
        genuine = env.sim.tasks[task.task_id].callback_url
        token = token_of(genuine)
        ref, _, mac = token.partition(".")
        base = genuine.rsplit("/", 1)[0]
        other_secret = CallbackReceiver(
            secret="another-receiver-secret-000000", public_url="http://127.0.0.1:1/addvocals"
        )
        foreign = token_of(other_secret.new_callback_url().url)
        random_mac = b64url(secrets.token_bytes(16))
        forged = {
            "random ref and mac": f"{b64url(secrets.token_bytes(16))}.{random_mac}",
            "genuine ref, wrong mac": f"{ref}.{b64url(secrets.token_bytes(16))}",
            "genuine ref, mac one char off": f"{ref}.{mac[:-1]}{'A' if mac[-1] != 'A' else 'B'}",
            "truncated": token[:-3],
            "mac only": f".{mac}",
            "ref only": f"{ref}.",
            "no dot": ref + mac,
            "another secret's token": foreign,
            "non-ascii ref": "%C3%A9" + token[1:],
            "non-ascii mac": f"{ref}.{mac[:-1]}%E2%82%AC",
            "overlong ref": f"{'A' * 200}.{mac}",
        }
        for name, bad in forged.items():
            status, answer = await env.post(
                yarl.URL(f"{base}/{bad}", encoded=True), callback_bytes(task.task_id)
            )
            assert (status, answer) == (
                403,
                {"status": "rejected", "reason": "invalid callback token"},
            ), name
        assert env.receiver.stats.rejected_token == len(forged)
        # Nothing moved: the task is still pending and recorded nothing.
        assert task.stage is Stage.PENDING
        assert task._state.events == []
        result = await task.complete(timeout=5)
        assert result.source == "callback"
        assert [t.id for t in result.tracks] == [t.id for t in env.sim.tasks[task.task_id].tracks]
        assert "evil-track" not in {t.id for t in result.tracks}
        assert await event_log(task) == GENUINE_EVENTS
        assert env.receiver.stats.accepted == 3
        await other_secret.aclose()


async def test_a_body_sent_to_another_tasks_url_is_refused() -> None:
    async with live(stage_times=SLOW) as env:
        task_a = await env.client.add_vocals(**REQUEST)
        task_b = await env.client.add_vocals(**REQUEST)
        url_a = env.sim.tasks[task_a.task_id].callback_url
        url_b = env.sim.tasks[task_b.task_id].callback_url
        assert url_a != url_b
        # B's body to A's genuine URL, and A's body to B's.
        for url, body in (
            (url_a, callback_bytes(task_b.task_id)),
            (url_b, callback_bytes(task_a.task_id)),
        ):
            status, answer = await env.post(url, body)
            assert status == 403
            assert answer["reason"] == "task id does not match the callback URL"
        assert env.receiver.stats.rejected_mismatch == 2
        assert (task_a.stage, task_b.stage) == (Stage.PENDING, Stage.PENDING)
        assert task_a._state.events == task_b._state.events == []

        results = await asyncio.gather(task_a.complete(timeout=5), task_b.complete(timeout=5))
        await env.sim.wait_idle()
        for task, result in zip((task_a, task_b), results, strict=True):
            assert result.source == "callback"
            assert [t.id for t in result.tracks] == [
                t.id for t in env.sim.tasks[task.task_id].tracks
            ]
            assert await event_log(task) == GENUINE_EVENTS
        assert env.receiver.stats.accepted == 6

        # Both finished and forgotten: the URL still belongs to its own task.
        status, _ = await env.post(url_a, callback_bytes(task_b.task_id))
        assert status == 403
        assert env.receiver.stats.rejected_mismatch == 3
        # A genuine replay to its own URL is acknowledged and ignored.
        status, answer = await env.post(url_a, callback_bytes(task_a.task_id))
        assert (status, answer) == (200, {"status": "received"})
        assert env.receiver.stats.ignored == 1
        assert env.receiver.stats.accepted == 6
        assert await event_log(task_a) == GENUINE_EVENTS
        assert backend_size(env.receiver) == 0


# ---------------------------------------------------------------------- body checks


def padded(task_id: str, size: int) -> bytes:
    """A valid JSON callback of an unknown type, exactly ``size`` bytes long."""
    data = {"callbackType": "progress", "task_id": task_id, "pad": ""}
    body = {"code": 200, "msg": "", "data": data}
    raw = json.dumps(body).encode()
    data["pad"] = "x" * (size - len(raw))
    raw = json.dumps(body).encode()
    assert len(raw) == size
    return raw


async def test_oversized_bodies_get_413() -> None:
    limit = 4096
    async with live(stage_times=SLOW, receiver_kwargs={"max_body_size": limit}) as env:
        task = await env.client.add_vocals(**REQUEST)
        url = env.sim.tasks[task.task_id].callback_url

        # Exactly at the limit is fine (an unknown type: acknowledged and ignored).
        assert await env.post(url, padded(task.task_id, limit)) == (200, {"status": "received"})

        # One byte over, with a Content-Length.
        async with env.http.post(url, data=padded(task.task_id, limit + 1)) as response:
            assert response.request_info.headers["Content-Length"] == str(limit + 1)
            assert response.status == 413
            assert (await response.json())["reason"] == "body too large"

        # Chunked, without a Content-Length: counted as it streams in.
        async def chunks() -> AsyncIterator[bytes]:
            for _ in range(8):
                yield b"x" * 1024

        async with env.http.post(url, data=chunks()) as response:
            sent = response.request_info.headers
            assert "Content-Length" not in sent
            assert sent["Transfer-Encoding"] == "chunked"
            assert response.status == 413

        # A huge announced length is refused before any of the body is read.
        target = yarl.URL(url)
        assert target.host is not None
        assert target.port is not None
        reader, writer = await asyncio.open_connection(target.host, target.port)
        writer.write(
            f"POST {target.raw_path} HTTP/1.1\r\nHost: x\r\n"
            "Content-Type: application/json\r\nContent-Length: 100000000\r\n\r\n{".encode()
        )
        await writer.drain()
        status_line = await asyncio.wait_for(reader.readline(), 2)
        assert status_line.startswith(b"HTTP/1.1 413")
        writer.close()

        assert env.receiver.stats.rejected_size == 3
        assert env.receiver.stats.ignored == 1
        assert task.stage is Stage.PENDING
        assert (await task.complete(timeout=5)).source == "callback"
        assert await event_log(task) == GENUINE_EVENTS


MALFORMED = {
    "not json": (b"{nope", "the body is not JSON"),
    "empty": (b"", "the body is not JSON"),
    "not utf-8": (b'{"code": 200, "msg": "\xff\xfe"}', "the body is not JSON"),
    "nested too deep": (b"[" * 100_000 + b"]" * 100_000, "the body is not JSON"),
    "a list": (b"[1, 2]", "callback body is not a JSON object"),
    "a string": (b'"complete"', "callback body is not a JSON object"),
    "no task id": (
        b'{"code": 200, "msg": "ok", "data": {"callbackType": "complete", "data": []}}',
        "callback body names no task id",
    ),
    "empty task id": (
        b'{"code": 200, "data": {"callbackType": "complete", "task_id": ""}}',
        "callback body names no task id",
    ),
    "no data": (b'{"code": 200, "msg": "ok"}', "callback body names no task id"),
}


async def test_malformed_bodies_get_400() -> None:
    async with live(stage_times=SLOW, receiver_kwargs={"max_body_size": 1024 * 1024}) as env:
        task = await env.client.add_vocals(**REQUEST)
        url = env.sim.tasks[task.task_id].callback_url
        for name, (body, reason) in MALFORMED.items():
            assert await env.post(url, body) == (
                400,
                {"status": "rejected", "reason": reason},
            ), name
        assert env.receiver.stats.rejected_body == len(MALFORMED)
        assert env.receiver.stats.rejected == len(MALFORMED)
        assert task.stage is Stage.PENDING
        assert (await task.complete(timeout=5)).source == "callback"
        assert await event_log(task) == GENUINE_EVENTS


# ------------------------------------------------------------------ kie signatures

HMAC_KEY = "kie-account-webhook-hmac-key-XYZ"


async def test_kie_genuine_signatures_pass() -> None:
    async with live(
        "kie", webhook_hmac_key=HMAC_KEY, receiver_kwargs={"webhook_hmac_key": HMAC_KEY}
    ) as env:
        task = await env.client.add_vocals(**REQUEST)
        result = await task.complete(timeout=5)
        await env.sim.wait_idle()
        assert result.source == "callback"
        deliveries = env.sim.deliveries_for(task.task_id)
        assert [d.status for d in deliveries] == [200, 200, 200]
        for delivery in deliveries:
            stamp = int(delivery.headers["X-Webhook-Timestamp"])
            assert abs(stamp - time.time()) < 5
            assert delivery.headers["X-Webhook-Signature"] == sign_webhook(
                task.task_id, stamp, HMAC_KEY
            )
        assert (env.receiver.stats.accepted, env.receiver.stats.rejected_signature) == (3, 0)


@pytest.mark.parametrize("scenario", ["bad_signature", "stale_signature"])
async def test_kie_bad_and_stale_signatures_are_refused(scenario: str) -> None:
    async with live(
        "kie",
        webhook_hmac_key=HMAC_KEY,
        retry_delays=QUICK_RETRIES,
        receiver_kwargs={"webhook_hmac_key": HMAC_KEY},
    ) as env:
        env.sim.script(scenario)
        task = await env.client.add_vocals(**REQUEST)
        result = await task.complete(timeout=5)
        await env.sim.wait_idle()
        # Every attempt (first try and 3 retries of each callback) was refused with 401 ...
        deliveries = env.sim.deliveries_for(task.task_id)
        assert len(deliveries) == 12
        assert {d.status for d in deliveries} == {401}
        assert env.receiver.stats.rejected_signature == 12
        assert env.receiver.stats.accepted == 0
        if scenario == "stale_signature":
            assert all(
                time.time() - int(d.headers["X-Webhook-Timestamp"]) > 300 for d in deliveries
            )
        # ... and the task still completed, by polling.
        assert result.source == "poll"
        assert [t.id for t in result.tracks] == [t.id for t in env.sim.tasks[task.task_id].tracks]
        assert await event_log(task) == [("complete", "poll")]
        assert backend_size(env.receiver) == 0


async def test_unsigned_callbacks_are_refused_when_a_key_is_set() -> None:
    async with live(
        "kie", retry_delays=QUICK_RETRIES, receiver_kwargs={"webhook_hmac_key": HMAC_KEY}
    ) as env:
        env.sim.script("complete_only")
        task = await env.client.add_vocals(**REQUEST)
        result = await task.complete(timeout=5)
        await env.sim.wait_idle()
        deliveries = env.sim.deliveries_for(task.task_id)
        assert "X-Webhook-Signature" not in deliveries[0].headers
        assert {d.status for d in deliveries} == {401}
        assert env.receiver.stats.rejected_signature == len(deliveries) == 4
        assert result.source == "poll"


async def test_receiver_window_is_two_sided() -> None:
    receiver = CallbackReceiver(
        secret=SECRET, public_url="https://hooks.example.org/av", webhook_hmac_key=HMAC_KEY
    )
    path = yarl.URL(receiver.new_callback_url().url).path
    task_id = "4d8e0f3a91b27c65e0a4f1d9b3c87e52"
    body = json.dumps(
        {"code": 200, "msg": "", "data": {"callbackType": "progress", "task_id": task_id}}
    ).encode()
    now = int(time.time())
    statuses = []
    for offset in (-400, +400, -200, +200):
        stamp = now + offset
        headers = {
            "x-webhook-timestamp": str(stamp),
            "x-webhook-signature": sign_webhook(task_id, stamp, HMAC_KEY),
        }
        statuses.append((offset, (await receiver.handle(path, headers, body)).status))
    assert statuses == [(-400, 401), (400, 401), (-200, 200), (200, 200)]
    assert receiver.stats.rejected_signature == 2
    # Odd timestamps are refused with 401, never a crash (500).
    for stamp_text in ("²", "١٧٦٧٢٦٨٨٠٠", "9" * 5000, "1e9", "", "-1"):
        headers = {"X-Webhook-Timestamp": stamp_text, "X-Webhook-Signature": "x"}
        assert (await receiver.handle(path, headers, body)).status == 401, stamp_text
    assert receiver.stats.rejected_signature == 8
    await receiver.aclose()


# ---------------------------------------------------------------- verify_signature


def vector_headers(stamp: int | str = VECTOR_TS, sig: str = VECTOR_SIG) -> dict[str, str]:
    return {"X-Webhook-Timestamp": str(stamp), "X-Webhook-Signature": sig}


def test_a_raw_body_that_is_not_json_fails_verification() -> None:
    for raw in (b"\xff\xfe", "not json", b"[1, 2]", VECTOR_TASK):  # a task id is not a body
        with pytest.raises(WebhookVerificationError):
            verify_signature(raw, vector_headers(), VECTOR_KEY, now=VECTOR_TS)


def test_spec_test_vector() -> None:
    assert sign_webhook(VECTOR_TASK, VECTOR_TS, VECTOR_KEY) == VECTOR_SIG
    assert sign_webhook(VECTOR_TASK, VECTOR_TS + 1, VECTOR_KEY) == VECTOR_SIG_NEXT
    # The simulator's own implementation agrees.
    assert oracle_signature(VECTOR_KEY.encode(), VECTOR_TASK, VECTOR_TS) == VECTOR_SIG
    for key in (VECTOR_KEY, VECTOR_KEY.encode(), Secret(VECTOR_KEY)):
        verify_signature(None, vector_headers(), key, task_id=VECTOR_TASK, now=VECTOR_TS)
        verify_signature(VECTOR_BODY, vector_headers(), key, now=VECTOR_TS)
        # The raw body, as a web framework hands it over: bytes or text.
        raw = json.dumps(VECTOR_BODY)
        verify_signature(raw, vector_headers(), key, now=VECTOR_TS)
        verify_signature(raw.encode(), vector_headers(), key, now=VECTOR_TS)
    # The first signature must not verify for the next second.
    with pytest.raises(WebhookVerificationError, match="does not match"):
        verify_signature(VECTOR_BODY, vector_headers(VECTOR_TS + 1), VECTOR_KEY, now=VECTOR_TS)
    verify_signature(
        VECTOR_BODY, vector_headers(VECTOR_TS + 1, VECTOR_SIG_NEXT), VECTOR_KEY, now=VECTOR_TS
    )
    with pytest.raises(WebhookVerificationError):
        verify_signature(VECTOR_BODY, vector_headers(), VECTOR_KEY + "x", now=VECTOR_TS)


def test_task_id_is_found_where_the_spec_says() -> None:
    headers = vector_headers()
    for body in (
        {"data": {"task_id": VECTOR_TASK}},
        {"taskId": VECTOR_TASK, "data": {"callbackType": "text"}},
        {"data": {"taskId": VECTOR_TASK}},
        {"taskId": "someone-else", "data": {"task_id": VECTOR_TASK}},  # data.task_id first
    ):
        verify_signature(body, headers, VECTOR_KEY, now=VECTOR_TS)
    with pytest.raises(WebhookVerificationError, match="no task id"):
        verify_signature({"data": {"callbackType": "text"}}, headers, VECTOR_KEY, now=VECTOR_TS)
    with pytest.raises(WebhookVerificationError, match="does not match"):
        verify_signature({"taskId": "other"}, headers, VECTOR_KEY, now=VECTOR_TS)


@pytest.mark.parametrize(
    "headers",
    [
        {"x-webhook-timestamp": str(VECTOR_TS), "x-webhook-signature": VECTOR_SIG},
        {"X-WEBHOOK-TIMESTAMP": str(VECTOR_TS), "X-WEBHOOK-SIGNATURE": VECTOR_SIG},
        {"x-Webhook-TIMESTAMP": str(VECTOR_TS), "X-webhook-Signature": VECTOR_SIG},
    ],
)
def test_headers_are_read_case_insensitively(headers: dict[str, str]) -> None:
    verify_signature(VECTOR_BODY, headers, VECTOR_KEY, now=VECTOR_TS)


@pytest.mark.parametrize(
    ("offset", "accepted"),
    [(-301, False), (301, False), (-300, True), (300, True), (-299, True), (299, True)],
)
def test_signature_window_is_two_sided(offset: int, accepted: bool) -> None:
    if accepted:
        verify_signature(VECTOR_BODY, vector_headers(), VECTOR_KEY, now=VECTOR_TS + offset)
    else:
        with pytest.raises(WebhookVerificationError, match="away from now"):
            verify_signature(VECTOR_BODY, vector_headers(), VECTOR_KEY, now=VECTOR_TS + offset)


def test_signature_window_follows_tolerance() -> None:
    verify_signature(VECTOR_BODY, vector_headers(), VECTOR_KEY, now=VECTOR_TS + 10, tolerance=10)
    with pytest.raises(WebhookVerificationError):
        verify_signature(
            VECTOR_BODY, vector_headers(), VECTOR_KEY, now=VECTOR_TS - 11, tolerance=10
        )


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"X-Webhook-Signature": VECTOR_SIG},
        {"X-Webhook-Timestamp": str(VECTOR_TS)},
        vector_headers("abc"),
        vector_headers("-5"),
        vector_headers("1767268800.0"),
        vector_headers("²"),  # str.isdigit() says yes, int() says no
        vector_headers("١٧٦٧٢٦٨٨٠٠"),  # Arabic-Indic digits for the vector's timestamp
        vector_headers("9" * 5000),  # beyond int()'s digit limit
        vector_headers(VECTOR_TS, ""),
        vector_headers(VECTOR_TS, VECTOR_SIG[:-1]),
        vector_headers(VECTOR_TS, "é" + VECTOR_SIG[1:]),
    ],
)
def test_bad_headers_raise_webhook_verification_error(headers: dict[str, str]) -> None:
    with pytest.raises(WebhookVerificationError) as caught:
        verify_signature(VECTOR_BODY, headers, VECTOR_KEY, now=VECTOR_TS)
    assert type(caught.value) is WebhookVerificationError
    assert isinstance(caught.value, ValueError)


def test_a_task_id_with_a_lone_surrogate_is_signed_and_checked_not_crashed() -> None:
    """Issue 10, item 6: ``sign_webhook`` raised ``UnicodeEncodeError`` for a task id with
    a lone surrogate (HTTP 500 in kie mode), and ``verify_signature`` let it escape."""
    task_id = "\ud800x"
    body = json.dumps({"code": 200, "data": {"callbackType": "text", "task_id": task_id}})
    signature = sign_webhook(task_id, VECTOR_TS, VECTOR_KEY)
    headers = vector_headers(VECTOR_TS, signature)
    verify_signature(body, headers, VECTOR_KEY, now=VECTOR_TS)  # raises when it fails
    with pytest.raises(WebhookVerificationError):
        verify_signature(body, vector_headers(VECTOR_TS, VECTOR_SIG), VECTOR_KEY, now=VECTOR_TS)


async def test_kie_mode_answers_a_lone_surrogate_task_id_without_a_server_error() -> None:
    receiver = CallbackReceiver(
        secret=SECRET, public_url="https://hooks.example.org/av", webhook_hmac_key=HMAC_KEY
    )
    url = receiver.new_callback_url().url
    task_id = "\ud800x"
    stamp = int(time.time())
    headers = {
        "x-webhook-timestamp": str(stamp),
        "x-webhook-signature": sign_webhook(task_id, stamp, HMAC_KEY),
    }
    body = json.dumps(
        {"code": 200, "msg": "", "data": {"callbackType": "text", "task_id": task_id}}
    )
    answer = await receiver.handle_token(token_of(url), headers, body.encode())
    assert answer.status < 500
    await receiver.aclose()


# -------------------------------------------------------------------- no secret leaks

API_KEY = "sk-sim-api-key-MUST-NOT-LEAK-5150"
WRONG_API_KEY = "sk-wrong-api-key-MUST-NOT-LEAK-7777"
LEAK_SECRET = "receiver-secret-MUST-NOT-LEAK-31337"
LEAK_HMAC = "webhook-hmac-MUST-NOT-LEAK-2600"


def encodings(secret: str) -> list[str]:
    raw = secret.encode()
    return [
        secret,
        raw.hex(),
        base64.b64encode(raw).decode(),
        b64url(raw),
        repr(raw),
    ]


async def test_no_secret_in_reprs_errors_or_logs(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    texts: list[str] = []
    errors: list[BaseException] = []
    async with (
        Simulator(
            provider="kie",
            speed=1000,
            seed=0,
            api_key=API_KEY,
            webhook_hmac_key=LEAK_HMAC,
            retry_delays=QUICK_RETRIES,
        ) as sim,
        CallbackReceiver(secret=LEAK_SECRET, webhook_hmac_key=LEAK_HMAC) as receiver,
        AddVocalsClient(
            API_KEY,
            base_url=sim.base_url,
            provider="kie",
            receiver=receiver,
            poll=PollPolicy.fast(),
            retry=RetryPolicy.no_wait(),
        ) as client,
        aiohttp.ClientSession() as http,
    ):
        # A normal task, a refused signature, a failure, a timeout.
        for scenario in ("normal", "bad_signature", "error"):
            sim.script(scenario)
        tasks = [await client.add_vocals(**REQUEST) for _ in range(3)]
        outcomes = await asyncio.gather(
            *(t.complete(timeout=5) for t in tasks), return_exceptions=True
        )
        assert isinstance(outcomes[2], TaskFailedError)
        errors.append(outcomes[2])
        sim.script("lost_all")
        slow = await client.add_vocals(**REQUEST)
        with pytest.raises(TaskTimeoutError) as timed_out:
            await slow.text(timeout=0)
        errors.append(timed_out.value)
        # Forged token, another task's body, oversized, malformed: all logged refusals.
        url = sim.tasks[tasks[0].task_id].callback_url
        stamp = int(time.time())
        signed = {
            "X-Webhook-Timestamp": str(stamp),
            "X-Webhook-Signature": sign_webhook(tasks[1].task_id, stamp, LEAK_HMAC),
        }
        for target, body, expected in (
            (url[:-2] + "xx", callback_bytes(tasks[0].task_id), 403),
            (url, callback_bytes(tasks[1].task_id), 403),
            (url, io.BytesIO(b"x" * (2 * 1024 * 1024)), 413),
            (url, b"{broken", 400),
        ):
            async with http.post(target, data=body, headers=signed) as response:
                assert response.status == expected
        with pytest.raises(WebhookVerificationError) as bad_signature:
            verify_signature(VECTOR_BODY, vector_headers(), LEAK_HMAC, now=VECTOR_TS)
        errors.append(bad_signature.value)
        # A wrong API key.
        async with AddVocalsClient(
            WRONG_API_KEY, base_url=sim.base_url, provider="kie", retry=RetryPolicy.no_wait()
        ) as wrong:
            with pytest.raises(AuthenticationError) as denied:
                await wrong.get_credits()
            errors.append(denied.value)
            texts += [repr(wrong), str(wrong)]
        await sim.wait_idle()
        texts += [repr(receiver), str(receiver), repr(receiver.stats), repr(receiver.backend)]
        texts += [repr(client), str(client), repr(sim)]
        texts += [repr(t) for t in tasks]
        assert receiver.stats.rejected_signature > 0
        assert receiver.stats.rejected_token > 0
        assert receiver.stats.rejected_mismatch > 0
        assert receiver.stats.rejected_size > 0
        assert receiver.stats.rejected_body > 0
    assert all(isinstance(e, AddVocalsError) for e in errors)
    texts += [str(e) for e in errors] + [repr(e) for e in errors]
    texts += [caplog.text]
    texts += [record.getMessage() for record in caplog.records]
    assert any("refused" in record.getMessage() for record in caplog.records)
    assert any(record.levelno == logging.DEBUG for record in caplog.records)
    for secret in (API_KEY, WRONG_API_KEY, LEAK_SECRET, LEAK_HMAC):
        for form in encodings(secret):
            for text in texts:
                assert form not in text, (secret, text[:200])


# ---------------- forged routes: a URL belongs to one task


async def test_an_old_url_cannot_reach_another_registered_task() -> None:
    """A URL whose registration is gone (failed submit, restart, evicted memory) must not
    deliver to a task registered under its own URL."""
    receiver = CallbackReceiver(secret=SECRET, public_url="https://hooks.example.org/av")
    old = receiver.new_callback_url()  # registered nowhere: e.g. the submit that made it raised
    victim, _ = await registered(receiver, OTHER_TASK)
    answer = await receiver.handle_token(
        token_of(old.url), {}, json.dumps(callback(OTHER_TASK)).encode()
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
    fake_api: FakeApi,
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
