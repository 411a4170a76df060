"""``python -m reliability._child SECRET``: a receiver in a process of its own, held to
1,024 file descriptors, printing its port and serving until its stdin closes; then it
prints one line of what it saw (guard counters, accept and logged errors) for the figure's
table."""

from __future__ import annotations

import asyncio
import json
import logging
import resource
import sys

from addvocals_async import CallbackReceiver

DESCRIPTORS = 1024


class _Count(logging.Handler):
    """Counts the records it gets whose message has ``word`` in it."""

    def __init__(self, word: str = "") -> None:
        super().__init__()
        self.word = word
        self.count = 0

    def emit(self, record: logging.LogRecord) -> None:
        if self.word in record.getMessage():
            self.count += 1


async def serve(secret: str) -> None:
    resource.setrlimit(resource.RLIMIT_NOFILE, (DESCRIPTORS, DESCRIPTORS))
    sdk_log = logging.getLogger("addvocals_async")
    sdk_log.setLevel(logging.ERROR)
    errors = _Count()  # the receiver's ERROR records: a hostile sender must cause none
    sdk_log.addHandler(errors)
    # asyncio's "socket.accept() out of system resource": each stops accepting for 1 s.
    accept_errors = _Count("accept")
    asyncio_log = logging.getLogger("asyncio")
    asyncio_log.addHandler(accept_errors)
    asyncio_log.propagate = False
    async with CallbackReceiver(secret=secret) as receiver:
        print(receiver.url, flush=True)
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, sys.stdin.read)
        guard = receiver._guard  # the harness's look inside: no public counter for it
        seen = {
            "evicted": guard.evicted if guard is not None else -1,
            "refused": guard.refused if guard is not None else -1,
            "timed_out": guard.timed_out if guard is not None else -1,
            "accept_errors": accept_errors.count,
            "errors": errors.count,
            "cpu_s": round(sum(resource.getrusage(resource.RUSAGE_SELF)[:2]), 1),
        }
        print(json.dumps(seen), flush=True)


if __name__ == "__main__":
    asyncio.run(serve(sys.argv[1]))
