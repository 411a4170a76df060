"""Task futures against the live simulator: deadlines, the polling safety net, receiver
restarts and shutdown.

Waits must end: at their deadline (after one last look at the details endpoint), by
polling when callbacks stop or the receiver goes away, and by callbacks again once a
receiver with the same secret is back on the same address.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import attrs
import pytest
import yarl

from addvocals_async import (
    AddVocalsClient,
    CallbackReceiver,
    InMemoryBackend,
    PollPolicy,
    ReceiverClosedError,
    RetryPolicy,
    Stage,
    TaskTimeoutError,
    VocalTask,
)
from addvocals_async.testing import Simulator, StageTimes

SECRET = "receiver-secret-for-task-tests-0001"
REQUEST: dict[str, Any] = {
    "upload_url": "https://cdn.example.org/instrumental.mp3",
    "prompt": "A calm piano ballad with soothing vocals",
    "title": "Quiet Harbour",
    "style": "Jazz",
    "negative_tags": "Heavy Metal, Aggressive Vocals",
}
# Text and first track quickly, the complete stage 0.8 s after the submit (speed 1000).
LATE_COMPLETE = StageTimes(text=30.0, first=100.0, complete=800.0)
# Nothing happens for 10 s: a task that stays pending through the test.
NEVER = StageTimes(text=10_000.0, first=20_000.0, complete=30_000.0)
QUICK_RETRIES = (20.0, 40.0, 60.0)  # callback retries 20, 40, 60 ms apart at speed 1000


def client_for(
    sim: Simulator, receiver: CallbackReceiver | None, poll: PollPolicy | None = None
) -> AddVocalsClient:
    return AddVocalsClient(
        sim.api_key,
        base_url=sim.base_url,
        provider=sim.provider,
        receiver=receiver,
        poll=poll or PollPolicy.fast(),
        retry=RetryPolicy.no_wait(),
        callback_url=None if receiver is not None else "https://hooks.example.org/unused",
    )


def backend_size(receiver: CallbackReceiver) -> int:
    backend = receiver.backend
    assert isinstance(backend, InMemoryBackend)
    return len(backend)


async def event_log(task: VocalTask) -> list[tuple[str, str]]:
    return [
        (event.callback_type, str(event.extra.get("source", "callback")))
        async for event in task.events(timeout=5)
    ]


def details_times(sim: Simulator, task_id: str) -> list[float]:
    """When each record-info request for ``task_id`` arrived (monotonic)."""
    path = sim.profile.details_path
    return [r.at for r in sim.requests if r.path == path and r.query.get("taskId") == task_id]


@contextlib.asynccontextmanager
async def live(
    poll: PollPolicy | None = None, **sim_kwargs: Any
) -> AsyncIterator[tuple[Simulator, CallbackReceiver, AddVocalsClient]]:
    sim_kwargs.setdefault("speed", 1000)
    sim_kwargs.setdefault("seed", 0)
    async with (
        Simulator(**sim_kwargs) as sim,
        CallbackReceiver(secret=SECRET) as receiver,
        client_for(sim, receiver, poll) as client,
    ):
        yield sim, receiver, client


# ------------------------------------------------------------------------------ deadlines


@pytest.mark.parametrize(("wait", "stage"), [("text", "text"), ("complete", "complete")])
async def test_deadline_raises_after_one_last_poll(wait: str, stage: str) -> None:
    async with live(stage_times=NEVER) as (sim, _, client):
        task = await client.add_vocals(**REQUEST)
        started = time.monotonic()
        with pytest.raises(TaskTimeoutError) as caught:
            await getattr(task, wait)(timeout=0.3)
        raised = time.monotonic()
        error = caught.value
        assert (error.task_id, error.stage, error.timeout) == (task.task_id, stage, 0.3)
        assert isinstance(error, TimeoutError)
        assert task.task_id in str(error)
        assert 0.3 <= raised - started < 1.0
        # Callbacks were expected and the grace period (0.5 s) had not run out, so the
        # only poll is the last-chance one, at the deadline, before raising.
        polls = details_times(sim, task.task_id)
        assert len(polls) == 1
        assert started + 0.29 <= polls[0] <= raised
        assert task.stage is Stage.PENDING


async def test_the_last_poll_can_still_deliver_the_result() -> None:
    # Callbacks lost, and a grace period longer than the wait: only the final poll looks.
    patient = PollPolicy(grace=60.0, initial=0.1, maximum=0.3, min_interval=0.05)
    async with live(poll=patient) as (sim, _, client):
        sim.script("lost_all")
        task = await client.add_vocals(**REQUEST)
        started = time.monotonic()
        result = await task.complete(timeout=0.4)
        assert time.monotonic() - started >= 0.4
        assert (result.stage, result.source) == (Stage.COMPLETE, "poll")
        assert [t.id for t in result.tracks] == [t.id for t in sim.tasks[task.task_id].tracks]
        polls = details_times(sim, task.task_id)
        assert len(polls) == 1
        assert polls[0] >= started + 0.39


async def test_a_transient_poll_error_never_fails_the_wait() -> None:
    async with live() as (sim, _, client):
        sim.script("lost_all")
        task = await client.add_vocals(**REQUEST)
        sim.maintenance = True  # every API call answers 455 for a while
        waiter = asyncio.ensure_future(task.complete(timeout=5))
        await asyncio.sleep(1.0)
        assert not waiter.done()
        in_maintenance = sim.count(path=sim.profile.details_path, code=455)
        assert in_maintenance >= 2  # polled at least twice, and failed
        sim.maintenance = False
        result = await waiter
        assert (result.stage, result.source) == (Stage.COMPLETE, "poll")
        assert sim.count(path=sim.profile.details_path, code=200) >= 1
        assert await event_log(task) == [("complete", "poll")]


async def test_waiters_share_polls_at_the_per_task_minimum_interval() -> None:
    policy = PollPolicy(grace=0.0, initial=0.0, maximum=0.0, min_interval=0.25)
    async with Simulator(speed=1000, seed=0, stage_times=NEVER, details_rate_limit=None) as sim:
        client = AddVocalsClient(
            sim.api_key,
            base_url=sim.base_url,
            callback_url="https://hooks.example.org/unused",
            poll=policy,
            retry=RetryPolicy.no_wait(attempts=1),
        )
        async with client:
            task = await client.add_vocals(**REQUEST)
            started = time.monotonic()
            # Three waiters on one task share its polls: never closer than min_interval.
            results = await asyncio.gather(
                task.text(timeout=0.6),
                task.first(timeout=0.6),
                task.complete(timeout=0.6),
                return_exceptions=True,
            )
            assert [type(r) for r in results] == [TaskTimeoutError] * 3
            polls = details_times(sim, task.task_id)
            gaps = [b - a for a, b in itertools.pairwise(polls)]
            assert min(gaps) >= 0.24, gaps
            # 0, 0.25, 0.5 before the deadline. The poll at 0.5 s is the last check: one
            # 0.1 s later would break the minimum interval and tell nothing newer, so no
            # waiter sleeps past its deadline to make it.
            assert len(polls) == 3, [p - started for p in polls]
            assert polls[-1] - started >= 0.45
            assert time.monotonic() - started < 0.6 + 0.2


async def test_a_slow_poll_does_not_outlast_the_deadline() -> None:
    """Backoff inside a poll (here: maintenance answers, waited on for 1-2 s each) is cut
    at the deadline; only the bounded last-chance poll may follow."""
    slow_retries = RetryPolicy(
        attempts=5, wait_initial=2.0, wait_max=2.0, wait_jitter=0.0, maintenance_wait=2.0
    )
    policy = PollPolicy(grace=0.0, initial=0.1, maximum=0.1, min_interval=0.05)
    policy = attrs.evolve(policy, final_poll_timeout=0.3)
    async with Simulator(speed=1000, seed=0, stage_times=NEVER) as sim:
        client = AddVocalsClient(
            sim.api_key,
            base_url=sim.base_url,
            callback_url="https://hooks.example.org/unused",
            poll=policy,
            retry=slow_retries,
        )
        async with client:
            task = await client.add_vocals(**REQUEST)
            sim.maintenance = True
            started = time.monotonic()
            with pytest.raises(TaskTimeoutError):
                await task.complete(timeout=0.5)
            took = time.monotonic() - started
            assert 0.5 <= took < 1.2, took
            assert sim.count(path=sim.profile.details_path, code=455) >= 2


# ------------------------------------------------------------------ receiver restarts


async def test_restarted_receiver_with_the_same_secret_gets_the_callbacks() -> None:
    async with Simulator(speed=1000, seed=0, stage_times=LATE_COMPLETE) as sim:
        receiver_a = CallbackReceiver(secret=SECRET)
        await receiver_a.start()
        port = yarl.URL(receiver_a.url).port
        async with client_for(sim, receiver_a) as client_a:
            task = await client_a.add_vocals(**REQUEST)
            first = await task.first(timeout=5)
            assert first.source == "callback"
        task_id = task.task_id
        await receiver_a.aclose()
        assert receiver_a.stats.accepted == 2
        assert sim.tasks[task_id].stage == "first"

        # A new process: same secret, same address, a fresh client re-attaching by id.
        no_poll = PollPolicy(grace=30.0, initial=0.1, maximum=0.3, min_interval=0.05)
        async with (
            CallbackReceiver(secret=SECRET, port=port or 0) as receiver_b,
            client_for(sim, receiver_b, no_poll) as client_b,
        ):
            assert receiver_b.url == receiver_a.url
            again = client_b.task(task_id)
            assert again.stage is Stage.PENDING
            result = await again.complete(timeout=5)
            await sim.wait_idle()
            # Re-attached by id, the task has no URL of its own on record: the genuine
            # complete callback is not trusted with the result (another task's old URL
            # would pass the token check too), but it triggers a poll at once, well
            # within the 30 s grace period, and the API's own answer completes the task.
            assert (result.stage, result.source) == (Stage.COMPLETE, "poll")
            assert [t.id for t in result.tracks] == [t.id for t in sim.tasks[task_id].tracks]
            assert receiver_b.stats.ignored == 1
            assert receiver_b.stats.rejected == 0
            # Record-info once at once (FIRST_SUCCESS by then), once more on the callback.
            assert await event_log(again) == [("first", "poll"), ("complete", "poll")]
            assert len(details_times(sim, task_id)) == 2
            # The complete callback went to the URL the task was submitted with.
            (delivery,) = sim.deliveries_for(task_id, "complete")
            assert (delivery.url, delivery.status) == (sim.tasks[task_id].callback_url, 200)
            assert backend_size(receiver_b) == 0


async def test_restarted_receiver_with_another_secret_refuses_and_polling_finishes() -> None:
    async with Simulator(
        speed=1000, seed=0, stage_times=LATE_COMPLETE, retry_delays=QUICK_RETRIES
    ) as sim:
        receiver_a = CallbackReceiver(secret=SECRET)
        await receiver_a.start()
        port = yarl.URL(receiver_a.url).port
        async with client_for(sim, receiver_a) as client_a:
            task = await client_a.add_vocals(**REQUEST)
            await task.first(timeout=5)
        task_id = task.task_id
        await receiver_a.aclose()

        async with (
            CallbackReceiver(secret="a-different-secret-after-restart-99", port=port or 0) as b,
            client_for(sim, b) as client_b,
        ):
            again = client_b.task(task_id)
            result = await again.complete(timeout=5)
            await sim.wait_idle()
            assert (result.stage, result.source) == (Stage.COMPLETE, "poll")
            deliveries = sim.deliveries_for(task_id, "complete")
            assert [d.status for d in deliveries] == [403, 403, 403, 403]
            assert b.stats.rejected_token == 4
            assert b.stats.accepted == 0
            assert len(details_times(sim, task_id)) >= 1


# ------------------------------------------------------------------------------- shutdown


async def test_closing_the_receiver_leaves_polling_to_finish() -> None:
    async with Simulator(
        speed=1000, seed=0, stage_times=LATE_COMPLETE, retry_delays=QUICK_RETRIES
    ) as sim:
        receiver = CallbackReceiver(secret=SECRET)
        await receiver.start()
        async with client_for(sim, receiver) as client:
            task = await client.add_vocals(**REQUEST)
            waiter = asyncio.ensure_future(task.complete(timeout=5))
            await task.first(timeout=5)
            await receiver.aclose()
            assert backend_size(receiver) == 0
            result = await waiter
            await sim.wait_idle()
            assert (result.stage, result.source) == (Stage.COMPLETE, "poll")
            assert await event_log(task) == [
                ("text", "callback"),
                ("first", "callback"),
                ("complete", "poll"),
            ]
            # Nobody answered the complete callback any more.
            assert all(d.status is None for d in sim.deliveries_for(task.task_id, "complete"))
            # New tasks cannot register with a closed receiver.
            with pytest.raises(RuntimeError, match="closed"):
                await client.add_vocals(**REQUEST)


async def test_receiver_and_client_closed_raise_receiver_closed_error() -> None:
    async with Simulator(speed=1000, seed=0, stage_times=LATE_COMPLETE) as sim:
        receiver = CallbackReceiver(secret=SECRET)
        await receiver.start()
        client = client_for(sim, receiver)
        task = await client.add_vocals(**REQUEST)
        await task.first(timeout=5)
        waiter = asyncio.ensure_future(task.complete(timeout=5))
        await client.aclose()
        await asyncio.sleep(0.05)
        assert not waiter.done()  # callbacks can still come: it keeps waiting for them
        closed_at = time.monotonic()
        await receiver.aclose()
        with pytest.raises(ReceiverClosedError) as caught:
            await waiter
        assert time.monotonic() - closed_at < 0.2
        assert task.task_id in str(caught.value)
        with pytest.raises(ReceiverClosedError):
            await task.complete(timeout=5)
        # The stage reached before is still there.
        assert (await task.first(timeout=1)).stage is Stage.FIRST
        assert task.stage is Stage.FIRST


async def test_a_reattached_task_is_not_completed_through_another_tasks_old_url() -> None:
    """The attack on a restarted worker: a genuine old URL of task B (from a proxy log, or
    the callBackUrl record-info echoes) carries a forged complete for task A, with the
    attacker's track URLs. A, re-attached by id, must resolve with the API's tracks."""
    async with Simulator(speed=1000, seed=0, stage_times=LATE_COMPLETE) as sim:
        receiver_a = CallbackReceiver(secret=SECRET)
        await receiver_a.start()
        port = yarl.URL(receiver_a.url).port
        async with client_for(sim, receiver_a) as client_a:
            victim = await client_a.add_vocals(**REQUEST)
            other = await client_a.add_vocals(**REQUEST)
            await asyncio.gather(victim.first(timeout=5), other.first(timeout=5))
        await receiver_a.aclose()
        old_url = sim.tasks[other.task_id].callback_url

        no_poll = PollPolicy(grace=30.0, initial=0.1, maximum=0.3, min_interval=0.05)
        async with (
            CallbackReceiver(secret=SECRET, port=port or 0) as receiver_b,
            client_for(sim, receiver_b, no_poll) as client_b,
        ):
            again = client_b.task(victim.task_id)
            await again.first(timeout=5)  # the first poll, at once
            forged = {
                "code": 200,
                "msg": "All generated successfully.",
                "data": {
                    "callbackType": "complete",
                    "task_id": victim.task_id,
                    "data": [{"id": "evil", "audio_url": "https://attacker.example/x.mp3"}],
                },
            }
            async with (
                aiohttp.ClientSession() as session,
                session.post(old_url, json=forged) as answer,
            ):
                assert answer.status == 200  # a genuine token: acknowledged, not trusted
            result = await again.complete(timeout=5)
            assert result.source == "poll"
            assert "evil" not in [t.id for t in result.tracks]
            assert [t.id for t in result.tracks] == [t.id for t in sim.tasks[victim.task_id].tracks]
