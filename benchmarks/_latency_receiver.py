"""The receiving process of the cross-process latency benchmark:
``python -m benchmarks._latency_receiver REDIS_URL PREFIX SECRET OUT_FILE``.

Serves a ``CallbackReceiver`` over a ``RedisBackend``, mounted in an aiohttp app whose
middleware stamps each request's arrival (``time.monotonic()``, one clock for every
process of this machine) by its URL token. Prints its URL; when stdin closes, writes
``{token: arrival}`` to OUT_FILE and exits."""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections.abc import Awaitable, Callable

from aiohttp import web

from addvocals_async import CallbackReceiver
from addvocals_async.redis import RedisBackend
from addvocals_async.testing.redis_server import free_port

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


async def main(url: str, prefix: str, secret: str, out_file: str) -> None:
    arrivals: dict[str, float] = {}

    @web.middleware
    async def stamp(request: web.Request, handler: Handler) -> web.StreamResponse:
        arrivals[request.path.rsplit("/", 1)[1]] = time.monotonic()
        return await handler(request)

    backend = RedisBackend(url, prefix=prefix)
    await backend.connect()
    app = web.Application(middlewares=[stamp])
    port = free_port()
    receiver = CallbackReceiver(
        secret=secret, backend=backend, public_url=f"http://127.0.0.1:{port}/addvocals"
    )
    receiver.mount(app, close_with_app=False)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    print(receiver.url, flush=True)
    await asyncio.to_thread(sys.stdin.read)
    with open(out_file, "w") as handle:
        json.dump(arrivals, handle)
    await receiver.aclose()
    await runner.cleanup()


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:5]))
