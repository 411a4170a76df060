"""A hostile upload host, over real HTTP on loopback: every answer that is not a usable
file URL is a typed error, and a redirect is never followed."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from helpers import client_for, mp3_bytes, write_mp3

from addvocals_async import (
    AddVocalsClient,
    AddVocalsError,
    APITimeoutError,
    LocalFileError,
    RetryPolicy,
    UploadedFile,
)
from addvocals_async.testing import Simulator

GOOD = {"fileName": "x.mp3", "downloadUrl": "https://files.example.org/x.mp3"}


class Host:
    """An upload host answering whatever ``answer`` is set to, and a second host that
    counts what reaches it (the target of redirects)."""

    def __init__(self) -> None:
        self.answer: Callable[[], web.StreamResponse] = lambda: web.json_response({})
        self.elsewhere: list[str] = []
        self.url = ""
        self.other_url = ""

    async def handle(self, request: web.Request) -> web.StreamResponse:
        await request.read()
        answer = self.answer()
        if isinstance(answer, web.HTTPException):
            raise answer
        return answer

    async def other(self, request: web.Request) -> web.StreamResponse:
        self.elsewhere.append(request.method)
        await request.read()
        return web.json_response({"code": 200, "msg": "success", "data": GOOD})


@pytest.fixture
async def host() -> AsyncIterator[Host]:
    hosts = Host()
    runners = []
    for handler in (hosts.handle, hosts.other):
        app = web.Application()
        app.router.add_route("*", "/{path:.*}", handler)
        runner = web.AppRunner(app)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        runners.append(runner)
    hosts.url, hosts.other_url = (f"http://127.0.0.1:{r.addresses[0][1]}" for r in runners)
    yield hosts
    for runner in runners:
        await runner.cleanup()


def success(data: Any) -> Callable[[], web.StreamResponse]:
    return lambda: web.json_response({"code": 200, "msg": "success", "data": data})


async def upload_all_ways(host: Host, tmp_path: Path) -> list[object]:
    """The outcome of a file, bytes and a URL upload: the result or the error."""
    beat = write_mp3(tmp_path / "beat.mp3", 10_000)
    outcomes: list[object] = []
    async with AddVocalsClient(
        "sk-test", provider="kie", base_url=host.url, retry=RetryPolicy.no_wait()
    ) as client:
        calls: list[Callable[[], Awaitable[UploadedFile]]] = [
            lambda: client.upload(beat),
            lambda: client.upload(mp3_bytes(5_000)),
            lambda: client.upload_from_url("https://cdn.example.org/beat.mp3"),
        ]
        for call in calls:
            try:
                outcomes.append(await call())
            except AddVocalsError as exc:
                outcomes.append(exc)
    return outcomes


@pytest.mark.parametrize(
    "data",
    [
        {"downloadUrl": 5, "fileSize": "big"},
        {"fileUrl": "javascript:alert(1)", "fileName": "x"},
        {"downloadUrl": "/relative/x.mp3"},
        {"fileUrl": ["https://files.example.org/x.mp3"]},
        {"downloadUrl": "https://files.example.org/\x1b]0;pwned\x07\nuploaded: ok.mp3"},
    ],
    ids=["number", "javascript", "relative", "list", "terminal escapes"],
)
async def test_a_success_without_a_web_url_is_an_error(
    host: Host, tmp_path: Path, data: dict[str, Any]
) -> None:
    """Any text at all was taken as the file's URL, and then sent as ``upload_url``."""
    host.answer = success(data)
    outcomes = await upload_all_ways(host, tmp_path)
    assert all(isinstance(o, AddVocalsError) for o in outcomes), outcomes
    assert all("without a file URL" in str(o) for o in outcomes)


async def test_a_negative_size_is_no_size(host: Host, tmp_path: Path) -> None:
    host.answer = success({**GOOD, "fileSize": -5})
    outcomes = await upload_all_ways(host, tmp_path)
    assert [getattr(o, "size", "error") for o in outcomes] == [None, None, None]


@pytest.mark.parametrize("redirect", [web.HTTPFound, web.HTTPTemporaryRedirect])
async def test_a_redirect_is_an_error_not_followed(
    host: Host, tmp_path: Path, redirect: type[web.HTTPFound | web.HTTPTemporaryRedirect]
) -> None:
    """A 302 was followed as a GET to wherever it pointed (the file never sent), and that
    host's answer taken for the upload's."""
    host.answer = lambda: redirect(host.other_url + "/api/file-stream-upload")
    outcomes = await upload_all_ways(host, tmp_path)
    assert all(isinstance(o, AddVocalsError) for o in outcomes), outcomes
    assert host.elsewhere == []


