"""The delivery seam's contract (``addvocals_async._delivery``), run against every backend:
the in-memory default and ``RedisBackend`` over a real redis-server. Two Redis backends
over the same server stand for two processes."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from seam_helpers import Recorder, delivery, settle

from addvocals_async import DeliveryBackend, DeliveryResult, InMemoryBackend
from addvocals_async.redis import RedisBackend
from addvocals_async.testing.redis_server import RedisServer

Factory = Callable[[], Awaitable[DeliveryBackend]]

STORED = {DeliveryResult.ACCEPTED, DeliveryResult.ORPHANED}  # kept for a later subscriber


@pytest.fixture(params=["memory", "redis"])
async def make_backend(request: pytest.FixtureRequest, redis_prefix: str) -> AsyncIterator[Factory]:
    """Backends of one kind sharing one store: the in-memory one is shared as such (one
    process), Redis ones each have their own connection and reader (one per process)."""
    made: list[DeliveryBackend] = []
    shared = InMemoryBackend()
    server: RedisServer | None = None
    if request.param == "redis":
        server = request.getfixturevalue("redis_server")

    async def make() -> DeliveryBackend:
        backend: DeliveryBackend = (
            shared if server is None else RedisBackend(server.url, prefix=redis_prefix)
        )
        made.append(backend)
        return backend

    yield make
    for backend in made:
        await backend.aclose()


def ids() -> tuple[str, str]:
    return secrets.token_hex(8), secrets.token_hex(16)


async def test_the_first_claim_wins_and_the_submit_answer_overrides(make_backend: Factory) -> None:
    seam = await make_backend()
    ref, task = ids()
    assert await seam.owner(ref) is None
    assert await seam.claim(ref, task) == task
    assert await seam.claim(ref, "other-task") == task
    assert await seam.owner(ref) == task
    assert await seam.claim(ref, "the-answer", authoritative=True) == "the-answer"
    assert await seam.owner(ref) == "the-answer"


async def test_a_callback_through_another_tasks_url_is_a_mismatch(make_backend: Factory) -> None:
    seam = await make_backend()
    ref, task = ids()
    await seam.claim(ref, task, authoritative=True)
    assert await seam.publish(delivery(ref, "someone-else")) is DeliveryResult.MISMATCH
    assert await seam.owner(ref) == task


async def test_early_callbacks_are_replayed_to_a_late_subscriber(make_backend: Factory) -> None:
    receiving, awaiting = await make_backend(), await make_backend()
    ref, task = ids()
    assert await receiving.publish(delivery(ref, task, "text")) in STORED
    assert await receiving.publish(delivery(ref, task, "first")) in STORED
    late = Recorder()
    awaiting.subscribe(late, task_id=task)
    await late.wait_for(2)
    await settle()
    assert late.types == ["text", "first"]
    assert {d.ref for d in late.got} == {ref}


async def test_a_subscriber_gets_each_new_callback_once(make_backend: Factory) -> None:
    receiving, awaiting = await make_backend(), await make_backend()
    ref, task = ids()
    here, there = Recorder(), Recorder()
    receiving.subscribe(here, task_id=task)
    awaiting.subscribe(there, task_id=task)
    await settle()
    await receiving.publish(delivery(ref, task, "text"))
    await there.wait_for(1)
    await receiving.publish(delivery(ref, task, "complete"))
    await there.wait_for(2)
    await settle()
    assert here.types == ["text", "complete"]
    assert there.types == ["text", "complete"]  # shared memory: the same one, once each


async def test_a_url_subscription_learns_its_task_from_the_callbacks(make_backend: Factory) -> None:
    receiving, awaiting = await make_backend(), await make_backend()
    ref, task = ids()
    submit = Recorder()
    awaiting.subscribe(submit, ref=ref)  # the submit's answer has not come back
    await settle()
    await receiving.publish(delivery(ref, task, "text"))
    await submit.wait_for(1)
    assert submit.got[0].event.task_id == task
    assert await awaiting.owner(ref) == task


async def test_a_url_subscription_after_the_claim_gets_the_replay(make_backend: Factory) -> None:
    receiving, awaiting = await make_backend(), await make_backend()
    ref, task = ids()
    await receiving.publish(delivery(ref, task, "text"))
    resumed = Recorder()
    awaiting.subscribe(resumed, ref=ref)  # e.g. resume() after an ambiguous submit
    await resumed.wait_for(1)
    assert resumed.got[0].event.task_id == task


async def test_unsubscribed_means_no_more_deliveries(make_backend: Factory) -> None:
    receiving, awaiting = await make_backend(), await make_backend()
    ref, task = ids()
    gone = Recorder()
    awaiting.subscribe(gone, task_id=task)
    await settle()
    await receiving.publish(delivery(ref, task, "text"))
    await gone.wait_for(1)
    awaiting.unsubscribe(gone, task_id=task)
    await receiving.publish(delivery(ref, task, "complete"))
    await settle()
    assert gone.types == ["text"]


async def test_closing_tells_every_subscriber_once(make_backend: Factory) -> None:
    seam = await make_backend()
    ref, task = ids()
    by_task, by_ref = Recorder(), Recorder()
    seam.subscribe(by_task, task_id=task)
    seam.subscribe(by_ref, ref=ref)
    seam.subscribe(by_ref, task_id=task)
    await seam.aclose()
    await seam.aclose()
    assert (by_task.closed, by_ref.closed) == (1, 1)
    late = Recorder()
    seam.subscribe(late, task_id=task)
    assert late.closed == 1
