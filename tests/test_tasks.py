"""VocalTask: the per-task stage machine, and waits against the live simulator.

The stage machine is one-way, failure terminal, every waiter resolved. Waits must end: at
their deadline (after one last look at the details endpoint), by polling when callbacks
stop or the receiver goes away, and by callbacks again once a receiver with the same
secret is back on the same address.
"""

from __future__ import annotations

import asyncio
import itertools
import time

import aiohttp
import attrs
import pytest
import yarl
from aiohttp import web
from helpers import (
    DETAILS,
    OTHER_TASK,
    QUICK_RETRIES,
    REQUEST,
    SECRET,
    SUBMIT,
    TASK,
    FakeApi,
    backend_size,
    client_for,
    envelope,
    event_log,
    live,
)
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule
from strategies import STAGE_EVENTS

from addvocals_async import (
    AddVocalsClient,
    CallbackEvent,
    CallbackReceiver,
    NotFoundError,
    PollPolicy,
    ReceiverClosedError,
    RetryPolicy,
    Stage,
    TaskFailedError,
    TaskTimeoutError,
    Track,
)
from addvocals_async._models import TaskDetails
from addvocals_async._providers import get_provider
from addvocals_async._tasks import TaskState, VocalTask, event_from_details
from addvocals_async.testing import Simulator, StageTimes

APIBOX = get_provider("apibox")
KIE = get_provider("kie")


def expected_stage(sequence: list[CallbackEvent]) -> Stage:
    """A reference model: the highest stage seen before the first terminal event."""
    stage = Stage.PENDING
    for event in sequence:
        if event.task_id != TASK or stage.is_terminal:
            continue
        if event.callback_type == "error" or event.code != 200:
            stage = Stage.FAILED
        elif event.callback_type in ("text", "first", "complete"):
            new = Stage(event.callback_type)
            if new.rank > stage.rank:
                stage = new
    return stage


@given(st.lists(STAGE_EVENTS, max_size=12))
def test_any_sequence_converges_to_the_reference_stage(sequence: list[CallbackEvent]) -> None:
    state = TaskState(TASK, APIBOX)
    accepted = [event for event in sequence if state.apply(event)]
    assert state.stage is expected_stage(sequence)
    assert state.events == accepted
    # Every accepted event moved the stage strictly forward (or failed it once).
    ranks = [e.stage.rank for e in accepted if e.stage is not None]
    assert ranks == sorted(set(ranks))
    if state.stage is Stage.FAILED:
        assert state.failure is not None
        assert accepted[-1].is_failure
        with pytest.raises(TaskFailedError):
            state.result_for(Stage.COMPLETE)
    else:
        for stage in (Stage.TEXT, Stage.FIRST, Stage.COMPLETE):
            reached = state.result_for(stage)
            assert (reached is not None) == (stage.rank <= state.stage.rank)


class StageMachine(RuleBasedStateMachine):
    """Random interleavings of callbacks and polls: the stage only moves forward."""

    def __init__(self) -> None:
        super().__init__()
        self.state = TaskState(TASK, KIE)
        self.previous = Stage.PENDING
        self.was_terminal = False

    @rule(event=STAGE_EVENTS)
    def callback(self, event: CallbackEvent) -> None:
        self.previous = self.state.stage
        self.was_terminal = self.previous.is_terminal
        self.state.apply(event)

    @rule(
        status=st.sampled_from(
            [
                "PENDING",
                "TEXT_SUCCESS",
                "FIRST_SUCCESS",
                "SUCCESS",
                "GENERATE_AUDIO_FAILED",
                "SOMETHING_NEW",
                "CALLBACK_EXCEPTION",
            ]
        )
    )
    def poll(self, status: str) -> None:
        self.previous = self.state.stage
        self.was_terminal = self.previous.is_terminal
        details = TaskDetails(task_id=TASK, status=status, error_code=501)
        event = event_from_details(details)
        if event is not None:
            self.state.apply(event)

    @invariant()
    def only_forward(self) -> None:
        if self.was_terminal:
            assert self.state.stage is self.previous
        elif self.state.stage is not Stage.FAILED:
            assert self.state.stage.rank >= self.previous.rank

    @invariant()
    def earlier_stages_resolved(self) -> None:
        if self.state.stage is not Stage.FAILED:
            for stage in (Stage.TEXT, Stage.FIRST, Stage.COMPLETE):
                if stage.rank <= self.state.stage.rank:
                    assert self.state.result_for(stage) is not None


