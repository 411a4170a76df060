"""The callback receiver and task futures, over real HTTP against the simulator.

Every lifecycle scenario of the simulator runs through ``AddVocalsClient`` and an embedded
``CallbackReceiver`` on 127.0.0.1: the waits' results, ``task.stage``, ``task.events()``
and the receiver's counters are checked against what the simulator really sent. Then the
receiver's other forms (mounted, framework-agnostic), how it answers, its hooks, and
1,000 concurrent tasks with a mixed fault schedule.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import json
import logging
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from helpers import (
    CALLBACK,
    POLL,
    QUICK_RETRIES,
    REQUEST,
    SECRET,
    backend_size,
    event_log,
    live,
    registered,
)

from addvocals_async import (
    RECEIVER_KEY,
    AddVocalsClient,
    CallbackEvent,
    CallbackReceiver,
    PollPolicy,
    ReceiverResponse,
    RetryPolicy,
    Stage,
    TaskFailedError,
    TaskResult,
    VocalTask,
)
from addvocals_async.testing import SimTask, Simulator

# Real poll timings throughout: callbacks, not polls, must deliver here, and the grace
# period before polling (0.5 s in PollPolicy.fast) is what lets them.
pytestmark = pytest.mark.real_timing

# When the simulator at speed 1000 reaches text, first and complete (the API's 30, 100
# and 180 s): under real timings a PollPolicy's default stage times would put the first
# poll for a lost callback 45 s after the submit, past these tests' deadlines.
SIM_STAGE_TIMES = (0.03, 0.1, 0.18)

# The receiver's tests also send the optional fields a person most often sets.
FULL_REQUEST: dict[str, Any] = {**REQUEST, "vocal_gender": "f", "style_weight": 0.61}


async def submit(client: AddVocalsClient) -> VocalTask:
    return await client.add_vocals(**FULL_REQUEST)


def check_complete(result: TaskResult, sim_task: SimTask, source: str) -> None:
    """The complete result carries the simulator's two finished tracks."""
    assert result.stage is Stage.COMPLETE
    assert result.task_id == sim_task.task_id
    assert result.source == source
    assert [t.id for t in result.tracks] == [t.id for t in sim_task.tracks]
    assert [t.audio_url for t in result.tracks] == [t.audio_url for t in sim_task.tracks]
    assert all(
        t.duration == s.duration for t, s in zip(result.tracks, sim_task.tracks, strict=True)
    )


# ----------------------------------------------------------------- successful lifecycles


@dataclasses.dataclass(frozen=True)
class Expected:
    sent: list[str]  # callbackType of each first delivery attempt, in sending order
    events: list[tuple[str, str]]  # what task.events() yields
    text: Stage  # the stage of the result text() returns
    first: Stage
    accepted: int
    ignored: int
    polled: bool  # whether the details endpoint had to be asked


TEXT_CB = ("text", CALLBACK)
FIRST_CB = ("first", CALLBACK)
COMPLETE_CB = ("complete", CALLBACK)
COMPLETE_POLL = ("complete", POLL)

