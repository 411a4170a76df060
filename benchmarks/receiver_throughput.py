"""Goal: the receiver handles callbacks at >= 0.9x the rate of a bare aiohttp handler.

The servers run in this process and answer the same callbacks (a ``first`` callback with
two tracks, each for its own pending task), sent by a separate process. The figure
compared is requests per second of *server CPU* (``time.process_time``), which is what
throughput under load comes down to and what a busy shared machine disturbs least.

Two baselines, both bare aiohttp:

- ``bare``, the goal's baseline: what you would write instead of this SDK. It reads the
  body, parses the JSON, finds the task's future by ``data.task_id``, resolves it and
  answers 200. No authentication, no shape checks, no state machine.
- ``parse_only``, for reference: reads, parses, answers 200 and dispatches nothing, the
  least any webhook endpoint does.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import statistics
import sys
import tempfile
import time
from typing import Any

from aiohttp import web

from addvocals_async import CallbackReceiver
from addvocals_async._providers import get_provider
from addvocals_async._tasks import TaskState

GOAL = 0.9


def callback_body(task_id: str) -> str:
    track = {
        "id": "3433e3c3-7ccb-4e6a-8454-33cb20e33908", "title": "Harbour Lanterns",
        "model_name": "chirp-v4-5", "audio_url": "https://files.example.org/av/3433e3c3.mp3",
        "source_audio_url": "https://origin.example.com/3433e3c3.mp3",
        "stream_audio_url": "https://stream.example.org/3433e3c3",
        "source_stream_audio_url": "https://origin.example.com/s/3433e3c3",
        "image_url": "https://img.example.org/3433e3c3.jpeg",
        "source_image_url": "https://origin.example.com/i/3433e3c3.jpeg",
        "prompt": "[Verse] Lanterns on the water, slow and gold", "tags": "neo soul, breathy",
        "createTime": 1767268905123, "duration": 174.62,
    }  # fmt: skip
    partial = {**track, "audio_url": "", "duration": None}
    return json.dumps(
        {
            "code": 200,
            "msg": "First audio generated successfully.",
            "data": {"callbackType": "first", "task_id": task_id, "data": [track, partial]},
        }
    )


async def _serve(app: web.Application) -> tuple[web.AppRunner, int]:
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    return runner, int(runner.addresses[0][1])


async def _drive(jobs: list[tuple[str, str]], concurrency: int) -> tuple[float, float, int]:
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as handle:
        json.dump(jobs, handle)
    try:
        cpu, wall = time.process_time(), time.perf_counter()
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "benchmarks._load", handle.name, str(concurrency),
            stdout=asyncio.subprocess.PIPE,
        )  # fmt: skip
        out, _ = await process.communicate()
        return time.process_time() - cpu, time.perf_counter() - wall, int(out or 0)
    finally:
        os.unlink(handle.name)


async def _bare(n: int, concurrency: int, *, dispatch: bool) -> dict[str, float]:
    loop = asyncio.get_running_loop()
    waiting: dict[str, asyncio.Future[Any]] = {}

    async def parse_only(request: web.Request) -> web.Response:
        json.loads(await request.read())
        return web.json_response({"status": "received"})

    async def dispatching(request: web.Request) -> web.Response:
        body = json.loads(await request.read())
        future = waiting.get(body["data"]["task_id"])
        if future is not None and not future.done():
            future.set_result(body)
        return web.json_response({"status": "received"})

    app = web.Application()
    app.router.add_post("/addvocals/cb/{token}", dispatching if dispatch else parse_only)
    runner, port = await _serve(app)
    try:
        jobs = []
        for i in range(n):
            task_id = secrets.token_hex(16)
            waiting[task_id] = loop.create_future()
            jobs.append((f"http://127.0.0.1:{port}/addvocals/cb/t{i}", callback_body(task_id)))
        cpu, wall, ok = await _drive(jobs, concurrency)
        resolved = sum(f.done() for f in waiting.values())
    finally:
        await runner.cleanup()
    return {"cpu": cpu, "wall": wall, "ok": ok, "resolved": resolved if dispatch else n}


async def bare(n: int, concurrency: int) -> dict[str, float]:
    return await _bare(n, concurrency, dispatch=True)


async def parse_only(n: int, concurrency: int) -> dict[str, float]:
    return await _bare(n, concurrency, dispatch=False)


async def receiver(n: int, concurrency: int) -> dict[str, float]:
    profile = get_provider("apibox")
    async with CallbackReceiver(secret=secrets.token_bytes(32)) as rx:
        jobs = []
        for _ in range(n):
            task_id = secrets.token_hex(16)
            registration = rx.register(TaskState(None, profile))
            rx.bind(registration, task_id)
            jobs.append((registration.callback_url, callback_body(task_id)))
        cpu, wall, ok = await _drive(jobs, concurrency)
        accepted = rx.stats.accepted
    return {"cpu": cpu, "wall": wall, "ok": ok, "accepted": accepted}


async def run(n: int = 3000, concurrency: int = 32, rounds: int = 7) -> dict[str, Any]:
    """Run the servers one after the other, ``rounds`` times. Each round's ratio compares
    runs made seconds apart, under the same conditions; the median of the rounds'
    ratios is reported, which one noisy round cannot move."""
    servers = {"bare": bare, "parse_only": parse_only, "receiver": receiver}
    results: dict[str, list[dict[str, float]]] = {name: [] for name in servers}
    for serve in servers.values():
        await serve(200, 8)  # warm-up: imports, first connections
    for _ in range(rounds):
        for name, serve in servers.items():
            results[name].append(await serve(n, concurrency))
    assert all(r["ok"] == n for rs in results.values() for r in rs), "requests failed"
    assert all(r["accepted"] == n for r in results["receiver"]), "callbacks not accepted"
    assert all(r["resolved"] == n for r in results["bare"]), "futures not resolved"

    def median_ratio(baseline: str) -> float:
        pairs = zip(results[baseline], results["receiver"], strict=True)
        return statistics.median(base["cpu"] / ours["cpu"] for base, ours in pairs)

    def median_rate(name: str) -> float:
        return n / statistics.median(r["cpu"] for r in results[name])

    return {
        "bare_rps_per_cpu_s": median_rate("bare"),
        "parse_only_rps_per_cpu_s": median_rate("parse_only"),
        "receiver_rps_per_cpu_s": median_rate("receiver"),
        "ratio": median_ratio("bare"),
        "ratio_to_parse_only": median_ratio("parse_only"),
        "rounds": rounds,
        "goal": GOAL,
    }