TestStageMachine = StageMachine.TestCase
TestStageMachine.settings = settings(max_examples=150, stateful_step_count=15)


def test_kie_531_failure_says_credits_were_refunded() -> None:
    state = TaskState(TASK, KIE)
    state.apply(CallbackEvent(task_id=TASK, callback_type="error", code=531, msg="failed"))
    assert state.failure is not None
    assert state.failure.code == 531
    assert state.failure.msg == "failed"  # the API's words, verbatim
    assert state.failure.meaning is not None
    assert "refunded" in state.failure.meaning  # the provider's reading, apart
    assert "refunded" in str(state.failure)
    assert state.failure.task_id == TASK


def test_a_callback_before_the_task_id_is_known_binds_it() -> None:
    state = TaskState(None, APIBOX)
    assert state.apply(CallbackEvent(task_id=TASK, callback_type="text", code=200))
    assert state.task_id == TASK
    assert not state.apply(CallbackEvent(task_id=OTHER_TASK, callback_type="first", code=200))


class NoPolling:
    """A details source that can no longer be asked (like a closed client's): the waits
    below are fed by ``state.apply`` alone."""

    can_poll = False

    async def details(self, task_id: str, *, attempts: int | None = None) -> TaskDetails:
        raise AssertionError(f"task {task_id} polled, yet polling is impossible")


def vocal_task(state: TaskState) -> VocalTask:
    return VocalTask(state, NoPolling(), PollPolicy(default_timeout=5.0))


@settings(max_examples=60, deadline=None)
@given(st.lists(STAGE_EVENTS, max_size=8), st.sampled_from(["complete", "error"]))
def test_no_waiter_hangs_once_the_task_ends(sequence: list[CallbackEvent], end: str) -> None:
    async def scenario() -> None:
        state = TaskState(TASK, APIBOX, callbacks_expected=True)
        task = vocal_task(state)
        waiters = [
            asyncio.ensure_future(wait(timeout=2.0))
            for wait in (task.text, task.first, task.complete)
        ]
        collected: list[CallbackEvent] = []

        async def consume() -> None:
            async for event in task.events(timeout=2.0):
                collected.append(event)

        consumer = asyncio.ensure_future(consume())
        await asyncio.sleep(0)
        for event in sequence:
            state.apply(event)
            await asyncio.sleep(0)
        state.apply(
            CallbackEvent(task_id=TASK, callback_type=end, code=200 if end == "complete" else 500)
        )
        outcomes = await asyncio.gather(*waiters, return_exceptions=True)
        await consumer
        assert not any(isinstance(o, TaskTimeoutError) for o in outcomes)
        assert collected == state.events
        assert state.stage.is_terminal
        if state.stage is Stage.COMPLETE:
            assert all(o is not None and not isinstance(o, BaseException) for o in outcomes)
        else:
            assert isinstance(outcomes[2], TaskFailedError)

    asyncio.run(scenario())


async def test_a_wait_without_callbacks_times_out_with_the_stage_named() -> None:
    state = TaskState(TASK, APIBOX, callbacks_expected=True)
    task = vocal_task(state)
    state.apply(CallbackEvent(task_id=TASK, callback_type="text", code=200))
    assert (await task.text(timeout=0.05)).stage is Stage.TEXT
    with pytest.raises(TaskTimeoutError) as caught:
        await task.complete(timeout=0.05)
    assert caught.value.task_id == TASK
    assert caught.value.stage == "complete"
    assert isinstance(caught.value, TimeoutError)


