"""A callback sender at a fixed rate, in a process of its own:
``python -m benchmarks._paced_load RATE JOBS_FILE``. JOBS_FILE is a JSON list of
``[url, body]`` pairs, sent in order, one every ``1/RATE`` s on an open-loop schedule (a
slow answer does not delay the next send). Prints the number of 2xx answers."""

import asyncio
import json
import sys
import time

import aiohttp


async def main(rate: float, jobs: list[tuple[str, str]]) -> None:
    ok = 0
    headers = {"Content-Type": "application/json"}
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=64)) as session:

        async def send(url: str, body: bytes) -> None:
            nonlocal ok
            async with session.post(url, data=body, headers=headers) as response:
                await response.read()
                ok += response.status < 300

        started = time.monotonic()
        sending = []
        for i, (url, body) in enumerate(jobs):
            delay = started + i / rate - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            sending.append(asyncio.ensure_future(send(url, body.encode())))
        await asyncio.gather(*sending)
    print(ok)


if __name__ == "__main__":
    with open(sys.argv[2]) as handle:
        asyncio.run(main(float(sys.argv[1]), json.load(handle)))
