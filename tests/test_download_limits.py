"""Downloads from a hostile file host (issue 10, item 10), and a client reused under a
second ``asyncio.run`` (item 12).

Track URLs come from callbacks nobody signs, so the host a download talks to may be
anyone's. A small aiohttp app on 127.0.0.1 (and, for an answer with no Content-Type at
all, a raw socket server) plays that host: a trickle that never stalls, a stall, a gzip
bomb, error pages under every type, executables by URL. The simulator covers the normal
path. Every limit here is small so that no test waits more than about a second.
"""

from __future__ import annotations

import asyncio
import gzip
import math
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
from aiohttp import web

from addvocals_async import (
    AddVocalsClient,
    AddVocalsError,
    APIConnectionError,
    APIError,
    APITimeoutError,
    PollPolicy,
    RequestValidationError,
    RetryPolicy,
    Track,
)
from addvocals_async._download import DEFAULT_MAX_BYTES, default_timeout
from addvocals_async.testing import Simulator

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
Host = Callable[[dict[str, Handler]], Awaitable[str]]

MP3 = b"ID3\x04\x00\x00\x00\x00\x00\x00" + bytes(range(256)) * 8
FRAME_SYNC = b"\xff\xfb\x90\x64" + b"\x00" * 60
WAV = b"RIFF\x24\x00\x00\x00WAVEfmt " + b"\x00" * 48
FLAC = b"fLaC\x00\x00\x00\x22" + b"\x00" * 56
OGG = b"OggS\x00\x02" + b"\x00" * 58
M4A = b"\x00\x00\x00\x20ftypM4A " + b"\x00" * 52
PNG = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + b"\x00" * 48
JPEG = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00" + b"\x00" * 53
WEBP = b"RIFF\x24\x00\x00\x00WEBPVP8 " + b"\x00" * 48
GIF = b"GIF89a" + b"\x00" * 58
HTML = b"<!DOCTYPE html><html><body>This link has expired</body></html>"


@pytest.fixture
async def host() -> AsyncIterator[Host]:
    """Start a file host with the given GET routes; returns its base URL."""
    runners: list[web.AppRunner] = []

    async def start(routes: dict[str, Handler]) -> str:
        app = web.Application()
        for path, handler in routes.items():
            app.router.add_get(path, handler)
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.1)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        runners.append(runner)
        return f"http://127.0.0.1:{runner.addresses[0][1]}"

    yield start
    for runner in runners:
        await runner.cleanup()


def serve(body: bytes, content_type: str | None = "audio/mpeg") -> Handler:
    async def handler(request: web.Request) -> web.Response:
        headers = {"Content-Type": content_type} if content_type else {}
        return web.Response(body=body, headers=headers)

    return handler


def client(request_timeout: float = 30.0) -> AddVocalsClient:
    return AddVocalsClient(
        "k",
        callback_url="https://h.example.org/c",
        request_timeout=request_timeout,
        retry=RetryPolicy.no_wait(attempts=1),
    )


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


# ---------------------------------------------------------------- time


async def test_a_trickle_that_never_stalls_is_cut_at_the_total_deadline(
    host: Host, tmp_path: Path
) -> None:
    async def trickle(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "audio/mpeg"})
        await response.prepare(request)
        for byte in MP3 * 100:  # one byte every 20 ms: never a stall, never an end
            await response.write(bytes([byte]))
            await asyncio.sleep(0.02)
        return response

    base = await host({"/t.mp3": trickle})
    started = time.monotonic()
    async with client(request_timeout=1.0) as c:
        with pytest.raises(APITimeoutError, match=r"did not finish within 0\.5 s"):
            await c.download(Track(id="t", audio_url=f"{base}/t.mp3"), tmp_path, timeout=0.5)
    assert time.monotonic() - started < 1.5
    assert leftovers(tmp_path) == []


async def test_a_stall_is_cut_after_request_timeout_not_a_fixed_minute(
    host: Host, tmp_path: Path
) -> None:
    async def stall(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "audio/mpeg"})
        await response.prepare(request)
        await response.write(MP3[:100])
        await asyncio.sleep(30)
        return response

    base = await host({"/s.mp3": stall})
    started = time.monotonic()
    async with client(request_timeout=0.3) as c:
        with pytest.raises(APITimeoutError, match=r"sent nothing for 0\.3 s"):
            # The old code waited a hard-coded 60 s here: wait_for makes that a failure.
            await asyncio.wait_for(
                c.download(Track(id="s", audio_url=f"{base}/s.mp3"), tmp_path), 3
            )
    assert time.monotonic() - started < 1.5
    assert leftovers(tmp_path) == []


