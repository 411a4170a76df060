"""The submit throttle: new tasks queue at the API's rate instead of failing against it.

The API allows 20 new generation requests per 10 seconds per account (kie documents it;
apibox and sunoapi document no number, and a third-party note reports the same for
sunoapi) and answers the excess with a rate-limit code. A burst of 45 submits from a bot
then spends its retries in backoff and still loses some. The throttle spaces submits to
the documented rate, first come first served, so a burst just takes as long as the
account allows.

``SubmitThrottle`` is the interface: ``SlidingWindowThrottle`` serves one process;
``addvocals_async.redis`` shares one window between processes and hosts.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from typing import Protocol

from ._config import time_scale

__all__ = ["SlidingWindowThrottle", "SubmitThrottle"]

log = logging.getLogger("addvocals_async.http")

DEFAULT_LIMIT = 20
DEFAULT_WINDOW = 10.0


class SubmitThrottle(Protocol):
    """Decides when a submit may be sent."""

    async def acquire(self) -> None:
        """Return when one more submit fits the rate; wait (queued, in order) until then."""
        ...


class SlidingWindowThrottle:
    """At most ``limit`` submits in any ``window`` seconds, in this process. Under the
    testing switch the window shrinks by its time scale."""

    def __init__(self, limit: int = DEFAULT_LIMIT, window: float = DEFAULT_WINDOW) -> None:
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise ValueError(f"limit must be a whole number >= 1, got {limit!r}")
        if not 0 < window < float("inf"):
            raise ValueError(f"window must be a positive number of seconds, got {window!r}")
        self.limit = limit
        self.window = window
        self._sent: collections.deque[float] = collections.deque()
        self._lock: asyncio.Lock | None = None
        self._lock_loop: asyncio.AbstractEventLoop | None = None

    def __repr__(self) -> str:
        return f"SlidingWindowThrottle(limit={self.limit}, window={self.window:g})"

    def _queue(self) -> asyncio.Lock:
        loop = asyncio.get_running_loop()
        if self._lock is None or self._lock_loop is not loop:
            self._lock, self._lock_loop = asyncio.Lock(), loop
        return self._lock

    async def acquire(self) -> None:
        sent = self._sent
        window = self.window * time_scale()
        now = time.monotonic()
        while sent and sent[0] <= now - window:
            sent.popleft()
        if len(sent) < self.limit and not (self._lock is not None and self._lock.locked()):
            sent.append(now)  # the common case: room at once, no queue to join
            return
        async with self._queue():
            while True:
                now = time.monotonic()
                while sent and sent[0] <= now - window:
                    sent.popleft()
                if len(sent) < self.limit:
                    sent.append(now)
                    return
                wait = sent[0] + window - now
                log.debug(
                    "submit queued for %.1f s: %d submits in the last %g s is the API's rate",
                    wait,
                    self.limit,
                    self.window,
                )
                await asyncio.sleep(wait)
