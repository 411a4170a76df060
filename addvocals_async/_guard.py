"""Connection defences of the embedded receiver's listening socket.

aiohttp's defaults suit an application behind a proxy, not a public port: connections may
stay open an hour, and one whose headers never finish holds its file descriptor until
then. A few hundred of them, no token needed, and a process with the common 1,024
descriptors can accept nothing more, so every genuine callback is lost for the length of
the attack. The guard:

- bounds the time to receive a request, headers and body (``receive_timeout``): a
  connection that has not delivered a whole request by then is closed;
- bounds open connections (``max_connections``, by default below the process's descriptor
  limit): at the limit, a new connection closes the oldest one that is not being served,
  so an attacker's idle connections make room for genuine callbacks, which send their
  request at once and are done in milliseconds.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import resource
import time
from typing import Any

from aiohttp import web
from aiohttp.web_protocol import RequestHandler

__all__ = ["BACKLOG", "ConnectionGuard", "GuardedServer", "default_max_connections"]

log = logging.getLogger("addvocals_async.receiver")

BACKLOG = 128
"""The listening socket's accept queue. asyncio also accepts up to this many connections
at a time, so the connection limit keeps this much room below the descriptor limit: a
burst that runs out of descriptors makes asyncio stop accepting for a whole second."""


def default_max_connections() -> int:
    """Room for the process's other files and sockets below its descriptor limit."""
    try:
        soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    except (OSError, ValueError):  # pragma: no cover - platforms without rlimits
        return 1000
    if soft == resource.RLIM_INFINITY:
        return 10_000
    # Room for a batch of sockets asyncio accepted but has not handed over yet, and one of
    # those the guard closed that are not closed yet.
    return max(16, min(10_000, soft - 2 * BACKLOG - max(64, soft // 16)))


class _Phase(enum.Enum):
    SERVED = "served"  # a whole request arrived; its answer is being made
    IDLE = "idle"  # kept alive between requests (aiohttp's keep-alive timer ends it)


class ConnectionGuard:
    """Tracks the open connections of one listening socket; see the module docstring.

    A connection receiving a request holds its deadline (a number, ``time.monotonic()``);
    one timer per guard, not one per request, closes the late ones every half deadline,
    so a request costs two dictionary writes, not a timer.
    """

    def __init__(self, *, max_connections: int, receive_timeout: float) -> None:
        self.max_connections = max_connections
        self.receive_timeout = receive_timeout
        # Insertion-ordered, oldest first: a deadline while a request arrives, else the
        # connection's phase. Only SERVED ones are spared from eviction.
        self._open: dict[asyncio.Transport, float | _Phase] = {}
        self._sweeper: asyncio.TimerHandle | None = None
        self.evicted = 0
        self.refused = 0
        self.timed_out = 0
        self._warned = False

    def __len__(self) -> int:
        return len(self._open)

    def opened(self, transport: asyncio.Transport) -> bool:
        """Track a new connection; False when it must be closed at once (the limit is
        reached and every open connection is being served)."""
        if len(self._open) >= self.max_connections and not self._evict_one():
            self.refused += 1
            self._warn()
            return False
        self._open[transport] = time.monotonic() + self.receive_timeout
        if self._sweeper is None:
            self._sweeper = asyncio.get_running_loop().call_later(
                self.receive_timeout / 2, self._sweep
            )
        return True

    def closed(self, transport: asyncio.Transport) -> None:
        self._open.pop(transport, None)

    def request_started(self, transport: asyncio.Transport | None) -> None:
        """A request's headers arrived: its body must follow within the deadline. (The
        first request of a connection is already under the deadline set when it opened;
        a later one on a kept-alive connection gets one here.)"""
        if transport is not None and self._open.get(transport) is _Phase.IDLE:
            self._open[transport] = time.monotonic() + self.receive_timeout

    def request_received(self, transport: asyncio.Transport | None) -> None:
        """The whole request arrived: no deadline, and spared from eviction, while it is
        served."""
        if transport is not None and transport in self._open:
            self._open[transport] = _Phase.SERVED

    def response_made(self, transport: asyncio.Transport | None) -> None:
        """Served: the connection idles until its next request, and may be evicted (so a
        sender re-using one genuine URL cannot hold connections past the limit). The
        eviction order stays the order connections opened: the oldest goes first."""
        if transport is not None and transport in self._open:
            self._open[transport] = _Phase.IDLE

    def _sweep(self) -> None:
        """Close the connections past their receive deadline; again in half a deadline
        while any connection is open."""
        self._sweeper = None
        now = time.monotonic()
        late = [
            t for t, phase in self._open.items() if not isinstance(phase, _Phase) and phase <= now
        ]
        for transport in late:
            self.timed_out += 1
            self._open[transport] = _Phase.SERVED  # closing: spared, then forgotten
            transport.abort()
        if self._open:
            self._sweeper = asyncio.get_running_loop().call_later(
                self.receive_timeout / 2, self._sweep
            )

    def _evict_one(self) -> bool:
        for transport, phase in self._open.items():
            if phase is not _Phase.SERVED:  # receiving, or idle: the oldest goes
                del self._open[transport]
                self.evicted += 1
                self._warn()
                transport.abort()
                return True
        return False

    def close(self) -> None:
        """Stop the sweeping timer (the server is shutting down)."""
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None

    def _warn(self) -> None:
        if not self._warned:
            self._warned = True
            log.warning(
                "the receiver reached %d open connections: closing the oldest idle ones "
                "to make room (a flood of slow or idle connections?)",
                self.max_connections,
            )


class GuardedServer(web.Server):
    """aiohttp's low-level server, telling a ``ConnectionGuard`` of every connection it
    opens and closes (and closing one the guard does not admit)."""

    def __init__(self, handler: Any, guard: ConnectionGuard, **kwargs: Any) -> None:
        super().__init__(handler, **kwargs)
        self.guard = guard

    def connection_made(self, handler: RequestHandler, transport: asyncio.Transport) -> None:
        super().connection_made(handler, transport)
        if not self.guard.opened(transport):
            transport.abort()

    def connection_lost(self, handler: RequestHandler, exc: BaseException | None = None) -> None:
        transport = handler.transport
        if isinstance(transport, asyncio.Transport):
            self.guard.closed(transport)
        super().connection_lost(handler, exc)
