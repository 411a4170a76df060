"""Goal: the receiver handles callbacks at >= 0.9x the rate of a bare aiohttp handler.

Three servers run at the same time, each in a process of its own, and one load process
sends every one of them the same kind of callbacks (a ``first`` callback with two tracks,
each for its own pending task), interleaved one by one. Each server's CPU time over the
same window is the measure (requests per CPU-second: what throughput under load comes
down to). Running them side by side exposes all three to the same moments of a shared,
noisy machine; run one after another, the same code measured anywhere from 0.75x to 0.98x.

The baselines, both bare aiohttp:

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
import statistics
import sys
import tempfile
from typing import Any

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


SERVERS = ("bare", "parse_only", "receiver")


async def _round(
    n: int, concurrency: int, kinds: tuple[str, ...] = SERVERS
) -> dict[str, dict[str, float]]:
    """One round: start the servers, load them together, read their CPU time."""
    with tempfile.TemporaryDirectory() as folder:
        files = {kind: os.path.join(folder, f"{kind}.json") for kind in kinds}
        servers = {}
        for kind in kinds:
            servers[kind] = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "benchmarks._server", kind, str(n), files[kind],
                stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            )  # fmt: skip
        try:
            for process in servers.values():
                assert process.stdout is not None
                assert (await process.stdout.readline()).strip() == b"ready"
            for process in servers.values():
                assert process.stdin is not None
                process.stdin.write(b"go\n")
                await process.stdin.drain()
            load = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "benchmarks._load", str(concurrency),
                *files.values(), stdout=asyncio.subprocess.PIPE,
            )  # fmt: skip
            out, _ = await load.communicate()
            assert int(out) == n * len(kinds), "requests failed"
            results = {}
            for kind, process in servers.items():
                assert process.stdin is not None
                assert process.stdout is not None
                process.stdin.write(b"stop\n")
                await process.stdin.drain()
                results[kind] = json.loads(await process.stdout.readline())
                await process.wait()
        finally:
            for process in servers.values():
                if process.returncode is None:
                    process.kill()
                    await process.wait()
    for kind, result in results.items():
        assert result["handled"] == n, f"{kind} handled {result['handled']} of {n}"
    return results


async def run(n: int = 3000, concurrency: int = 48, rounds: int = 5) -> dict[str, Any]:
    """``rounds`` rounds of ``n`` callbacks per server; the median round's ratios."""
    results = [await _round(n, concurrency) for _ in range(rounds)]

    def median_ratio(baseline: str) -> float:
        return statistics.median(r[baseline]["cpu"] / r["receiver"]["cpu"] for r in results)

    def median_rate(kind: str) -> float:
        return n / statistics.median(r[kind]["cpu"] for r in results)

    return {
        "bare_rps_per_cpu_s": median_rate("bare"),
        "parse_only_rps_per_cpu_s": median_rate("parse_only"),
        "receiver_rps_per_cpu_s": median_rate("receiver"),
        "ratio": median_ratio("bare"),
        "ratio_to_parse_only": median_ratio("parse_only"),
        "rounds": rounds,
        "goal": GOAL,
    }
