"""The transport (``addvocals_async._http``): envelopes and odd answers, ``Retry-After``,
timeouts. Where the simulator cannot misbehave the way a test needs, the ``fake_api``
fixture plays the API."""

from __future__ import annotations

import time

import aiohttp
import pytest
from aiohttp import web
from helpers import (
    REQUEST,
    SUBMIT,
    TASK,
    FakeApi,
    envelope,
)

from addvocals_async import (
    AddVocalsClient,
    AddVocalsError,
    APIConnectionError,
    RetryPolicy,
)
from addvocals_async._http import parse_retry_after


@pytest.mark.parametrize("value", ["²", "Wed, 21 Oct 2015 07:28:00 -0000", "9" * 400, "1e999"])
def test_retry_after_parsing_never_raises(value: str) -> None:
    result = parse_retry_after(value)
    assert result is None or result >= 0


async def test_an_odd_retry_after_on_a_created_task_keeps_its_id(
    fake_api: FakeApi,
) -> None:
    async def submit(request: web.Request) -> web.Response:
        answer = envelope({"taskId": TASK})
        answer.headers["Retry-After"] = "²"
        return answer

    base = await fake_api({("POST", SUBMIT): submit})
    async with AddVocalsClient("k", base_url=base, callback_url="https://h.example.org/c") as c:
        task = await c.add_vocals(**REQUEST)
    assert task.task_id == TASK


async def test_a_deeply_nested_answer_to_a_submit_is_ambiguous_not_a_crash(
    fake_api: FakeApi,
) -> None:
    async def submit(request: web.Request) -> web.Response:
        return web.Response(text="[" * 100_000 + "]" * 100_000, content_type="application/json")

    base = await fake_api({("POST", SUBMIT): submit})
    async with AddVocalsClient("k", base_url=base, callback_url="https://h.example.org/c") as c:
        with pytest.raises(APIConnectionError) as caught:
            await c.add_vocals(**REQUEST)
    assert caught.value.maybe_submitted is True


async def test_request_timeout_holds_on_a_session_the_caller_gave(
    fake_api: FakeApi,
) -> None:
    async def slow(request: web.Request) -> web.Response:
        await fake_api.hang()  # answers only when the test is over
        return envelope(1)

    base = await fake_api({("GET", "/api/v1/generate/credit"): slow})
    async with aiohttp.ClientSession() as session:
        client = AddVocalsClient("k", base_url=base, session=session, request_timeout=0.5,
                                 retry=RetryPolicy.no_wait(attempts=1))  # fmt: skip
        started = time.monotonic()
        with pytest.raises(APIConnectionError):
            await client.get_credits()
    assert time.monotonic() - started < 2.0


def test_retry_after_parsing() -> None:
    assert parse_retry_after("7") == 7.0
    assert parse_retry_after(None) is None
    assert parse_retry_after("soon") is None
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0


@pytest.mark.parametrize("chunked", [False, True], ids=["declared", "chunked"])
async def test_an_answer_over_the_limit_is_refused_without_reading_it_all(
    fake_api: FakeApi, chunked: bool
) -> None:
    """Issue 10, item 7: a 400 MB credits answer was read whole (830 MB of memory)."""
    sent = 0

    async def credits(request: web.Request) -> web.StreamResponse:
        nonlocal sent
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        if chunked:
            response.enable_chunked_encoding()
        else:
            response.content_length = 400 * 1024 * 1024
        await response.prepare(request)
        try:
            while sent < 400 * 1024 * 1024:
                await response.write(b" " * 65536)
                sent += 65536
        except (ConnectionError, RuntimeError):
            pass  # the client went away, as it should
        return response

    base = await fake_api({("GET", "/api/v1/generate/credit"): credits})
    async with AddVocalsClient(
        "k", base_url=base, callback_url="https://h.example.org/c",
        retry=RetryPolicy.no_wait(attempts=1),
    ) as client:  # fmt: skip
        with pytest.raises(APIConnectionError, match="allowed"):
            await client.get_credits()
    assert sent < 64 * 1024 * 1024


@pytest.mark.parametrize("code", ['"²"', '"' + "9" * 5000 + '"', "9" * 5000, '"2OO"'])
async def test_a_malformed_envelope_code_on_a_submit_is_ambiguous_and_typed(
    fake_api: FakeApi, code: str
) -> None:
    """Issue 10, item 4: ``"²"`` passes ``str.isdigit()`` but not ``int()``, and 5,000
    digits pass neither; the submit's answer came after the POST, so the task may exist."""

    async def submit(request: web.Request) -> web.Response:
        body = '{"code": ' + code + ', "msg": "ok", "data": {"taskId": "' + TASK + '"}}'
        return web.Response(text=body, content_type="application/json")

    base = await fake_api({("POST", SUBMIT): submit})
    async with AddVocalsClient(
        "k", base_url=base, callback_url="https://h.example.org/c",
        retry=RetryPolicy.no_wait(attempts=1),
    ) as client:  # fmt: skip
        with pytest.raises(AddVocalsError) as caught:
            await client.add_vocals(**REQUEST)
    assert getattr(caught.value, "maybe_submitted", None) is True


@pytest.mark.parametrize("credits", ["Infinity", "-Infinity", "NaN", "1e400", '"²"'])
async def test_odd_credits_are_a_typed_error(fake_api: FakeApi, credits: str) -> None:
    """Issue 10, item 4: ``get_credits()`` raised bare OverflowError/ValueError."""

    async def answer(request: web.Request) -> web.Response:
        body = '{"code": 200, "msg": "success", "data": ' + credits + "}"
        return web.Response(text=body, content_type="application/json")

    base = await fake_api({("GET", "/api/v1/generate/credit"): answer})
    async with AddVocalsClient(
        "k", base_url=base, callback_url="https://h.example.org/c",
        retry=RetryPolicy.no_wait(attempts=1),
    ) as client:  # fmt: skip
        with pytest.raises(AddVocalsError):
            await client.get_credits()
