"""The per-task stage machine: one-way, failure terminal, every waiter resolved."""

from __future__ import annotations

import asyncio

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from addvocals_async import (
    CallbackEvent,
    PollPolicy,
    Stage,
    TaskFailedError,
    TaskTimeoutError,
    Track,
)
from addvocals_async._models import TaskDetails
from addvocals_async._providers import get_provider
from addvocals_async._tasks import TaskState, VocalTask, event_from_details

TASK = "4d8e0f3a91b27c65e0a4f1d9b3c87e52"
OTHER = "7e82ee581cec5cc6e587cc02409dab36"
APIBOX = get_provider("apibox")
KIE = get_provider("kie")

callback_types = st.sampled_from(["text", "first", "complete", "error", "progress", ""])
codes = st.sampled_from([200, 200, 200, 400, 451, 500, 531])
events = st.builds(
    CallbackEvent,
    task_id=st.sampled_from([TASK, TASK, TASK, OTHER]),
    callback_type=callback_types,
    code=codes,
    msg=st.text(max_size=10),
    tracks=st.lists(st.builds(Track, id=st.uuids().map(str)), max_size=2).map(tuple),
)


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


@given(st.lists(events, max_size=12))
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

    @rule(event=events)
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
    assert "refunded" in state.failure.msg
    assert state.failure.task_id == TASK


def test_a_callback_before_the_task_id_is_known_binds_it() -> None:
    state = TaskState(None, APIBOX)
    assert state.apply(CallbackEvent(task_id=TASK, callback_type="text", code=200))
    assert state.task_id == TASK
    assert not state.apply(CallbackEvent(task_id=OTHER, callback_type="first", code=200))


class NoPolling:
    """A details source that can no longer be asked (like a closed client's): the waits
    below are fed by ``state.apply`` alone."""

    can_poll = False

    async def details(self, task_id: str, *, attempts: int | None = None) -> TaskDetails:
        raise AssertionError(f"task {task_id} polled, yet polling is impossible")


def vocal_task(state: TaskState) -> VocalTask:
    return VocalTask(state, NoPolling(), PollPolicy(default_timeout=5.0))


@settings(max_examples=60, deadline=None)
@given(st.lists(events, max_size=8), st.sampled_from(["complete", "error"]))
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