# case -> (scenario, its options, what must happen)
SUCCESSES: dict[str, tuple[str, dict[str, Any], Expected]] = {
    "normal": (
        "normal",
        {},
        Expected(
            ["text", "first", "complete"],
            [TEXT_CB, FIRST_CB, COMPLETE_CB],
            Stage.TEXT,
            Stage.FIRST,
            3,
            0,
            False,
        ),
    ),
    "complete_only": (
        "complete_only",
        {},
        Expected(["complete"], [COMPLETE_CB], Stage.COMPLETE, Stage.COMPLETE, 1, 0, False),
    ),
    "skip_text": (
        "skip_text",
        {},
        Expected(
            ["first", "complete"], [FIRST_CB, COMPLETE_CB], Stage.FIRST, Stage.FIRST, 2, 0, False
        ),
    ),
    "duplicates": (
        "duplicates",
        {},
        Expected(
            ["text", "text", "first", "first", "complete", "complete"],
            [TEXT_CB, FIRST_CB, COMPLETE_CB],
            Stage.TEXT,
            Stage.FIRST,
            3,
            3,
            False,
        ),
    ),
    "duplicates_x3": (
        "duplicates",
        {"copies": 3},
        Expected(
            ["text"] * 3 + ["first"] * 3 + ["complete"] * 3,
            [TEXT_CB, FIRST_CB, COMPLETE_CB],
            Stage.TEXT,
            Stage.FIRST,
            3,
            6,
            False,
        ),
    ),
    "out_of_order": (
        "out_of_order",
        {},
        Expected(
            ["complete", "first", "text"],
            [COMPLETE_CB],
            Stage.COMPLETE,
            Stage.COMPLETE,
            1,
            2,
            False,
        ),
    ),
    "early_callback": (
        "early_callback",
        {},
        Expected(
            ["text", "first", "complete"],
            [TEXT_CB, FIRST_CB, COMPLETE_CB],
            Stage.TEXT,
            Stage.FIRST,
            3,
            0,
            False,
        ),
    ),
    "lost_all": (
        "lost_all",
        {},
        Expected([], [COMPLETE_POLL], Stage.COMPLETE, Stage.COMPLETE, 0, 0, True),
    ),
    "lost_complete": (
        "lost_complete",
        {},
        Expected(
            ["text", "first"],
            [TEXT_CB, FIRST_CB, COMPLETE_POLL],
            Stage.TEXT,
            Stage.FIRST,
            2,
            0,
            True,
        ),
    ),
    "callback_exception": (
        "callback_exception",
        {},
        Expected([], [COMPLETE_POLL], Stage.COMPLETE, Stage.COMPLETE, 0, 0, True),
    ),
    "unknown_type": (
        "unknown_type",
        {},
        Expected(
            ["text", "progress", "first", "complete"],
            [TEXT_CB, FIRST_CB, COMPLETE_CB],
            Stage.TEXT,
            Stage.FIRST,
            3,
            1,
            False,
        ),
    ),
}


@pytest.mark.parametrize("provider", ["apibox", "kie"])
@pytest.mark.parametrize("case", sorted(SUCCESSES))
async def test_successful_lifecycle(case: str, provider: str) -> None:
    scenario, options, expected = SUCCESSES[case]
    async with live(provider) as env:
        env.sim.script(scenario, **options)
        task = await submit(env.client)
        sim_task = env.sim.tasks[task.task_id]
        assert sim_task.scenario == scenario
        text, first, complete = await asyncio.gather(
            task.text(timeout=5), task.first(timeout=5), task.complete(timeout=5)
        )
        await env.sim.wait_idle()

        source = expected.events[-1][1]
        check_complete(complete, sim_task, source)
        assert task.stage is Stage.COMPLETE
        assert task.failure is None
        assert text.stage is expected.text
        assert first.stage is expected.first
        if expected.first is Stage.FIRST:
            # The first track is final, the second still partial (API-SPEC §4.3).
            assert first.tracks[0].audio_url == sim_task.tracks[0].audio_url
            assert first.tracks[1].audio_url == ""
            assert first.tracks[1].duration is None
        if expected.text is Stage.TEXT:
            assert text.tracks == ()
        assert await event_log(task) == expected.events
        assert env.sim.callback_types(task.task_id) == expected.sent
        # Every attempt was acknowledged with 2xx: nothing is retried.
        deliveries = env.sim.deliveries_for(task.task_id)
        assert [d.status for d in deliveries] == [200] * len(expected.sent)
        stats = env.receiver.stats
        assert (stats.accepted, stats.ignored, stats.orphaned, stats.rejected) == (
            expected.accepted,
            expected.ignored,
            0,
            0,
        )
        assert (env.details_requests() > 0) is expected.polled
        assert backend_size(env.receiver) == 0


async def test_unknown_type_is_acknowledged_and_ignored() -> None:
    async with live() as env:
        env.sim.script("unknown_type", callback_type="vocal_mix_progress")
        task = await submit(env.client)
        await task.complete(timeout=5)
        await env.sim.wait_idle()
        unknown = env.sim.deliveries_for(task.task_id, "vocal_mix_progress")
        assert [d.status for d in unknown] == [200]
        assert await event_log(task) == [TEXT_CB, FIRST_CB, COMPLETE_CB]
        assert env.receiver.stats.ignored == 1
        assert env.receiver.stats.accepted == 3


