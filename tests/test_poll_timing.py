"""Polls that follow the API's stage timing (issue 13, goal 5).

Tasks run at the real API's stage times (text 30 s, first 100 s, complete 180 s),
shrunk 200 times on both sides: the simulator's ``speed`` and the testing switch's
``time_scale``. Nothing here asserts a duration; the figures (notify delay, requests per
task) are in ``benchmarks/poll_timing.py``.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
from helpers import REQUEST
from hypothesis import given
from hypothesis import strategies as st

from addvocals_async import (
    AddVocalsClient,
    CallbackReceiver,
    PollPolicy,
    Stage,
    VocalTask,
    set_testing,
)
from addvocals_async._providers import get_provider
from addvocals_async._tasks import TaskState
from addvocals_async.testing import Simulator

SPEED = 200.0


@asynccontextmanager
async def real_timings(
    *, receiver: bool, scenario: str = "normal", speed: float = SPEED
) -> AsyncIterator[tuple[Simulator, AddVocalsClient]]:
    with set_testing(True, time_scale=1 / speed):
        async with Simulator(
            speed=speed, scenario=scenario, rate_limit=None, scale_rate_limits=True
        ) as sim:
            rx = CallbackReceiver(secret=secrets.token_bytes(32)) if receiver else None
            where = {"receiver": rx} if rx else {"callback_url": "https://hooks.example.org/x"}
            client = AddVocalsClient(
                sim.api_key, base_url=sim.base_url, throttle=False, poll=PollPolicy(), **where
            )
            if rx is None:
                async with client:
                    yield sim, client
            else:
                async with rx, client:
                    yield sim, client


def polls(sim: Simulator, task: VocalTask) -> list[float]:
    """When ``task``'s details were asked for, in real seconds after its submit."""
    created = sim.tasks[task.task_id].created_at
    return [
        (r.at - created) * sim.speed
        for r in sim.requests
        if r.task_id == task.task_id and r.path == sim.profile.details_path
    ]


async def test_callbacks_on_time_finish_a_task_without_one_poll() -> None:
    """Text at 30 s, first at 100 s, complete at 180 s: each gap is longer than a constant
    60 s grace would allow, yet each callback is on time, so nothing polls."""
    # 100 times faster, not 200: a callback has 150 ms of the test's time to be on time,
    # which a busy CI machine keeps.
    async with real_timings(receiver=True, speed=100.0) as (sim, client):
        tasks = [await client.add_vocals(**REQUEST) for _ in range(5)]
        results = await asyncio.gather(*(task.complete() for task in tasks))
        assert [r.source for r in results] == ["callback"] * 5
        assert [polls(sim, task) for task in tasks] == [[]] * 5


async def test_a_skipped_stage_costs_at_most_one_poll() -> None:
    """No text callback ever comes: one poll checks once it is late (at 45 s), finds the
    task still pending, and the first and complete callbacks finish it."""
    async with real_timings(receiver=True, scenario="skip_text", speed=100.0) as (sim, client):
        task = await client.add_vocals(**REQUEST)
        result = await task.complete()
        assert result.source == "callback"
        asked = polls(sim, task)
        assert len(asked) <= 1, asked
        assert all(at >= 45.0 for at in asked), asked


async def test_lost_callbacks_are_noticed_and_said_once(caplog: pytest.LogCaptureFixture) -> None:
    """Every callback lost: the poll once text is late finds it reached, says the
    receiver looks unreachable, and polling takes over."""
    async with real_timings(receiver=True, scenario="lost_all") as (sim, client):
        task = await client.add_vocals(**REQUEST)
        with caplog.at_level(logging.WARNING, logger="addvocals_async"):
            result = await task.complete()
    assert result.source == "poll"
    quiet = [r.getMessage() for r in caplog.records if "no callback for task" in r.getMessage()]
    assert len(quiet) == 1, quiet
    assert "public_url reachable" in quiet[0]
    assert len(polls(sim, task)) <= 25


