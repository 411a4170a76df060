"""The embedded receiver's socket under hostile connections, over real TCP on loopback:
headers that never finish, bodies that trickle, floods of idle connections, senders that
vanish mid-body. Genuine callbacks must still be answered."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Callable

import aiohttp
import pytest
import yarl
from helpers import SECRET, TASK, callback_bytes, registered

from addvocals_async import CallbackReceiver, Stage


async def connect(receiver: CallbackReceiver) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    url = yarl.URL(receiver.url)
    assert url.host is not None
    assert url.port is not None
    return await asyncio.open_connection(url.host, url.port)


async def trickling(
    receiver: CallbackReceiver,
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A connection sending a genuine callback's headers and the first byte of its
    500-byte body, and nothing more, once its handler is reading the body."""
    _, url = await registered(receiver, TASK)
    reader, writer = await connect(receiver)
    writer.write(
        f"POST {yarl.URL(url).path} HTTP/1.1\r\nHost: h\r\nContent-Length: 500\r\n\r\n{{".encode()
    )
    await writer.drain()
    await asyncio.sleep(0.1)  # its handler is reading the body
    return reader, writer


async def closed_by_server(reader: asyncio.StreamReader, within: float = 5.0) -> bool:
    """True when the server closes the connection (EOF or reset) within ``within``."""
    try:
        while await asyncio.wait_for(reader.read(1024), within):
            pass
    except (ConnectionError, asyncio.IncompleteReadError):
        return True
    except asyncio.TimeoutError:
        return False
    return True


async def test_headers_that_never_finish_are_cut() -> None:
    async with CallbackReceiver(
        secret=SECRET, receive_timeout=0.3, keepalive_timeout=0.3
    ) as receiver:
        reader, writer = await connect(receiver)
        writer.write(b"POST /addvocals/cb/x HTTP/1.1\r\nHost: h\r\n")  # and never the rest
        await writer.drain()
        assert await closed_by_server(reader)
        writer.close()


async def test_a_trickling_body_with_a_genuine_token_is_cut() -> None:
    async with CallbackReceiver(secret=SECRET, receive_timeout=0.3) as receiver:
        state, url = await registered(receiver, TASK)
        path = yarl.URL(url).path
        reader, writer = await connect(receiver)
        writer.write(
            f"POST {path} HTTP/1.1\r\nHost: h\r\nContent-Length: 200\r\n\r\n".encode()
            + b'{"code": 200'
        )
        await writer.drain()
        assert await closed_by_server(reader)
        writer.close()
        assert state.stage is Stage.PENDING
    assert receiver.stats.disconnected == 1


async def test_a_flood_of_idle_connections_makes_room_for_genuine_callbacks() -> None:
    async with CallbackReceiver(
        secret=SECRET, max_connections=20, receive_timeout=30, keepalive_timeout=30
    ) as receiver:
        state, url = await registered(receiver, TASK)
        idle = [await connect(receiver) for _ in range(60)]
        for _, writer in idle:
            writer.write(b"POST /addvocals/cb/x HTTP/1.1\r\n")  # half-open, never finished
        await asyncio.gather(*(writer.drain() for _, writer in idle))
        async with (
            aiohttp.ClientSession() as session,
            session.post(url, data=callback_bytes(TASK, "text")) as answer,
        ):
            assert answer.status == 200
        assert state.stage is Stage.TEXT
        closed = await asyncio.gather(*(closed_by_server(reader, 2.0) for reader, _ in idle))
        assert sum(closed) >= 40  # the oldest idle ones made room
        for _, writer in idle:
            writer.close()


async def test_a_trickling_body_does_not_hold_up_aclose() -> None:
    """Issue 10, item 1: with slow bodies never cut, ``aclose()`` took twice
    ``shutdown_timeout``; the receive deadline ends them, and the shutdown with them."""
    receiver = CallbackReceiver(secret=SECRET, receive_timeout=0.4, shutdown_timeout=3.0)
    await receiver.start()
    _reader, writer = await trickling(receiver)
    started = asyncio.get_running_loop().time()
    await receiver.aclose()
    assert asyncio.get_running_loop().time() - started < 1.5
    writer.close()