@pytest.mark.parametrize("change", ["shrinks", "grows"])
async def test_a_file_written_to_during_its_upload_is_a_local_file_error(
    tmp_path: Path, change: str
) -> None:
    """A file that shrank mid-upload left the host waiting for the promised bytes until
    the read deadline (30 s), then was uploaded again, shorter; one that grew was sent
    short of its new end, or over its Content-Length, and reported uploaded."""
    beat = write_mp3(tmp_path / "beat.mp3", 3_000_000)
    changed = False

    def progress(sent: int, total: int | None) -> None:
        nonlocal changed
        if sent > 500_000 and not changed:
            changed = True
            if change == "shrinks":
                os.truncate(beat, 1_000_000)
            else:
                with open(beat, "ab") as more:
                    more.write(bytes(1_000_000))

    async with Simulator(provider="kie") as sim, client_for(sim) as client:
        with pytest.raises(LocalFileError, match="while it was being uploaded"):
            await asyncio.wait_for(client.upload(beat, progress=progress), 10)
    assert changed


async def test_the_simulator_never_follows_a_redirect_off_loopback(host: Host) -> None:
    """The simulator fetches only loopback URLs, but followed a loopback URL's redirect
    anywhere. (The target, in the discard-only prefix 100::/64, goes nowhere.)"""
    host.answer = lambda: web.HTTPFound("http://[100::1]:9/beat.mp3")
    async with Simulator(provider="kie") as sim, client_for(sim) as client:
        with pytest.raises(AddVocalsError, match="off loopback"):
            await client.upload_from_url(host.url + "/beat.mp3")


async def test_a_file_object_survives_its_upload_and_a_retry(tmp_path: Path) -> None:
    """aiohttp closes a file it sent: the caller's file object came back closed, and the
    retry after a 500 (uploads are retried: they are free) raised a bare ValueError,
    "I/O operation on closed file"."""
    beat = write_mp3(tmp_path / "beat.mp3", 200_000)
    async with Simulator(provider="kie") as sim, client_for(sim) as client:
        with open(beat, "rb") as file:  # noqa: ASYNC230 - the file object is the subject
            sim.fail_uploads(500, times=1)
            uploaded = await client.upload(file)
            assert uploaded.size == 200_000
            assert not file.closed
            assert file.tell() == 0
            assert (await client.upload(file)).size == 200_000  # and again, as it stands
    assert [r.size for r in sim.uploads.values()] == [200_000, 200_000]


async def test_a_file_object_that_changed_before_a_retry_is_a_local_file_error(
    tmp_path: Path,
) -> None:
    """The retry of a file object sent whatever the file had become (here, after the
    first attempt's 500, a third of it)."""
    beat = write_mp3(tmp_path / "beat.mp3", 300_000)
    async with Simulator(provider="kie") as sim, client_for(sim) as client:
        with open(beat, "rb") as file:  # noqa: ASYNC230 - the file object is the subject
            real_fileno = file.fileno
            calls = 0

            def fileno() -> int:  # called once per attempt, as the attempt's body is made
                nonlocal calls
                calls += 1
                if calls == 2:
                    os.truncate(beat, 100_000)
                return real_fileno()

            file.fileno = fileno  # type: ignore[method-assign]
            sim.fail_uploads(500, times=1)
            with pytest.raises(LocalFileError, match="changed while being uploaded"):
                await client.upload(file)
    assert sim.uploads == {}


async def test_a_stalled_upload_host_is_named_by_the_stall_not_the_total() -> None:
    """An upload may take ``upload_timeout`` (minutes) as a whole, each read at most
    ``request_timeout``: a host that stops answering is cut at the stall, and the error
    said "no answer within 300 s" where it waited 0.2 s."""

    release = asyncio.Event()

    async def stall(request: web.Request) -> web.StreamResponse:
        await request.read()
        await release.wait()
        return web.json_response({})

    app = web.Application()
    app.router.add_route("*", "/{path:.*}", stall)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    url = f"http://127.0.0.1:{runner.addresses[0][1]}"
    try:
        async with AddVocalsClient(
            "sk-test",
            provider="kie",
            base_url=url,
            request_timeout=0.2,
            upload_timeout=60,
            retry=RetryPolicy(attempts=1),
        ) as client:
            started = asyncio.get_running_loop().time()
            with pytest.raises(APITimeoutError, match=r"nothing received for 0\.2 s"):
                await client.upload(mp3_bytes(2_000), "beat.mp3")
            assert asyncio.get_running_loop().time() - started < 3
    finally:
        release.set()
        await runner.cleanup()
