"""The callback sender for the throughput benchmark, run as its own process so that its
CPU is not counted against the server: ``python -m benchmarks._load JOBS CONCURRENCY``.

JOBS is a JSON file of ``[url, body]`` pairs; every one is POSTed once. Prints the number
of 2xx answers."""

import asyncio
import json
import sys

import aiohttp


async def main(jobs: list[tuple[str, bytes]], concurrency: int) -> None:
    queue: asyncio.Queue[tuple[str, bytes]] = asyncio.Queue()
    for job in jobs:
        queue.put_nowait(job)
    ok = 0
    headers = {"Content-Type": "application/json"}
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def worker() -> None:
            nonlocal ok
            while not queue.empty():
                url, body = queue.get_nowait()
                async with session.post(url, data=body, headers=headers) as response:
                    await response.read()
                    ok += response.status < 300

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    print(ok)


if __name__ == "__main__":
    with open(sys.argv[1]) as handle:
        pairs = [(url, body.encode()) for url, body in json.load(handle)]
    asyncio.run(main(pairs, int(sys.argv[2])))