def test_the_default_total_deadline_is_a_generous_multiple_of_request_timeout() -> None:
    assert default_timeout(30.0) == 600.0  # 10 minutes with the client's default
    assert default_timeout(60.0) == 1200.0
    assert default_timeout(1.0) == 300.0  # never under 5 minutes: a big file on a slow link


@pytest.mark.parametrize("bad", [0, -1, math.nan, math.inf, True, "10"])
async def test_a_timeout_that_would_disable_the_limit_is_refused(
    bad: object, tmp_path: Path
) -> None:
    async with client() as c:
        with pytest.raises(RequestValidationError, match="timeout"):
            await c.download(Track(id="x", audio_url="https://h.example.org/x.mp3"), tmp_path,
                             timeout=bad)  # type: ignore[arg-type]  # fmt: skip
    assert leftovers(tmp_path) == []


# ---------------------------------------------------------------- size


async def test_a_gzip_bomb_is_cut_at_max_bytes_counted_after_inflating(
    host: Host, tmp_path: Path
) -> None:
    inflated = MP3 + b"\x00" * (4 * 1024 * 1024)
    bomb = gzip.compress(inflated, compresslevel=9)
    assert len(bomb) < 64 * 1024  # small on the wire, 4 MB on disk

    async def gzipped(request: web.Request) -> web.Response:
        return web.Response(
            body=bomb, headers={"Content-Encoding": "gzip", "Content-Type": "audio/mpeg"}
        )

    base = await host({"/bomb.mp3": gzipped})
    seen: list[int] = []
    async with client() as c:
        with pytest.raises(APIConnectionError, match="over the 1048576 bytes allowed"):
            await c.download(
                Track(id="b", audio_url=f"{base}/bomb.mp3"),
                tmp_path,
                max_bytes=1024 * 1024,
                progress=lambda received, total: seen.append(received),
            )
    assert max(seen) <= 1024 * 1024  # never more written than allowed
    assert leftovers(tmp_path) == []


async def test_a_declared_length_over_the_limit_is_refused_before_reading(
    host: Host, tmp_path: Path
) -> None:
    base = await host({"/big.mp3": serve(MP3 * 64)})
    async with client() as c:
        with pytest.raises(APIConnectionError, match="over the 1000 allowed"):
            await c.download(Track(id="b", audio_url=f"{base}/big.mp3"), tmp_path, max_bytes=1000)
        # Exactly at the limit is fine.
        path = await c.download(
            Track(id="b", audio_url=f"{base}/big.mp3"), tmp_path, max_bytes=len(MP3 * 64)
        )
    assert path.read_bytes() == MP3 * 64
    assert leftovers(tmp_path) == ["b.mp3"]


def test_the_default_size_limits_are_generous_for_real_files() -> None:
    assert DEFAULT_MAX_BYTES["audio"] == 200 * 1024 * 1024
    assert DEFAULT_MAX_BYTES["image"] == 20 * 1024 * 1024


@pytest.mark.parametrize("bad", [0, -5, 1.5, True])
async def test_a_max_bytes_that_is_not_a_positive_count_is_refused(
    bad: object, tmp_path: Path
) -> None:
    async with client() as c:
        with pytest.raises(RequestValidationError, match="max_bytes"):
            await c.download(Track(id="x", audio_url="https://h.example.org/x.mp3"), tmp_path,
                             max_bytes=bad)  # type: ignore[arg-type]  # fmt: skip


# ---------------------------------------------------------------- what the bytes are


@pytest.mark.parametrize(
    ("content_type", "body"),
    [
        ("application/xhtml+xml", HTML),
        ("application/xml", b'<?xml version="1.0"?><Error><Code>AccessDenied</Code></Error>'),
        ("text/plain", b"Forbidden"),
        ("application/problem+json", b'{"title": "Not Found", "status": 404}'),
        ("text/html", HTML),
        ("application/json", b'{"error": "expired"}'),
        ("image/jpeg", JPEG),  # an image is not the audio asked for
        ("video/webm", b"\x1aE\xdf\xa3" + b"\x00" * 60),
    ],
)
async def test_an_answer_typed_as_anything_but_audio_is_refused(
    host: Host, tmp_path: Path, content_type: str, body: bytes
) -> None:
    base = await host({"/a.mp3": serve(body, content_type)})
    async with client() as c:
        expected = re.escape(f"answered with {content_type} instead of the audio")
        with pytest.raises(APIError, match=expected):
            await c.download(Track(id="a", audio_url=f"{base}/a.mp3"), tmp_path)
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize(
    ("content_type", "body"),
    [
        ("application/octet-stream", HTML),
        ("application/octet-stream", b"\n  <html><head><title>502</title></head></html>"),
        ("application/octet-stream", b'{"code": 403, "msg": "expired"}'),
        ("application/octet-stream", b'<?xml version="1.0"?><Error/>'),
        ("audio/mpeg", HTML),  # a page is a page whatever its type says
        ("audio/mpeg", b"\xef\xbb\xbf<!doctype html><p>gone</p>"),
    ],
)
async def test_a_page_is_refused_by_its_first_bytes(
    host: Host, tmp_path: Path, content_type: str, body: bytes
) -> None:
    base = await host({"/a.mp3": serve(body, content_type)})
    async with client() as c:
        with pytest.raises(APIError, match="web page or JSON instead of the audio"):
            await c.download(Track(id="a", audio_url=f"{base}/a.mp3"), tmp_path)
    assert leftovers(tmp_path) == []


