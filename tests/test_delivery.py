"""The delivery seam (``InMemoryBackend``) and the ``TaskRegistry``: orphans, the TTL
sweep, that finished tasks leave nothing behind, and what happens when the seam's store
is away (the receiver answers 503 so the sender retries; waiters poll meanwhile). The
contract every backend keeps is in ``test_seam_contract.py``."""

from __future__ import annotations

import asyncio
import gc
import logging

import aiohttp
import pytest
from helpers import (
    REQUEST,
    SECRET,
    TASK,
    callback_bytes,
    client_for,
    live,
    registered,
)

from addvocals_async import (
    CallbackEvent,
    CallbackReceiver,
    Delivery,
    DeliveryResult,
    DeliveryUnavailableError,
    InMemoryBackend,
    TaskRegistry,
)
from addvocals_async._providers import get_provider


class Collect:
    """A subscriber that keeps what it is handed."""

    def __init__(self, into: list[Delivery]) -> None:
        self.into = into

    def deliver(self, delivery: Delivery) -> DeliveryResult:
        self.into.append(delivery)
        return DeliveryResult.ACCEPTED

    def seam_closed(self) -> None:
        pass

    def seam_available(self, available: bool) -> None:
        pass


async def test_orphans_keep_one_event_of_each_type() -> None:
    backend = InMemoryBackend()
    for _ in range(10):
        event = CallbackEvent(task_id=TASK, callback_type="text", code=200)
        assert await backend.publish(Delivery("some-ref", event)) is DeliveryResult.ORPHANED
    replayed: list[Delivery] = []
    backend.subscribe(Collect(replayed), task_id=TASK)
    assert [d.event.callback_type for d in replayed] == ["text"]


async def test_registrations_silent_past_their_ttl_are_dropped() -> None:
    backend = InMemoryBackend()
    receiver = CallbackReceiver(secret=SECRET, public_url="https://h.example.org/av",
                                backend=backend)  # fmt: skip
    registry = TaskRegistry(backend, get_provider("apibox"), ttl=0.05)
    lost = [(await registered(receiver, registry=registry))[0] for _ in range(5)]
    await asyncio.sleep(0.1)
    fresh, _ = await registered(receiver, registry=registry)  # sweeps the expired ones
    assert len(backend) == 1
    assert len(registry) == 1
    assert all(not state.callbacks_expected for state in lost)  # their waiters poll instead
    assert fresh.callbacks_expected
    await receiver.aclose()


async def test_an_old_registration_kept_busy_by_duplicates_shields_no_stale_one() -> None:
    """Issue 10, item 9: one old registration that keeps getting (ignored) duplicates kept
    every later stale one from expiring (1,000 of 1,000 stayed)."""
    receiver = CallbackReceiver(secret=SECRET, public_url="https://h.example.org/av")
    registry = TaskRegistry(receiver.backend, get_provider("apibox"), ttl=0.2)
    busy, busy_url = await registered(receiver, TASK, registry=registry)
    token = busy_url.rsplit("/", 1)[1]
    assert (await receiver.handle_token(token, {}, callback_bytes(TASK, "text"))).status == 200
    stale = [(await registered(receiver, f"{i:032x}", registry=registry))[0] for i in range(50)]
    for _ in range(4):  # the duplicate keeps the busy one fresh past the others' ttl
        await asyncio.sleep(0.1)
        await receiver.handle_token(token, {}, callback_bytes(TASK, "text"))
    assert registry.sweep() == 50
    assert len(registry) == 1
    assert all(not state.callbacks_expected for state in stale)
    assert busy.callbacks_expected
    await receiver.aclose()


