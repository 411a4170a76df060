"""Hostile fetchers and a hostile file system against the receiver's served files, over
real HTTP on loopback: a reader that stops reading, a file that shrinks, grows or is
rewritten after ``serve_file``, and a process out of descriptors."""

from __future__ import annotations

import asyncio
import errno
import os
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import yarl
from helpers import REQUEST, SECRET, client_for, write_mp3

from addvocals_async import CallbackReceiver, ReceiverClosedError
from addvocals_async._serving import MAX_SENDS
from addvocals_async.testing import Simulator

BIG = 64 * 1024 * 1024
"""Far more than loopback's socket buffers hold: the sender must wait for the reader."""


@pytest.fixture
async def receiver() -> AsyncIterator[CallbackReceiver]:
    async with CallbackReceiver(secret=SECRET, receive_timeout=0.5) as started:
        yield started


def big_file(path: Path) -> Path:
    """An MP3 head, then a sparse tail of zeros: ``BIG`` bytes, written in no time."""
    write_mp3(path, 4_000)
    os.truncate(path, BIG)
    return path


async def open_get(url: str, extra: str = "") -> tuple[asyncio.StreamReader, Any, bytes]:
    """A raw ``GET`` with a tiny receive buffer; returns the reader, writer and head."""
    parsed = yarl.URL(url)
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, (parsed.host, parsed.port))
    reader, writer = await asyncio.open_connection(sock=sock, limit=4096)
    writer.write(f"GET {parsed.raw_path} HTTP/1.1\r\nHost: x\r\n{extra}\r\n".encode())
    await writer.drain()
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    return reader, writer, head


async def read_to_end(reader: asyncio.StreamReader, deadline: float) -> int:
    """Bytes read until the server closes the connection; raises TimeoutError if it
    has not closed it within ``deadline`` seconds."""
    total = 0

    async def drain() -> None:
        nonlocal total
        while chunk := await reader.read(1 << 20):
            total += len(chunk)

    await asyncio.wait_for(drain(), deadline)
    return total


async def test_a_reader_that_stops_reading_is_cut_off(
    receiver: CallbackReceiver, tmp_path: Path
) -> None:
    """It held its connection and file for ever (spared by the connection guard as being
    served), with a quarter megabyte of the file buffered per connection."""
    url = receiver.serve_file(big_file(tmp_path / "big.mp3"))
    reader, writer, head = await open_get(url)
    assert head.startswith(b"HTTP/1.1 200")
    writer.transport.pause_reading()
    await asyncio.sleep(1.5)  # three stall limits
    writer.transport.resume_reading()
    try:
        received = await read_to_end(reader, 3)  # what the kernel still held, then EOF
    finally:
        writer.close()
    assert received < BIG


async def test_a_file_that_shrinks_mid_answer_ends_the_connection(
    receiver: CallbackReceiver, tmp_path: Path
) -> None:
    """A short body on a kept-alive connection left the fetcher waiting for bytes that
    never come (until keep-alive ran out), then reading the next answer as file bytes."""
    path = big_file(tmp_path / "shrinks.mp3")
    url = receiver.serve_file(path)
    reader, writer, head = await open_get(url)
    assert f"Content-Length: {BIG}".encode() in head
    writer.transport.pause_reading()
    await asyncio.sleep(0.1)
    os.truncate(path, 1_000_000)
    writer.transport.resume_reading()
    try:
        received = await read_to_end(reader, 3)
    finally:
        writer.close()
    assert received < BIG


@pytest.mark.parametrize("change", ["grown past the limit", "rewritten as text"])
async def test_a_file_rewritten_after_serve_file_must_still_pass_its_checks(
    receiver: CallbackReceiver, tmp_path: Path, change: str
) -> None:
    """serve_file checked the size limit and the audio signature once; the file was then
    served whatever it had become."""
    path = write_mp3(tmp_path / "beat.mp3", 10_000)
    url = receiver.serve_file(path, max_bytes=20_000)
    if change == "grown past the limit":
        os.truncate(path, 30_000)
    else:
        path.write_bytes(b"password=hunter2\n" * 100)
    reader, writer, head = await open_get(url, "Connection: close\r\n")
    body = await read_to_end(reader, 3)
    writer.close()
    assert head.startswith(b"HTTP/1.1 410")
    assert body < 200


