"""A tiny round-robin HTTP proxy, standing in for your load balancer:

    python examples/scale_out/proxy.py PORT http://127.0.0.1:8081 http://127.0.0.1:8082 ...

Each request goes to the next receiver in turn, path and body unchanged; a receiver that
cannot be reached makes the proxy answer 502, which the API's sender retries like any
failure. It prints its own URL once it listens (PORT 0: any free port).
"""

from __future__ import annotations

import asyncio
import itertools
import sys

import aiohttp
from aiohttp import web

HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "host", "content-length"}


def make_app(backends: list[str]) -> web.Application:
    turn = itertools.cycle(backends)
    app = web.Application()
    session_key = web.AppKey("session", aiohttp.ClientSession)

    async def open_session(app: web.Application) -> None:
        app[session_key] = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30))

    async def close_session(app: web.Application) -> None:
        await app[session_key].close()

    async def forward(request: web.Request) -> web.StreamResponse:
        target = next(turn) + request.path_qs
        headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP_BY_HOP}
        body = await request.read()
        try:
            async with app[session_key].request(
                request.method, target, headers=headers, data=body
            ) as answer:
                payload = await answer.read()
                kept = {k: v for k, v in answer.headers.items() if k.lower() not in HOP_BY_HOP}
                return web.Response(status=answer.status, body=payload, headers=kept)
        except aiohttp.ClientError:
            return web.Response(status=502, text="receiver unreachable")

    app.on_startup.append(open_session)
    app.on_cleanup.append(close_session)
    app.router.add_route("*", "/{tail:.*}", forward)
    return app


async def main(port: int, backends: list[str]) -> None:
    runner = web.AppRunner(make_app(backends), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    bound = runner.addresses[0][1]
    print(f"http://127.0.0.1:{bound}", flush=True)
    try:
        await asyncio.to_thread(sys.stdin.read)  # until stdin closes
    finally:
        await runner.cleanup()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]), [url.rstrip("/") for url in sys.argv[2:]]))