@pytest.mark.parametrize(
    "n", [20_000, pytest.param(200_000, marks=pytest.mark.slow)], ids=["20k", "200k"]
)
async def test_dropped_reattached_handles_are_forgotten_without_waiting_for_the_ttl(
    n: int,
) -> None:
    """Issue 10, item 9: 200,000 ``client.task(id)`` handles dropped unused kept 200,000
    registrations for the 6 h TTL. The registration lives as long as a handle does: a
    held one still resolves, a dropped one's task may still call back, harmlessly."""
    async with live() as env:
        client, receiver = env.client, env.receiver
        backend = receiver.backend
        assert isinstance(backend, InMemoryBackend)
        async with client_for(env.sim) as elsewhere:  # submitted by "another process"
            task_id = (await elsewhere.add_vocals(**REQUEST)).task_id
        held = client.task(task_id)
        again = client.task(task_id)  # a second handle on the same registration
        for i in range(n):
            client.task(f"{i:032x}")  # dropped at once, never awaited
        gc.collect()
        assert len(client.tasks) == 1  # the held task only
        del again
        gc.collect()
        assert len(client.tasks) == 1  # `held` still holds it
        assert len(backend) == 1
        # A callback for a dropped handle's task: acknowledged, filed like any unknown one.
        late = receiver.new_callback_url().url
        async with env.http.post(late, data=callback_bytes(f"{7:032x}", "complete")) as answer:
            assert answer.status == 200
        assert receiver.stats.orphaned == 1
        result = await held.complete(timeout=30)
        assert result.task_id == task_id
        assert result.tracks
        del held
        gc.collect()
        assert len(client.tasks) == 0
        assert len(backend) == 0


async def test_a_handle_dropped_while_another_one_waits_keeps_the_task() -> None:
    """The waiting handle keeps the registration; one dropped meanwhile does not end it."""
    async with live() as env:
        client = env.client
        async with client_for(env.sim) as elsewhere:
            task_id = (await elsewhere.add_vocals(**REQUEST)).task_id
        waiting = asyncio.ensure_future(client.task(task_id).complete(timeout=30))
        client.task(task_id)
        gc.collect()
        await asyncio.sleep(0)
        assert len(client.tasks) == 1
        assert (await waiting).task_id == task_id
        gc.collect()
        assert len(client.tasks) == 0


@pytest.mark.slow
async def test_a_hundred_thousand_finished_tasks_leave_nothing_behind() -> None:
    """Issue: no leak after 100k tasks. Each task is registered, bound and completed by a
    genuine callback; a late duplicate of each is acknowledged and ignored. What remains is
    only the bounded memory of recent references, never one entry per task."""
    n = 100_000
    receiver = CallbackReceiver(secret=SECRET, public_url="https://hooks.example.org/av")
    backend = receiver.backend
    assert isinstance(backend, InMemoryBackend)
    registry = TaskRegistry(backend, get_provider("apibox"))
    template = '{"code": 200, "msg": "ok", "data": {"callbackType": "complete", "task_id": "%s"}}'
    jobs = []
    for i in range(n):
        task_id = f"{i:032x}"
        _, url = await registered(receiver, task_id, registry=registry)
        jobs.append((url.rsplit("/", 1)[1], (template % task_id).encode()))
    assert len(backend) == len(registry) == n
    for token, body in jobs:
        assert (await receiver.handle_token(token, {}, body)).status == 200
    assert len(backend) == len(registry) == 0
    for token, body in jobs[-100:]:  # late duplicates
        assert (await receiver.handle_token(token, {}, body)).status == 200
    assert receiver.stats.accepted == n
    assert receiver.stats.ignored == 100
    assert receiver.stats.orphaned == 0
    assert len(backend) == 0
    for remembered in (backend._claims, backend._kept, backend._finished):
        assert len(remembered) <= 2 * 4096
    await receiver.aclose()


class FlakyStore(InMemoryBackend):
    """The in-memory seam behind a switch that makes its store unreachable."""

    def __init__(self) -> None:
        super().__init__()
        self.down = False

    async def publish(self, delivery: Delivery) -> DeliveryResult:
        if self.down:
            raise DeliveryUnavailableError("store unreachable")
        return await super().publish(delivery)


