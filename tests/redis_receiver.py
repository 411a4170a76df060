"""A receiver process for the cross-process tests:
``python tests/redis_receiver.py REDIS_URL PREFIX SECRET``.

It serves a ``CallbackReceiver`` over a ``RedisBackend`` on a free loopback port, prints
its URL, and stops when its standard input closes. It awaits no task: every callback it
accepts is for another process."""

from __future__ import annotations

import asyncio
import sys

from addvocals_async import CallbackReceiver
from addvocals_async.redis import RedisBackend


async def main(url: str, prefix: str, secret: str) -> None:
    backend = RedisBackend(url, prefix=prefix)
    await backend.connect()
    async with CallbackReceiver(secret=secret, backend=backend) as receiver:
        print(receiver.url, flush=True)
        await asyncio.to_thread(sys.stdin.read)
        print(receiver.stats.accepted, flush=True)


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:4]))
