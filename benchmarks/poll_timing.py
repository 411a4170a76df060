"""Goal: polls that follow the API's timing (issue 13, goal 5).

Tasks run through the simulator at the real API's stage timings (text about 30 s, first
100 s, complete 180 s after the submit), shrunk ``SPEED`` times so that a run takes
seconds (not more: with the loop busier than a real client's, its lag would add to
the delays); the client's poll timings shrink alike (the testing switch at ``1 / SPEED``),
so every figure below is in real seconds. Real tasks don't keep to the minute: each
round runs its tasks at the nominal timings times 0.8, 0.9, 1.0, 1.1 and 1.2 together.

- With a receiver, callbacks on time: API requests per task (the submit included). Goal:
  exactly 1, no poll at all.
- Without a receiver: how long after the task reached ``complete`` its awaiting
  coroutine resumed (notify delay), and requests per task. Goal: median delay ≤ 3 s with
  ≤ 25 requests per task, and no request refused by kie's 3 requests/s/task limit (the
  simulator enforces it).

Every task is awaited (``await task.complete()``), as users do.
"""

from __future__ import annotations

import asyncio
import secrets
import statistics
import time
from typing import Any

from addvocals_async import AddVocalsClient, CallbackReceiver, PollPolicy, set_testing
from addvocals_async.testing import Simulator, StageTimes

SPEED = 10.0
FACTORS = (0.8, 0.9, 1.0, 1.1, 1.2)
GOAL_REQUESTS_WITH_RECEIVER = 1.0
GOAL_MEDIAN_DELAY_S = 3.0
GOAL_REQUESTS_WITHOUT = 25

_REQUEST: dict[str, Any] = {
    "upload_url": "https://cdn.example.org/instrumental.mp3",
    "prompt": "A calm piano ballad",
    "title": "Quiet Harbour",
    "style": "Jazz",
    "negative_tags": "Metal",
}


async def _tasks_at(
    factor: float, n: int, *, receiver: bool, speed: float = SPEED
) -> list[tuple[float, int, int]]:
    """n tasks at the nominal stage times × ``factor``: per task, the notify delay (real
    seconds), the API requests it took, and how many of them the API refused."""
    times = StageTimes(text=30.0 * factor, first=100.0 * factor, complete=180.0 * factor)
    async with Simulator(
        speed=speed,
        stage_times=times,
        rate_limit=None,
        credits=10 * n,
        scale_rate_limits=True,  # 3 record-info requests per task per (scaled) second
        min_callback_timeout=5.0,
    ) as sim:
        rx = CallbackReceiver(secret=secrets.token_bytes(32)) if receiver else None
        options: dict[str, Any] = (
            {"receiver": rx}
            if rx
            else {
                "callback_url": "https://hooks.example.org/nowhere"  # delivered nowhere
            }
        )
        async with (
            rx if rx is not None else _nothing(),
            AddVocalsClient(
                sim.api_key, base_url=sim.base_url, throttle=False, poll=PollPolicy(), **options
            ) as client,
        ):

            async def one() -> tuple[float, int, int]:
                task = await client.add_vocals(**_REQUEST)
                await task.complete(timeout=600.0)
                resumed = time.monotonic()
                sim_task = sim.tasks[task.task_id]
                reached = sim_task.created_at + times.complete / speed
                mine = [r for r in sim.requests if r.task_id == task.task_id]
                details = [r for r in mine if r.path == sim.profile.details_path]
                refused = sum(1 for r in details if r.code != 200)
                return (resumed - reached) * speed, 1 + len(details), refused

            return list(await asyncio.gather(*(one() for _ in range(n))))


class _nothing:
    async def __aenter__(self) -> None:
        return None

    async def __aexit__(self, *_: object) -> None:
        return None


async def run(n: int = 10, rounds: int = 3, speed: float = SPEED) -> dict[str, Any]:
    """``n`` tasks per stage-time factor with a receiver and as many without, at once;
    ``rounds`` rounds. (A ``speed`` far above ``SPEED`` is for a smoke run only.)"""
    with_rx: list[int] = []
    without: list[tuple[float, int, int]] = []
    round_medians: list[float] = []
    with set_testing(True, time_scale=1 / speed):
        for _ in range(rounds):
            outcomes = await asyncio.gather(
                *(_tasks_at(f, n, receiver=True, speed=speed) for f in FACTORS),
                *(_tasks_at(f, n, receiver=False, speed=speed) for f in FACTORS),
            )
            half = len(FACTORS)
            with_rx.extend(r for per in outcomes[:half] for _, r, _ in per)
            this_round = [o for per in outcomes[half:] for o in per]
            without.extend(this_round)
            round_medians.append(statistics.median(d for d, _, _ in this_round))
    delays = sorted(d for d, _, _ in without)
    requests = [r for _, r, _ in without]
    refused = sum(r for _, _, r in without)
    return {
        "tasks": len(with_rx) + len(without),
        "rounds": rounds,
        "with_receiver_requests_mean": statistics.fmean(with_rx),
        "with_receiver_requests_max": max(with_rx),
        "median_delay_s": statistics.median(delays),
        "round_median_delays_s": round_medians,
        "p90_delay_s": delays[int(0.9 * (len(delays) - 1))],
        "requests_median": statistics.median(requests),
        "requests_max": max(requests),
        "refused": refused,
        "met": (
            max(with_rx) == GOAL_REQUESTS_WITH_RECEIVER
            and statistics.median(delays) <= GOAL_MEDIAN_DELAY_S
            and max(requests) <= GOAL_REQUESTS_WITHOUT
            and refused == 0
        ),
    }


if __name__ == "__main__":
    print(asyncio.run(run()))
