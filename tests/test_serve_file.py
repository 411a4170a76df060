"""The receiver serving a local file: exactly the bytes asked, only to a genuine token,
only while the task needs it, over real HTTP on loopback (embedded and mounted)."""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from helpers import REQUEST, SECRET, callback_bytes, live, token_of, write_mp3
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from addvocals_async import APIError, CallbackReceiver, TaskFailedError
from addvocals_async._serving import UNSATISFIABLE, parse_range

SIZE = 10_000


@pytest.fixture
def beat(tmp_path: Path) -> Path:
    return write_mp3(tmp_path / "beat.mp3", SIZE)


@pytest.fixture
async def receiver() -> AsyncIterator[CallbackReceiver]:
    async with CallbackReceiver(secret=SECRET) as started:
        yield started


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(auto_decompress=False) as session:
        yield session


async def fetch(
    http: aiohttp.ClientSession, url: str, method: str = "GET", **headers: str
) -> tuple[int, Any, bytes]:
    async with http.request(method, url, headers=headers) as answer:
        return answer.status, answer.headers, await answer.read()


# ---------------------------------------------------------------- serving


async def test_get_and_head_serve_the_file_with_its_type_and_length(
    receiver: CallbackReceiver, http: aiohttp.ClientSession, beat: Path
) -> None:
    url = receiver.serve_file(beat)
    assert url.startswith(receiver.url + "/files/")
    status, headers, body = await fetch(http, url)
    assert status == 200
    assert body == beat.read_bytes()
    assert headers["Content-Type"] == "audio/mpeg"
    assert headers["Content-Length"] == str(SIZE)
    assert headers["Accept-Ranges"] == "bytes"
    status, headers, body = await fetch(http, url, "HEAD")
    assert status == 200
    assert body == b""
    assert headers["Content-Length"] == str(SIZE)
    assert receiver.stats.files_served == 2


