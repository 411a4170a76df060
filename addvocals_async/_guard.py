"""Connection defences of the embedded receiver's listening socket.

aiohttp's defaults suit an application behind a proxy, not a public port: connections may
stay open an hour, and one whose headers never finish holds its file descriptor until
then. A few hundred of them, no token needed, and a process with the common 1,024
descriptors can accept nothing more, so every genuine callback is lost for the length of
the attack. The guard:

- bounds the time to receive a request, headers and body (``receive_timeout``): a
  connection that has not delivered a whole request by then is closed;
- bounds open connections (``max_connections``, by default below the process's descriptor
  limit, with room for asyncio's accept batches: a batch that runs out of descriptors
  makes asyncio stop accepting for a whole second). At the limit, a new connection closes
  one that is not being served, chosen so that an attacker's go and a genuine callback
  stays. A genuine sender sends its whole request at once; the guard watches the bytes as
  they arrive and spares a request the moment it is whole, before its handler has run.
  It closes, oldest first: a connection whose headers stopped halfway, then an idle
  kept-alive one, then one whose body trickles, and only when there is none of those,
  one that has sent nothing yet (under load, that may be a genuine one whose bytes the
  loop has not read yet).

Until a whole request has arrived, a connection is held by a small protocol of the guard's
own (``_Doorman``), not aiohttp's (a parser, a keep-alive timer and a task per
connection): a flood of connections that never finish a request costs a third less CPU
per connection, so the accept queue a genuine callback waits in drains that much faster.
The request goes to aiohttp once whole, once its body turns out chunked, longer than the
body limit or awaited behind ``Expect: 100-continue``, or when the receiver shuts down.

Room is made when asyncio accepts a connection (aiohttp's protocol is created), not one
loop iteration later when the connection is handed over, so a burst holds at most two
accept batches of descriptors beyond the limit. And the kernel's accept queue is longer
than asyncio's accept batch (``LISTEN_QUEUE``): when it is full, a new connection's first
packet is dropped and its sender tries again only a second or more later, which under a
flood of reconnecting attackers is the wait every genuine callback would pay.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import re
import resource
import time
from collections.abc import Callable
from typing import Any, cast

from aiohttp import web
from aiohttp.web_protocol import RequestHandler

__all__ = [
    "BACKLOG",
    "LISTEN_QUEUE",
    "ConnectionGuard",
    "GuardedServer",
    "GuardedSite",
    "default_max_connections",
]

log = logging.getLogger("addvocals_async.receiver")

BACKLOG = 128
"""How many connections asyncio accepts at a time (its ``backlog``). The connection limit
keeps room for two such batches below the descriptor limit: the one being accepted, and
the connections the previous one closed, whose descriptors are released one loop
iteration later."""

LISTEN_QUEUE = 4096
"""The kernel's accept queue (capped by ``net.core.somaxconn``, 4,096 on current Linux). A
connection waiting in it costs no descriptor. Long enough that thousands of attackers
reconnecting at once do not fill it: a full queue drops a new connection's first packet,
and its sender tries again only a second or more later. The wait in the queue itself is
its length over the accept rate, well under a second at thousands a second."""

_HEADERS_END = b"\r\n\r\n"
_MAX_HEAD = 16 * 1024  # aiohttp refuses longer headers anyway
_EXPECT = re.compile(rb"\r\nexpect[ \t]*:[ \t]*100-continue", re.IGNORECASE)
_LENGTH = re.compile(rb"\r\ncontent-length[ \t]*:[ \t]*(\d{1,12})[ \t]*\r\n", re.IGNORECASE)
_CHUNKED = re.compile(rb"\r\ntransfer-encoding[ \t]*:[^\r\n]*chunked", re.IGNORECASE)
# What the doorman cannot read as a request's head, for aiohttp's parser to refuse at once
# (400) rather than the doorman waiting for a header end that never comes: a line not ended
# by CRLF, a first line that is no request line (TLS, garbage), a second Content-Length.
_BARE_CR_OR_LF = re.compile(rb"(?<!\r)\n|\r[^\n]")
_REQUEST_LINE = re.compile(rb"[A-Z]+ [!-~]+ HTTP/[0-9]\.[0-9]\r\n")
_LENGTH_HEADER = re.compile(rb"\r\ncontent-length[ \t]*:", re.IGNORECASE)


def default_max_connections() -> int:
    """Room for the process's other files and sockets below its descriptor limit."""
    try:
        soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    except (OSError, ValueError):  # pragma: no cover - platforms without rlimits
        return 1000
    if soft == resource.RLIM_INFINITY:
        return 10_000
    # Room for a batch of sockets asyncio is accepting, and one of those the guard closed
    # that are not closed yet.
    return max(16, min(10_000, soft - 2 * BACKLOG - max(64, soft // 16)))


class _Phase(enum.Enum):
    NEW = "new"  # opened: not a byte yet
    HEADERS = "headers"  # part of a request's headers arrived, not their end
    BODY = "body"  # the headers arrived, the body is on its way
    SERVED = "served"  # a whole request arrived; its answer is being made
    IDLE = "idle"  # kept alive between requests (aiohttp's keep-alive timer ends it)


class _Connection:
    """One open connection as the guard sees it."""

    __slots__ = ("deadline", "head", "phase", "remaining", "since", "transport")

    def __init__(self, transport: asyncio.Transport, now: float, deadline: float) -> None:
        self.transport = transport
        self.phase = _Phase.NEW
        self.since = now  # when it entered its phase
        self.deadline = deadline  # for the whole request, while one is arriving
        self.head = b""  # the request's bytes so far, while its headers arrive
        self.remaining = -1  # body bytes still to come, when its length is known


class ConnectionGuard:
    """Tracks the open connections of one listening socket; see the module docstring.

    Each phase keeps its connections in a dict in the order they entered it, so the one
    to evict is the first of one of them, found in O(1). One timer per guard, not one per
    request, closes the connections past their receive deadline every half deadline.
    """

    def __init__(self, *, max_connections: int, receive_timeout: float) -> None:
        self.max_connections = max_connections
        self.receive_timeout = receive_timeout
        self._open: dict[asyncio.Transport, _Connection] = {}
        self._phases: dict[_Phase, dict[_Connection, None]] = {phase: {} for phase in _Phase}
        self._reserved = 0  # accepted, room made, not handed over yet
        self._sweeper: asyncio.TimerHandle | None = None
        self.evicted = 0
        self.refused = 0
        self.timed_out = 0
        self._warned = False

    def __len__(self) -> int:
        return len(self._open)

    # ---------------------------------------------------------------- connections

    def make_room(self) -> bool:
        """A connection is being accepted: make room for it now, before its descriptor is
        handed over. False when it must be closed at once (the limit is reached and every
        open connection is being served)."""
        if len(self._open) + self._reserved >= self.max_connections and not self._evict_one():
            self.refused += 1
            self._warn()
            return False
        self._reserved += 1
        return True

    def opened(self, transport: asyncio.Transport) -> _Connection:
        """Track a connection ``make_room`` admitted."""
        if self._reserved:
            self._reserved -= 1
        now = time.monotonic()
        connection = _Connection(transport, now, now + self.receive_timeout)
        self._open[transport] = connection
        self._phases[_Phase.NEW][connection] = None
        if self._sweeper is None:
            self._sweeper = asyncio.get_running_loop().call_later(
                self.receive_timeout / 2, self._sweep
            )
        return connection

    def closed(self, transport: asyncio.Transport) -> None:
        connection = self._open.pop(transport, None)
        if connection is not None:
            self._phases[connection.phase].pop(connection, None)

    def _move(self, connection: _Connection, phase: _Phase, now: float) -> None:
        self._phases[connection.phase].pop(connection, None)
        connection.phase = phase
        connection.since = now
        self._phases[phase][connection] = None

    def data_arrived(self, connection: _Connection, data: bytes) -> None:
        """Bytes arrived on a connection that is receiving a request (or idle, before its
        next one). A request that arrived whole is spared at once, as it would be once
        its handler has read it: under load that is a few loop iterations later, and a
        connection still receiving by then looks like a slow one."""
        phase = connection.phase
        if phase is _Phase.BODY:
            if connection.remaining >= 0:
                connection.remaining -= len(data)
                if connection.remaining <= 0:
                    self._move(connection, _Phase.SERVED, time.monotonic())
            return
        if phase is _Phase.IDLE:  # the next request on a kept-alive connection
            connection.deadline = time.monotonic() + self.receive_timeout
            connection.head = b""
        elif phase is not _Phase.HEADERS and phase is not _Phase.NEW:
            return
        head = connection.head + data
        end = head.find(_HEADERS_END)
        if end < 0:
            # Kept only while it could still be a request's headers; aiohttp refuses more.
            connection.head = head if len(head) <= _MAX_HEAD else b""
            if phase is not _Phase.HEADERS:
                self._move(connection, _Phase.HEADERS, time.monotonic())
            return
        connection.head = b""
        if _CHUNKED.search(head, 0, end + 2) is not None:
            connection.remaining = -1  # its end is known only to aiohttp's parser
        else:
            # No Content-Length: no body (HTTP/1.1); what follows is the next request's.
            length = _LENGTH.search(head, 0, end + 2)
            declared = int(length.group(1)) if length is not None else 0
            connection.remaining = max(0, declared - (len(head) - end - len(_HEADERS_END)))
        now = time.monotonic()
        if connection.remaining == -1 or connection.remaining > 0:
            self._move(connection, _Phase.BODY, now)
        else:
            self._move(connection, _Phase.SERVED, now)

    def request_started(self, transport: asyncio.Transport | None, remaining: int = -1) -> None:
        """A request's headers were read and its handler reads the body: ``remaining``
        bytes of it are still to come, as aiohttp's parser counts them (-1: chunked, its
        end unknown here), within the deadline (set when its first bytes arrived).

        aiohttp's count, not the guard's: the guard's quick look at the bytes may read
        another length than the parser does (``Content-Length: 0000000000005``, a second
        request in the same packet as the first). A connection the guard took for served
        while the handler still waits for its body would never be cut nor evicted."""
        connection = self._open.get(transport) if transport is not None else None
        if connection is None:
            return
        now = time.monotonic()
        if remaining == 0:
            if connection.phase is not _Phase.SERVED:
                self._move(connection, _Phase.SERVED, now)
            return
        if connection.phase is _Phase.IDLE:
            connection.deadline = now + self.receive_timeout
        connection.remaining = remaining
        if connection.phase is not _Phase.BODY:
            self._move(connection, _Phase.BODY, now)

    def request_received(self, transport: asyncio.Transport | None) -> None:
        """The whole request arrived: no deadline, and spared from eviction, while it is
        served."""
        connection = self._open.get(transport) if transport is not None else None
        if connection is not None:
            self._move(connection, _Phase.SERVED, time.monotonic())

    def response_made(self, transport: asyncio.Transport | None) -> None:
        """Served: the connection idles until its next request, and may be evicted (so a
        sender re-using one genuine URL cannot hold connections past the limit)."""
        connection = self._open.get(transport) if transport is not None else None
        if connection is not None and connection.phase is not _Phase.IDLE:
            self._move(connection, _Phase.IDLE, time.monotonic())

    # ---------------------------------------------------------------- clean-up

    def _sweep(self) -> None:
        """Close the connections past their receive deadline; again in half a deadline
        while any connection is open."""
        self._sweeper = None
        self._reserved = 0  # a handover that never came must not shrink the limit for good
        now = time.monotonic()
        late = [
            connection
            for phase in (_Phase.NEW, _Phase.HEADERS, _Phase.BODY)
            for connection in self._phases[phase]
            if connection.deadline <= now
        ]
        for connection in late:
            self.timed_out += 1
            self._move(connection, _Phase.SERVED, now)  # closing: spared, then forgotten
            connection.transport.abort()
        if self._open:
            self._sweeper = asyncio.get_running_loop().call_later(
                self.receive_timeout / 2, self._sweep
            )

    def _victim(self) -> _Connection | None:
        """The connection to close for a new one, oldest first in the first phase that
        has one: headers stopped halfway, idle, body trickling, nothing sent yet."""
        phases = self._phases
        for phase in (_Phase.HEADERS, _Phase.IDLE, _Phase.BODY):
            first = next(iter(phases[phase]), None)
            if first is not None:
                return first
        return next(iter(phases[_Phase.NEW]), None)

    def _evict_one(self) -> bool:
        victim = self._victim()
        if victim is None:
            return False
        self.closed(victim.transport)
        self.evicted += 1
        self._warn()
        victim.transport.abort()
        return True

    def close(self) -> None:
        """Stop the sweeping timer (the server is shutting down)."""
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None

    def _warn(self) -> None:
        if not self._warned:
            self._warned = True
            log.warning(
                "the receiver reached %d open connections: closing the oldest idle or "
                "slow ones to make room (a flood of slow or idle connections?)",
                self.max_connections,
            )


class _GuardedHandler(RequestHandler):
    """aiohttp's connection protocol, telling the guard when a request's headers are
    complete: as the bytes arrive, before aiohttp's own parser has handed them on."""

    __slots__ = ("guard", "guarded")

    def __init__(self, manager: GuardedServer, **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self.guard = manager.guard
        self.guarded: _Connection | None = None

    def data_received(self, data: bytes) -> None:
        connection = self.guarded
        if connection is not None and connection.phase is not _Phase.SERVED:
            self.guard.data_arrived(connection, data)
        super().data_received(data)

    async def finish_response(
        self, request: web.BaseRequest, resp: web.StreamResponse, start_time: float | None
    ) -> tuple[web.StreamResponse, bool]:
        """Every answer, the handler's or aiohttp's own (a 404, a 400): the connection is
        idle again, and evictable, even when no handler said so."""
        try:
            return await super().finish_response(request, resp, start_time)
        finally:
            connection = self.guarded
            if connection is not None and connection.phase is _Phase.SERVED:
                self.guard.response_made(connection.transport)


class _Doorman(asyncio.Protocol):
    """A new connection until a whole request has arrived on it: the guard watches its
    bytes, and nothing of aiohttp's exists for it yet (no protocol, parser, timer or
    task), so a flood of connections that never finish a request costs little more than
    their accept. The request is handed over to aiohttp's protocol once it is whole, once
    its body turns out to be chunked or longer than ``hold`` bytes, or at shutdown."""

    __slots__ = ("admitted", "buffer", "connection", "in_body", "server", "transport")

    def __init__(self, server: GuardedServer, admitted: bool) -> None:
        self.server = server
        self.admitted = admitted
        self.buffer = bytearray()
        self.connection: _Connection | None = None
        self.transport: asyncio.Transport | None = None
        self.in_body = False  # a request's headers arrived, its body did not, yet

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # An asyncio transport, or uvloop's (no subclass of it, with the same methods).
        real = cast(asyncio.Transport, transport)
        self.transport = real
        if not self.admitted:
            real.abort()
            return
        self.connection = self.server.guard.opened(real)

    def data_received(self, data: bytes) -> None:
        connection = self.connection
        if connection is None:
            return
        self.server.guard.data_arrived(connection, data)
        buffer = self.buffer
        start = len(buffer)
        buffer += data
        phase = connection.phase
        if phase is _Phase.SERVED:
            self.hand_over()
        elif phase is _Phase.BODY:
            if connection.remaining < 0 or len(buffer) + connection.remaining > self.server.hold:
                self.hand_over()  # chunked, or longer than accepted: aiohttp's to judge
            elif not self.in_body:
                self.in_body = True
                if _EXPECT.search(buffer) is not None:
                    self.hand_over()  # the sender waits for "100 Continue" before its body
                elif len(_LENGTH_HEADER.findall(buffer)) > 1:
                    self.hand_over()  # two lengths: aiohttp refuses the request
        elif len(buffer) > _MAX_HEAD or not self._could_be_a_head(start):
            self.hand_over()  # no request's headers: aiohttp's parser answers 400

    def _could_be_a_head(self, start: int) -> bool:
        """Whether the bytes so far (new from ``start``) may still begin a request: an
        upper-case method first, a request line, every line ended by CRLF."""
        buffer = self.buffer
        if not 65 <= buffer[0] <= 90:  # A-Z: TLS's first byte is 0x16
            return False
        if _BARE_CR_OR_LF.search(buffer, max(0, start - 1)) is not None:
            return False
        if buffer.find(b"\r\n") >= max(0, start - 1):  # the request line just ended
            return _REQUEST_LINE.match(buffer) is not None
        return True

    def hand_over(self) -> None:
        """aiohttp's protocol takes the connection, with the bytes that came so far."""
        transport, connection = self.transport, self.connection
        if transport is None or connection is None or transport.is_closing():
            return
        self.connection = None
        server = self.server
        handler = _GuardedHandler(server, loop=server.event_loop, **server.handler_options)
        handler.guarded = connection
        transport.set_protocol(handler)
        handler.connection_made(transport)
        data, self.buffer = bytes(self.buffer), bytearray()
        if data:
            RequestHandler.data_received(handler, data)  # the guard has seen these bytes

    def eof_received(self) -> bool:
        return False  # half-closed before a whole request: close

    def connection_lost(self, exc: Exception | None) -> None:
        if self.connection is not None and self.transport is not None:
            self.server.guard.closed(self.transport)
            if self.in_body and self.server.on_abandoned is not None:
                self.server.on_abandoned()  # gone mid-body: the sender's or the guard's doing
        self.connection = None


class GuardedServer(web.Server):
    """aiohttp's low-level server, telling a ``ConnectionGuard`` of every connection it
    accepts, opens and closes (and closing one the guard does not admit)."""

    def __init__(
        self,
        handler: Any,
        guard: ConnectionGuard,
        *,
        hold: int = 1024 * 1024,
        on_abandoned: Callable[[], None] | None = None,
        loop: asyncio.AbstractEventLoop | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(handler, loop=loop, **kwargs)
        self.guard = guard
        self.hold = hold
        self.on_abandoned = on_abandoned
        self.event_loop = loop or asyncio.get_running_loop()
        # When the whole shutdown must be over (the loop's clock), set by the receiver:
        # aiohttp's own wait for its handlers gets only what is left of it.
        self.shutdown_deadline: float | None = None
        # What aiohttp gives each connection's protocol (keep-alive, logger, …).
        self.handler_options = {
            key: value
            for key, value in kwargs.items()
            if key not in ("request_factory", "handler_cancellation")
        }

    def __call__(self) -> Any:
        """A connection is being accepted: room is made for it now, and it is held by a
        ``_Doorman`` until a whole request has arrived."""
        return _Doorman(self, self.guard.make_room())

    def connection_lost(self, handler: RequestHandler, exc: BaseException | None = None) -> None:
        transport = handler.transport
        if isinstance(transport, asyncio.Transport):
            self.guard.closed(transport)
        super().connection_lost(handler, exc)

    def release_arriving(self) -> int:
        """Shutting down: a request whose body is on its way goes to aiohttp, to be
        received and answered within the shutdown's grace; a connection that has not
        finished a request's headers is closed. Returns how many were handed over."""
        handed = 0
        for transport in list(self.guard._open):
            doorman = transport.get_protocol()
            if not isinstance(doorman, _Doorman) or doorman.connection is None:
                continue
            if doorman.connection.phase is _Phase.BODY:
                doorman.hand_over()
                handed += 1
            else:
                transport.abort()
        return handed

    async def shutdown(self, timeout: float | None = None) -> None:
        self.release_arriving()
        if self.shutdown_deadline is not None:
            left = self.shutdown_deadline - self.event_loop.time()
            # Not 0: aiohttp takes a timeout of 0 for none at all.
            timeout = max(0.001, left if timeout is None else min(timeout, left))
        await super().shutdown(timeout)


class GuardedSite(web.TCPSite):
    """aiohttp's TCP site, with a kernel accept queue of ``LISTEN_QUEUE`` while asyncio
    still accepts ``BACKLOG`` connections at a time (aiohttp gives both one number)."""

    def __init__(self, runner: web.BaseRunner, host: str, port: int) -> None:
        super().__init__(runner, host, port, backlog=BACKLOG)

    async def start(self) -> None:
        await super().start()
        # aiohttp keeps the asyncio server to itself; without it the queue stays BACKLOG.
        server = getattr(self, "_server", None)
        for sock in getattr(server, "sockets", ()):
            with contextlib.suppress(OSError), sock.dup() as listening:
                listening.listen(LISTEN_QUEUE)  # the same socket: a dup shares it