async def test_a_later_stage_resolves_earlier_waiters_with_its_data() -> None:
    state = TaskState(TASK, APIBOX, callbacks_expected=True)
    task = vocal_task(state)
    text_wait = asyncio.ensure_future(task.text(timeout=2))
    await asyncio.sleep(0)
    track = Track(id="t1", audio_url="https://files.example.org/t1.mp3")
    state.apply(CallbackEvent(task_id=TASK, callback_type="complete", code=200, tracks=(track,)))
    result = await text_wait
    assert result.stage is Stage.COMPLETE
    assert result.tracks == (track,)
    assert task.stage is Stage.COMPLETE


async def test_waiters_fail_when_neither_callbacks_nor_polling_can_come() -> None:
    from addvocals_async import ReceiverClosedError

    state = TaskState(TASK, APIBOX, callbacks_expected=True)
    task = vocal_task(state)
    wait = asyncio.ensure_future(task.complete(timeout=5))
    await asyncio.sleep(0.01)
    state.stop_expecting_callbacks()
    with pytest.raises(ReceiverClosedError):
        await wait


# ------------------------------------------------------------------ waits, live

# Text and first track quickly, the complete stage 0.8 s after the submit (speed 1000).
LATE_COMPLETE = StageTimes(text=30.0, first=100.0, complete=800.0)
# Nothing happens for 10 s: a task that stays pending through the test.
NEVER = StageTimes(text=10_000.0, first=20_000.0, complete=30_000.0)


def details_times(sim: Simulator, task_id: str) -> list[float]:
    """When each record-info request for ``task_id`` arrived (monotonic)."""
    path = sim.profile.details_path
    return [r.at for r in sim.requests if r.path == path and r.query.get("taskId") == task_id]


@pytest.mark.real_timing
async def test_next_poll_in_is_that_of_the_waiter_for_the_nearest_stage() -> None:
    """The progress line's "next poll in N s" is when a waiter really polls. Polled (no
    receiver), just submitted: a wait for the next stage, as ``events()`` and the command
    line follow a task, polls when text nears (4 + 0.3 x 27 s = 12.1 s, +-10 %), a wait
    for ``complete`` 30 s in; the display used to say 30 s for both."""
    state = TaskState(TASK, APIBOX)
    task = VocalTask(state, NoPolling(), PollPolicy())
    assert task.next_poll_in == pytest.approx(30.0, rel=0.11)  # nobody waits yet
    completing = asyncio.ensure_future(task.complete(timeout=60))
    await asyncio.sleep(0)
    assert task.next_poll_in == pytest.approx(30.0, rel=0.11)
    following = asyncio.ensure_future(anext(task.events(timeout=60)))
    await asyncio.sleep(0)
    assert task.next_poll_in == pytest.approx(12.1, rel=0.11)
    following.cancel()
    await asyncio.gather(following, return_exceptions=True)
    assert task.next_poll_in == pytest.approx(30.0, rel=0.11)
    completing.cancel()
    await asyncio.gather(completing, return_exceptions=True)


async def test_handles_of_one_task_share_its_poll_floor() -> None:
    """With a receiver, ``client.task(id)`` gives a new handle on the task's one state each
    time; each handle polled on its own, so ten handles awaited at once asked about one
    task ten times as often as ``min_interval`` allows (kie allows 3 a second per task)."""
    policy = PollPolicy(
        stage_times=(0, 0, 0), grace=0.0, initial=0.0, maximum=0.0, min_interval=2.0
    )  # polls due at once, 20 ms apart under the testing switch
    floor = policy.poll_floor
    async with live(poll=policy, stage_times=NEVER) as env:
        task = await env.client.add_vocals(**REQUEST)
        handles = [task] + [env.client.task(task.task_id) for _ in range(9)]
        results = await asyncio.gather(
            *(handle.complete(timeout=0.3) for handle in handles), return_exceptions=True
        )
        assert {type(r) for r in results} == {TaskTimeoutError}
        polls = details_times(env.sim, task.task_id)
        # One per floor, and the last-chance polls at the deadline (one per handle).
        assert len(polls) <= 0.3 / floor + len(handles) + 1, len(polls)


# ------------------------------------------------------------------------------ deadlines


@pytest.mark.real_timing
@pytest.mark.parametrize(("wait", "stage"), [("text", "text"), ("complete", "complete")])
async def test_deadline_raises_after_one_last_poll(wait: str, stage: str) -> None:
    async with live(stage_times=NEVER) as env:
        sim, client = env.sim, env.client
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