async def test_generic_bytes_that_are_not_audio_are_refused(host: Host, tmp_path: Path) -> None:
    base = await host({"/a.mp3": serve(b"MZ\x90\x00" + b"\x00" * 60, "application/octet-stream")})
    async with client() as c:
        with pytest.raises(APIError, match="does not look like audio"):
            await c.download(Track(id="a", audio_url=f"{base}/a.mp3"), tmp_path)
    assert leftovers(tmp_path) == []


async def test_an_empty_answer_is_refused(host: Host, tmp_path: Path) -> None:
    base = await host({"/a.mp3": serve(b"", "audio/mpeg")})
    async with client() as c:
        with pytest.raises(APIError, match="empty answer"):
            await c.download(Track(id="a", audio_url=f"{base}/a.mp3"), tmp_path)
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize(
    "body", [MP3, FRAME_SYNC, WAV, FLAC, OGG, M4A], ids=["id3", "sync", "wav", "flac", "ogg", "m4a"]
)
async def test_generic_typed_audio_is_accepted_by_its_first_bytes(
    host: Host, tmp_path: Path, body: bytes
) -> None:
    base = await host({"/a": serve(body, "application/octet-stream")})
    async with client() as c:
        path = await c.download(Track(id="a", audio_url=f"{base}/a"), tmp_path)
    assert path.read_bytes() == body


async def test_a_short_audio_file_is_checked_and_written_whole(host: Host, tmp_path: Path) -> None:
    base = await host({"/a.mp3": serve(b"ID3\x04", "audio/mpeg")})
    async with client() as c:
        path = await c.download(Track(id="a", audio_url=f"{base}/a.mp3"), tmp_path)
    assert path.read_bytes() == b"ID3\x04"