async def test_without_a_receiver_polls_gather_where_the_awaited_stage_is_due() -> None:
    """No poll at the submit; sparse (every 30 s) while the awaited stage is far off,
    dense as it comes due; well within the 25 requests per task of the goal."""
    async with real_timings(receiver=False) as (sim, client):
        task = await client.add_vocals(**REQUEST)
        result = await task.complete()
        assert (result.stage, result.source) == (Stage.COMPLETE, "poll")
        asked = polls(sim, task)
    assert asked[0] >= 25.0, asked  # the first poll ~30 s after the submit, not at once
    early = [at for at in asked if at < 90.0]
    near = [at for at in asked if at >= 150.0]
    assert len(early) <= 4, asked
    assert len(near) >= 4, asked
    assert 1 + len(asked) <= 25, asked


async def test_a_first_waiter_polls_around_the_first_stage() -> None:
    """The awaited stage decides where polls gather: ``first()`` is due at 100 s."""
    async with real_timings(receiver=False) as (sim, client):
        task = await client.add_vocals(**REQUEST)
        result = await task.first()
        assert result.stage is Stage.FIRST
        asked = polls(sim, task)
    assert max(asked) < 150.0, asked
    assert len([at for at in asked if at >= 80.0]) >= 3, asked


@given(
    arrival_factor=st.floats(0.75, 1.2),
    jitters=st.lists(st.floats(0.9, 1.1), min_size=60, max_size=60),
)
def test_the_schedule_stays_within_the_request_budget(
    arrival_factor: float, jitters: list[float]
) -> None:
    """Whatever the jitter, a task finishing within 20 % of the usual 180 s is found in
    at most 25 requests (the submit included), by the first poll after it finished, at
    most 10 s later while within 10 % of the due time; no interval is over 30 s + 10 %."""
    policy = PollPolicy()
    arrival = 180.0 * arrival_factor
    with set_testing(False):
        found, requests = poll_until(policy, arrival, jitters)
    assert requests <= 25, (arrival, requests)
    if abs(arrival - 180.0) <= 18.0:
        assert found - arrival <= 10.0


@pytest.mark.parametrize("arrival", [float(a) for a in range(100, 241, 2)])
def test_four_minutes_in_the_budget_still_holds(arrival: float) -> None:
    """Real tasks take 2-4 minutes: up to 240 s, at most 25 requests (without jitter)."""
    with set_testing(False):
        _, requests = poll_until(PollPolicy(), arrival, [1.0] * 60)
    assert requests <= 25, requests


def poll_until(policy: PollPolicy, arrival: float, jitters: list[float]) -> tuple[float, int]:
    """When the first poll at or after ``arrival`` comes, and the requests up to it."""
    due = policy.due(Stage.COMPLETE.rank)
    t, requests = 0.0, 1
    for jitter in jitters:
        interval = policy.interval(t, due, jitter)
        assert policy.min_interval <= interval <= policy.maximum * 1.1
        t, requests = t + interval, requests + 1
        if t >= arrival:
            return t, requests
    raise AssertionError(f"no poll reached {arrival} s: {t}")


def test_a_resumed_submit_polls_by_its_real_age() -> None:
    """``client.resume()`` knows when each submit was made: a task submitted 170 s before
    the restart is polled at once, not 30 s after the restart as a fresh one would be."""

    class Source:
        can_poll = True

        async def details(self, task_id: str, *, attempts: int | None = None) -> Any:
            raise AssertionError("not asked in this test")

    state = TaskState("a" * 32, get_provider("apibox"))
    with set_testing(False):
        fresh = VocalTask(state, Source(), PollPolicy())
        old = VocalTask(state, Source(), PollPolicy(), age=170.0)
        assert fresh.next_poll_in == pytest.approx(30.0, abs=4.0)
        assert old.next_poll_in == 0.0