async def test_at_the_limit_the_likeliest_attacker_goes_first() -> None:
    """Issue 10, item 1: at the connection limit a new connection closes, oldest first,
    one whose headers stopped halfway, then one whose body trickles, and one that has sent
    nothing only after those: under load, it may be a genuine callback whose bytes the
    loop has not read yet."""
    async with CallbackReceiver(
        secret=SECRET, max_connections=3, receive_timeout=30, keepalive_timeout=30
    ) as receiver:
        _, url = await registered(receiver, TASK)
        path = yarl.URL(url).path
        held = {"silent": await connect(receiver), "trickling": await connect(receiver)}
        held["trickling"][1].write(
            f"POST {path} HTTP/1.1\r\nHost: h\r\nContent-Length: 500\r\n\r\n{{".encode()
        )
        held["halfway"] = await connect(receiver)
        held["halfway"][1].write(b"POST /addvocals/cb/x HTTP/1.1\r\nHost: h\r\n")
        await asyncio.sleep(0.2)  # every byte read
        newcomers = []
        for victim in ("halfway", "trickling", "silent"):
            newcomers.append(await connect(receiver))
            assert await closed_by_server(held.pop(victim)[0], 2.0), victim
            for name, (reader, _) in held.items():
                assert not await closed_by_server(reader, 0.05), name
        for _, writer in newcomers:
            writer.close()


