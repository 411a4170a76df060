"""One server of the throughput benchmark, in a process of its own:
``python -m benchmarks._server KIND N JOBS_FILE``.

KIND is ``bare``, ``parse_only``, ``receiver`` or ``receiver_redis`` (the receiver over a
``RedisBackend`` at ``$ADDVOCALS_BENCH_REDIS``, keys under a prefix of its own). It
prepares N pending tasks, writes the N callbacks to send (``[url, body]`` pairs) to
JOBS_FILE, prints ``ready``, and on ``go`` (stdin) starts counting its own CPU time; on
``stop`` it prints a JSON line with the CPU seconds used and how many callbacks it
handled, and exits."""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import sys
import time
from typing import Any

from aiohttp import web

from addvocals_async import CallbackReceiver, TaskRegistry
from addvocals_async._providers import get_provider

from .pending_memory import register
from .receiver_throughput import callback_body


async def _serve(app: web.Application) -> tuple[web.AppRunner, int]:
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    return runner, int(runner.addresses[0][1])


async def main(kind: str, n: int, jobs_file: str) -> None:
    loop = asyncio.get_running_loop()
    jobs: list[tuple[str, str]] = []
    handled = 0
    receiver: CallbackReceiver | None = None
    runner: web.AppRunner | None = None
    if kind in ("receiver", "receiver_redis"):
        backend = None
        if kind == "receiver_redis":
            from addvocals_async.redis import RedisBackend

            prefix = f"bench-{secrets.token_hex(4)}:"
            backend = RedisBackend(os.environ["ADDVOCALS_BENCH_REDIS"], prefix=prefix)
            await backend.connect()
        receiver = CallbackReceiver(secret=secrets.token_bytes(32), backend=backend)
        await receiver.start()
        registry = TaskRegistry(receiver.backend, get_provider("apibox"))
        for _ in range(n):
            task_id = secrets.token_hex(16)
            token = await register(receiver, registry, task_id)
            jobs.append((f"{receiver.url}/cb/{token}", callback_body(task_id)))
    else:
        waiting: dict[str, asyncio.Future[Any]] = {}

        async def parse_only(request: web.Request) -> web.Response:
            nonlocal handled
            json.loads(await request.read())
            handled += 1
            return web.json_response({"status": "received"})

        async def dispatching(request: web.Request) -> web.Response:
            nonlocal handled
            body = json.loads(await request.read())
            future = waiting.get(body["data"]["task_id"])
            if future is not None and not future.done():
                future.set_result(body)
                handled += 1
            return web.json_response({"status": "received"})

        app = web.Application()
        handler = dispatching if kind == "bare" else parse_only
        app.router.add_post("/addvocals/cb/{token}", handler)
        runner, port = await _serve(app)
        for i in range(n):
            task_id = secrets.token_hex(16)
            waiting[task_id] = loop.create_future()
            jobs.append((f"http://127.0.0.1:{port}/addvocals/cb/t{i}", callback_body(task_id)))
    with open(jobs_file, "w") as handle:
        json.dump(jobs, handle)
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    print("ready", flush=True)
    await reader.readline()  # go
    started = time.process_time()
    await reader.readline()  # stop
    cpu = time.process_time() - started
    if receiver is not None:
        handled = receiver.stats.accepted
        await receiver.aclose()
    if runner is not None:
        await runner.cleanup()
    print(json.dumps({"cpu": cpu, "handled": handled}), flush=True)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], int(sys.argv[2]), sys.argv[3]))
