"""The pending store, ``client.recover()`` and ``client.resume()``: a submit whose answer
was lost, or a process that stopped mid-flight, never costs a second payment. Against the
real simulator, over real HTTP on loopback."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest
from helpers import QUICK_RETRIES, REQUEST, SECRET

from addvocals_async import (
    AddVocalsClient,
    APIConnectionError,
    APIError,
    CallbackReceiver,
    InsufficientCreditsError,
    PendingSubmit,
    PollPolicy,
    RequestValidationError,
    RetryPolicy,
    SQLitePendingStore,
    Stage,
)
from addvocals_async.testing import Simulator, StageTimes

# Stages late enough (0.3 / 0.6 / 0.9 s at speed 1000) to stop a process mid-flight.
SLOW = StageTimes(text=300.0, first=600.0, complete=900.0)


def client_for(
    sim: Simulator, receiver: CallbackReceiver, store: Any = None, **options: Any
) -> AddVocalsClient:
    return AddVocalsClient(
        sim.api_key,
        base_url=sim.base_url,
        receiver=receiver,
        pending_store=store,
        poll=PollPolicy.fast(),
        retry=RetryPolicy.no_wait(),
        **options,
    )


# ---------------------------------------------------------------- the SQLite store


async def test_the_sqlite_store_keeps_records_across_instances(tmp_path: Path) -> None:
    path = tmp_path / "pending.db"
    store = SQLitePendingStore(path)
    await store.record(PendingSubmit(ref="r1", request={"title": "one"}))
    await store.record(PendingSubmit(ref="r2", request={"title": "two"}))
    await store.bind("r1", "a" * 32)
    await store.remove("r2")
    await store.aclose()
    with pytest.raises(RuntimeError, match="closed"):
        await store.record(PendingSubmit(ref="r3"))
    reopened = SQLitePendingStore(path)
    records = await reopened.pending()
    assert [(r.ref, r.task_id, dict(r.request)) for r in records] == [
        ("r1", "a" * 32, {"title": "one"})
    ]
    await reopened.aclose()


async def test_the_sqlite_store_drops_records_past_their_age(tmp_path: Path) -> None:
    store = SQLitePendingStore(tmp_path / "p.db", max_age=60)
    await store.record(PendingSubmit(ref="old", created_at=time.time() - 120))
    await store.record(PendingSubmit(ref="new"))
    assert [r.ref for r in await store.pending()] == ["new"]
    assert [r.ref for r in await store.pending()] == ["new"]  # and the old one is gone
    await store.aclose()


def test_a_pending_store_needs_a_receiver(tmp_path: Path) -> None:
    with pytest.raises(RequestValidationError, match="receiver"):
        AddVocalsClient("k", base_url="http://127.0.0.1:9", pending_store=tmp_path / "p.db")


# ---------------------------------------------------------------- recover()


@pytest.mark.parametrize("fault", ["server_error_after_create", "drop_after_create"])
async def test_an_ambiguous_submit_is_recovered_by_its_callbacks(fault: str) -> None:
    async with (
        Simulator(speed=1000, seed=3) as sim,
        CallbackReceiver(secret=SECRET) as receiver,
        client_for(sim, receiver) as client,
    ):
        sim.script(fault)
        with pytest.raises((APIError, APIConnectionError)) as caught:
            await client.add_vocals(**REQUEST)
        error = caught.value
        assert isinstance(error, (APIError, APIConnectionError))
        assert error.maybe_submitted
        assert error.callback_ref
        created = list(sim.tasks)
        assert len(created) == 1  # the API did create it: the SDK must not lose it
        task = await client.recover(error, timeout=5)
        assert task is not None
        assert task.task_id == created[0]
        result = await task.complete(timeout=5)
        assert result.stage is Stage.COMPLETE
        assert len(sim.submits()) == 1  # found, not paid for twice


async def test_recover_returns_none_when_no_task_was_created() -> None:
    async with (
        Simulator(speed=1000, seed=3) as sim,
        CallbackReceiver(secret=SECRET) as receiver,
        client_for(sim, receiver) as client,
    ):
        unused = receiver.new_callback_url()  # a submit that never reached the API
        started = time.monotonic()
        assert await client.recover(unused.ref, timeout=0.2) is None
        assert time.monotonic() - started < 2
        # Nothing is left listening on that URL: the registry is as before the call.
        assert len(client.tasks) == 0
        assert len(receiver.backend) == 0  # type: ignore[arg-type]


async def test_a_rejected_submit_has_nothing_to_recover() -> None:
    async with (
        Simulator(speed=1000, seed=3, credits=0) as sim,
        CallbackReceiver(secret=SECRET) as receiver,
        client_for(sim, receiver) as client,
    ):
        with pytest.raises(InsufficientCreditsError) as caught:
            await client.add_vocals(**REQUEST)
        assert not caught.value.maybe_submitted
        assert caught.value.callback_ref is None
        with pytest.raises(RequestValidationError, match="callback reference"):
            await client.recover(caught.value)
        assert len(client.tasks) == 0  # nothing kept listening for it


# ---------------------------------------------------------------- resume()


async def test_resume_after_a_restart_finds_every_task_even_an_ambiguous_one(
    tmp_path: Path,
) -> None:
    store_path = tmp_path / "pending.db"
    async with Simulator(speed=1000, seed=5, stage_times=SLOW, retry_delays=QUICK_RETRIES) as sim:
        # The first process: three submits, one of whose answers is lost, then it stops.
        receiver = CallbackReceiver(secret=SECRET)
        await receiver.start()
        port = int(receiver.url.split(":")[2].split("/")[0])
        async with client_for(sim, receiver, store_path) as client:
            submitted = [await client.add_vocals(**REQUEST) for _ in range(2)]
            sim.script("server_error_after_create")
            with pytest.raises(APIError):
                await client.add_vocals(**REQUEST)
        await receiver.aclose()
        assert len(sim.tasks) == 3
        assert all(t.stage is Stage.PENDING for t in submitted)

        # The restarted process: the same secret and port, the same store.
        async with (
            CallbackReceiver(secret=SECRET, port=port) as receiver,
            client_for(sim, receiver, store_path) as client,
        ):
            resumed = await client.resume()
            assert len(resumed) == 3
            results = await asyncio.gather(*(t.complete(timeout=10) for t in resumed))
            assert {t.task_id for t in resumed} == set(sim.tasks)
            assert all(r.stage is Stage.COMPLETE for r in results)
            assert len(sim.submits()) == 3  # nothing submitted twice
        reopened = SQLitePendingStore(store_path)
        assert await reopened.pending() == []  # every task ended: nothing left to resume
        await reopened.aclose()


async def test_a_task_that_just_ended_is_not_resumed(tmp_path: Path) -> None:
    async with (
        Simulator(speed=1000, seed=5) as sim,
        CallbackReceiver(secret=SECRET) as receiver,
        client_for(sim, receiver, tmp_path / "p.db") as client,
    ):
        task = await client.add_vocals(**REQUEST)
        await task.complete(timeout=5)
        assert await client.resume() == []  # at once, not half a second later


async def test_recover_finds_a_task_that_ended_before_it_was_asked() -> None:
    """Every callback of an ambiguous submit's task may land before the caller calls
    recover(): the task is found, complete, without a second resolution by polling."""
    async with (
        Simulator(speed=1000, seed=3) as sim,
        CallbackReceiver(secret=SECRET) as receiver,
        client_for(sim, receiver) as client,
    ):
        ended: list[str | None] = []
        client.tasks.terminal_listeners.append(lambda state: ended.append(state.task_id))
        sim.script("server_error_after_create")
        with pytest.raises(APIError) as caught:
            await client.add_vocals(**REQUEST)
        await sim.wait_idle()
        (created,) = list(sim.tasks)
        assert ended == [created]  # it ended while nobody held it
        task = await client.recover(caught.value, timeout=1)
        assert task is not None
        assert task.task_id == created
        assert task.stage is Stage.COMPLETE
        assert (await task.complete(timeout=1)).source == "callback"
        assert ended == [created]  # resolved once
        assert len(client.tasks) == 0
