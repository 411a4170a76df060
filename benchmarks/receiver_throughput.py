"""Goal: the receiver handles callbacks at >= 0.9x the rate of a bare aiohttp handler.

Both servers run in this process and answer the same callbacks (a ``first`` callback
with two tracks, each for its own registered task), sent by a separate process. The
figure compared is requests per second of *server CPU* (``time.process_time``), which
is what throughput under load comes down to and what a busy shared machine disturbs
least. The bare handler reads the body, parses the JSON and answers 200: the least any
webhook endpoint does.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
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


async def bare(n: int, concurrency: int) -> dict[str, float]:
    async def handler(request: web.Request) -> web.Response:
        json.loads(await request.read())
        return web.json_response({"status": "received"})

    app = web.Application()
    app.router.add_post("/addvocals/cb/{token}", handler)
    runner, port = await _serve(app)
    try:
        jobs = [
            (f"http://127.0.0.1:{port}/addvocals/cb/t{i}", callback_body(secrets.token_hex(16)))
            for i in range(n)
        ]
        cpu, wall, ok = await _drive(jobs, concurrency)
    finally:
        await runner.cleanup()
    return {"cpu": cpu, "wall": wall, "ok": ok}


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


async def run(n: int = 5000, concurrency: int = 32, rounds: int = 3) -> dict[str, Any]:
    """Alternate the two servers ``rounds`` times and compare the best of each."""
    results: dict[str, list[dict[str, float]]] = {"bare": [], "receiver": []}
    await bare(200, 8)  # warm-up: imports, first connections
    await receiver(200, 8)
    for _ in range(rounds):
        results["bare"].append(await bare(n, concurrency))
        results["receiver"].append(await receiver(n, concurrency))
    assert all(r["ok"] == n for rs in results.values() for r in rs), "requests failed"
    assert all(r["accepted"] == n for r in results["receiver"]), "callbacks not accepted"
    best_bare = min(r["cpu"] for r in results["bare"])
    best_receiver = min(r["cpu"] for r in results["receiver"])
    return {
        "bare_rps_per_cpu_s": n / best_bare,
        "receiver_rps_per_cpu_s": n / best_receiver,
        "ratio": best_bare / best_receiver,
        "goal": GOAL,
    }