@pytest.mark.real_timing
async def test_the_last_poll_can_still_deliver_the_result() -> None:
    # Callbacks lost, and a grace period longer than the wait: only the final poll looks.
    patient = PollPolicy(grace=60.0, initial=0.1, maximum=0.3, min_interval=0.05)
    async with live(poll=patient) as env:
        sim, client = env.sim, env.client
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
    async with live() as env:
        sim, client = env.sim, env.client
        sim.script("lost_all")
        task = await client.add_vocals(**REQUEST)
        sim.maintenance = True  # every API call answers 455 for a while
        waiter = asyncio.ensure_future(task.complete(timeout=5))
        # Maintenance lasts until the task is complete and polled at least twice (within
        # the first second; under the testing switch well before it).
        deadline = time.monotonic() + 1.0
        while (
            sim.count(path=sim.profile.details_path, code=455) < 2
            or sim.tasks[task.task_id].stage != "complete"
        ):
            assert time.monotonic() < deadline, "fewer than two polls in a second"
            await asyncio.sleep(0.01)
        assert not waiter.done()
        in_maintenance = sim.count(path=sim.profile.details_path, code=455)
        assert in_maintenance >= 2  # polled at least twice, and failed
        sim.maintenance = False
        result = await waiter
        assert (result.stage, result.source) == (Stage.COMPLETE, "poll")
        assert sim.count(path=sim.profile.details_path, code=200) >= 1
        assert await event_log(task) == [("complete", "poll")]


@pytest.mark.real_timing
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
            # 0.25 and 0.5 s before the deadline (the submit was the request at 0). The
            # poll at 0.5 s is the last check: one 0.1 s later would break the minimum
            # interval and tell nothing newer, so no waiter sleeps past its deadline.
            assert len(polls) == 2, [p - started for p in polls]
            assert polls[0] - started >= 0.2
            assert polls[-1] - started >= 0.45
            assert time.monotonic() - started < 0.6 + 0.2


@pytest.mark.real_timing
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


@pytest.mark.real_timing
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


@pytest.mark.real_timing
async def test_a_callback_naming_a_reattached_task_polls_before_the_poll_interval() -> None:
    """The README promises a re-attached task "polls again the moment a callback names it":
    a callback must not wait out the polling interval (up to 30 s by default), only the
    per-task floor (``min_interval``)."""
    async with Simulator(speed=1000, seed=0, stage_times=LATE_COMPLETE) as sim:
        async with (
            CallbackReceiver(secret=SECRET) as receiver_a,
            client_for(sim, receiver_a) as client_a,
        ):
            task = await client_a.add_vocals(**REQUEST)
            await task.first(timeout=5)
        port = yarl.URL(receiver_a.url).port
        slow_schedule = PollPolicy(grace=30.0, initial=30.0, maximum=30.0, min_interval=0.05)
        async with (
            CallbackReceiver(secret=SECRET, port=port or 0) as receiver_b,
            client_for(sim, receiver_b, slow_schedule) as client_b,
        ):
            again = client_b.task(task.task_id)
            started = time.monotonic()
            # The complete callback comes within a second; the poll before the deadline
            # (which also finds the result) must not be what resolves the wait.
            result = await again.complete(timeout=10)
            took = time.monotonic() - started
            assert took < 3.0, took
            assert (result.stage, result.source) == (Stage.COMPLETE, "poll")
            assert receiver_b.stats.ignored == 1


@pytest.mark.real_timing
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


# ---------------- deadlines and polling


