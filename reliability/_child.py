"""``python -m reliability._child SECRET``: a receiver in a process of its own, held to
1,024 file descriptors, printing its port and serving until its stdin closes."""

from __future__ import annotations

import asyncio
import logging
import resource
import sys

from addvocals_async import CallbackReceiver

DESCRIPTORS = 1024


async def serve(secret: str) -> None:
    resource.setrlimit(resource.RLIMIT_NOFILE, (DESCRIPTORS, DESCRIPTORS))
    logging.getLogger("addvocals_async").setLevel(logging.ERROR)
    async with CallbackReceiver(secret=secret) as receiver:
        print(receiver.url, flush=True)
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, sys.stdin.read)
        print(repr(receiver.stats), flush=True)


if __name__ == "__main__":
    asyncio.run(serve(sys.argv[1]))