async def test_all_early_callbacks_beat_the_submit_answer() -> None:
    async with live() as env:
        env.sim.script("early_callback", all_early=True)
        task = await submit(env.client)
        returned = time.monotonic()
        # Every callback was delivered and answered before add_vocals returned ...
        sent = env.sim.deliveries_for(task.task_id)
        assert [d.callback_type for d in sent] == ["text", "first", "complete"]
        assert all(d.ok and d.answered_at is not None for d in sent)
        assert max(d.answered_at or 0.0 for d in sent) < returned
        # ... and none was lost: the task is already complete, by callback.
        assert task.stage is Stage.COMPLETE
        result = await task.complete(timeout=1)
        check_complete(result, env.sim.tasks[task.task_id], CALLBACK)
        assert (await task.text(timeout=1)).stage is Stage.TEXT
        assert await event_log(task) == [TEXT_CB, FIRST_CB, COMPLETE_CB]
        assert env.receiver.stats.accepted == 3
        assert env.details_requests() == 0
        assert backend_size(env.receiver) == 0


async def test_early_text_callback_is_delivered_before_the_answer() -> None:
    async with live() as env:
        env.sim.script("early_callback")
        task = await submit(env.client)
        assert task.stage is Stage.TEXT  # the text callback came inside the submit
        result = await task.complete(timeout=5)
        assert result.source == CALLBACK
        assert await event_log(task) == [TEXT_CB, FIRST_CB, COMPLETE_CB]


# ------------------------------------------------------------------------------ failures

DOCUMENTED_FAILURES = [
    ("apibox", 400, "content-policy"),
    ("apibox", 451, "could not be downloaded"),
    ("apibox", 500, "server error"),
    ("sunoapi", 451, "could not be downloaded"),
    ("kie", 400, "copyrighted"),
    ("kie", 408, "timed out"),
    ("kie", 413, "existing work"),
    ("kie", 500, "server error"),
    ("kie", 501, "audio generation failed"),
    ("kie", 531, "refunded"),
]


@pytest.mark.parametrize(("provider", "code", "meaning"), DOCUMENTED_FAILURES)
async def test_error_callback_fails_every_waiter(provider: str, code: int, meaning: str) -> None:
    async with live(provider) as env:
        env.sim.script("error", error_code=code)
        task = await submit(env.client)
        waits = await asyncio.gather(
            task.text(timeout=5),
            task.first(timeout=5),
            task.complete(timeout=5),
            return_exceptions=True,
        )
        await env.sim.wait_idle()
        for error in waits:
            assert isinstance(error, TaskFailedError)
            assert error.task_id == task.task_id
            assert error.code == code
            assert meaning in error.msg.lower()
            assert error.msg == env.sim.tasks[task.task_id].error_message
        assert waits[0] is waits[1] is waits[2] is task.failure
        assert task.stage is Stage.FAILED
        assert await event_log(task) == [("error", CALLBACK)]
        assert env.sim.callback_types(task.task_id) == ["error"]
        assert env.receiver.stats.accepted == 1
        assert env.details_requests() == 0
        assert backend_size(env.receiver) == 0


async def test_kie_531_says_the_credits_were_refunded() -> None:
    async with live("kie") as env:
        env.sim.script("error", error_code=531, error_message="Generation failed")
        credits_before = env.sim.credits
        task = await submit(env.client)
        with pytest.raises(TaskFailedError) as caught:
            await task.complete(timeout=5)
        assert caught.value.code == 531
        assert caught.value.msg == "Generation failed"  # the API's words, verbatim
        assert "refunded" in (caught.value.meaning or "")
        assert "refunded" in str(caught.value)
        assert env.sim.credits == credits_before  # the simulator gave them back


