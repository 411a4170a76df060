"""Submits per second, 64 in flight, against a fast fake API (a bare aiohttp server that
answers every submit at once), against a raw ``ClientSession`` POST loop sending the same
body: the SDK alone, and the SDK with a receiver (callback URLs minted, tasks registered).

The fake API runs in a process of its own, pinned to the first core; each client in a
process of its own on the second (``python -m benchmarks.submit KIND URL N``), one after
another, the kinds interleaved round by round.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import statistics
import sys
import time
from typing import Any

from ._load import pinned

KINDS = ("raw", "sdk", "sdk_receiver")
IN_FLIGHT = 64
FIELDS: dict[str, Any] = {
    "upload_url": "https://files.example.org/instrumental.mp3",
    "prompt": "Lanterns on the water, slow and gold",
    "title": "Harbour Lanterns",
    "style": "neo soul",
    "negative_tags": "metal",
}


async def start_fake_api() -> Any:
    """The fake API's runner, serving; its URL is ``url_of(runner)``."""
    from aiohttp import web

    answer = json.dumps({"code": 200, "msg": "success", "data": {"taskId": "t" * 32}})

    async def submit(request: web.Request) -> web.Response:
        await request.read()
        return web.Response(text=answer, content_type="application/json")

    app = web.Application()
    app.router.add_post("/api/v1/generate/add-vocals", submit)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    return runner


def url_of(runner: Any) -> str:
    return f"http://127.0.0.1:{runner.addresses[0][1]}"


async def fake_api() -> None:
    """Serve submits until stdin closes; prints the URL."""
    runner = await start_fake_api()
    print(url_of(runner), flush=True)
    await asyncio.to_thread(sys.stdin.read)
    await runner.cleanup()


async def run_quick(n: int = 50) -> dict[str, Any]:
    """The smoke run: the fake API and every client in this process."""
    runner = await start_fake_api()
    try:
        rates = {kind: [await client(kind, url_of(runner), n)] for kind in KINDS}
    finally:
        await runner.cleanup()
    return _summary(rates, 1, n)


async def client(kind: str, url: str, n: int) -> tuple[float, float]:
    """Submits per second of ``kind``, and per CPU-second of this process."""
    import aiohttp

    from addvocals_async import AddVocalsClient, AddVocalsRequest, CallbackReceiver

    todo = iter(range(n))
    if kind == "raw":
        body = {
            "uploadUrl": FIELDS["upload_url"], "prompt": FIELDS["prompt"],
            "title": FIELDS["title"], "style": FIELDS["style"],
            "negativeTags": FIELDS["negative_tags"],
            "callBackUrl": "https://hooks.example.org/addvocals/cb/x",
        }  # fmt: skip
        headers = {"Authorization": "Bearer bench-key"}
        async with aiohttp.ClientSession() as session:

            async def raw_worker() -> None:
                for _ in todo:
                    async with session.post(
                        f"{url}/api/v1/generate/add-vocals", json=body, headers=headers
                    ) as answer:
                        data = await answer.json()
                        assert data["data"]["taskId"]

            started, cpu = time.perf_counter(), time.process_time()
            await asyncio.gather(*(raw_worker() for _ in range(IN_FLIGHT)))
            return n / (time.perf_counter() - started), n / (time.process_time() - cpu)
    receiver = None
    if kind == "sdk_receiver":
        receiver = CallbackReceiver(
            public_url="https://hooks.example.org/addvocals", secret=secrets.token_bytes(32)
        )
    callback_url = None if receiver else "https://hooks.example.org/addvocals/cb/x"
    async with AddVocalsClient(
        "bench-key", base_url=url, receiver=receiver, callback_url=callback_url, throttle=False
    ) as sdk:

        async def sdk_worker() -> None:
            for _ in todo:
                await sdk.add_vocals(AddVocalsRequest(**FIELDS))

        started, cpu = time.perf_counter(), time.process_time()
        await asyncio.gather(*(sdk_worker() for _ in range(IN_FLIGHT)))
        rate = n / (time.perf_counter() - started), n / (time.process_time() - cpu)
    if receiver is not None:
        await receiver.aclose()
    return rate


async def run(n: int = 5000, rounds: int = 5) -> dict[str, Any]:
    api = await asyncio.create_subprocess_exec(
        *pinned([sys.executable, "-m", "benchmarks.submit", "api"], "load"),
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert api.stdout is not None
    assert api.stdin is not None
    rates: dict[str, list[tuple[float, float]]] = {kind: [] for kind in KINDS}
    try:
        url = (await api.stdout.readline()).decode().strip()
        for r in range(rounds):
            for kind in KINDS[r % 3 :] + KINDS[: r % 3]:
                command = [sys.executable, "-m", "benchmarks.submit", kind, url, str(n)]
                process = await asyncio.create_subprocess_exec(
                    *pinned(command, "server"), stdout=asyncio.subprocess.PIPE
                )
                out, _ = await process.communicate()
                assert process.returncode == 0, kind
                wall, cpu = out.split()
                rates[kind].append((float(wall), float(cpu)))
        api.stdin.close()
        await api.wait()
    finally:
        if api.returncode is None:
            api.kill()
            await api.wait()
    return _summary(rates, rounds, n)


def _summary(rates: dict[str, list[tuple[float, float]]], rounds: int, n: int) -> dict[str, Any]:
    """Median and range per kind; ratios to ``raw`` per round, by wall time and by the
    client's CPU time (what a loaded machine disturbs least)."""
    summary: dict[str, Any] = {"rounds": rounds, "submits": n, "in_flight": IN_FLIGHT}
    for kind, values in rates.items():
        wall = [w for w, _ in values]
        summary[kind] = {
            "per_s": statistics.median(wall),
            "per_s_range": [min(wall), max(wall)],
            "per_cpu_s": statistics.median(c for _, c in values),
        }
        if kind != "raw":
            pairs = list(zip(values, rates["raw"], strict=True))
            ratios = [mine[0] / raw[0] for mine, raw in pairs]
            summary[kind]["ratio"] = statistics.median(ratios)
            summary[kind]["ratio_range"] = [min(ratios), max(ratios)]
            summary[kind]["cpu_ratio"] = statistics.median(mine[1] / raw[1] for mine, raw in pairs)
    return summary


if __name__ == "__main__":
    if sys.argv[1] == "api":
        asyncio.run(fake_api())
    else:
        print(*asyncio.run(client(sys.argv[1], sys.argv[2], int(sys.argv[3]))))
