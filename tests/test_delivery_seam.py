"""The delivery seam's contract as the receiver and the registry rely on it: a store that
cannot take a callback makes the receiver answer 503 (the sender retries) instead of
dropping it, and waiters poll while the store is away."""

from __future__ import annotations

import asyncio
import json
import logging

import aiohttp
import pytest
from helpers import registered

from addvocals_async import (
    CallbackReceiver,
    Delivery,
    DeliveryResult,
    DeliveryUnavailableError,
    InMemoryBackend,
    TaskRegistry,
)
from addvocals_async._providers import get_provider

SECRET = "seam-secret-0123456789abcdef"
TASK = "c" * 32


def text_callback(task_id: str) -> bytes:
    body = {"code": 200, "msg": "ok", "data": {"callbackType": "text", "task_id": task_id}}
    return json.dumps(body).encode()


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
                async with session.post(url, data=text_callback(TASK)) as answer:
                    assert answer.status == 503
            assert str(state.stage) == "pending"  # nothing was applied, nothing lost
            store.down = False
            async with session.post(url, data=text_callback(TASK)) as answer:
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
        changed = state.changed()
        registry.seam_available(available)
        assert changed.done()  # waiters wake up: to start polling, or to stop
        expecting.append(state.callbacks_expected)
    assert expecting == [False, True]
    await asyncio.sleep(0)