async def test_fail_after_first() -> None:
    async with live() as env:
        env.sim.script("fail_after_first", error_code=500)
        task = await submit(env.client)
        text, first, complete = await asyncio.gather(
            task.text(timeout=5),
            task.first(timeout=5),
            task.complete(timeout=5),
            return_exceptions=True,
        )
        assert isinstance(text, TaskResult)
        assert text.stage is Stage.TEXT
        assert isinstance(first, TaskResult)
        assert first.stage is Stage.FIRST
        assert first.tracks[0].audio_url == env.sim.tasks[task.task_id].tracks[0].audio_url
        assert isinstance(complete, TaskFailedError)
        assert (complete.task_id, complete.code) == (task.task_id, 500)
        # A later wait still gets the first track, and the same failure for complete.
        assert (await task.first(timeout=1)) == first
        with pytest.raises(TaskFailedError) as again:
            await task.complete(timeout=1)
        assert again.value is complete
        assert task.stage is Stage.FAILED
        assert await event_log(task) == [TEXT_CB, FIRST_CB, ("error", CALLBACK)]
        await env.sim.wait_idle()
        assert env.receiver.stats.accepted == 3
        assert backend_size(env.receiver) == 0


@pytest.mark.parametrize(
    ("provider", "code", "status"),
    [
        ("apibox", 400, "SENSITIVE_WORD_ERROR"),
        ("apibox", 451, "CREATE_TASK_FAILED"),
        ("kie", 501, "GENERATE_AUDIO_FAILED"),
    ],
)
async def test_failed_status_only_is_found_by_polling(
    provider: str, code: int, status: str
) -> None:
    """No callback at all: record-info goes TEXT_SUCCESS, then a failed status."""
    async with live(provider) as env:
        env.sim.script("failed_status_only", error_code=code)
        task = await submit(env.client)
        waits = await asyncio.gather(
            task.text(timeout=5),
            task.first(timeout=5),
            task.complete(timeout=5),
            return_exceptions=True,
        )
        await env.sim.wait_idle()
        for error in waits:
            assert isinstance(error, TaskFailedError)
            assert (error.task_id, error.code, error.status) == (task.task_id, code, status)
            assert error.msg == env.sim.tasks[task.task_id].error_message
        assert waits[0] is waits[1] is waits[2] is task.failure
        assert task.stage is Stage.FAILED
        assert await event_log(task) == [("error", POLL)]
        assert env.sim.callback_types(task.task_id) == []
        assert env.details_requests() >= 1
        assert env.receiver.stats.accepted == 0
        assert backend_size(env.receiver) == 0


# -------------------------------------------------------------------- how it answers


def bound_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    return sock


@contextlib.asynccontextmanager
async def serve(app: web.Application) -> AsyncIterator[str]:
    """Serve ``app`` on a free port; yields its root URL."""
    sock = bound_socket()
    port = sock.getsockname()[1]
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    try:
        await web.SockSite(runner, sock).start()
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


@contextlib.asynccontextmanager
async def mounted(
    sim: Simulator,
    *,
    middlewares: list[Any] | None = None,
    poll: PollPolicy | None = None,
    **receiver_kwargs: Any,
) -> AsyncIterator[tuple[CallbackReceiver, AddVocalsClient, web.Application]]:
    """A receiver mounted at /hooks/addvocals in an aiohttp app with other routes."""
    sock = bound_socket()
    port = sock.getsockname()[1]
    receiver = CallbackReceiver(
        secret=SECRET, public_url=f"http://127.0.0.1:{port}/hooks/addvocals", **receiver_kwargs
    )
    app = web.Application(middlewares=middlewares or [])

    async def health(_: web.Request) -> web.Response:
        return web.Response(text="ok")

    app.router.add_get("/health", health)
    receiver.mount(app, path="/hooks/addvocals")
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    try:
        await web.SockSite(runner, sock).start()
        async with AddVocalsClient(
            sim.api_key,
            base_url=sim.base_url,
            receiver=receiver,
            poll=poll or PollPolicy.fast(),
            retry=RetryPolicy.no_wait(),
        ) as client:
            yield receiver, client, app
    finally:
        await runner.cleanup()


