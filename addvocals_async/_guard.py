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

from aiohttp import web

__all__ = ["ConnectionGuard", "GuardedSite", "default_max_connections"]

log = logging.getLogger("addvocals_async.receiver")

BACKLOG = 2048
"""The listening socket's accept queue (the kernel caps it at net.core.somaxconn)."""


def default_max_connections() -> int:
    """Room for the process's other files and sockets below its descriptor limit."""
    try:
        soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    except (OSError, ValueError):  # pragma: no cover - platforms without rlimits
        return 1000
    if soft == resource.RLIM_INFINITY:
        return 10_000
    return max(16, min(10_000, soft - max(64, soft // 8)))


class _Phase(enum.Enum):
    SERVED = "served"  # a whole request arrived; its answer is being made
    IDLE = "idle"  # kept alive between requests (aiohttp's keep-alive timer ends it)


class ConnectionGuard:
    """Tracks the open connections of one listening socket; see the module docstring."""

    def __init__(self, *, max_connections: int, receive_timeout: float) -> None:
        self.max_connections = max_connections
        self.receive_timeout = receive_timeout
        # Insertion-ordered, oldest first. The value is the receive deadline's timer while
        # a request arrives, else the connection's phase. Only SERVED ones are spared.
        self._open: dict[asyncio.Transport, asyncio.TimerHandle | _Phase] = {}
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
        self._open[transport] = self._arm(transport)
        return True

    def closed(self, transport: asyncio.Transport) -> None:
        _disarm(self._open.pop(transport, None))

    def request_started(self, transport: asyncio.Transport | None) -> None:
        """A request's headers arrived: its body must follow within the deadline. (The
        first request of a connection is already under the deadline armed when it
        opened; a later one on a kept-alive connection gets one here.)"""
        if transport is not None and isinstance(self._open.get(transport), _Phase):
            self._open[transport] = self._arm(transport)

    def request_received(self, transport: asyncio.Transport | None) -> None:
        """The whole request arrived: no deadline, and spared from eviction, while it is
        served."""
        self._move(transport, _Phase.SERVED)

    def response_made(self, transport: asyncio.Transport | None) -> None:
        """Served: the connection idles until its next request, and may be evicted (so a
        sender re-using one genuine URL cannot hold connections past the limit)."""
        self._move(transport, _Phase.IDLE)

    def _move(self, transport: asyncio.Transport | None, phase: _Phase) -> None:
        if transport is None or transport not in self._open:
            return
        _disarm(self._open.pop(transport))
        if not transport.is_closing():
            self._open[transport] = phase  # to the back of the eviction order

    def _arm(self, transport: asyncio.Transport) -> asyncio.TimerHandle:
        loop = asyncio.get_running_loop()
        return loop.call_later(self.receive_timeout, self._expire, transport)

    def _expire(self, transport: asyncio.Transport) -> None:
        if isinstance(self._open.get(transport), asyncio.TimerHandle):
            self.timed_out += 1
            self._open[transport] = _Phase.SERVED  # closing: spared, then forgotten
            transport.abort()

    def _evict_one(self) -> bool:
        for transport, phase in self._open.items():
            if phase is not _Phase.SERVED:  # receiving, or idle: the oldest goes
                _disarm(phase)
                del self._open[transport]
                self.evicted += 1
                self._warn()
                transport.abort()
                return True
        return False

    def _warn(self) -> None:
        if not self._warned:
            self._warned = True
            log.warning(
                "the receiver reached %d open connections: closing the oldest idle ones "
                "to make room (a flood of slow or idle connections?)",
                self.max_connections,
            )


def _disarm(phase: asyncio.TimerHandle | _Phase | None) -> None:
    if isinstance(phase, asyncio.TimerHandle):
        phase.cancel()


class _GuardedProtocol(asyncio.Protocol):
    """Passes everything to aiohttp's protocol, telling the guard of opens and closes."""

    __slots__ = ("_guard", "_inner", "_transport")

    def __init__(self, inner: asyncio.Protocol, guard: ConnectionGuard) -> None:
        self._inner = inner
        self._guard = guard
        self._transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        admitted = self._guard.opened(transport)
        self._inner.connection_made(transport)
        if not admitted:
            transport.abort()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._transport is not None:
            self._guard.closed(self._transport)
        self._inner.connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        self._inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self._inner.eof_received()

    def pause_writing(self) -> None:
        self._inner.pause_writing()

    def resume_writing(self) -> None:
        self._inner.resume_writing()


class GuardedSite(web.BaseSite):
    """A TCP site whose connections go through a ``ConnectionGuard``."""

    __slots__ = ("_guard", "_host", "_port", "_served_by")

    def __init__(
        self, runner: web.BaseRunner, host: str, port: int, guard: ConnectionGuard
    ) -> None:
        super().__init__(runner)
        self._served_by = runner
        self._host = host
        self._port = port
        self._guard = guard

    @property
    def name(self) -> str:
        return f"http://{self._host}:{self._port}"

    async def start(self) -> None:
        await super().start()
        server = self._served_by.server
        assert server is not None
        guard = self._guard

        def factory() -> asyncio.Protocol:
            return _GuardedProtocol(server(), guard)

        self._server = await asyncio.get_running_loop().create_server(
            # A deep accept queue: under a flood of connections the guard closes the
            # idle ones fast, and a genuine sender must not find the queue full.
            factory,
            self._host,
            self._port,
            backlog=BACKLOG,
        )