async def test_a_wav_is_served_as_wav(
    receiver: CallbackReceiver, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    wav = tmp_path / "beat.wav"
    wav.write_bytes(b"RIFF\x24\x10\x00\x00WAVEfmt " + bytes(4096))
    status, headers, _ = await fetch(http, receiver.serve_file(wav), "HEAD")
    assert status == 200
    assert headers["Content-Type"] == "audio/wav"


async def test_ranges_give_exactly_the_bytes_asked(
    receiver: CallbackReceiver, http: aiohttp.ClientSession, beat: Path
) -> None:
    data = beat.read_bytes()
    url = receiver.serve_file(beat)
    for header, first, last in [
        ("bytes=0-0", 0, 0),
        ("bytes=100-199", 100, 199),
        ("bytes=9000-", 9000, SIZE - 1),
        ("bytes=-10", SIZE - 10, SIZE - 1),
        ("bytes=9990-20000", 9990, SIZE - 1),
        ("bytes=-20000", 0, SIZE - 1),
    ]:
        status, headers, body = await fetch(http, url, Range=header)
        assert status == 206, header
        assert body == data[first : last + 1], header
        assert headers["Content-Range"] == f"bytes {first}-{last}/{SIZE}"
        assert headers["Content-Length"] == str(last - first + 1)
    status, headers, body = await fetch(http, url, Range=f"bytes={SIZE}-")
    assert status == 416
    assert headers["Content-Range"] == f"bytes */{SIZE}"
    assert body == b""
    for ignored in ("bytes=0-1,5-6", "items=0-5", "bytes=5-1", "bytes=x-y"):
        status, _, body = await fetch(http, url, Range=ignored)
        assert status == 200, ignored
        assert body == data


RANGES = st.one_of(
    st.tuples(st.integers(0, 2 * SIZE), st.integers(0, 2 * SIZE)).map(lambda r: f"{r[0]}-{r[1]}"),
    st.integers(0, 2 * SIZE).map(lambda first: f"{first}-"),
    st.integers(0, 2 * SIZE).map(lambda suffix: f"-{suffix}"),
)


def expected(spec: str, size: int) -> tuple[int, bytes | None]:
    """What RFC 9110 says a single ``bytes=`` range must give: status and which slice."""
    first_text, _, last_text = spec.partition("-")
    if not first_text:
        suffix = int(last_text)
        return (416, None) if suffix == 0 else (206, b"%d:%d" % (max(0, size - suffix), size))
    first = int(first_text)
    if last_text and int(last_text) < first:
        return 200, None  # invalid: ignored
    if first >= size:
        return 416, None
    last = int(last_text) if last_text else size - 1
    return 206, b"%d:%d" % (first, min(last, size - 1) + 1)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(specs=st.lists(RANGES, min_size=1, max_size=8))
def test_any_single_range_gives_exactly_its_bytes(
    specs: list[str], tmp_path_factory: pytest.TempPathFactory
) -> None:
    """Over real HTTP: whatever range is asked, the answer is RFC 9110's."""
    path = write_mp3(tmp_path_factory.mktemp("range") / "beat.mp3", SIZE)
    data = path.read_bytes()

    async def run() -> None:
        async with (
            CallbackReceiver(secret=SECRET) as receiver,
            aiohttp.ClientSession() as http,
        ):
            url = receiver.serve_file(path)
            for spec in specs:
                status, headers, body = await fetch(http, url, Range=f"bytes={spec}")
                want_status, want = expected(spec, SIZE)
                assert status == want_status, spec
                if want_status == 206:
                    assert want is not None
                    start, stop = (int(x) for x in want.split(b":"))
                    assert body == data[start:stop], spec
                    assert headers["Content-Range"] == f"bytes {start}-{stop - 1}/{SIZE}"
                elif want_status == 200:
                    assert body == data

    asyncio.run(run())


@given(header=st.text(max_size=60), size=st.integers(0, 10**12))
def test_parse_range_never_raises_and_stays_inside_the_file(header: str, size: int) -> None:
    got = parse_range(header, size)
    if got is not None and got != UNSATISFIABLE:
        first, last = got
        assert 0 <= first <= last < size


@given(first=st.integers(0, 10**6), last=st.integers(0, 10**6), size=st.integers(1, 10**6))
def test_parse_range_reads_what_is_written(first: int, last: int, size: int) -> None:
    got = parse_range(f"bytes={first}-{last}", size)
    if last < first:
        assert got is None
    elif first >= size:
        assert got == UNSATISFIABLE
    else:
        assert got == (first, min(last, size - 1))


# ---------------------------------------------------------------- refusals


@pytest.fixture
def file_system_calls(beat: Path, monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """Every ``os.open``/``os.stat`` of the served file (or anything under its folder)."""
    calls: list[Any] = []
    folder = str(beat.parent)
    real_open, real_stat = os.open, os.stat

    def watched_open(path: Any, *args: Any, **kwargs: Any) -> int:
        if str(path).startswith(folder) or "passwd" in str(path):
            calls.append(("open", path))
        return real_open(path, *args, **kwargs)

    def watched_stat(path: Any, *args: Any, **kwargs: Any) -> os.stat_result:
        if str(path).startswith(folder) or "passwd" in str(path):
            calls.append(("stat", path))
        return real_stat(path, *args, **kwargs)

    monkeypatch.setattr(os, "open", watched_open)
    monkeypatch.setattr(os, "stat", watched_stat)
    return calls


async def test_forged_and_foreign_tokens_get_403_and_touch_no_file(
    receiver: CallbackReceiver,
    http: aiohttp.ClientSession,
    beat: Path,
    file_system_calls: list[Any],
) -> None:
    url = receiver.serve_file(beat)
    token = token_of(url)
    base = url[: -len(token)]
    ref, _, mac = token.partition(".")
    async with (
        CallbackReceiver(secret="another-secret-0123456789abcdef") as stranger,
        CallbackReceiver(secret=SECRET) as twin,
    ):
        stranger_url = stranger.serve_file(beat)
        twin_url = twin.serve_file(beat)  # same secret, another process's table
        file_system_calls.clear()
        forged = [
            base + ref + "." + ("A" if mac[0] != "A" else "B") + mac[1:],  # one character off
            base + ref + "x." + mac,
            base + "nonsense",
            base + token_of(stranger_url),  # signed with another secret
            base + token_of(twin_url),  # genuine, but not served here
            base + token_of(receiver.new_callback_url().url),  # a callback token is no file token
            base + "..%2F..%2F..%2Fetc%2Fpasswd",
            base + "%2e%2e/%2e%2e/etc/passwd",
        ]
        for bad in forged:
            status, _, body = await fetch(http, bad)
            assert status in (403, 404), bad
            assert b"ID3" not in body
    assert file_system_calls == []
    assert receiver.stats.files_refused >= 6
    assert receiver.stats.files_served == 0


async def test_an_expired_link_gets_403_without_touching_the_file(
    receiver: CallbackReceiver,
    http: aiohttp.ClientSession,
    beat: Path,
    file_system_calls: list[Any],
) -> None:
    url = receiver.serve_file(beat, expires_in=0.05)
    await asyncio.sleep(0.1)
    file_system_calls.clear()
    status, _, _ = await fetch(http, url)
    assert status == 403
    assert file_system_calls == []
    assert receiver.serving == 0


async def test_serving_ends_when_the_task_reports_first(
    receiver: CallbackReceiver,
    http: aiohttp.ClientSession,
    beat: Path,
    file_system_calls: list[Any],
) -> None:
    """A file served for one task: another task's progress leaves it alone, its own
    task's ``first`` ends it."""
    mine, other = receiver.new_callback_url(), receiver.new_callback_url()
    url = receiver.serve_file(beat, task_ref=mine.ref)
    task_id = "4d8e0f3a91b27c65e0a4f1d9b3c87e52"
    async with http.post(other.url, data=callback_bytes("7e82ee581cec5cc6e587cc02409dab36")):
        pass
    assert (await fetch(http, url))[0] == 200
    async with http.post(mine.url, data=callback_bytes(task_id, "text")) as answer:
        assert answer.status == 200
    assert (await fetch(http, url))[0] == 200  # lyrics only: the file may still be fetched
    async with http.post(mine.url, data=callback_bytes(task_id, "first")) as answer:
        assert answer.status == 200
    file_system_calls.clear()
    assert (await fetch(http, url))[0] == 403
    assert file_system_calls == []


async def test_stop_serving_and_other_methods(
    receiver: CallbackReceiver, http: aiohttp.ClientSession, beat: Path
) -> None:
    url = receiver.serve_file(beat)
    assert (await fetch(http, url, "POST"))[0] == 405
    assert (await fetch(http, url, "PUT"))[0] == 405
    assert receiver.stop_serving(url) is True
    assert receiver.stop_serving(url) is False
    assert (await fetch(http, url))[0] == 403


async def test_a_bad_expiry_is_refused(receiver: CallbackReceiver, beat: Path) -> None:
    for bad in (0, -1, float("nan"), float("inf"), True):
        with pytest.raises(ValueError, match="expires_in"):
            receiver.serve_file(beat, expires_in=bad)


async def test_access_is_logged_escaped(
    receiver: CallbackReceiver,
    http: aiohttp.ClientSession,
    beat: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="addvocals_async.receiver")
    url = receiver.serve_file(beat)
    await fetch(http, url, Range="bytes=0-9\u2028forged")
    lines = [r.getMessage() for r in caplog.records if "file " in r.getMessage()]
    assert any("GET" in line and "-> 200" in line for line in lines)
    assert all("\n" not in line and "\u2028" not in line for line in lines)
    assert SECRET not in caplog.text
    assert token_of(url).partition(".")[2] not in caplog.text  # the MAC is never logged


# ---------------------------------------------------------------- mounted


async def test_a_mounted_receiver_serves_files_too(http: aiohttp.ClientSession, beat: Path) -> None:
    receiver = CallbackReceiver(secret=SECRET, public_url="http://127.0.0.1:1/hooks")
    app = web.Application()
    receiver.mount(app, path="/hooks")
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        port = runner.addresses[0][1]
        url = receiver.serve_file(beat).replace("127.0.0.1:1", f"127.0.0.1:{port}")
        status, _headers, body = await fetch(http, url, Range="bytes=10-19")
        assert status == 206
        assert body == beat.read_bytes()[10:20]
        assert (await fetch(http, url, "HEAD"))[0] == 200
        assert (await fetch(http, url[:-3] + "abc"))[0] == 403
    finally:
        await runner.cleanup()


# ---------------------------------------------------------------- end to end


async def test_an_expired_served_url_fails_the_task_clearly(beat: Path) -> None:
    for provider in ("apibox", "kie"):
        async with live(provider) as env:
            url = env.receiver.serve_file(beat, expires_in=0.01)
            await asyncio.sleep(0.05)
            if provider == "kie":
                with pytest.raises(APIError) as refused:
                    await env.client.add_vocals(**{**REQUEST, "upload_url": url})
                assert refused.value.code == 451
                assert "HTTP 403" in refused.value.msg
                continue
            task = await env.client.add_vocals(**{**REQUEST, "upload_url": url})
            with pytest.raises(TaskFailedError) as failed:
                await task.complete(timeout=10)
            assert failed.value.code == 451
            assert "HTTP 403" in str(failed.value)
            assert "could not be downloaded" in str(failed.value)


async def test_a_served_file_that_never_got_a_task_stops_being_served(beat: Path) -> None:
    """A submit the API refused outright (no credits) created nothing to fetch it."""
    async with live("apibox", credits=0) as env:
        args = {k: v for k, v in REQUEST.items() if k != "upload_url"}
        with pytest.raises(APIError):
            await env.client.add_vocals(audio=beat, **args)
        assert env.receiver.serving == 0


async def test_a_file_replaced_after_serve_file_is_not_followed(
    receiver: CallbackReceiver, http: aiohttp.ClientSession, beat: Path, tmp_path: Path
) -> None:
    """Deleted, swapped for a symlink elsewhere, or for a FIFO (whose open would block):
    410, at once, and nothing else is read."""
    secret_file = tmp_path / "secret.txt"
    secret_file.write_text("do not serve me")
    for swap in ("deleted", "symlink", "fifo"):
        path = write_mp3(tmp_path / f"{swap}.mp3")
        url = receiver.serve_file(path)
        path.unlink()
        if swap == "symlink":
            path.symlink_to(secret_file)
        elif swap == "fifo":
            os.mkfifo(path)
        status, _, body = await asyncio.wait_for(fetch(http, url), 5)
        assert status == 410, swap
        assert b"do not serve me" not in body