async def test_mounted_into_an_existing_aiohttp_app() -> None:
    async with Simulator(speed=1000, seed=0) as sim:
        async with mounted(sim) as (receiver, client, app):
            assert app[RECEIVER_KEY] is receiver
            assert receiver.url.endswith("/hooks/addvocals")
            sim.script("duplicates")
            task = await submit(client)
            assert sim.tasks[task.task_id].callback_url.startswith(receiver.url + "/cb/")
            result = await task.complete(timeout=5)
            check_complete(result, sim.tasks[task.task_id], CALLBACK)
            await sim.wait_idle()
            assert await event_log(task) == [TEXT_CB, FIRST_CB, COMPLETE_CB]
            assert (receiver.stats.accepted, receiver.stats.ignored) == (3, 3)
            assert not receiver.closed
        # The receiver closes with the application.
        assert receiver.closed


async def test_receiver_5xx_makes_the_simulator_retry() -> None:
    failures_left = 1

    @web.middleware
    async def flaky(
        request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        nonlocal failures_left
        if failures_left > 0:
            failures_left -= 1
            return web.json_response({"status": "unavailable"}, status=503)
        return await handler(request)

    async with (
        Simulator(speed=1000, seed=0) as sim,
        mounted(sim, middlewares=[flaky], poll=PollPolicy(grace=5.0)) as (receiver, client, _),
    ):
        sim.script("complete_only")
        task = await submit(client)
        result = await task.complete(timeout=5)
        await sim.wait_idle()
        assert result.source == CALLBACK
        attempts = [(d.attempt, d.status) for d in sim.deliveries_for(task.task_id)]
        assert attempts == [(0, 503), (1, 200)]
        assert receiver.stats.accepted == 1
        assert sim.count(method="GET", path=client.profile.details_path) == 0


async def test_receiver_failing_every_attempt_leaves_polling_to_finish() -> None:
    @web.middleware
    async def broken(
        request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        return web.Response(status=500, text="upstream down")

    async with (
        Simulator(speed=1000, seed=0, retry_delays=QUICK_RETRIES) as sim,
        mounted(sim, middlewares=[broken]) as (
            receiver,
            client,
            _,
        ),
    ):
        sim.script("normal")
        task = await submit(client)
        result = await task.complete(timeout=5)
        await sim.wait_idle()
        assert result.source == POLL
        # Each callback: the first try and three retries (API-SPEC §4.1), then it stops.
        attempts = [
            (d.callback_type, d.attempt, d.status) for d in sim.deliveries_for(task.task_id)
        ]
        assert sorted(attempts) == sorted(
            (kind, attempt, 500) for kind in ("text", "first", "complete") for attempt in range(4)
        )
        assert receiver.stats.accepted == 0


async def test_answers_in_milliseconds_even_with_a_slow_hook() -> None:
    gate = asyncio.Event()
    started: list[str] = []
    finished: list[str] = []

    async def slow_hook(event: CallbackEvent) -> None:
        started.append(event.callback_type)
        await gate.wait()
        finished.append(event.callback_type)

    async with live(receiver_kwargs={"on_event": slow_hook}) as env:
        env.sim.script("normal")
        task = await submit(env.client)
        result = await task.complete(timeout=5)
        await env.sim.wait_idle()
        assert result.source == CALLBACK
        deliveries = env.sim.deliveries_for(task.task_id)
        assert [d.status for d in deliveries] == [200, 200, 200]
        took = [(d.answered_at or 99.0) - d.at for d in deliveries]
        assert max(took) < 0.1, took
        # The hooks run as tasks of their own and are all still blocked.
        await asyncio.sleep(0.01)
        assert started == ["text", "first", "complete"]
        assert finished == []
        gate.set()
        await asyncio.sleep(0.01)
        assert finished == ["text", "first", "complete"]
        assert env.receiver.stats.hook_errors == 0


async def test_a_failing_hook_is_logged_and_counted(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.ERROR, logger="addvocals_async.receiver")
    seen: list[str] = []

    async def failing_async(event: CallbackEvent) -> None:
        seen.append(event.callback_type)
        raise RuntimeError(f"hook broke on {event.callback_type}")

    async with live(receiver_kwargs={"on_event": failing_async}) as env:
        env.sim.script("normal")
        task = await submit(env.client)
        result = await task.complete(timeout=5)
        await env.sim.wait_idle()
        await asyncio.sleep(0.01)
        assert result.source == CALLBACK
        assert [d.status for d in env.sim.deliveries_for(task.task_id)] == [200, 200, 200]
        assert seen == ["text", "first", "complete"]
        assert env.receiver.stats.hook_errors == 3
        records = [r for r in caplog.records if r.name == "addvocals_async.receiver"]
        assert [r.levelno for r in records] == [logging.ERROR] * 3
        assert all(task.task_id in r.getMessage() for r in records)
        assert [str(r.exc_info[1]) for r in records if r.exc_info] == [
            "hook broke on text",
            "hook broke on first",
            "hook broke on complete",
        ]


async def test_a_failing_sync_hook_is_counted_too() -> None:
    def sync_hook(event: CallbackEvent) -> None:
        raise ValueError("sync hook")

    async with live(receiver_kwargs={"on_event": sync_hook}) as env:
        env.sim.script("skip_text")
        task = await submit(env.client)
        await task.complete(timeout=5)
        await env.sim.wait_idle()
        await asyncio.sleep(0.01)
        assert env.receiver.stats.hook_errors == 2
        assert env.receiver.stats.accepted == 2


# ----------------------------------------------------------- framework-agnostic handle()


async def test_handle_serves_any_framework() -> None:
    """A web stack that is not aiohttp's routing hands path, headers and bytes over."""
    sock = bound_socket()
    port = sock.getsockname()[1]
    receiver = CallbackReceiver(secret=SECRET, public_url=f"http://127.0.0.1:{port}/api/hooks")
    answers: list[ReceiverResponse] = []

    async def catch_all(request: web.Request) -> web.Response:
        answer = await receiver.handle(request.path, request.headers, await request.read())
        answers.append(answer)
        return web.Response(
            status=answer.status, text=answer.json(), content_type="application/json"
        )

    app = web.Application()
    app.router.add_route("POST", "/{tail:.*}", catch_all)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    await web.SockSite(runner, sock).start()
    try:
        async with (
            Simulator(speed=1000, seed=0) as sim,
            AddVocalsClient(
                sim.api_key,
                base_url=sim.base_url,
                receiver=receiver,
                poll=PollPolicy.fast(),
                retry=RetryPolicy.no_wait(),
            ) as client,
        ):
            sim.script("out_of_order")
            task = await submit(client)
            result = await task.complete(timeout=5)
            await sim.wait_idle()
            check_complete(result, sim.tasks[task.task_id], CALLBACK)
            assert all(isinstance(a, ReceiverResponse) for a in answers)
            assert [(a.status, dict(a.body)) for a in answers] == [
                (200, {"status": "received"})
            ] * 3
            assert json.loads(answers[0].json()) == {"status": "received"}
            assert (receiver.stats.accepted, receiver.stats.ignored) == (1, 2)
    finally:
        await runner.cleanup()
        await receiver.aclose()


async def test_handle_direct_calls() -> None:
    receiver = CallbackReceiver(
        secret=SECRET, public_url="https://hooks.example.org/av", max_body_size=512
    )
    body = b'{"code": 200, "msg": "ok", "data": {"callbackType": "text", "task_id": "t1"}}'
    not_callback = await receiver.handle("/av/elsewhere/abc", {}, body)
    assert not_callback.status == 404
    forged = await receiver.handle("/av/cb/abc.def", {}, body)
    assert forged.status == 403
    assert forged.body["status"] == "rejected"
    # The token is checked before the size: a forged URL learns nothing about limits.
    forged_big = await receiver.handle("/av/cb/abc.def", {}, b" " * 513)
    assert forged_big.status == 403
    genuine = receiver.new_callback_url()
    path = "/av/cb/" + genuine.url.rsplit("/", 1)[1]
    too_big = await receiver.handle(path, {}, b" " * 513)
    assert too_big.status == 413
    assert (
        receiver.stats.rejected_token,
        receiver.stats.rejected_size,
        receiver.stats.accepted,
    ) == (3, 1, 0)
    await receiver.aclose()


# ---------------------------------------------------------------------------------- scale

MIX = {
    "duplicates": 0.12,
    "out_of_order": 0.12,
    "lost_complete": 0.12,
    "error": 0.12,
    "complete_only": 0.12,
    "skip_text": 0.12,
    "early_callback": 0.12,
}
# The callbacks each scenario sends that can move a task (duplicates and late ones aside).
MOVING_CALLBACKS = {
    "normal": ["text", "first", "complete"],
    "duplicates": ["text", "first", "complete"],
    "early_callback": ["text", "first", "complete"],
    "complete_only": ["complete"],
    "skip_text": ["first", "complete"],
    "out_of_order": ["complete"],
    "lost_complete": ["text", "first"],
    "error": ["error"],
}
RANK = {"text": 1, "first": 2, "complete": 3, "error": 4}


def is_subsequence(part: list[str], whole: list[str]) -> bool:
    it = iter(whole)
    return all(item in it for item in part)


@pytest.mark.slow
async def test_a_thousand_concurrent_tasks_with_mixed_faults() -> None:
    n = 1000
    started = time.monotonic()
    # Under this burst one event loop runs the simulator, the receiver and the client:
    # give callbacks time to be answered, and callbacks a grace period before polling.
    # The stage times are the simulator's at speed 1000, so that a lost `complete` is
    # polled once that grace has passed, not at the wait's deadline.
    poll = PollPolicy(
        stage_times=SIM_STAGE_TIMES,
        grace=3.0,
        initial=0.2,
        maximum=0.5,
        min_interval=0.1,
        default_timeout=30,
    )
    async with live(
        poll=poll,
        seed=7,
        mix=MIX,
        rate_limit=None,
        credits=10 * n,
        min_callback_timeout=10.0,
    ) as env:

        async def run() -> tuple[VocalTask, TaskResult | TaskFailedError]:
            task = await submit(env.client)
            try:
                return task, await task.complete(timeout=20)
            except TaskFailedError as error:
                return task, error

        outcomes = await asyncio.gather(*(run() for _ in range(n)))
        await env.sim.wait_idle(timeout=20)

        assert len({task.task_id for task, _ in outcomes}) == n
        scenarios = collections.Counter(env.sim.tasks[t.task_id].scenario for t, _ in outcomes)
        assert set(scenarios) == {*MIX, "normal"}
        assert min(scenarios.values()) > 50
        callback_events = 0
        for task, outcome in outcomes:
            sim_task = env.sim.tasks[task.task_id]
            events = task._state.events
            kinds = [e.callback_type for e in events]
            sources = [str(e.extra.get("source", CALLBACK)) for e in events]
            by_callback = [k for k, s in zip(kinds, sources, strict=True) if s == CALLBACK]
            callback_events += len(by_callback)
            # Stages only moved forward, each at most once, ending in the terminal one.
            assert [RANK[k] for k in kinds] == sorted({RANK[k] for k in kinds}), kinds
            assert is_subsequence(by_callback, MOVING_CALLBACKS[sim_task.scenario]), (
                sim_task.scenario,
                kinds,
                sources,
            )
            if sim_task.scenario == "error":
                assert isinstance(outcome, TaskFailedError)
                assert (outcome.task_id, outcome.code) == (task.task_id, sim_task.error_code)
                assert kinds == ["error"]
                assert task.stage is Stage.FAILED
            else:
                assert isinstance(outcome, TaskResult), (sim_task.scenario, outcome)
                expected_source = POLL if sim_task.scenario == "lost_complete" else sources[-1]
                check_complete(outcome, sim_task, expected_source)
                assert kinds[-1] == "complete"
                assert task.stage is Stage.COMPLETE
        # Every delivery was answered 2xx and counted once; none lost, none leaked.
        deliveries = env.sim.deliveries
        assert all(d.status == 200 for d in deliveries)
        stats = env.receiver.stats
        assert stats.accepted == callback_events
        assert stats.accepted + stats.ignored == len(deliveries)
        assert (stats.orphaned, stats.rejected, stats.hook_errors) == (0, 0, 0)
        assert backend_size(env.receiver) == 0
    # About 5 s alone; a lost `complete` found only by the last-chance poll at the
    # wait's deadline (20 s) would take past 20.
    assert time.monotonic() - started < 15


async def test_a_callback_in_flight_when_the_receiver_closes_still_lands() -> None:
    """Shutdown lets requests already being received finish (within shutdown_timeout)."""
    receiver = CallbackReceiver(secret=SECRET, shutdown_timeout=5.0)
    await receiver.start()
    state, callback_url = await registered(receiver, "f" * 32)
    body = json.dumps(
        {"code": 200, "msg": "ok", "data": {"callbackType": "text", "task_id": "f" * 32}}
    ).encode()
    first_chunk_sent = asyncio.Event()

    async def slowly() -> AsyncIterator[bytes]:
        yield body[:10]
        first_chunk_sent.set()
        await asyncio.sleep(0.3)
        yield body[10:]

    async with aiohttp.ClientSession() as session:
        sending = asyncio.ensure_future(session.post(callback_url, data=slowly()))
        await first_chunk_sent.wait()
        await asyncio.sleep(0.05)
        await receiver.aclose()  # begins while the body is still arriving
        response = await sending
        assert response.status == 200
        response.release()
    assert state.stage is Stage.TEXT
    assert receiver.stats.accepted == 1


# ---------------------------------------------------------------------------------- self-test


async def test_check_reachable_finds_the_probe_that_arrives() -> None:
    async with CallbackReceiver(secret=SECRET) as receiver:
        report = await receiver.check_reachable(timeout=5)
        assert report.reachable, report.detail
        assert report.seconds is not None
        assert report.url == receiver.url
        assert receiver.stats.accepted == 0  # nothing was published


async def test_check_reachable_says_when_nothing_answers() -> None:
    sock = bound_socket()  # bound, never listening: connections are refused
    port = sock.getsockname()[1]
    receiver = CallbackReceiver(secret=SECRET, public_url=f"http://127.0.0.1:{port}/av")
    async with receiver:
        report = await receiver.check_reachable(timeout=2)
    sock.close()
    assert not report.reachable
    assert "failed" in report.detail


async def test_check_reachable_says_when_another_server_answers() -> None:
    async def anything(_: web.Request) -> web.Response:
        return web.json_response({"status": "received"})

    app = web.Application()
    app.router.add_post("/{tail:.*}", anything)
    runner = web.AppRunner(app, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        other = f"http://127.0.0.1:{runner.addresses[0][1]}/av"
        async with CallbackReceiver(secret=SECRET, public_url=other) as receiver:
            report = await receiver.check_reachable(timeout=2)
    finally:
        await runner.cleanup()
    assert not report.reachable
    assert "never reached this receiver" in report.detail


async def test_callbacks_that_never_come_are_said_once_per_task(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A wrong public_url looks exactly like a slow API: one WARNING per task says so
    when not one callback came within the grace period, and the task goes on polling."""
    policy = PollPolicy(
        stage_times=SIM_STAGE_TIMES, grace=0.2, initial=0.05, maximum=0.1, min_interval=0.05
    )
    async with live(poll=policy) as env:
        env.sim.script("lost_all")
        task = await submit(env.client)
        started = time.monotonic()
        with caplog.at_level(logging.DEBUG, logger="addvocals_async"):
            results = await asyncio.gather(*(task.complete(timeout=5) for _ in range(3)))
        # Found by the poll once text was late (0.23 s), not the last chance at 5 s.
        assert time.monotonic() - started < 2.5
    assert all(r.source == POLL for r in results)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    quiet = [m for m in warnings if "no callback for task" in m]
    assert len(quiet) == 1
    assert "public_url reachable" in quiet[0]
    assert task.task_id in quiet[0]
    infos = [r.getMessage() for r in caplog.records if r.levelno == logging.INFO]
    assert any("complete" in m and task.task_id in m for m in infos)