async def test_a_short_wait_does_not_overshoot_while_another_waiter_polls(
    fake_api: FakeApi,
) -> None:
    async def submit(request: web.Request) -> web.Response:
        return envelope({"taskId": TASK})

    async def slow_details(request: web.Request) -> web.Response:
        await fake_api.hang()  # answers only when the test is over
        return envelope({"taskId": TASK, "status": "PENDING"})

    base = await fake_api({("POST", SUBMIT): submit, ("GET", DETAILS): slow_details})
    policy = PollPolicy(grace=0, initial=0.05, maximum=0.05, min_interval=0.05,
                        final_poll_timeout=0.3)  # fmt: skip
    client = AddVocalsClient("k", base_url=base, callback_url="https://h.example.org/c",
                             poll=policy, request_timeout=10)  # fmt: skip
    async with client:
        task = await client.add_vocals(**REQUEST)
        long_wait = asyncio.ensure_future(task.complete(timeout=30))
        await asyncio.sleep(0.1)  # its poll is now in flight, holding the lock
        started = time.monotonic()
        with pytest.raises(TaskTimeoutError):
            await task.text(timeout=0.3)
        took = time.monotonic() - started
        long_wait.cancel()
    assert took < 0.3 + 0.3 + 0.3  # deadline + bounded last chance + slack


async def test_a_nan_timeout_is_refused() -> None:
    client = AddVocalsClient("k", callback_url="https://h.example.org/c")
    await client.aclose()
    task = client.task(TASK)
    with pytest.raises(ValueError, match="seconds"):
        await task.complete(timeout=float("nan"))


async def test_a_reattached_unknown_task_fails_fast() -> None:
    async with Simulator(speed=1000, seed=0) as sim:
        client = AddVocalsClient(sim.api_key, base_url=sim.base_url, poll=PollPolicy.fast())
        async with client:
            started = time.monotonic()
            with pytest.raises(NotFoundError):
                await client.task("0" * 32).complete(timeout=20)
    assert time.monotonic() - started < 2.0


async def test_failure_seen_only_by_polling_fails_the_wait(sim: Simulator) -> None:
    sim.script("failed_status_only")
    async with client_for(sim) as client:
        task = await client.add_vocals(**REQUEST)
        with pytest.raises(TaskFailedError) as caught:
            await task.complete(timeout=10)
    assert caught.value.task_id == task.task_id
    assert caught.value.status in (
        "GENERATE_AUDIO_FAILED",
        "SENSITIVE_WORD_ERROR",
        "CREATE_TASK_FAILED",
    )
    assert task.stage is Stage.FAILED


async def test_reattach_by_task_id_polls_to_the_result(sim: Simulator) -> None:
    sim.script("lost_all")
    async with client_for(sim) as first:
        task_id = (await first.add_vocals(**REQUEST)).task_id
    async with client_for(sim) as second:
        result = await second.task(task_id).complete(timeout=10)
    assert result.task_id == task_id
    assert len(result.tracks) == 2


@pytest.mark.real_timing
async def test_polling_respects_the_minimum_interval(sim: Simulator) -> None:
    sim.script("lost_all")
    policy = PollPolicy(grace=0, initial=0.01, maximum=0.01, min_interval=0.1, default_timeout=10)
    async with client_for(sim, poll=policy) as client:
        task = await client.add_vocals(**REQUEST)
        await asyncio.gather(task.text(), task.first(), task.complete())
    polls = sorted(r.at for r in sim.requests if r.path == DETAILS)
    gaps = [b - a for a, b in itertools.pairwise(polls)]
    assert polls, "the task must have been polled"
    assert min(gaps, default=1.0) >= 0.09  # shared by all three waiters, never faster


@pytest.mark.real_timing
async def test_a_failed_poll_is_not_retried_in_a_burst(sim: Simulator) -> None:
    """Each poll is one request; the poll schedule is the retry (maintenance answers here)."""
    sim.script("lost_all")
    # Five poll intervals in the wait, as ever: 0.1 s apart in 0.5 s (it was 0.2 in 1.0).
    policy = PollPolicy(grace=0, initial=0.1, maximum=0.1, min_interval=0.1, default_timeout=5)
    async with client_for(sim, poll=policy, retry=RetryPolicy.no_wait(attempts=5)) as client:
        task = await client.add_vocals(**REQUEST)
        sim.maintenance = True
        with pytest.raises(TaskTimeoutError):
            await task.complete(timeout=0.5)
    polls = [r for r in sim.requests if r.path == DETAILS]
    # About one per 0.1 s plus the last-chance poll; five attempts each would be ~30.
    assert 3 <= len(polls) <= 9
    assert all(r.code == 455 for r in polls)
