"""``python -m reliability._sender URL SECRET SECONDS``: the genuine sender of the
exhaustion figure, in a process of its own as the API's would be (the harness's process
carries what the figures before it left behind). A callback with a genuine token every
50 ms for ``SECONDS``; prints one JSON line: how many were sent, the answered ones'
latencies, and the failures by kind."""

from __future__ import annotations

import asyncio
import json
import random
import sys
import time

import aiohttp

from addvocals_async import CallbackReceiver

from ._common import callback_json

_EVERY = 0.05


async def send(url: str, secret: str, seconds: float) -> None:
    minter = CallbackReceiver(secret=secret, public_url=url)  # genuine tokens, no server
    latencies: list[float] = []
    failures: dict[str, int] = {}
    sent = 0
    stop = time.monotonic() + seconds
    async with aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(force_close=True),
        timeout=aiohttp.ClientTimeout(total=15),
    ) as session:

        async def genuine() -> None:
            nonlocal sent
            sent += 1
            target = minter.new_callback_url().url
            body = callback_json(f"{random.getrandbits(128):032x}")
            began = time.monotonic()
            try:
                async with session.post(target, json=body) as response:
                    await response.read()
                    if response.status < 300:
                        latencies.append(time.monotonic() - began)
                    else:
                        kind = str(response.status)
                        failures[kind] = failures.get(kind, 0) + 1
            except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
                kind = type(exc).__name__
                failures[kind] = failures.get(kind, 0) + 1

        senders = []
        while time.monotonic() < stop:
            senders.append(asyncio.create_task(genuine()))
            await asyncio.sleep(_EVERY)
        await asyncio.gather(*senders)
    print(json.dumps({"sent": sent, "latencies": latencies, "failures": failures}), flush=True)


if __name__ == "__main__":
    url, secret, seconds = sys.argv[1:4]
    asyncio.run(send(url, secret, float(seconds)))
