"""The callback sender for the throughput benchmark, run as its own process so that its
CPU is not counted against any server: ``python -m benchmarks._load CONCURRENCY JOBS...``.

Each JOBS file is a JSON list of ``[url, body]`` pairs. The files' requests are interleaved
(one from each in turn), so every server is loaded through the same moments of a noisy
machine. Prints the number of 2xx answers."""

import asyncio
import itertools
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


def _interleave(files: list[str]) -> list[tuple[str, bytes]]:
    lists = []
    for name in files:
        with open(name) as handle:
            lists.append([(url, body.encode()) for url, body in json.load(handle)])
    mixed = itertools.chain.from_iterable(itertools.zip_longest(*lists))
    return [job for job in mixed if job is not None]


if __name__ == "__main__":
    asyncio.run(main(_interleave(sys.argv[2:]), int(sys.argv[1])))