async def test_an_unavailable_store_gets_503_and_one_log_line_per_outage(
    caplog: pytest.LogCaptureFixture,
) -> None:
    store = FlakyStore()
    async with (
        CallbackReceiver(secret=SECRET, backend=store) as receiver,
        aiohttp.ClientSession() as session,
    ):
        state, url = await registered(receiver, TASK)
        store.down = True
        with caplog.at_level(logging.WARNING, logger="addvocals_async.receiver"):
            for _ in range(5):
                async with session.post(url, data=callback_bytes(TASK, "text")) as answer:
                    assert answer.status == 503
            assert str(state.stage) == "pending"  # nothing was applied, nothing lost
            store.down = False
            async with session.post(url, data=callback_bytes(TASK, "text")) as answer:
                assert answer.status == 200  # the sender's retry lands
        assert str(state.stage) == "text"
        assert receiver.stats.unavailable == 5
        assert receiver.stats.accepted == 1
        lines = [r.getMessage() for r in caplog.records]
        assert sum("unavailable" in line for line in lines) == 1
        assert sum("is back" in line for line in lines) == 1


async def test_waiters_poll_while_the_seam_is_away_and_stop_when_it_is_back() -> None:
    registry = TaskRegistry(InMemoryBackend(), get_provider("apibox"))
    state = registry.attach(TASK)
    expecting = []
    for available in (False, True):
        waiter = asyncio.ensure_future(state.wait_changed(30))
        await asyncio.sleep(0)  # asleep on the task
        registry.seam_available(available)
        await asyncio.sleep(0)
        assert waiter.done()  # waiters wake up: to start polling, or to stop
        expecting.append(state.callbacks_expected)
    assert expecting == [False, True]


async def test_what_is_kept_for_unknown_tasks_is_bounded_in_bytes() -> None:
    """Genuine callbacks for tasks nobody awaits here are kept for a later subscriber, but a
    flood of big bodies must not grow memory without bound (1 MiB bodies, 4,096 tasks,
    4 types: 16 GiB if counted in tasks alone)."""
    backend = InMemoryBackend(max_kept_bytes=100_000)
    async with (
        CallbackReceiver(secret=SECRET, backend=backend) as receiver,
        aiohttp.ClientSession() as session,
    ):
        padding = "x" * 20_000
        for i in range(40):
            task_id = f"{i:032x}"
            url = receiver.new_callback_url().url  # genuine, and nobody awaits its task
            body = callback_bytes(task_id, "text", padding=padding)
            async with session.post(url, data=body) as answer:
                assert answer.status == 200
        kept = backend._kept
        assert kept.bytes <= 100_000
        assert 0 < len(kept) <= 5
        assert receiver.stats.orphaned == 40
        # The newest are the ones kept, and a subscriber still gets them.
        replayed: list[Delivery] = []
        backend.subscribe(Collect(replayed), task_id=f"{39:032x}")
        assert [d.event.task_id for d in replayed] == [f"{39:032x}"]
        assert kept.bytes < 100_000


async def test_a_refused_callback_claims_nothing() -> None:
    """A body naming live task A sent through another URL is refused (403); it must not
    leave that URL claimed by A, or client.recover() for it would hand over task A."""
    backend = InMemoryBackend()
    receiver = CallbackReceiver(secret=SECRET, backend=backend, public_url="https://h.example/av")
    registry = TaskRegistry(backend, get_provider("apibox"))
    live_a, _ = await registered(receiver, TASK, registry=registry)
    other = receiver.new_callback_url()
    registry.expect(other.ref)  # a submit whose answer was lost, listening on its URL
    answer = await receiver.handle_token(
        other.url.rsplit("/", 1)[1], {}, callback_bytes(TASK, "complete")
    )
    assert answer.status == 403
    assert await backend.owner(other.ref) is None
    assert live_a.stage.value == "pending"
    await receiver.aclose()