async def test_a_connection_answered_without_a_callback_handler_is_evictable() -> None:
    """A request answered before the callback handler's own bookkeeping (a 404 for a path
    that is not a callback's) leaves its kept-alive connection idle, not spared for good."""
    async with CallbackReceiver(
        secret=SECRET, max_connections=2, receive_timeout=30, keepalive_timeout=30
    ) as receiver:
        answered = await connect(receiver)
        answered[1].write(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
        assert b"404" in await asyncio.wait_for(answered[0].readline(), 5)
        silent = await connect(receiver)
        await asyncio.sleep(0.1)
        newcomer = await connect(receiver)
        assert await closed_by_server(answered[0], 2.0)
        assert not await closed_by_server(silent[0], 0.1)
        for _, writer in (answered, silent, newcomer):
            writer.close()


async def test_a_sender_vanishing_mid_body_logs_no_error(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with CallbackReceiver(secret=SECRET) as receiver:
        _, url = await registered(receiver, TASK)
        path = yarl.URL(url).path
        with caplog.at_level(logging.DEBUG):
            _, writer = await connect(receiver)
            writer.write(
                f"POST {path} HTTP/1.1\r\nHost: h\r\nContent-Length: 500\r\n\r\n".encode() + b"{}"
            )
            await writer.drain()
            writer.transport.abort()
            for _ in range(50):
                if receiver.stats.disconnected:
                    break
                await asyncio.sleep(0.01)
        assert receiver.stats.disconnected == 1
        assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []


async def test_a_flood_of_forged_callbacks_writes_two_log_lines(
    caplog: pytest.LogCaptureFixture,
) -> None:
    receiver = CallbackReceiver(secret=SECRET, public_url="https://hooks.example.org/av")
    with caplog.at_level(logging.WARNING, logger="addvocals_async"):
        for i in range(500):
            answer = await receiver.handle(f"/av/cb/forged{i}.mac", {}, b"{}")
            assert answer.status == 403
        await receiver.aclose()
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 2  # the first one at once, the rest summed up
    assert "invalid URL token" in lines[0]
    assert "refused 499 more callbacks" in lines[1]
    assert receiver.stats.rejected_token == 500


async def test_text_from_outside_cannot_forge_log_lines(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with CallbackReceiver(secret=SECRET) as receiver:
        _, url = await registered(receiver, TASK)
        hostile = "x\n2026-01-01 CRITICAL forged line \udcff"
        body = {"code": 200, "msg": "", "data": {"callbackType": "text", "task_id": hostile}}
        with caplog.at_level(logging.DEBUG, logger="addvocals_async"):
            answer = await receiver.handle(yarl.URL(url).path, {}, json.dumps(body).encode())
            # An unknown callback type is logged too (at DEBUG), escaped the same way.
            odd = {"code": 200, "msg": "", "data": {"callbackType": hostile, "task_id": TASK}}
            await receiver.handle(yarl.URL(url).path, {}, json.dumps(odd).encode())
        assert answer.status == 400  # no valid task id: a malformed body
    messages = [r.getMessage() for r in caplog.records]
    assert any("malformed" in m for m in messages)
    assert any("ignored a" in m and "forged line" in m for m in messages)
    for message in messages:
        assert "\n" not in message
        message.encode("utf-8")  # no lone surrogate reaches a handler


async def test_kept_alive_connections_count_against_the_limit() -> None:
    """A sender re-using one genuine URL keeps its connections alive by sending
    duplicates: once answered they are idle, and evictable like any other."""
    async with CallbackReceiver(secret=SECRET, max_connections=4, keepalive_timeout=30) as receiver:
        _, url = await registered(receiver, TASK)
        path = yarl.URL(url).path
        body = callback_bytes(TASK, "text")
        request = (
            f"POST {path} HTTP/1.1\r\nHost: h\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        ).encode() + body
        held = []
        for _ in range(12):
            reader, writer = await connect(receiver)
            writer.write(request)
            await writer.drain()
            assert b"200" in await asyncio.wait_for(reader.readline(), 5)
            held.append((reader, writer))
        assert len(receiver._guard or ()) <= 4
        closed = await asyncio.gather(*(closed_by_server(r, 2.0) for r, _ in held))
        assert sum(closed) >= 8
        for _, writer in held:
            writer.close()


async def test_a_task_id_that_is_not_text_is_a_bad_body() -> None:
    async with CallbackReceiver(secret=SECRET) as receiver:
        _, url = await registered(receiver, TASK)
        for hostile in ("\ud800x", "a\nb", "x" * 200):
            body = {"code": 200, "msg": "", "data": {"callbackType": "text", "task_id": hostile}}
            answer = await receiver.handle(yarl.URL(url).path, {}, json.dumps(body).encode())
            assert answer.status == 400


# --------------------------------------------------------------- the doorman (issue 10)


def aiohttp_handlers(receiver: CallbackReceiver) -> int:
    """How many connections aiohttp's server holds a protocol (parser, timer, task) for."""
    runner = receiver._runner  # the harness's look inside
    assert runner is not None
    assert runner.server is not None
    return len(runner.server.connections)


async def until(condition: Callable[[], bool]) -> None:
    for _ in range(500):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the condition never held")


async def test_connections_without_a_whole_request_cost_no_aiohttp_protocol() -> None:
    """Issue 10, item 1: a flood of connections is as cheap to accept as can be, so the
    accept queue drains fast and genuine callbacks wait in it for little. Until a whole
    request has arrived, only the guard knows a connection."""
    async with CallbackReceiver(secret=SECRET) as receiver:
        state, url = await registered(receiver, TASK)
        path = yarl.URL(url).path
        held = [await connect(receiver) for _ in range(30)]
        for i, (_, writer) in enumerate(held):
            if i % 3 == 0:
                writer.write(b"POST /addvocals/cb/x HTTP/1.1\r\nHost: h\r\n")  # half-open
            elif i % 3 == 1:  # a genuine token, a body that trickles
                writer.write(f"POST {path} HTTP/1.1\r\nContent-Length: 900\r\n\r\n{{".encode())
        guard = receiver._guard
        assert guard is not None
        await until(lambda: len(guard) == 30)
        assert aiohttp_handlers(receiver) == 0
        async with (
            aiohttp.ClientSession() as session,
            session.post(url, data=callback_bytes(TASK, "text")) as answer,
        ):
            assert answer.status == 200
        assert state.stage is Stage.TEXT
        for _, writer in held:
            writer.close()


async def test_a_body_that_arrives_in_pieces_is_served_once_whole() -> None:
    async with CallbackReceiver(secret=SECRET) as receiver:
        state, url = await registered(receiver, TASK)
        body = callback_bytes(TASK, "text")
        reader, writer = await connect(receiver)
        head = f"POST {yarl.URL(url).path} HTTP/1.1\r\nHost: h\r\nContent-Length: {len(body)}"
        for piece in (head.encode(), b"\r\n\r\n", body[:7], body[7:20], body[20:]):
            writer.write(piece)
            await writer.drain()
            await asyncio.sleep(0.02)
        status = await asyncio.wait_for(reader.readline(), 5)
        assert status.startswith(b"HTTP/1.1 200"), status
        assert state.stage is Stage.TEXT
        writer.close()


async def test_a_sender_waiting_for_100_continue_gets_it() -> None:
    async with CallbackReceiver(secret=SECRET) as receiver:
        state, url = await registered(receiver, TASK)
        body = callback_bytes(TASK, "text")
        reader, writer = await connect(receiver)
        writer.write(
            f"POST {yarl.URL(url).path} HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\n"
            f"Content-Length: {len(body)}\r\n\r\n".encode()
        )
        interim = await asyncio.wait_for(reader.readline(), 5)  # no body sent before it
        assert interim.startswith(b"HTTP/1.1 100"), interim
        await reader.readline()  # the blank line ending the interim answer
        writer.write(body)
        status = await asyncio.wait_for(reader.readline(), 5)
        assert status.startswith(b"HTTP/1.1 200"), status
        assert state.stage is Stage.TEXT
        writer.close()


async def test_a_body_longer_than_the_limit_is_refused_before_it_arrives() -> None:
    async with CallbackReceiver(
        secret=SECRET, max_body_size=1000, shutdown_timeout=0.2
    ) as receiver:
        _, url = await registered(receiver, TASK)
        reader, writer = await connect(receiver)
        writer.write(
            f"POST {yarl.URL(url).path} HTTP/1.1\r\nHost: h\r\nContent-Length: 5000\r\n\r\n"
            "{".encode()
        )
        status = await asyncio.wait_for(reader.readline(), 5)
        assert status.startswith(b"HTTP/1.1 413"), status
        writer.close()


async def test_a_callback_still_arriving_with_a_length_lands_when_the_receiver_closes() -> None:
    """Shutdown hands a request whose body is on its way to aiohttp, which receives it
    within shutdown_timeout; a connection that never finished its headers is closed."""
    receiver = CallbackReceiver(secret=SECRET, shutdown_timeout=5.0)
    await receiver.start()
    state, url = await registered(receiver, TASK)
    body = callback_bytes(TASK, "text")
    reader, writer = await connect(receiver)
    writer.write(
        f"POST {yarl.URL(url).path} HTTP/1.1\r\nHost: h\r\nContent-Length: {len(body)}\r\n"
        "\r\n".encode()
        + body[:10]
    )
    await writer.drain()
    half_reader, half_writer = await connect(receiver)
    half_writer.write(b"POST /addvocals/cb/x HTTP/1.1\r\nHost: h\r\n")
    guard = receiver._guard
    assert guard is not None
    await until(lambda: len(guard) == 2)
    closing = asyncio.ensure_future(receiver.aclose())
    await asyncio.sleep(0.1)
    writer.write(body[10:])
    status = await asyncio.wait_for(reader.readline(), 5)
    assert status.startswith(b"HTTP/1.1 200"), status
    await closing
    assert state.stage is Stage.TEXT
    assert await closed_by_server(half_reader, 2.0)
    writer.close()
    half_writer.close()


def test_the_doorman_works_on_uvloop_too() -> None:
    """``addvocals serve`` runs on uvloop (the speed extra), whose transports are no
    asyncio.Transport: the doorman hands over to aiohttp there as well."""
    uvloop = pytest.importorskip("uvloop")

    async def scenario() -> tuple[int, Stage, int]:
        async with CallbackReceiver(secret=SECRET) as receiver:
            state, url = await registered(receiver, TASK)
            _, half = await connect(receiver)
            half.write(b"POST /addvocals/cb/x HTTP/1.1\r\nHost: h\r\n")
            body = callback_bytes(TASK, "text")
            reader, writer = await connect(receiver)
            writer.write(
                f"POST {yarl.URL(url).path} HTTP/1.1\r\nHost: h\r\n"
                f"Content-Length: {len(body)}\r\n\r\n".encode()
                + body[:5]
            )
            await asyncio.sleep(0.05)
            writer.write(body[5:])
            status = await asyncio.wait_for(reader.readline(), 5)
            handlers = aiohttp_handlers(receiver)  # the half-open one has none
            writer.close()
            half.close()
            return int(status.split()[1]), state.stage, handlers

    assert uvloop.run(scenario()) == (200, Stage.TEXT, 1)


# --------------------------------------------------------------- desync (attack review)


@pytest.mark.parametrize("how", ["zero-padded length", "second request in the same packet"])
async def test_a_trickling_body_the_guard_miscounts_is_still_cut(how: str) -> None:
    """The guard's quick look at the bytes and aiohttp's parser may read a request's
    length differently. A body that aiohttp still waits for must stay cut at the receive
    deadline: taken for served, it was never cut nor evicted (a slow-body flood with one
    genuine old URL held every connection for as long as the attacker liked)."""
    async with CallbackReceiver(secret=SECRET, receive_timeout=0.3) as receiver:
        _, url = await registered(receiver, TASK)
        path = yarl.URL(url).path
        body = callback_bytes(TASK, "text")
        head = f"POST {path} HTTP/1.1\r\nHost: h\r\nContent-Length: "
        if how == "zero-padded length":  # 13 digits: more than the guard reads
            packet = f"{head}{len(body):013d}\r\n\r\n".encode()
        else:
            packet = f"{head}{len(body)}\r\n\r\n".encode()
            packet += body + packet  # the second request's headers come with the first
        reader, writer = await connect(receiver)
        writer.write(packet + body[:5])
        await writer.drain()
        for _ in range(10):  # a byte every 0.1 s: the connection is never idle for long
            await asyncio.sleep(0.1)
            if writer.is_closing() or reader.at_eof():
                break
            with contextlib.suppress(ConnectionError):
                writer.write(b" ")
        assert await closed_by_server(reader, 1.0)
        writer.close()


@pytest.mark.parametrize("refused", ["body too long", "forged token"])
async def test_a_sender_waiting_for_100_continue_is_refused_at_once(refused: str) -> None:
    """``Expect: 100-continue`` asks before sending a body: a request the receiver will
    refuse gets its final answer, not "100 Continue" (which had the sender send the whole
    over-long body, only to be refused)."""
    # A refused body is not read: aiohttp lingers for it, up to shutdown_timeout.
    async with CallbackReceiver(
        secret=SECRET, max_body_size=1000, shutdown_timeout=0.2
    ) as receiver:
        _, url = await registered(receiver, TASK)
        path = yarl.URL(url).path
        length = 5000 if refused == "body too long" else 500
        if refused == "forged token":
            path = path[:-4] + "AAAA"
        reader, writer = await connect(receiver)
        writer.write(
            f"POST {path} HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\n"
            f"Content-Length: {length}\r\n\r\n".encode()
        )
        status = await asyncio.wait_for(reader.readline(), 5)
        assert status.split()[1] == (b"413" if refused == "body too long" else b"403"), status
        writer.close()


@pytest.mark.parametrize(
    "head",
    [
        b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03",  # TLS to a plain-HTTP port
        b"HELLO WORLD\r\n",
        b"POST /addvocals/cb/x HTTP/1.1\nHost: h\nContent-Length: 2\n\n{}",  # LF only
        b"POST /addvocals/cb/x HTTP/1.1\rHost: h\r",  # CR only
        b"POST /addvocals/cb/x HTTP/1.1\r\nHost: h\r\nContent-Length: 90\r\n"
        b"Content-Length: 2\r\n\r\n{}",
    ],
    ids=["tls", "garbage", "lf-only", "cr-only", "two-lengths"],
)
async def test_what_is_no_request_is_answered_400_at_once(head: bytes) -> None:
    """Without the doorman, aiohttp's parser answers these 400 at once; the doorman must
    not hold them until the receive deadline waiting for a header end (or a body) that
    never comes (a sender speaking TLS to the port waited 10 s for nothing)."""
    async with CallbackReceiver(secret=SECRET, receive_timeout=5.0) as receiver:
        reader, writer = await connect(receiver)
        writer.write(head)
        status = await asyncio.wait_for(reader.readline(), 2.0)
        assert status.split()[1:2] == [b"400"], status
        writer.close()


async def test_aclose_takes_one_shutdown_timeout_when_bodies_outlast_it() -> None:
    """The default receive deadline (10 s) is longer than the default shutdown_timeout
    (5 s): a body still trickling at shutdown kept ``aclose()`` for the wait for
    callbacks in flight, then as long again for aiohttp's wait for its handlers."""
    receiver = CallbackReceiver(secret=SECRET, receive_timeout=30.0, shutdown_timeout=0.4)
    await receiver.start()
    reader, writer = await trickling(receiver)
    started = asyncio.get_running_loop().time()
    await receiver.aclose()
    assert asyncio.get_running_loop().time() - started < 0.4 + 0.2
    assert await closed_by_server(reader, 1.0)
    writer.close()