async def _raw_host(answer: bytes) -> tuple[asyncio.Server, str]:
    """A host that sends ``answer`` as it is: the only way to send no Content-Type at all
    (aiohttp's server adds one)."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(answer)
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    return server, f"http://127.0.0.1:{port}"


@pytest.mark.parametrize(("body", "ok"), [(HTML, False), (MP3, True)])
async def test_an_untyped_answer_is_judged_by_its_first_bytes(
    tmp_path: Path, body: bytes, ok: bool
) -> None:
    answer = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n" % len(body)
    server, base = await _raw_host(answer + body)
    try:
        async with client() as c:
            track = Track(id="u", audio_url=f"{base}/u.mp3")
            if ok:
                assert (await c.download(track, tmp_path)).read_bytes() == body
            else:
                with pytest.raises(APIError, match="web page or JSON"):
                    await c.download(track, tmp_path)
                assert leftovers(tmp_path) == []
    finally:
        server.close()
        await server.wait_closed()


@pytest.mark.parametrize(
    ("content_type", "body", "ok"),
    [
        ("image/jpeg", JPEG, True),
        ("image/png", PNG, True),
        ("application/octet-stream", PNG, True),
        ("application/octet-stream", WEBP, True),
        ("application/octet-stream", GIF, True),
        ("image/svg+xml", b"<svg xmlns='http://www.w3.org/2000/svg'><script/></svg>", False),
        ("audio/mpeg", MP3, False),
        ("application/octet-stream", MP3, False),
        ("text/html", HTML, False),
    ],
)
async def test_a_cover_must_be_a_raster_image(
    host: Host, tmp_path: Path, content_type: str, body: bytes, ok: bool
) -> None:
    base = await host({"/c": serve(body, content_type)})
    track = Track(id="c", audio_url=f"{base}/c", image_url=f"{base}/c")
    async with client() as c:
        if ok:
            path = await c.download(track, tmp_path, kind="image")
            assert path.read_bytes() == body
            assert path.name == "c.jpeg"
        else:
            with pytest.raises(APIError, match="image"):
                await c.download(track, tmp_path, kind="image")
            assert leftovers(tmp_path) == []


# ---------------------------------------------------------------- file names


@pytest.mark.parametrize(
    ("kind", "url_name", "saved"),
    [
        ("audio", "evil.exe", "t.mp3"),
        ("audio", "run.sh", "t.mp3"),
        ("audio", "page.html", "t.mp3"),
        ("audio", "song.mp3.exe", "t.mp3"),
        ("audio", "song.flac", "t.flac"),
        ("audio", "song.WAV", "t.wav"),
        ("audio", "song.m4a", "t.m4a"),
        ("audio", "cover.png", "t.mp3"),  # an image extension is not audio's
        ("image", "cover.exe", "t.jpeg"),
        ("image", "cover.svg", "t.jpeg"),
        ("image", "cover.png", "t.png"),
        ("image", "song.mp3", "t.jpeg"),
    ],
)
async def test_a_file_takes_only_an_extension_of_its_kind_from_the_url(
    host: Host, tmp_path: Path, kind: str, url_name: str, saved: str
) -> None:
    body = MP3 if kind == "audio" else PNG
    base = await host({"/{name}": serve(body, "application/octet-stream")})
    track = Track(id="t", audio_url=f"{base}/{url_name}", image_url=f"{base}/{url_name}")
    async with client() as c:
        path = await c.download(track, tmp_path, kind=kind)
    assert path.name == saved
    assert leftovers(tmp_path) == [saved]


# ---------------------------------------------------------------- the normal path


async def test_the_simulators_files_pass_every_check(tmp_path: Path) -> None:
    async with (
        Simulator(speed=1000, seed=3, rate_limit=None) as sim,
        AddVocalsClient(
            sim.api_key,
            base_url=sim.base_url,
            callback_url="https://h.example.org/c",
            retry=RetryPolicy.no_wait(),
            poll=PollPolicy.fast(),
        ) as c,
    ):
        sim.script("lost_all")
        task = await c.add_vocals(
            upload_url="https://cdn.example.org/a.mp3",
            prompt="Warm",
            title="T",
            style="Soul",
            negative_tags="Metal",
        )
        tracks = (await task.complete(timeout=10)).tracks
        audio = await c.download(tracks[0], tmp_path, timeout=5, max_bytes=10 * 1024 * 1024)
        cover = await c.download(tracks[0], tmp_path, kind="image", timeout=5)
        size = audio.stat().st_size
        with pytest.raises(APIConnectionError, match="max_bytes"):
            await c.download(tracks[1], tmp_path, max_bytes=size // 2)
    assert audio.suffix == ".mp3"
    assert cover.suffix == ".jpeg"
    assert leftovers(tmp_path) == sorted([audio.name, cover.name])


async def test_every_refusal_is_an_addvocals_error(host: Host, tmp_path: Path) -> None:
    base = await host(
        {"/page": serve(HTML, "text/html"), "/junk": serve(b"\x00" * 64, None), "/big": serve(MP3)}
    )
    async with client() as c:
        for name, limit in (("page", None), ("junk", None), ("big", 10)):
            with pytest.raises(AddVocalsError):
                await c.download(Track(id=name, audio_url=f"{base}/{name}"), tmp_path,
                                 max_bytes=limit)  # fmt: skip
    assert leftovers(tmp_path) == []


# ---------------------------------------------------------------- item 12: a second asyncio.run


def test_a_client_reused_under_a_second_asyncio_run_says_what_to_do(tmp_path: Path) -> None:
    c = AddVocalsClient(
        "k", base_url="http://127.0.0.1:9", callback_url="https://h.example.org/c",
        retry=RetryPolicy.no_wait(attempts=3),
    )  # fmt: skip

    async def credits() -> None:
        await c.get_credits()

    with pytest.raises(APIConnectionError, match="could not connect"):
        asyncio.run(credits())  # the session is made here, in this first loop
    with pytest.raises(APIConnectionError, match=r"one client per asyncio\.run") as caught:
        asyncio.run(credits())
    assert "another event loop" in str(caught.value)
    assert not caught.value.maybe_submitted

    async def download() -> None:
        await c.download(Track(id="d", audio_url="http://127.0.0.1:9/d.mp3"), tmp_path)

    with pytest.raises(APIConnectionError, match="inside the coroutine that uses it"):
        asyncio.run(download())
    asyncio.run(c.aclose())
    assert leftovers(tmp_path) == []


def test_a_client_made_outside_any_loop_and_used_in_one_still_works() -> None:
    async def use_and_close(c: AddVocalsClient) -> None:
        async with c:
            with pytest.raises(APIConnectionError, match="could not connect"):
                await c.get_credits()

    c = AddVocalsClient(
        "k", base_url="http://127.0.0.1:9", callback_url="https://h.example.org/c",
        retry=RetryPolicy.no_wait(attempts=1),
    )  # fmt: skip
    asyncio.run(use_and_close(c))