async def test_out_of_descriptors_is_retry_later_not_gone(
    receiver: CallbackReceiver, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """EMFILE answered 410 "no longer available": the API would fail the task for a
    moment's shortage of descriptors."""
    path = write_mp3(tmp_path / "beat.mp3", 10_000)
    url = receiver.serve_file(path)
    real_open = os.open

    def crowded(file: Any, flags: int, *args: Any, **kwargs: Any) -> int:
        if str(file) in (str(path.resolve()), path.name):  # whole, or inside its folder
            raise OSError(errno.EMFILE, "Too many open files")
        return real_open(file, flags, *args, **kwargs)

    monkeypatch.setattr(os, "open", crowded)
    reader, writer, head = await open_get(url, "Connection: close\r\n")
    writer.close()
    assert head.startswith(b"HTTP/1.1 503")
    assert b"Retry-After: 1" in head
    monkeypatch.undo()
    reader, writer, head = await open_get(url, "Connection: close\r\n")
    assert await read_to_end(reader, 3) == 10_000
    writer.close()
    assert head.startswith(b"HTTP/1.1 200")


async def test_downloads_at_once_are_capped_before_descriptors_run_out(
    receiver: CallbackReceiver, tmp_path: Path
) -> None:
    """Each download holds a file descriptor besides its connection, which the connection
    limit does not count: 900 downloads under the common 1,024 descriptors ran the process
    out of them, and asyncio logged an accept() failure per attempt (10,798 in 20 s)."""
    url = receiver.serve_file(big_file(tmp_path / "big.mp3"))
    held = [await open_get(url) for _ in range(MAX_SENDS)]
    try:
        assert all(head.startswith(b"HTTP/1.1 200") for _, _, head in held)
        for _, writer, _ in held:
            writer.transport.pause_reading()
        _, writer, head = await open_get(url, "Connection: close\r\n")
        writer.close()
        assert head.startswith(b"HTTP/1.1 503")
        assert b"Retry-After: 1" in head
    finally:
        for _, writer, _ in held:
            writer.close()


async def test_a_receiver_that_serves_nothing_here_refuses_to_serve_a_file(
    tmp_path: Path,
) -> None:
    """A receiver neither started nor mounted (a worker whose public URL is a receiver
    tier's) registered the file and handed out a URL whose every fetch got 403."""
    beat = write_mp3(tmp_path / "beat.mp3")
    worker = CallbackReceiver(secret=SECRET, public_url="https://tier.example.org/addvocals")
    with pytest.raises(ReceiverClosedError, match="serves no files here"):
        worker.serve_file(beat)
    assert worker.serving == 0
    args = {k: v for k, v in REQUEST.items() if k != "upload_url"}
    async with Simulator(provider="apibox") as sim, client_for(sim, worker) as client:
        with pytest.raises(ReceiverClosedError):
            await client.add_vocals(audio=beat, **args)
        assert sim.submits() == []  # refused before anything was paid for


@pytest.mark.parametrize("swap", ["folder", "parent folder symlinked"])
async def test_a_path_swapped_under_the_file_is_not_followed(
    receiver: CallbackReceiver, tmp_path: Path, swap: str
) -> None:
    """O_NOFOLLOW guards the last component only: a folder on the way swapped for a
    symlink served whatever file of the same name lay at its target (here one that
    even starts like an MP3)."""
    inner = tmp_path / "inner"
    inner.mkdir()
    path = write_mp3(inner / "beat.mp3")
    url = receiver.serve_file(path)
    if swap == "folder":
        path.unlink()
        path.mkdir()
    else:
        elsewhere = tmp_path / "elsewhere"
        elsewhere.mkdir()
        (elsewhere / "beat.mp3").write_bytes(b"ID3" + b"not-for-you" * 10)
        path.unlink()
        inner.rmdir()
        inner.symlink_to(elsewhere)
    reader, writer, head = await open_get(url, "Connection: close\r\n")
    body = await read_to_end(reader, 3)
    writer.close()
    assert head.startswith(b"HTTP/1.1 410"), head
    assert body < 200
